/**
 * Text and numbers a peer sends that the backend stores and operators later read. Free text is refused when it
 * holds characters a terminal or a viewer interprets rather than shows (C0/C1 controls such as ESC, DEL, bidi
 * overrides, lone surrogates), so a vehicle cannot paint a fake "completed OK" into `ota campaigns vehicles`.
 * Numbers are refused when DynamoDB cannot hold them (it answers 500 or dead-letters the message otherwise).
 */
import * as z from './zod.js';

/** C0 and C1 controls (incl. ESC, BEL, CSI), DEL, bidi embeddings/overrides/isolates, lone surrogates. */
export const UNSAFE_TEXT = /[\p{Cc}\u202A-\u202E\u2066-\u2069\p{Cs}]/u;
const UNSAFE_TEXT_GLOBAL = new RegExp(UNSAFE_TEXT.source, 'gu');

/** A string of at most `max` characters with no control or bidi characters. */
export function plainText(max: number) {
  return z.string().check(
    z.maxLength(max),
    z.refine(
      (s) => !UNSAFE_TEXT.test(s),
      'must not contain control characters (C0/C1, DEL) or bidi overrides',
    ),
  );
}

/** The text with every unsafe character replaced by a space: what a sender does to pass `plainText`. */
export function toPlainText(text: string): string {
  return text.replace(UNSAFE_TEXT_GLOBAL, ' ');
}

/** The text with every unsafe character shown as a visible escape (`\x1b`, `\u202e`), for printing. */
export function escapeUnsafe(text: string): string {
  return text.replace(UNSAFE_TEXT_GLOBAL, (c) => {
    const code = c.codePointAt(0)!;
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * DynamoDB numbers: 38 significant digits (a double never has more than 17) and magnitudes from 1e-130 to below
 * 1e126. Zero is fine; 5e-324 or 1e-131 are not.
 */
export const STORE_NUMBER_MIN_MAGNITUDE = 1e-130;
export const STORE_NUMBER_MAX_MAGNITUDE = 1e126;

export function isStorableNumber(n: number): boolean {
  const m = Math.abs(n);
  return (
    Number.isFinite(n) && (m === 0 || (m >= STORE_NUMBER_MIN_MAGNITUDE && m < STORE_NUMBER_MAX_MAGNITUDE))
  );
}

/** A number the store can hold (see isStorableNumber); the message says which range. */
export function storableNumber() {
  return z
    .number()
    .check(
      z.refine(
        isStorableNumber,
        `must be 0 or of magnitude between ${STORE_NUMBER_MIN_MAGNITUDE} and ${STORE_NUMBER_MAX_MAGNITUDE}`,
      ),
    );
}
