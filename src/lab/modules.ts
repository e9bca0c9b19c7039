/**
 * Builds the dmkit modules for the kernel that boots and lays out a guest module tree: the kernel's own
 * modules (through a symlink), ours in updates/dmkit/, and modules.dep from the host's depmod, so that
 * `modprobe dmkit-core` in the guest resolves dm-persistent-data and friends without a slow guest depmod.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Kernel } from './kernels';
import { LAB_DIR, REPO_ROOT } from './paths';
import { run } from './proc';

export interface ModuleTree {
  /** Host folder to bind-mount over /lib/modules/<release> in the guest. */
  dir: string;
  /** Module names to load at boot (dmkit-core, ...). */
  modules: string[];
  /** The kmod output folder. */
  buildOut: string;
}

/**
 * `make -C kmod KNOBS=1` for this kernel and revert set; returns the output folder. The lab always boots
 * test builds: their test-only module parameters (kmod/include/dmkit-common.h) read 0 unless a test sets
 * them, so they behave as release builds do.
 */
export function buildModules(kernel: Kernel, reverts: readonly string[] = []): string {
  const args = ['-s', '-C', path.join(REPO_ROOT, 'kmod'), `KDIR=${kernel.buildDir}`, 'KNOBS=1'];
  if (reverts.length) args.push(`REVERT=${reverts.join(',')}`);
  try {
    run('make', args);
  } catch (e) {
    throw new Error(`building the dmkit modules for ${kernel.release} failed: ${(e as Error).message}`);
  }
  return run('make', [...args, 'print-out']).trim();
}

function findKos(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ko'))
    .map((f) => path.join(dir, f))
    .sort();
}

export function prepareModuleTree(kernel: Kernel, reverts: readonly string[] = []): ModuleTree {
  const buildOut = buildModules(kernel, reverts);
  const kos = findKos(buildOut);
  const sig = createHash('sha256');
  sig.update(kernel.moduleDir);
  for (const ko of kos) sig.update(fs.readFileSync(ko));
  const tag = `${kernel.release}-${sig.digest('hex').slice(0, 16)}`;
  const root = path.join(LAB_DIR, 'modroot', tag);
  const dir = path.join(root, 'lib', 'modules', kernel.release);
  const modules = kos.map((ko) => path.basename(ko, '.ko'));
  if (fs.existsSync(path.join(dir, 'modules.dep'))) return { dir, modules, buildOut };

  const tmpRoot = `${root}.tmp-${process.pid}`;
  const tmpDir = path.join(tmpRoot, 'lib', 'modules', kernel.release);
  fs.rmSync(tmpRoot, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmpDir, 'updates', 'dmkit'), { recursive: true });
  fs.symlinkSync(path.join(kernel.moduleDir, 'kernel'), path.join(tmpDir, 'kernel'));
  for (const f of ['modules.builtin', 'modules.builtin.modinfo', 'modules.order']) {
    const src = path.join(kernel.moduleDir, f);
    if (fs.existsSync(src)) fs.copyFileSync(src, path.join(tmpDir, f));
  }
  for (const ko of kos) fs.copyFileSync(ko, path.join(tmpDir, 'updates', 'dmkit', path.basename(ko)));
  run('depmod', ['-b', tmpRoot, kernel.release]);
  fs.rmSync(root, { recursive: true, force: true });
  fs.renameSync(tmpRoot, root);
  return { dir, modules, buildOut };
}
