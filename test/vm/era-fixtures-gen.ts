/**
 * Writes the era metadata fixtures of test/fixtures/era/ (not a test: run once in the VM lab,
 *   npm run vm -- node dist/test/vm/era-fixtures-gen.js --generate > out.jsonl
 * then `node dist/test/vm/era-fixtures-gen.js --save out.jsonl` on the host). For the in-tree era and
 * dmkit-era: stamped writes over four eras, a metadata snapshot taken, more writes, and a copy of the
 * metadata device while the snapshot is held and the device suspended ("held"); then the device removed cleanly and another copy
 * ("clean"). Each line of output is {name, image (gzip, base64), model} where model lists, per era N,
 * the blocks written in era N or later at the snapshot and at the end.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { Scope } from '../../src/testing';
import { sh } from '../../src/testing/devices';
import { createEra, ERA_TYPES, eraStatus, EraModel, eraRigs, message, randomBlocks, rng, skipUnless, writeBlocks } from '../../src/testing/era-fixtures';

function image(meta: string): string {
  const bytes = Buffer.from(sh('sh', '-c', `dd if=${meta} bs=1M iflag=direct status=none | base64 -w0`), 'base64');
  return zlib.gzipSync(bytes, { level: 9 }).toString('base64');
}

const writtenSince = (m: EraModel, upTo: number): Record<number, number[]> => Object.fromEntries(Array.from({ length: upTo + 1 }, (_, n) => [n, n === 0 ? [] : m.writtenSince(n)]));

function generate(): void {
  for (const type of ERA_TYPES) {
    if (skipUnless(type)) continue;
    const scope = new Scope();
    try {
      const [rig] = eraRigs(scope, 1, 4, 1, 'erfx');
      const bs = 8; // 4 KiB blocks: 1024 of them
      const model = new EraModel(rig!.originSectors / bs, bs);
      const dev = createEra(scope, `erfx-${type}`, type, rig!, bs);
      const rand = rng(type === 'era' ? 501 : 502);
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 30), 1, 1);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, Array.from({ length: 100 }, (_, i) => 200 + i), 2, 2);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 20).concat([1023]), 3, 3);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, [5, 6, 7], 4, 4);
      message(dev.name, 'take_metadata_snap'); // era 5 begins
      const atSnapshot = writtenSince(model, 6);
      writeBlocks(dev.path, model, [0, 512], 5, 5);
      message(dev.name, 'checkpoint'); // commits era 5's marks in the live roots
      // Suspended, the worker is stopped and the metadata committed: the copy is one transaction.
      sh('dmsetup', 'suspend', dev.name);
      const held = image(rig!.meta);
      sh('dmsetup', 'resume', dev.name);
      message(dev.name, 'drop_metadata_snap');
      const last = eraStatus(dev.name).era; // a resume may have started an era
      writeBlocks(dev.path, model, [9], last, 6);
      dev.remove();
      const clean = image(rig!.meta);
      const atEnd = writtenSince(model, last + 1);
      const tag = type === 'era' ? 'intree' : 'dmkit';
      console.log(JSON.stringify({ name: `${tag}-held`, image: held, model: { snapshot: atSnapshot } }));
      console.log(JSON.stringify({ name: `${tag}-clean`, image: clean, model: { live: atEnd } }));
    } finally {
      scope.close();
    }
  }
}

/** Host side: turns the guest's output lines into test/fixtures/era/<name>.bin.gz and <name>.json. */
function save(file: string): void {
  const dir = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'era');
  fs.mkdirSync(dir, { recursive: true });
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const f = JSON.parse(line) as { name: string; image: string; model: unknown };
    fs.writeFileSync(path.join(dir, `${f.name}.bin.gz`), Buffer.from(f.image, 'base64'));
    fs.writeFileSync(path.join(dir, `${f.name}.json`), `${JSON.stringify(f.model)}\n`);
    console.log(`saved ${f.name}`);
  }
}

if (process.argv[2] === '--save') save(process.argv[3]!);
else if (process.argv[2] === '--generate') generate();
else console.error('usage: era-fixtures-gen.js --generate (in the VM lab) | --save OUT.jsonl (on the host)');
