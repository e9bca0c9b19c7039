export * from './abi';
export * from './dev-id';
export * from './device-mapper';
export * from './errors';
export * from './events';
export {
  findAddon,
  loadNative,
  type DmNativeBinding,
  type DmPollBinding,
  type DmSysBinding,
  type PollOutcome,
} from './native';
export * from './nodes';
export * from './payload';
export * from './system';
export * from './transport';
export * from './udev';
