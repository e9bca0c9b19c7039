/**
 * The foundation in the kernel: the dmkit-core module was built for the booted kernel, loads with its
 * dependencies, creates a device that carries data, reports status, answers messages, runs its
 * persistent-data self-test, and refuses malformed tables with -EINVAL and one log line.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { blockChecksum, CHECKSUM_SALT } from '../../src/pdata/checksum';
import { spawnSync } from 'node:child_process';
import { flushBuffers, patternBuffer, ramdisks, Scope, stamp, verify } from '../../src/testing';
import { bytes, sectors } from '../../src/units';
import { createDevice, dmsetup, dmsetupStatus, kernelLogMark, kernelLogSince } from '../../src/testing/dmsetup';

const MiB = 1n << 20n;

describe('dmkit-core', () => {
  let scope: Scope;
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => scope.close());

  test('the module is built for the booted kernel and registered', () => {
    const targets = dmsetup('targets');
    assert.match(targets, /^dmkit-core\s+v0\.1\.0$/m);
    const vermagic = fs.readFileSync('/sys/module/dmkit_core/version', 'utf8').trim();
    assert.equal(vermagic, '0.1.0');
    const holders = fs.readdirSync('/sys/module/dm_persistent_data/holders');
    assert.ok(holders.includes('dmkit_core'), `dm_persistent_data holders: ${holders.join(',')}`);
  });

  test('a device maps data to its device at the given offset', () => {
    const [ram] = ramdisks(scope, 1, bytes(16n * MiB));
    const offset = 2048n;
    const length = ram!.sectors - offset;
    const dev = createDevice(scope, 'core-offset', `0 ${length} dmkit-core ${ram!.path} ${offset}`).path;
    const ext = { start: sectors(0), length: sectors(length) };
    stamp(dev, ext, 11);
    assert.deepEqual(verify(dev, ext, 11), []);
    flushBuffers(ram!.path);
    // Through the raw device the same data sits `offset` sectors further on, stamped with its dm sector.
    const raw = fs.openSync(ram!.path, 'r');
    const got = Buffer.alloc(512);
    fs.readSync(raw, got, 0, 512, Number(offset) * 512);
    fs.closeSync(raw);
    assert.equal(got.readBigUInt64LE(8), 0n, 'dm sector 0 lands at raw sector 2048');
    assert.equal(dmsetup('table', 'core-offset').trim(), `0 ${length} dmkit-core 1:0 ${offset}`);
  });

  test('status reports the version, kernel and build switches; messages answer', () => {
    const [ram] = ramdisks(scope, 1, bytes(16n * MiB));
    createDevice(scope, 'core-status', `0 ${ram!.sectors} dmkit-core ${ram!.path} 0`);
    assert.equal(dmsetup('status', 'core-status').trim(), `0 ${ram!.sectors} dmkit-core 0.1.0 ${os.release()} - - 0 0 off 0`);
    assert.equal(dmsetup('message', 'core-status', '0', 'ping').trim(), 'pong');

    // The kernel checksums a fixed block through dm-persistent-data; ours must agree with it.
    const block = Buffer.alloc(4096);
    for (let i = 0; i < block.length; i++) block[i] = (i * 7 + 3) & 0xff;
    const want = blockChecksum(block.subarray(4), CHECKSUM_SALT.eraSuperblock).toString(16).padStart(8, '0');
    assert.equal(dmsetup('message', 'core-status', '0', 'selftest').trim(), `pass ${want}`);
    assert.match(dmsetup('status', 'core-status'), / - pass \d+ \d+ off \d+$/m);
  });

  test('malformed tables and messages get EINVAL, one log line each, and leave nothing behind', () => {
    const [ram] = ramdisks(scope, 1, bytes(16n * MiB));
    const bad: Array<[string, RegExp]> = [
      [`${ram!.path}`, /Expected 2 arguments/],
      [`${ram!.path} 0 extra`, /Expected 2 arguments/],
      [`${ram!.path} abc`, /Invalid offset/],
      [`${ram!.path} 12x`, /Invalid offset/],
      [`${ram!.path} -1`, /Invalid offset/],
      [`/dev/does-not-exist 0`, /Device lookup failed/],
    ];
    for (const [args, why] of bad) {
      const mark = kernelLogMark();
      const r = dmsetupStatus('create', 'core-bad', '--table', `0 ${ram!.sectors} dmkit-core ${args}`);
      assert.notEqual(r.status, 0, `table '${args}' was accepted`);
      const lines = kernelLogSince(mark).filter((l) => /dmkit-core/.test(l));
      assert.equal(lines.length, 1, `one log line for '${args}', got:\n${lines.join('\n')}`);
      assert.match(lines[0]!, why);
      assert.match(lines[0]!, /-EINVAL|-ENODEV|-ENXIO|error -/);
      assert.equal(dmsetupStatus('info', 'core-bad').status === 0, false, 'no half-made device is left');
    }

    createDevice(scope, 'core-msg', `0 ${ram!.sectors} dmkit-core ${ram!.path} 0`);
    const mark = kernelLogMark();
    assert.notEqual(dmsetupStatus('message', 'core-msg', '0', 'frobnicate', 'now').status, 0);
    const lines = kernelLogSince(mark).filter((l) => /dmkit-core/.test(l));
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /unsupported message 'frobnicate' with 2 argument/);
  });

  test('the counting fault injector fails or drops exactly from the chosen write or flush on', () => {
    const [ram] = ramdisks(scope, 1, bytes(16n * MiB));
    const name = 'core-fault';
    const dev = createDevice(scope, name, `0 ${ram!.sectors} dmkit-core ${ram!.path} 0`).path;
    const counters = (): string[] => dmsetup('status', name).trim().split(/\s+/).slice(-4);
    const writeBlock = (block: number, seed: number, sync: boolean): number | null => {
      const r = spawnSync('dd', [`of=${dev}`, 'bs=4096', `seek=${block}`, 'count=1', 'oflag=direct', `conv=notrunc${sync ? ',fsync' : ''}`, 'status=none'], {
        input: patternBuffer(seed, sectors(BigInt(block * 8)), 8),
      });
      return r.status;
    };
    // brd has no write cache, yet flushes reach the target: the device advertises one.
    assert.equal(writeBlock(0, 1, true), 0);
    assert.deepEqual(counters(), ['1', '1', 'off', '0']);

    dmsetup('message', name, '0', 'fault', 'writes', '2', 'error');
    assert.equal(writeBlock(1, 2, false), 0);
    assert.equal(writeBlock(2, 2, false), 0);
    assert.notEqual(writeBlock(3, 2, false), 0, 'the third write after arming must fail');
    assert.notEqual(writeBlock(4, 2, false), 0, 'and every later one');
    assert.deepEqual(counters(), ['5', '1', 'tripped', '2']);
    const readBack = (block: number): Buffer => spawnSync('dd', [`if=${dev}`, 'bs=4096', `skip=${block}`, 'count=1', 'iflag=direct', 'status=none']).stdout;
    assert.equal(readBack(3).readUInt32LE(4), 0, 'a failed write leaves the block alone');

    dmsetup('message', name, '0', 'fault', 'flushes', '1', 'drop');
    assert.equal(writeBlock(5, 3, true), 0, 'the first flush passes');
    assert.equal(writeBlock(6, 3, true), 0, 'the write passes, the second flush trips and completes as dropped');
    assert.equal(writeBlock(7, 3, false), 0, 'a dropped write completes without error');
    assert.equal(readBack(6).readUInt32LE(4), 3);
    assert.equal(readBack(7).readUInt32LE(4), 0, 'a dropped write never reaches the device');
    dmsetup('message', name, '0', 'fault', 'off');
    assert.equal(writeBlock(8, 4, false), 0);
    assert.equal(readBack(8).readUInt32LE(4), 4);

    for (const words of [['fault'], ['fault', 'writes', '1'], ['fault', 'reads', '1', 'error'], ['fault', 'writes', '18446744073709551616', 'error'], ['fault', 'writes', '1x', 'drop'], ['fault', 'flushes', '1', 'explode'], ['fault', 'off', 'now']]) {
      const mark = kernelLogMark();
      assert.notEqual(dmsetupStatus('message', name, '0', ...words).status, 0, `'${words.join(' ')}' was accepted`);
      const lines = kernelLogSince(mark).filter((l) => /dmkit-core/.test(l));
      assert.equal(lines.length, 1, `one log line for '${words.join(' ')}', got:\n${lines.join('\n')}`);
    }
  });
});
