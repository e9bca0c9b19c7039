import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeSector, patternBuffer, stamp, verify, zero } from '../../src/testing/patterns';
import { bytes, sectors } from '../../src/units';

test('every sector of a pattern is distinct and self-describing', () => {
  const buf = patternBuffer(7, sectors(100), 4);
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) {
    seen.add(buf.subarray(i * 512, i * 512 + 512).toString('hex'));
    assert.equal(describeSector(buf, i * 512), `stamp of seed 7 sector ${100 + i}`);
  }
  assert.equal(seen.size, 4);
  assert.notDeepEqual(patternBuffer(8, sectors(100), 1), patternBuffer(7, sectors(100), 1));
});

test('stamp then verify passes; a stale, zeroed or garbage sector is reported', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-pattern-'));
  const file = path.join(dir, 'disk');
  try {
    fs.writeFileSync(file, Buffer.alloc(3 << 20));
    const ext = { start: sectors(0), length: sectors(6144) };
    stamp(file, ext, 1);
    assert.deepEqual(verify(file, ext, 1), []);
    stamp(file, { start: sectors(2050), length: sectors(1) }, 2);
    zero(file, bytes(512));
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(512, 0x5a), 0, 512, 4000 * 512);
    fs.closeSync(fd);
    assert.deepEqual(
      verify(file, ext, 1).map((m) => [m.sector, m.found]),
      [[0n, 'zero'], [2050n, 'stamp of seed 2 sector 2050'], [4000n, 'garbage']],
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
