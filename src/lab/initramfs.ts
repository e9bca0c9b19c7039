/**
 * The stage-1 initramfs: busybox-static, scripts/guest/init and the virtio/9p/overlay modules this kernel
 * has as modules (a kernel with them built in, like the debug kernel, gets none). Cached per content.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Kernel } from './kernels';
import { LAB_DIR, REPO_ROOT } from './paths';
import { run } from './proc';

/** Load order matters: each needs the ones before it. */
export const BOOT_MODULES = [
  'virtio_ring', 'virtio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci',
  '9pnet', '9pnet_virtio', 'netfs', 'fscache', '9p', 'overlay',
] as const;

const BUSYBOX = '/bin/busybox';

function moduleFiles(kernel: Kernel): Map<string, string> {
  const want = new Set<string>(BOOT_MODULES);
  const found = new Map<string, string>();
  const base = path.join(kernel.moduleDir, 'kernel');
  if (!fs.existsSync(base)) return found;
  for (const rel of fs.readdirSync(base, { recursive: true, encoding: 'utf8' })) {
    const name = path.basename(rel).replace(/\.ko$/, '');
    if (rel.endsWith('.ko') && want.has(name)) found.set(name, path.join(base, rel));
  }
  return found;
}

export function buildInitramfs(kernel: Kernel): string {
  if (!fs.existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} missing: apt-get install busybox-static`);
  const init = path.join(REPO_ROOT, 'scripts', 'guest', 'init');
  const mods = moduleFiles(kernel);
  const h = createHash('sha256').update(fs.readFileSync(init)).update(kernel.release);
  for (const [name, file] of mods) h.update(name).update(String(fs.statSync(file).size));
  const out = path.join(LAB_DIR, 'initramfs', `${kernel.release}-${h.digest('hex').slice(0, 16)}.cpio.gz`);
  if (fs.existsSync(out)) return out;

  const tmp = fs.mkdtempSync(path.join(LAB_DIR, 'initramfs-build-'));
  try {
    for (const d of ['bin', 'dev', 'proc', 'sys', 'lib/modules']) fs.mkdirSync(path.join(tmp, d), { recursive: true });
    fs.copyFileSync(BUSYBOX, path.join(tmp, 'bin', 'busybox'));
    fs.chmodSync(path.join(tmp, 'bin', 'busybox'), 0o755);
    fs.copyFileSync(init, path.join(tmp, 'init'));
    fs.chmodSync(path.join(tmp, 'init'), 0o755);
    for (const [name, file] of mods) fs.copyFileSync(file, path.join(tmp, 'lib', 'modules', `${name}.ko`));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    run('sh', ['-c', `cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2.tmp" && mv "$2.tmp" "$2"`, 'sh', tmp, out]);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return out;
}
