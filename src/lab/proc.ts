import { spawnSync, SpawnSyncOptions } from 'node:child_process';

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
