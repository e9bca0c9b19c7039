/**
 * Metadata checkers from thin-provisioning-tools: exit 0 = clean, 1 = damaged. Every kernel test ends by
 * running the one that matches its target's format.
 */
import { spawnSync } from 'node:child_process';

export type Checker = 'era_check' | 'cache_check' | 'thin_check';

export interface CheckResult {
  ok: boolean;
  status: number | null;
  output: string;
}

export function runChecker(checker: Checker, metadataDev: string, ...args: string[]): CheckResult {
  const r = spawnSync(checker, [...args, metadataDev], { encoding: 'utf8' });
  if (r.error) throw new Error(`${checker}: ${r.error.message}`);
  return { ok: r.status === 0, status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

/** Throws with the checker's report unless the metadata is clean. */
export function assertClean(checker: Checker, metadataDev: string, ...args: string[]): void {
  const r = runChecker(checker, metadataDev, ...args);
  if (!r.ok) throw new Error(`${checker} ${metadataDev} exited ${r.status}:\n${r.output}`);
}
