/** Shared checks of the target codec tests. */
import assert from 'node:assert/strict';
import { TargetParamError, TargetParseError, type TargetCodec } from '../../src/targets';

/** `format(x)` gives exactly the kernel's text, and parsing that text gives `x` back. */
export function roundTrip<P, S>(codec: TargetCodec<P, S, P>, x: P, kernelText: string): void {
  assert.equal(codec.format(x), kernelText);
  assert.deepEqual(codec.parse(kernelText), x);
}

export const paramError = (code: string) => (e: unknown) => e instanceof TargetParamError && e.code === code;

export const parseError = (token?: string) => (e: unknown) =>
  e instanceof TargetParseError && (token === undefined || e.token === token);
