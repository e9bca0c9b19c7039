/**
 * Which kernel the VM lab boots: Debian's installed 6.1 (default) or a kernel folder holding `bzImage`,
 * `RELEASE`, `build.tar.xz` (its module build tree) and `modules.tar.xz` (its module tree), such as the
 * KASAN/lockdep debug kernel in ../shared/kernels/6.1-dmdebug. Folders are unpacked once into the lab cache.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LAB_DIR, SHARED_DIR } from './paths';
import { run } from './proc';

export interface Kernel {
  /** `uname -r` of the booted kernel. */
  release: string;
  /** The image QEMU boots with -kernel. */
  image: string;
  /** Its external-module build tree (what `make -C kmod KDIR=` takes). */
  buildDir: string;
  /** Its own module tree, /lib/modules/<release> style. */
  moduleDir: string;
  /** 'debian', 'debug' or the folder it came from. */
  label: string;
}

export const DEBUG_KERNEL_DIR = path.join(SHARED_DIR, 'kernels', '6.1-dmdebug');

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

/** The newest installed Debian 6.1 kernel that has its headers. */
export function debianKernel(): Kernel {
  const releases = fs.existsSync('/boot')
    ? fs
        .readdirSync('/boot')
        .filter((f) => /^vmlinuz-6\.1\./.test(f))
        .map((f) => f.slice('vmlinuz-'.length))
        .filter((r) => fs.existsSync(`/lib/modules/${r}/build/include/generated/utsrelease.h`))
        .sort(compareVersions)
    : [];
  const release = releases.at(-1);
  if (!release) {
    throw new Error('no Debian 6.1 kernel with headers installed: run scripts/setup (linux-image-amd64, linux-headers-amd64)');
  }
  return {
    release,
    image: `/boot/vmlinuz-${release}`,
    buildDir: fs.realpathSync(`/lib/modules/${release}/build`),
    moduleDir: `/lib/modules/${release}`,
    label: 'debian',
  };
}

/** True when the shared debug kernel is present beside the checkout. */
export function debugKernelAvailable(): boolean {
  return ['bzImage', 'RELEASE', 'build.tar.xz', 'modules.tar.xz'].every((f) => fs.existsSync(path.join(DEBUG_KERNEL_DIR, f)));
}

function unpackOnce(tarball: string, into: string): void {
  const st = fs.statSync(tarball);
  const stamp = path.join(into, '.unpacked-from');
  const want = `${tarball} ${st.size} ${st.mtimeMs}`;
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === want) return;
  const tmp = `${into}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  run('tar', ['-xJf', tarball, '-C', tmp]);
  fs.writeFileSync(path.join(tmp, '.unpacked-from'), want);
  fs.rmSync(into, { recursive: true, force: true });
  fs.renameSync(tmp, into);
}

/** A kernel folder (bzImage, RELEASE, build.tar.xz, modules.tar.xz), unpacked into the lab cache. */
export function folderKernel(dir: string, label = dir): Kernel {
  const missing = ['bzImage', 'RELEASE', 'build.tar.xz', 'modules.tar.xz'].filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) throw new Error(`kernel folder ${dir} lacks ${missing.join(', ')}`);
  const release = fs.readFileSync(path.join(dir, 'RELEASE'), 'utf8').trim();
  const cache = path.join(LAB_DIR, 'kernels', release);
  unpackOnce(path.join(dir, 'build.tar.xz'), path.join(cache, 'build'));
  unpackOnce(path.join(dir, 'modules.tar.xz'), path.join(cache, 'modules'));
  return {
    release,
    image: path.join(dir, 'bzImage'),
    buildDir: path.join(cache, 'build'),
    moduleDir: path.join(cache, 'modules', release),
    label,
  };
}

/** Resolves `--kernel`/DMKIT_KERNEL: 'debian' (default), 'debug', or a kernel folder. */
export function resolveKernel(choice: string | undefined = process.env['DMKIT_KERNEL']): Kernel {
  if (!choice || choice === 'debian') return debianKernel();
  if (choice === 'debug') {
    if (!debugKernelAvailable()) throw new Error(`no debug kernel in ${DEBUG_KERNEL_DIR}`);
    return folderKernel(DEBUG_KERNEL_DIR, 'debug');
  }
  return folderKernel(path.resolve(choice));
}
