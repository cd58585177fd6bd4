/**
 * The local cloud's stand-ins for two pieces of IoT Core state, each one JSON file (an array of ids) in the CA
 * folder, written by registry-api's issuer and read by the local MQTT broker, plain files because the writer (a
 * handler module) and the reader (the broker) share nothing else:
 * - the certificate revocation list (certificate ids, the lowercase hex SHA-256 fingerprints
 *   LocalCaCertificateIssuer answers): the broker refuses a revoked certificate on every connection and publish, as
 *   IoT Core refuses a REVOKED certificate;
 * - the members of the vehicles thing group (thing names = VINs): the vehicle policy reaches a thing only through
 *   that group, as on AWS, so the broker admits a certificate only when its thing is a member.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

class JsonIdSet {
  readonly file: string;
  private cache: { mtimeMs: number; size: number; ids: ReadonlySet<string> } | undefined;

  constructor(caDir: string, fileName: string) {
    this.file = join(caDir, fileName);
  }

  /** Certificate ids revoked so far; re-read only when the file changed. */
  ids(): ReadonlySet<string> {
    if (!existsSync(this.file)) return new Set();
    const st = statSync(this.file);
    if (this.cache?.mtimeMs !== st.mtimeMs || this.cache.size !== st.size) {
      const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as unknown;
      if (!Array.isArray(parsed) || !parsed.every((id) => typeof id === 'string')) {
        throw new Error(`${this.file} must be a JSON array of ids`);
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

export class RevocationList extends JsonIdSet {
  constructor(caDir: string) {
    super(caDir, 'revoked-certificates.json');
  }
}

/** The thing group the vehicle policy is attached to, locally (see the file comment). */
export class ThingGroupMembers extends JsonIdSet {
  constructor(caDir: string) {
    super(caDir, 'thing-group-vehicles.json');
  }
}
