/** Loads the dmkit addon (build/Release/dmkit.node) from the package root, wherever dist/ sits. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface DmNativeBinding {
  /** Opens /dev/mapper/control (creating the node from sysfs if missing); returns the fd. */
  dmControlOpen(): number;
  dmControlClose(fd: number): void;
  /** Runs _IOWR(0xfd, command, struct dm_ioctl) off the JS thread; resolves with the reply bytes. */
  dmIoctl(fd: number, command: number, buffer: Buffer): Promise<Buffer>;
}

const ADDON_PATHS = [join('build', 'Release', 'dmkit.node'), join('build', 'Debug', 'dmkit.node')];

/** Walks up from this file to the first directory holding a built addon. */
export function findAddon(start: string = __dirname): string {
  for (let dir = start; ; dir = dirname(dir)) {
    for (const rel of ADDON_PATHS) {
      const candidate = join(dir, rel);
      if (existsSync(candidate)) return candidate;
    }
    if (dirname(dir) === dir) throw new Error(`dmkit.node not found above ${start}; run node scripts/build-native.js`);
  }
}

function isBinding(m: unknown): m is DmNativeBinding {
  const b = m as Partial<Record<keyof DmNativeBinding, unknown>> | null;
  return (
    typeof b === 'object' &&
    b !== null &&
    typeof b.dmControlOpen === 'function' &&
    typeof b.dmControlClose === 'function' &&
    typeof b.dmIoctl === 'function'
  );
}

let cached: DmNativeBinding | undefined;

export function loadNative(): DmNativeBinding {
  if (cached) return cached;
  const path = findAddon();
  const m: unknown = require(path);
  if (!isBinding(m)) throw new Error(`${path} does not export the device-mapper functions; rebuild the addon`);
  cached = m;
  return m;
}
