/**
 * Runs a script against the addon in a child Node process, so an abort, a segfault or a hang is one
 * failed test with its output rather than a dead test runner. The child gets the addon's path in
 * DMKIT_ADDON (DMKIT_ADDON_OVERRIDE, when set, points every child at another build: the sanitized one).
 */
import { spawnSync } from 'node:child_process';
import { findAddon } from '../../src/dm/native';

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export function addonPath(): string {
  return process.env.DMKIT_ADDON_OVERRIDE || findAddon(__dirname);
}

export interface ChildOptions {
  timeoutMs?: number;
  input?: string;
  args?: string[];
  cwd?: string;
  env?: Record<string, string>;
}

export function runChild(script: string, opts: ChildOptions = {}): ChildResult {
  const r = spawnSync(process.execPath, ['--expose-gc', ...(opts.args ?? []), '-e', script], {
    env: { ...process.env, ...opts.env, DMKIT_ADDON: addonPath() },
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    input: opts.input ?? '',
    timeout: opts.timeoutMs ?? 20_000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 << 20,
    encoding: 'utf8',
  });
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  return { status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', timedOut };
}

/** A one-line account of how a child ended, for assertion messages. */
export function describeChild(r: ChildResult): string {
  const how = r.timedOut ? 'hung (killed after the timeout)' : r.signal ? `died of ${r.signal}` : `exited ${r.status}`;
  const tail = (s: string): string => s.trim().split('\n').slice(-8).join('\n');
  return `child ${how}\n--- stdout\n${tail(r.stdout)}\n--- stderr\n${tail(r.stderr)}`;
}
