#!/usr/bin/env node
// Builds the node-addon-api addon with node-gyp, against the local Node headers (no download: the
// machines reach only the npm and Debian registries). Runs as the package's install script, so a plain
// `npm ci` yields a working addon without approving any dependency's scripts.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const gyp = require.resolve('node-gyp/bin/node-gyp.js', {
  paths: [
    root,
    ...(process.env.npm_execpath ? [path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules')] : []),
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules'),
  ],
});

function nodeHeadersDir() {
  const candidates = [process.env.npm_config_nodedir, path.resolve(path.dirname(process.execPath), '..')];
  return candidates.find((d) => d && fs.existsSync(path.join(d, 'include', 'node', 'node_api.h')));
}

const nodedir = nodeHeadersDir();
if (!nodedir) {
  console.error('build-native: Node headers not found (install libnode-dev or set npm_config_nodedir)');
  process.exit(1);
}
// --sanitize: the same addon with ASan+UBSan in build/sanitize/build/Release/dmkit.node, for the fuzz test
// (test/unit/native-fuzz.test.ts says how to run it: DMKIT_ADDON_OVERRIDE, LD_PRELOAD of libasan, ASAN_OPTIONS).
// node-gyp always builds into ./build of its working directory, so that build runs in build/sanitize/, which
// mirrors binding.gyp and native/ through symlinks.
const sanitize = process.argv.includes('--sanitize');
let cwd = root;
const gypArgs = [];
if (sanitize) {
  cwd = path.join(root, 'build', 'sanitize');
  fs.mkdirSync(cwd, { recursive: true });
  for (const name of ['binding.gyp', 'native']) {
    const link = path.join(cwd, name);
    if (!fs.existsSync(link)) fs.symlinkSync(path.join(root, name), link);
  }
  gypArgs.push('--', '-Ddmkit_sanitize=1');
}
const configured = fs.existsSync(path.join(cwd, 'build', 'config.gypi'));
const steps = configured ? [['build']] : [['configure', ...gypArgs], ['build']];
for (const step of steps) {
  const r = spawnSync(process.execPath, [gyp, step[0], `--nodedir=${nodedir}`, '--loglevel=warn', ...step.slice(1)], {
    cwd,
    stdio: 'inherit',
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
if (sanitize) console.log(`build-native: sanitized addon in ${path.join(cwd, 'build', 'Release', 'dmkit.node')}`);
// --tsc (npm run build): the TypeScript too, so `npm run build -- --sanitize` builds both.
if (process.argv.includes('--tsc')) {
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
  const r = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: root, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
