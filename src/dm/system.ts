/**
 * What DeviceMapper needs from the system besides the control device: the filesystem for /dev/mapper
 * nodes, SysV semaphores for udev cookies and a way to see whether udev runs. DeviceMapper.open()
 * supplies the native one; tests pass fakes.
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadNative, type DmSysBinding } from './native';
import { nativeNodeFs, type NodeFs } from './nodes';
import type { SemaphoreOps } from './udev';

export interface DmSystem {
  readonly nodeFs: NodeFs;
  readonly semaphores: SemaphoreOps;
  /** Whether a path exists (/run/udev/control tells that udev runs). */
  exists(path: string): boolean;
  /** The id of the SysV semaphore with this key (a caller's udev cookie), undefined when there is none. */
  findSemaphore?(key: number): number | undefined;
}

/** Looks a semaphore key up in /proc/sysvipc/sem (columns named by its header line). */
export function semaphoreIdByKey(key: number, procText: string): number | undefined {
  const [head, ...rows] = procText.trim().split('\n');
  const cols = (head ?? '').trim().split(/\s+/);
  const keyCol = cols.indexOf('key');
  const idCol = cols.indexOf('semid');
  if (keyCol < 0 || idCol < 0) return undefined;
  for (const row of rows) {
    const f = row.trim().split(/\s+/);
    if (Number(f[keyCol]) >>> 0 === key >>> 0) return Number(f[idCol]);
  }
  return undefined;
}

export function nativeSystem(sys: DmSysBinding = loadNative()): DmSystem {
  return {
    nodeFs: nativeNodeFs(sys),
    semaphores: sys,
    exists: existsSync,
    findSemaphore: (key) => semaphoreIdByKey(key, readFileSync('/proc/sysvipc/sem', 'utf8')),
  };
}
