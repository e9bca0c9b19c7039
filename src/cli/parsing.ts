/**
 * The `parsed` field of `table --json` and `status --json`: the typed parse from src/targets for the
 * types it knows. A parse failure never fails the command; it becomes `parseError` beside the raw text.
 */
import { codecFor } from '../targets';
import type { Json } from './output';
import { toJson } from './output';

export interface ParsedField {
  [key: string]: Json;
  parsed: Json;
}

type Parser = (type: string, text: string) => unknown;

const tableParser: Parser = (type, text) => codecFor(type)?.parse(text);
const statusParser: Parser = (type, text) => codecFor(type)?.parseStatus(text);

function field(parser: Parser, type: string, text: string): ParsedField {
  try {
    const value = parser(type, text);
    return { parsed: value === undefined ? null : toJson(value) };
  } catch (e) {
    return { parsed: null, parseError: e instanceof Error ? e.message : String(e) };
  }
}

export const parseTableField = (type: string, params: string): ParsedField => field(tableParser, type, params);
export const parseStatusField = (type: string, status: string): ParsedField => field(statusParser, type, status);
