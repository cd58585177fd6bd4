/**
 * Reading and checking a vehicle's CSR (PKCS#10) with node:crypto alone: a minimal DER walk finds the signed
 * request info, the public key, the signature and the subject's common names. This is what registration runs
 * before IoT Core signs a CSR; the X.509 library protocol/x509.ts uses for issuing (the local CA, the agent's CSR)
 * is about 175 KiB of a bundle and is not needed just to vet one.
 */
import { createPublicKey, type KeyObject, verify } from 'node:crypto';

/** A CSR or key that is not acceptable; the message is safe to show to the caller. */
export class CsrError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CsrError';
  }
}

export interface InspectedCsr {
  /** The subject's single common name, or undefined when the subject has none. */
  readonly commonName: string | undefined;
  /** The requested public key, SPKI PEM. */
  readonly publicKeyPem: string;
}

/** One DER element: its tag, and where its whole encoding and its content lie in the buffer. */
interface Der {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

const SEQUENCE = 0x30;
const SET = 0x31;
const OID = 0x06;
const BIT_STRING = 0x03;
/** 2.5.4.3, commonName. */
const CN_OID = Buffer.from([0x55, 0x04, 0x03]);
/** ecdsa-with-SHA256/384/512 (1.2.840.10045.4.3.2-4) and the hash each names. */
const ECDSA_HASHES = new Map([
  ['2a8648ce3d040302', 'sha256'],
  ['2a8648ce3d040303', 'sha384'],
  ['2a8648ce3d040304', 'sha512'],
]);

function fail(what: string): never {
  throw new CsrError(`not a readable PKCS#10 certificate request (${what})`);
}

/** The element at `at`, which must end by `limit`. Definite lengths only, as DER requires. */
function element(buf: Buffer, at: number, limit: number): Der {
  if (at + 2 > limit) fail('truncated');
  const tag = buf[at]!;
  let length = buf[at + 1]!;
  let contentStart = at + 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    if (bytes < 1 || bytes > 3 || contentStart + bytes > limit) fail('bad length');
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + buf[contentStart + i]!;
    contentStart += bytes;
  }
  const end = contentStart + length;
  if (end > limit) fail('truncated');
  return { tag, start: at, contentStart, end };
}

/** The elements directly inside a constructed element. */
function children(buf: Buffer, parent: Der): Der[] {
  const out: Der[] = [];
  for (let at = parent.contentStart; at < parent.end; ) {
    const child = element(buf, at, parent.end);
    out.push(child);
    at = child.end;
  }
  return out;
}

function expect(e: Der | undefined, tag: number, what: string): Der {
  if (!e || e.tag !== tag) fail(what);
  return e;
}

/** A directory string's text (UTF8String, PrintableString, IA5String, TeletexString or BMPString). */
function text(buf: Buffer, e: Der): string {
  const bytes = buf.subarray(e.contentStart, e.end);
  if (e.tag === 0x0c) return bytes.toString('utf8');
  if (e.tag === 0x13 || e.tag === 0x16 || e.tag === 0x14) return bytes.toString('latin1');
  if (e.tag === 0x1e) return Buffer.from(bytes).swap16().toString('utf16le');
  fail('common name is not a string');
}

function commonNames(buf: Buffer, name: Der): string[] {
  const names: string[] = [];
  for (const rdn of children(buf, expect(name, SEQUENCE, 'subject'))) {
    for (const attr of children(buf, expect(rdn, SET, 'subject'))) {
      const [type, value] = children(buf, expect(attr, SEQUENCE, 'subject'));
      const oid = expect(type, OID, 'subject');
      if (value && buf.subarray(oid.contentStart, oid.end).equals(CN_OID)) names.push(text(buf, value));
    }
  }
  return names;
}

function requireP256(key: KeyObject): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new CsrError('the key must be an ECDSA P-256 key');
  }
}

/**
 * Reads a PEM CSR and checks what a device identity needs: a valid self-signature (proof the requester holds
 * the key) and an ECDSA P-256 key. Throws CsrError otherwise. Requested extensions are ignored, never copied.
 */
export async function inspectCsr(csrPem: string): Promise<InspectedCsr> {
  const pem =
    typeof csrPem === 'string'
      ? /-----BEGIN CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE REQUEST-----/.exec(csrPem)
      : null;
  if (!pem) throw new CsrError('not a PEM certificate request');
  const der = Buffer.from(pem[1]!.replace(/\s+/g, ''), 'base64');
  const outer = expect(element(der, 0, der.length), SEQUENCE, 'outer sequence');
  if (outer.end !== der.length) fail('trailing data');
  const [info, algorithm, signature, ...extra] = children(der, outer);
  if (extra.length) fail('extra fields');
  const infoParts = children(der, expect(info, SEQUENCE, 'request info'));
  const [, subject, spki] = infoParts;
  let key: KeyObject;
  try {
    key = createPublicKey({
      key: der.subarray(expect(spki, SEQUENCE, 'public key').start, spki!.end),
      format: 'der',
      type: 'spki',
    });
  } catch (err) {
    throw new CsrError('the CSR public key is unreadable', { cause: err });
  }
  requireP256(key);
  const [algOid] = children(der, expect(algorithm, SEQUENCE, 'signature algorithm'));
  const oid = expect(algOid, OID, 'signature algorithm');
  const hash = ECDSA_HASHES.get(der.subarray(oid.contentStart, oid.end).toString('hex'));
  if (!hash) throw new CsrError('the CSR signature is unreadable (not ECDSA with SHA-2)');
  const bits = expect(signature, BIT_STRING, 'signature');
  if (der[bits.contentStart] !== 0) fail('signature');
  let valid = false;
  try {
    valid = verify(
      hash,
      der.subarray(info!.start, info!.end),
      { key, dsaEncoding: 'der' },
      der.subarray(bits.contentStart + 1, bits.end),
    );
  } catch (err) {
    throw new CsrError('the CSR signature is unreadable', { cause: err });
  }
  if (!valid) throw new CsrError('the CSR signature does not match its content');
  const names = commonNames(der, subject!);
  if (names.length > 1) throw new CsrError('the CSR subject has more than one common name');
  return { commonName: names[0], publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString() };
}
