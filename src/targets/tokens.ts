/**
 * A cursor over the whitespace-separated words of a table or status line. Every reader throws a
 * TargetParseError naming the offending word, so parsers never return half-read garbage.
 */
import { sectors, targetBlocks, type Sectors, type TargetBlocks } from '../units';
import { TargetParseError } from './errors';

const DECIMAL = /^[0-9]+$/;
export const U32_MAX = 0xffff_ffffn;
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

export class Tokens {
  private readonly words: readonly string[];
  private index = 0;

  constructor(
    readonly target: string,
    readonly input: string,
  ) {
    if (typeof input !== 'string') throw this.error('input is not a string', '');
    const trimmed = input.trim();
    // The kernel leaves a trailing space after some lines (thin-pool, flakey, cache status).
    this.words = trimmed === '' ? [] : trimmed.split(/\s+/);
  }

  get remaining(): number {
    return this.words.length - this.index;
  }

  peek(): string | undefined {
    return this.words[this.index];
  }

  error(reason: string, token: string, cause?: unknown): TargetParseError {
    return new TargetParseError(reason, { target: this.target, input: this.input, token, cause });
  }

  /** The next word; `what` names it in the error when the line ended early. */
  next(what: string): string {
    const word = this.words[this.index];
    if (word === undefined) throw this.error(`missing ${what}`, '');
    this.index++;
    return word;
  }

  /** A decimal integer in [0, max]; the kernel never prints signs, hex or spaces here. */
  uint(what: string, max: bigint = U64_MAX): bigint {
    const word = this.next(what);
    return this.decimal(word, what, max);
  }

  decimal(word: string, what: string, max: bigint = U64_MAX): bigint {
    if (!DECIMAL.test(word)) throw this.error(`${what} is not a decimal number`, word);
    const value = BigInt(word);
    if (value > max) throw this.error(`${what} exceeds ${max}`, word);
    return value;
  }

  /** A decimal that fits a JS number (u32 and smaller fields). */
  small(what: string, max: bigint = U32_MAX): number {
    return Number(this.uint(what, max));
  }

  sectors(what: string): Sectors {
    return sectors(this.uint(what));
  }

  blocks(what: string): TargetBlocks {
    return targetBlocks(this.uint(what));
  }

  /** `<a>/<b>`, as in used/total counts. */
  ratio(what: string): readonly [bigint, bigint] {
    const word = this.next(what);
    const slash = word.indexOf('/');
    if (slash < 0) throw this.error(`${what} is not of the form <used>/<total>`, word);
    return [this.decimal(word.slice(0, slash), what), this.decimal(word.slice(slash + 1), what)];
  }

  /** One of `allowed`, matched case-insensitively as the kernel's strcasecmp does. */
  keyword<T extends string>(what: string, allowed: readonly T[]): T {
    const word = this.next(what);
    const found = allowed.find((k) => k.toLowerCase() === word.toLowerCase());
    if (found === undefined) throw this.error(`unknown ${what} (expected ${allowed.join('|')})`, word);
    return found;
  }

  /** A device as the kernel prints it ("maj:min") or as a table names it (a path). */
  device(what: string): string {
    return this.next(what);
  }

  /** `<n>` followed by at least n words: the argument groups of dm_read_arg_group. */
  group(what: string, max: number): number {
    const word = this.next(`${what} count`);
    const count = Number(this.decimal(word, `${what} count`, BigInt(max)));
    if (count > this.remaining) throw this.error(`${what} count ${count} exceeds the remaining words`, word);
    return count;
  }

  /** `-` or a number, as used for "no held root" and "nothing mapped". */
  optionalUint(what: string): bigint | null {
    if (this.peek() === '-') {
      this.index++;
      return null;
    }
    return this.uint(what);
  }

  /** Consumes the rest of the line if it is exactly `words` (the kernel's "Fail", "Merge failed", ...). */
  takeExactly(...words: string[]): boolean {
    const rest = this.words.slice(this.index);
    if (rest.length !== words.length || rest.some((w, i) => w !== words[i])) return false;
    this.index = this.words.length;
    return true;
  }

  end(): void {
    const word = this.peek();
    if (word !== undefined) throw this.error('unexpected trailing words', word);
  }
}
