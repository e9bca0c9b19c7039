import { spawnSync, SpawnSyncOptions } from 'node:child_process';
import { PassThrough } from 'node:stream';

/** Runs a host command to completion; throws with its output when it fails. */
export function run(cmd: string, args: readonly string[], opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    const out = `${String(r.stdout ?? '')}${String(r.stderr ?? '')}`.trim();
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}${out ? `:\n${out}` : ''}`);
  }
  return String(r.stdout ?? '');
}

/** Quotes a word for a POSIX shell. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A stream that copies to `out` and keeps the text (for summaries of streamed runs). */
export function tee(out: NodeJS.WritableStream): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => {
    chunks.push(c);
    out.write(c);
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}
