export * from './abi';
export * from './dev-id';
export * from './device-mapper';
export * from './errors';
export { loadNative, findAddon, type DmNativeBinding } from './native';
export * from './payload';
export * from './transport';
