/**
 * The local cloud's stand-ins for two pieces of IoT Core state, each a folder of empty files named by id in the CA
 * folder, written by registry-api's issuer and read by the local MQTT broker, plain files because the writer (a
 * handler module) and the reader (the broker) share nothing else:
 * - the certificate revocation list (certificate ids, the lowercase hex SHA-256 fingerprints
 *   LocalCaCertificateIssuer answers): the broker refuses a revoked certificate on every connection and publish, as
 *   IoT Core refuses a REVOKED certificate;
 * - the members of the vehicles thing group (thing names = VINs): the vehicle policy reaches a thing only through
 *   that group, as on AWS, so the broker admits a certificate only when its thing is a member.
 */
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A set of ids kept as one empty file per id in a folder. Adding is creating a file, so concurrent writers (several
 * function instances registering at once) never lose each other's ids, as a read-modify-write of one shared list
 * did (a fleet registered 200 vehicles at once and five were missing from the group after a broker restart).
 */
class FileIdSet {
  readonly dir: string;

  constructor(caDir: string, folderName: string) {
    this.dir = join(caDir, folderName);
  }

  /** Every id in the set. */
  ids(): ReadonlySet<string> {
    try {
      return new Set(readdirSync(this.dir).filter((name) => /^[0-9a-z]+$/.test(name)));
    } catch {
      return new Set();
    }
  }

  has(id: string): boolean {
    const name = id.toLowerCase();
    if (!/^[0-9a-z]+$/.test(name)) return false;
    try {
      return statSync(join(this.dir, name)).isFile();
    } catch {
      return false;
    }
  }

  /** Adds an id (idempotent). Ids are hex fingerprints or VINs: letters and digits only, never a path. */
  add(id: string): void {
    const name = id.toLowerCase();
    if (!/^[0-9a-z]+$/.test(name)) throw new Error(`not an id: ${JSON.stringify(id)}`);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(this.dir, name), '', { mode: 0o600 });
  }
}

export class RevocationList extends FileIdSet {
  constructor(caDir: string) {
    super(caDir, 'revoked-certificates');
  }
}

/** The thing group the vehicle policy is attached to, locally (see the file comment). */
export class ThingGroupMembers extends FileIdSet {
  constructor(caDir: string) {
    super(caDir, 'thing-group-vehicles');
  }
}
