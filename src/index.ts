/** dmkit's public API: the device-mapper control plane, typed target tables and statuses, and units. */
export * from './dm';
export * from './targets';
export * from './units';
