/**
 * Lab component 'fuzz': a table-line grammar fuzzer and a message fuzzer per target (in-tree and dmkit),
 * run in the VM. Mutated lines are loaded onto one table-less device per target and must be refused with
 * an errno (and a kernel log line), except mutations that may legitimately be accepted; mutated messages
 * go to one live device per target. A sentinel and the live devices must come out unharmed. See fuzz/.
 */
import type { Component } from './types';
import { runFuzz } from './fuzz/run';

export const component: Component = {
  name: 'fuzz',
  run: (ctx, only) => runFuzz(ctx, only),
};
