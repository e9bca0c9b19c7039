/** Typed table builders, table parsers and status parsers for device-mapper targets. */
export {
  TargetParamError,
  TargetParseError,
  type TargetParamCode,
  type TargetParseErrorDetails,
} from './errors';
export { Tokens } from './tokens';
export {
  defineCodec,
  type CodecSpec,
  type EmptyStatus,
  type ErrorStatus,
  type FailStatus,
  type LinePlacement,
  type MetadataUsage,
  type TargetCodec,
} from './codec';
export * from './linear';
export * from './flakey';
export * from './log-writes';
export * from './era';
export * from './clone';
export * from './cache';
export * from './snapshot-origin';
export * from './snapshot';
export * from './snapshot-merge';
export * from './thin-pool';
export * from './thin';
export * from './registry';
