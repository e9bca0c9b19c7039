/**
 * The npm package: what the tarball holds, and that it installs on this machine the way a user installs
 * it (npm pack, then `npm install ./dmkit-<v>.tgz` in an empty folder: the install script builds the addon
 * with node-gyp against the system's Node headers; only the registry is reached, for yargs and
 * node-addon-api). Also dmkit(8) up to date with the commands, and `dmkit modules` refusing cleanly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { manPage } from '../../src/cli/manpage';
import { CliError } from '../../src/cli/errors';
import { DKMS_PACKAGE, dkmsConfVersion, kernelSeries, modulesInstall, modulesRemove, parseDkmsStatus, resolveKernelTarget, type Runner } from '../../src/cli/dkms';
import { runCli } from '../../src/cli/cli';
import type { Runtime } from '../../src/cli/runtime';

const ROOT = path.resolve(__dirname, '../../..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown> & { version: string; files: string[]; scripts: Record<string, string> };

function tmpdir(t: { after: (fn: () => void) => void }, tag: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `dmkit-${tag}-`));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function sh(cmd: string, args: string[], cwd: string): { status: number | null; stdout: string; stderr: string } {
  // JOBS: node-gyp compiles the addon's sources in parallel.
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false', JOBS: 'max' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('package.json: publishable, with a files list, types, man page and a prepack that compiles', () => {
  assert.equal(pkg['private'], undefined, 'not private');
  assert.equal(pkg['license'], 'GPL-2.0-only');
  assert.match(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /GNU GENERAL PUBLIC LICENSE\s+Version 2, June 1991/);
  for (const f of ['dist/src/', 'native/', 'binding.gyp', 'bin/', 'scripts/build-native.js', 'man/', 'README.md', 'LICENSE', 'kmod/dkms.conf']) {
    assert.ok(pkg.files.includes(f), `files lists ${f}`);
  }
  assert.equal(pkg['types'], 'dist/src/index.d.ts');
  assert.match(pkg.scripts['prepack'] ?? '', /tsc -p \./);
  assert.equal(pkg.scripts['install'], 'node scripts/build-native.js');
  assert.equal(dkmsConfVersion(fs.readFileSync(path.join(ROOT, 'kmod', 'dkms.conf'), 'utf8')), pkg.version, 'kmod/dkms.conf PACKAGE_VERSION = package version');
});

test('man/dmkit.8 is what src/cli/manpage.ts generates from the commands (run npm run man)', () => {
  const page = manPage();
  assert.equal(fs.readFileSync(path.join(ROOT, 'man', 'dmkit.8'), 'utf8'), page);
  for (const c of ['create [name] [file]', 'era checkpoint [name]', 'clone hydrate <source> <dest>', 'modules install', 'completion']) {
    assert.ok(page.includes(`.SS "dmkit ${c.replace(/-/g, '\\-')}"`), `section for dmkit ${c}`);
  }
  assert.match(page, /\.B \\-\\-block\\-size\n/);
});

function fakeRuntime(uid = 0): { runtime: Runtime; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const runtime: Runtime = {
    openDm: () => {
      throw new Error('no device-mapper in this test');
    },
    stdout: (t) => void out.push(t),
    stderr: (t) => void err.push(t),
    uid,
    env: {},
    readFile: async () => '',
    readStdin: async () => undefined,
    blockDeviceSectors: async () => {
      throw new Error('unused');
    },
  };
  return { runtime, out, err };
}

test('dmkit completion prints the bash completion script; completions list commands and subcommands', async () => {
  const a = fakeRuntime();
  assert.equal(await runCli(['completion'], a.runtime), 0);
  assert.match(a.out.join(''), /###-begin-dmkit-completions-###[\s\S]*--get-yargs-completions[\s\S]*###-end-dmkit-completions-###/);
  const b = fakeRuntime();
  assert.equal(await runCli(['--get-yargs-completions', 'dmkit', 'modules', ''], b.runtime), 0);
  assert.deepEqual(b.out.join('').trim().split('\n'), ['install', 'remove', 'status']);
});

/** A build tree that says it is kernel `release`, Linux `version`. */
function fakeBuildTree(dir: string, release: string, version: string): string {
  fs.mkdirSync(path.join(dir, 'include', 'generated'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'include', 'generated', 'utsrelease.h'), `#define UTS_RELEASE "${release}"\n`);
  fs.writeFileSync(path.join(dir, 'Makefile'), `kernelversion:\n\t@echo ${version}\n`);
  return dir;
}

test('dmkit modules install refuses a kernel whose series has no linux-source, before DKMS sees anything', (t) => {
  const dir = tmpdir(t, 'kver');
  const build = fakeBuildTree(path.join(dir, 'build'), '6.6.0-99-amd64', '6.6.13');
  const src = path.join(dir, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'linux-source-6.1.tar.xz'), '');
  const calls: string[][] = [];
  const fake: Runner = (program, args) => {
    calls.push([program, ...args]);
    return program === 'make' ? (spawnSync('make', [...args], { encoding: 'utf8' }) as never) : { status: 0, stdout: '', stderr: '' };
  };
  assert.throws(
    () => modulesInstall({ release: '6.6.0-99-amd64', buildDir: build, srcDir: src }, fake),
    (e: unknown) => e instanceof CliError && e.code === 'ERR_NO_LINUX_SOURCE' && /linux-source-6\.6/.test(e.message) && /never builds against/.test(e.message),
  );
  assert.deepEqual(calls.filter((c) => c[0] === 'dkms'), [], 'dkms never ran');
  // The same kernel with its series' source present resolves.
  fs.writeFileSync(path.join(src, 'linux-source-6.6.tar.xz'), '');
  const k = resolveKernelTarget({ release: '6.6.0-99-amd64', buildDir: build, srcDir: src }, fake);
  assert.deepEqual([k.version, k.series, k.sourceTarball], ['6.6.13', '6.6', path.join(src, 'linux-source-6.6.tar.xz')]);
  // A build tree of another release is refused too.
  assert.throws(() => resolveKernelTarget({ release: '6.6.0-98-amd64', buildDir: build, srcDir: src }, fake), /is for kernel 6\.6\.0-99-amd64/);
  assert.equal(kernelSeries('6.1.0-57-amd64'), '6.1');
  assert.throws(() => kernelSeries('garbage'), CliError);
});

test('dmkit modules install/remove drive dkms add, build, install, remove once each, with the given trees', (t) => {
  const dir = tmpdir(t, 'dkmsfake');
  const build = fakeBuildTree(path.join(dir, 'build'), '6.1.0-57-amd64', '6.1.158');
  fs.writeFileSync(path.join(dir, 'linux-source-6.1.tar.xz'), '');
  let state = '';
  const calls: string[] = [];
  const fake: Runner = (program, args) => {
    if (program === 'make') return { status: 0, stdout: '6.1.158\n', stderr: '' };
    calls.push(args.join(' '));
    const [verb] = args;
    if (verb === 'add') state = `${DKMS_PACKAGE}/${pkg.version}: added`;
    if (verb === 'build') state = `${DKMS_PACKAGE}/${pkg.version}, 6.1.0-57-amd64, x86_64: built`;
    if (verb === 'install') state = `${DKMS_PACKAGE}/${pkg.version}, 6.1.0-57-amd64, x86_64: installed`;
    if (verb === 'remove') state = '';
    return { status: 0, stdout: verb === 'status' ? `${state}\n` : '', stderr: '' };
  };
  const trees = { dkmsTree: '/x/dkms', sourceTree: '/x/src' };
  const r = modulesInstall({ ...trees, release: '6.1.0-57-amd64', buildDir: build, srcDir: dir, noDepmod: true }, fake);
  assert.deepEqual(r.steps, ['added', 'built', 'installed']);
  const acts = calls.filter((c) => !c.startsWith('status'));
  assert.equal(acts.length, 3);
  assert.match(acts[0]!, new RegExp(`^add ${ROOT}/kmod --dkmstree /x/dkms --sourcetree /x/src$`));
  assert.equal(acts[1], `build -m dmkit -v ${pkg.version} -k 6.1.0-57-amd64 --kernelsourcedir ${build} --dkmstree /x/dkms --sourcetree /x/src`);
  assert.equal(acts[2], `install -m dmkit -v ${pkg.version} -k 6.1.0-57-amd64 --kernelsourcedir ${build} --dkmstree /x/dkms --sourcetree /x/src --no-depmod`);
  // Again: nothing left to do.
  calls.length = 0;
  assert.deepEqual(modulesInstall({ ...trees, release: '6.1.0-57-amd64', buildDir: build, srcDir: dir }, fake).steps, []);
  assert.deepEqual(calls.filter((c) => !c.startsWith('status')), []);
  const removed = modulesRemove(trees, fake);
  assert.equal(removed.removed.length, 1);
  assert.deepEqual(removed.entries, []);
  assert.equal(calls.at(-2), `remove -m dmkit -v ${pkg.version} --all --dkmstree /x/dkms --sourcetree /x/src`);
  assert.deepEqual(modulesRemove(trees, fake).removed, [], 'removing twice is a no-op');
});

test('dkms status lines are parsed; other packages are ignored', () => {
  assert.deepEqual(
    parseDkmsStatus('dmkit/0.1.0, 6.1.0-57-amd64, x86_64: installed\nzfs/2.1.11, 6.1.0-57-amd64, x86_64: installed\ndmkit/0.2.0: added\n'),
    [
      { version: '0.1.0', kernel: '6.1.0-57-amd64', arch: 'x86_64', state: 'installed' },
      { version: '0.2.0', state: 'added' },
    ],
  );
});

test('dmkit modules install needs root and says so', async () => {
  const a = fakeRuntime(1000);
  assert.equal(await runCli(['modules', 'install'], a.runtime), 3);
  assert.match(a.err.join(''), /modules install needs root/);
});

test('npm pack, then npm install ./dmkit-<v>.tgz in an empty folder: the addon builds, the CLI and the API load', { timeout: 240_000 }, (t) => {
  const dir = tmpdir(t, 'pack');
  const packed = sh('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--loglevel=error'], ROOT);
  assert.equal(packed.status, 0, packed.stderr);
  const tgz = path.join(dir, `dmkit-${pkg.version}.tgz`);
  assert.ok(fs.existsSync(tgz), `${tgz} written`);
  const list = sh('tar', ['tzf', tgz], dir).stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'binding.gyp', 'native/addon.cc', 'bin/dmkit', 'kmod/dkms.conf', 'kmod/Makefile', 'kmod/era/era-target.c', 'kmod/era/Kbuild', 'scripts/build-native.js', 'man/dmkit.8', 'LICENSE', 'README.md']) {
    assert.ok(list.includes(f), `the tarball holds ${f}`);
  }
  const strays = list.filter((f) => /(^|\/)(test|\.lab|\.kbuild|build|node_modules)\//.test(f) || /\.(ko|o|node)$/.test(f) || f.startsWith('src/'));
  assert.deepEqual(strays, [], 'no tests, build output or TypeScript sources in the tarball');

  const app = path.join(dir, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), '{"name":"app","version":"1.0.0","private":true}\n');
  const inst = sh('npm', ['install', tgz, '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], app);
  assert.equal(inst.status, 0, `npm install: ${inst.stderr}`);
  const addon = path.join(app, 'node_modules', 'dmkit', 'build', 'Release', 'dmkit.node');
  assert.ok(fs.existsSync(addon), 'the install script built the addon in the installed package');

  const help = sh('npx', ['--no-install', 'dmkit', '--help'], app);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^dmkit <command> \[options\]/);
  assert.match(help.stdout, /dmkit modules/);

  const ver = sh('npx', ['--no-install', 'dmkit', 'version', '--json'], app);
  if (fs.existsSync('/sys/class/misc/device-mapper') && process.getuid?.() === 0) {
    assert.equal(ver.status, 0, ver.stderr);
    assert.equal((JSON.parse(ver.stdout) as { dmkit: string }).dmkit, pkg.version);
  } else {
    // This host has no device-mapper: the CLI ran and says why the driver's version is missing (exit 6,
    // no control node, as the README's exit-code table says; 3 when not root).
    assert.equal(ver.status, process.getuid?.() === 0 ? 6 : 3, ver.stderr);
    assert.match(ver.stderr, /^dmkit: version: (no device-mapper: \/dev\/mapper\/control cannot be opened|device-mapper needs root)/);
  }

  const req = sh('node', ['-e', "require('dmkit')"], app);
  assert.equal(req.status, 0, req.stderr);
  const api = sh('node', ['-e', "const d = require('dmkit'); const b = d.loadNative(); console.log(JSON.stringify({ addon: d.findAddon(), ioctl: typeof b.dmIoctl, sectors: String(d.sectors(8)) }))"], app);
  assert.equal(api.status, 0, api.stderr);
  const seen = JSON.parse(api.stdout) as { addon: string; ioctl: string; sectors: string };
  assert.equal(seen.addon, fs.realpathSync(addon), 'the API loads the addon built in the installed package');
  assert.equal(seen.ioctl, 'function');
  assert.equal(seen.sectors, '8');
});
