import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FUZZ_TYPES, grammarFor, render, sizeAllowed, CLONE_REGION, ERA_BLOCK, type DevEnv } from '../../src/lab/faultlab/fuzz/grammar';
import { tableCase, validLine, MUTATIONS } from '../../src/lab/faultlab/fuzz/mutate';
import { messageCase, messageGrammarFor, numberAllowed, MESSAGE_GRAMMARS } from '../../src/lab/faultlab/fuzz/messages';
import { upstreamLeniency } from '../../src/lab/faultlab/fuzz/expect';
import { messageSeed, tableSeed } from '../../src/lab/faultlab/fuzz/run';
import { tableRefusals } from '../../src/lab/faultlab/fuzz/kmsg';

const env: DevEnv = {
  scratch: ['/dev/ram0', '/dev/ram1', '/dev/ram2'],
  scratchSectors: 32768n,
  tiny: '/dev/mapper/fz-tiny',
  small: '/dev/mapper/fz-small',
  pool: '/dev/mapper/fz-live-pool',
};

test('every fuzzed type has a grammar whose valid lines parse with the codec rules', () => {
  for (const type of FUZZ_TYPES) {
    const g = grammarFor(type);
    assert.ok(g, type);
    for (let s = 0; s < 50; s++) {
      const toks = validLine(g, s, env);
      assert.ok(toks.length > 0);
      for (const t of toks) {
        if (t.kind === 'num' && t.size) assert.ok(sizeAllowed(t.size, t.text), `${type}: ${t.field} ${t.text}`);
        if (t.kind === 'count') assert.equal(Number(t.text), t.covers);
      }
      // Each count is followed by exactly the words it covers.
      toks.forEach((t, i) => {
        if (t.kind === 'count') assert.ok(i + t.covers < toks.length + 1, `${type}: ${render(toks)}`);
      });
    }
  }
});

test('a case is a pure function of its seed (replay gives the same input)', () => {
  for (const type of FUZZ_TYPES) {
    const g = grammarFor(type)!;
    for (let i = 0; i < 200; i++) {
      const seed = tableSeed(7, type, i);
      assert.deepEqual(tableCase(g, type, seed, env), tableCase(g, type, seed, env));
    }
  }
  for (const g of MESSAGE_GRAMMARS) {
    for (const type of g.types) {
      for (let i = 0; i < 200; i++) {
        const seed = messageSeed(7, type, i);
        const e = { length: 32768n, openThinIds: [0n] };
        assert.deepEqual(messageCase(g, type, seed, e), messageCase(g, type, seed, e));
      }
    }
  }
});

test('table seeds are even and message seeds odd, distinct per type and index', () => {
  const seen = new Set<number>();
  for (const type of FUZZ_TYPES) {
    for (let i = 0; i < 100; i++) {
      const t = tableSeed(1, type, i);
      const m = messageSeed(1, type, i);
      assert.equal(t & 1, 0);
      assert.equal(m & 1, 1);
      seen.add(t).add(m);
    }
  }
  assert.ok(seen.size > FUZZ_TYPES.length * 200 - 5);
});

test('the mutator produces what it claims', () => {
  const counts = new Map<string, number>();
  for (const type of FUZZ_TYPES) {
    const g = grammarFor(type)!;
    for (let i = 0; i < 2000; i++) {
      const c = tableCase(g, type, tableSeed(3, type, i), env);
      for (const m of c.mutations) counts.set(m, (counts.get(m) ?? 0) + 1);
      assert.equal(c.params, render(c.toks));
      if (c.mutations.length !== 1) {
        assert.equal(c.mustReject, undefined, 'only single mutations are known must-refuse');
        continue;
      }
      const [m] = c.mutations;
      const valid = render(validLine(g, c.seed, env));
      if (m === 'dev-missing') assert.match(c.mustReject ?? '', /does not exist/);
      if (m === 'count-lie') assert.match(c.mustReject ?? '', /count says \d+, gives \d+/);
      if (m === 'unknown-word') assert.match(c.mustReject ?? '', /^unknown /);
      if (m === 'long-token') assert.ok(c.toks.some((t) => t.text.length >= 4096), c.params.slice(0, 80));
      if (m === 'length') {
        assert.ok(c.length > env.scratchSectors);
        assert.equal(c.params, valid);
      }
      if (m === 'append') assert.ok(c.toks.length > validLine(g, c.seed, env).length);
      if (m === 'drop') assert.ok(c.toks.length < validLine(g, c.seed, env).length);
      if (m === 'dev-same') {
        const devs = c.toks.filter((t) => t.kind === 'dev').map((t) => t.text);
        assert.ok(new Set(devs).size < devs.length, c.params);
      }
      if (m === 'block-size' && c.mustReject) {
        const t = c.toks.find((x) => x.kind === 'num' && x.size && !sizeAllowed(x.size, x.text));
        assert.ok(t, c.params);
      }
    }
  }
  for (const m of MUTATIONS) assert.ok((counts.get(m) ?? 0) > 50, `mutation ${m} seldom used: ${counts.get(m)}`);
});

test('size rules follow the targets', () => {
  assert.ok(sizeAllowed(ERA_BLOCK, '136'));
  assert.ok(!sizeAllowed(ERA_BLOCK, '12'));
  assert.ok(!sizeAllowed(ERA_BLOCK, '0'));
  assert.ok(sizeAllowed(CLONE_REGION, '1024'));
  assert.ok(!sizeAllowed(CLONE_REGION, '136'));
  assert.ok(!sizeAllowed(CLONE_REGION, '4194304'));
  assert.ok(!sizeAllowed(CLONE_REGION, '0x10'));
});

test('message numbers follow kstrto*: decimal, optional +, no overflow', () => {
  assert.ok(numberAllowed('+5', 10n));
  assert.ok(numberAllowed('010', 10n));
  assert.ok(!numberAllowed('-1', 10n));
  assert.ok(!numberAllowed('0x10', 100n));
  assert.ok(!numberAllowed('4294967296', 0xffffffffn));
  assert.ok(numberAllowed('4294967295', 0xffffffffn));
});

test('malformed messages are marked must-refuse; deleting an open thin is one', () => {
  const g = messageGrammarFor('thin-pool')!;
  let musts = 0;
  for (let i = 0; i < 2000; i++) {
    const c = messageCase(g, 'thin-pool', messageSeed(5, 'thin-pool', i), { length: 100n, openThinIds: [0n] });
    if (c.mutation === 'unknown-verb' || c.mutation === 'empty' || c.mutation === 'sector' || c.mutation === 'argc') assert.ok(c.mustReject, c.text);
    if (/^delete \+?0+$/i.test(c.text) && c.sector === undefined) assert.ok(c.mustReject, c.text);
    if (c.mutation === 'sector') assert.ok((c.sector ?? 0n) >= 100n);
    if (c.mustReject) musts++;
  }
  assert.ok(musts > 500);
});

test('upstream leniencies apply to in-tree targets only', () => {
  const era = grammarFor('era')!;
  let found = 0;
  for (let i = 0; i < 3000 && found < 5; i++) {
    for (const type of ['era', 'dmkit-era']) {
      const c = tableCase(era, type, tableSeed(9, 'era', i), env);
      if (c.mutations[0] !== 'dev-same' || !c.mustReject) continue;
      if (type === 'era') {
        assert.ok(upstreamLeniency(c));
        found++;
      } else assert.equal(upstreamLeniency(c), undefined);
    }
  }
  assert.ok(found > 0);
});

test('table refusals are counted from dm-ioctl lines', () => {
  const lines = [
    'device-mapper: table: 253:4: era: Invalid block size (-EINVAL)',
    'device-mapper: ioctl: error adding target to table',
    'device-mapper: table: 253:4: ram1 too small for target: start=0, len=40000, dev_size=32768',
    'device-mapper: ioctl: unable to set up device queue for new table.',
  ];
  assert.equal(tableRefusals(lines), 2);
});
