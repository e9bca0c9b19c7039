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
const configured = fs.existsSync(path.join(root, 'build', 'config.gypi'));
const args = configured ? ['build'] : ['configure', 'build'];
const r = spawnSync(process.execPath, [gyp, ...args, `--nodedir=${nodedir}`, '--loglevel=warn'], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
