/** Multi-step workflows built on the DeviceMapper API and the target codecs. */
export * from './clone-hydrate';
export * from './era-backup';
export * from './snapshot';
export * from './backup';
export * from './copy';
export * from './cache-attach';
