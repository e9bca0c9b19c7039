export * from './devices';
export * from './patterns';
export * from './checkers';

/** True inside the dmkit VM lab (scripts/guest/stage2 sets it). */
export const IN_VM = process.env['DMKIT_IN_VM'] === '1';
/**
 * `DMKIT_SCALE=release npm test` runs what CI's 60-minute budget leaves out (the in-tree targets as a
 * second subject of the dmkit suites, larger counts); CI runs the default.
 */
export const RELEASE_SCALE = process.env['DMKIT_SCALE'] === 'release';
export * from './direct-io';
export * from './random';
export * from './clone-model';
export * from './fio-iolog';
