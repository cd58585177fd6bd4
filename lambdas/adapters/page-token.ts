/**
 * Opaque page tokens: DynamoDB's LastEvaluatedKey as base64url JSON. A token is checked against the listing it is
 * presented to (its key attributes, and the partition the listing reads) before it becomes an ExclusiveStartKey:
 * DynamoDB would answer a foreign or forged key with a ValidationException, which must be the caller's 400, not a 500.
 */
import { BadRequestError } from '../core/errors.js';

export function encodePageToken(key: Record<string, unknown> | undefined): string | undefined {
  return key ? Buffer.from(JSON.stringify(key)).toString('base64url') : undefined;
}

/**
 * @param attributes the key attributes this listing's keys have (table key, plus the index key for a Query on an
 * index), all strings
 * @param fixed attributes whose value the listing fixes (the partition it reads)
 */
export function decodePageToken(
  token: string | undefined,
  attributes: readonly string[],
  fixed: Readonly<Record<string, string>> = {},
): Record<string, string> | undefined {
  if (token === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  const key = value as Record<string, unknown> | undefined;
  const valid =
    typeof key === 'object' &&
    key !== null &&
    !Array.isArray(key) &&
    Object.keys(key).length === attributes.length &&
    attributes.every((a) => typeof key[a] === 'string' && (key[a] as string).length <= 1024) &&
    Object.entries(fixed).every(([a, v]) => key[a] === v);
  if (!valid) throw new BadRequestError('invalid_next_token', 'next_token is not a token from this listing');
  return key as Record<string, string>;
}
