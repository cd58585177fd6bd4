/**
 * Reads the OEM release public keys for the stack from a file: either a JSON array of PEM strings, or a PEM file
 * holding one or more "PUBLIC KEY" blocks. Validation (ECDSA P-256 only) happens in OtaStack.
 */
import { readFileSync } from 'node:fs';

const PEM_BLOCK = /-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g;

export function parseReleasePublicKeys(text: string, source = 'release keys'): string[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    const parsed = JSON.parse(trimmed) as unknown;
    if (!Array.isArray(parsed) || !parsed.every((p) => typeof p === 'string')) {
      throw new Error(`${source}: a JSON release key file must be an array of PEM strings`);
    }
    return parsed;
  }
  const blocks = trimmed.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) {
    throw new Error(`${source}: expected a JSON array of PEM strings or PEM "PUBLIC KEY" blocks`);
  }
  return blocks.map((b) => `${b}\n`);
}

export function readReleasePublicKeys(path: string): string[] {
  return parseReleasePublicKeys(readFileSync(path, 'utf8'), path);
}
