export * from './injector';
export * from './driver';
export { MetaRig } from './rig';
