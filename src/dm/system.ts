/**
 * What DeviceMapper needs from the system besides the control device: the filesystem for /dev/mapper
 * nodes, SysV semaphores for udev cookies and a way to see whether udev runs. DeviceMapper.open()
 * supplies the native one; tests pass fakes.
 */
import { existsSync } from 'node:fs';
import { loadNative, type DmSysBinding } from './native';
import { nativeNodeFs, type NodeFs } from './nodes';
import type { SemaphoreOps } from './udev';

export interface DmSystem {
  readonly nodeFs: NodeFs;
  readonly semaphores: SemaphoreOps;
  /** Whether a path exists (/run/udev/control tells that udev runs). */
  exists(path: string): boolean;
}

export function nativeSystem(sys: DmSysBinding = loadNative()): DmSystem {
  return { nodeFs: nativeNodeFs(sys), semaphores: sys, exists: existsSync };
}
