import * as path from 'node:path';

/** The checkout's top folder (dist/src/lab/ -> ../../..). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
/** Host-side cache of the VM lab: unpacked kernels, initramfs images, module trees, run folders. */
export const LAB_DIR = process.env['DMKIT_LAB_DIR'] ?? path.join(REPO_ROOT, '.lab');
/** The shared folder beside the checkout (debug kernels, reference material), when present. */
export const SHARED_DIR = process.env['DMKIT_SHARED_DIR'] ?? path.resolve(REPO_ROOT, '..', 'shared');
