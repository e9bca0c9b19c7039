/** dmkit's public API: the device-mapper control plane, typed target tables and statuses, units and workflows. */
export * from './dm';
export * from './targets';
export * from './units';
export * from './workflows';
