/** File helpers for the local cloud's secrets: private files are 0600 in 0700 folders, written atomically. */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';

export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/**
 * Makes `dir` (created if absent) and everything under it private to its owner: folders 0700, files 0600 (group
 * and other bits removed, the owner's kept). mkdir's mode applies only to folders it creates, so a data folder
 * that already existed, or the files the emulators wrote into it under the process umask, stayed readable by
 * other users (issue 18 #11). Symbolic links are not followed.
 */
export function ensurePrivateTree(dir: string): void {
  ensurePrivateDir(dir);
  const walk = (path: string) => {
    const stat = lstatSync(path);
    if (stat.isSymbolicLink()) return;
    if (stat.isDirectory()) {
      if ((stat.mode & 0o777) !== 0o700) chmodSync(path, 0o700);
      for (const entry of readdirSync(path)) walk(join(path, entry));
    } else if ((stat.mode & 0o077) !== 0) {
      chmodSync(path, stat.mode & 0o600);
    }
  };
  walk(dir);
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
