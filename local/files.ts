/** File helpers for the local cloud's secrets: private files are 0600 in 0700 folders, written atomically. */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Writes a file readable by its owner only; a reader never sees it half written. */
export function writePrivateFile(path: string, contents: string): void {
  ensurePrivateDir(dirname(path));
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`);
  writeFileSync(tmp, contents, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, path);
}

export function writePublicFile(path: string, contents: string): void {
  ensurePrivateDir(dirname(path));
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`);
  writeFileSync(tmp, contents, { mode: 0o644, flag: 'wx' });
  renameSync(tmp, path);
}

/** Reads a secret file, tightening its mode to 0600 if a copy or an editor loosened it. */
export function readPrivateFile(path: string): string {
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  return readFileSync(path, 'utf8');
}

export function readIfExists(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
}
