/**
 * The local CA's certificate revocation list: one JSON file (an array of certificate ids, the lowercase hex SHA-256
 * fingerprints LocalCaCertificateIssuer answers) in the CA folder, written by the operator function's revoke and
 * read by the local MQTT broker on every connection and publish, as IoT Core refuses a REVOKED certificate. A
 * plain file because the writer (a handler module) and the reader (the broker) share nothing else.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class RevocationList {
  readonly file: string;
  private cache: { mtimeMs: number; size: number; ids: ReadonlySet<string> } | undefined;

  constructor(caDir: string) {
    this.file = join(caDir, 'revoked-certificates.json');
  }

  /** Certificate ids revoked so far; re-read only when the file changed. */
  ids(): ReadonlySet<string> {
    if (!existsSync(this.file)) return new Set();
    const st = statSync(this.file);
    if (this.cache?.mtimeMs !== st.mtimeMs || this.cache.size !== st.size) {
      const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as unknown;
      if (!Array.isArray(parsed) || !parsed.every((id) => typeof id === 'string')) {
        throw new Error(`${this.file} must be a JSON array of certificate ids`);
      }
      this.cache = { mtimeMs: st.mtimeMs, size: st.size, ids: new Set(parsed) };
    }
    return this.cache.ids;
  }

  has(certificateId: string): boolean {
    return this.ids().has(certificateId.toLowerCase());
  }

  /** Adds an id (idempotent); written to a temporary file and renamed, so a reader never sees half a list. */
  add(certificateId: string): void {
    const ids = new Set(this.ids());
    ids.add(certificateId.toLowerCase());
    const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    writeFileSync(tmp, `${JSON.stringify([...ids].sort(), null, 1)}\n`, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, this.file);
  }
}
