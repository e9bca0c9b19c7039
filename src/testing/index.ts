export * from './devices';
export * from './patterns';
export * from './checkers';

/** True inside the dmkit VM lab (scripts/guest/stage2 sets it). */
export const IN_VM = process.env['DMKIT_IN_VM'] === '1';
export * from './direct-io';
export * from './random';
export * from './clone-model';
