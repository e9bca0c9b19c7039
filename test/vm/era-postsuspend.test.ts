/**
 * Fix (a), `era-postsuspend` (9ae6e8b1c9bb "dm era: commit metadata in postsuspend after worker stops"):
 * the race described in src/testing/era-postsuspend-scenario.ts, four times per era type.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Scope } from '../../src/testing';
import { ERA_TYPES, skipUnlessScaled } from '../../src/testing/era-fixtures';
import { postsuspendRace } from '../../src/testing/era-postsuspend-scenario';

const ITERATIONS = 4;

for (const type of ERA_TYPES) {
  describe(`${type} fix (a)`, () => {
    const skip = skipUnlessScaled(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('era-postsuspend: removing a suspended era device after a newer one took over its metadata corrupts nothing', { skip }, async () => {
      const r = await postsuspendRace(scope, type, ITERATIONS, 0xa5);
      assert.deepEqual(r.problems, []);
      // Otherwise the scenario proved nothing: the old worker must have had a backlog to digest at suspend.
      assert.ok(r.pendingAtSuspend.some((n) => n >= 2), `writesets still to digest at suspend per iteration: ${r.pendingAtSuspend.join(', ')} (want >= 2 at least once)`);
    });
  });
}
