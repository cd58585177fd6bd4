/**
 * X.509 helpers for vehicle identities and the local CA: read and check a vehicle's CSR, sign it into a
 * clientAuth certificate, make a CA and a 127.0.0.1 server certificate. ECDSA P-256 throughout. No AWS import:
 * the operator function bundles this file to vet CSRs before IoT Core or the local CA signs them.
 */
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import { createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { CsrError, inspectCsr } from './csr.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as ReturnType<typeof x509.cryptoProvider.get>);

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Certificates start a little in the past so a peer whose clock runs slightly behind still accepts them. */
const BACKDATE_MS = 5 * 60 * 1000;

export { CsrError, type InspectedCsr, inspectCsr } from './csr.js';

export interface KeyAndCertificate {
  /** PKCS#8 PEM. */
  readonly keyPem: string;
  readonly certPem: string;
}

/** PEM text ending with a newline, as files and other tools expect. */
function pem(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

function requireP256(key: {
  asymmetricKeyType?: string;
  asymmetricKeyDetails?: { namedCurve?: string };
}): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new CsrError('the key must be an ECDSA P-256 key');
  }
}

function parseCsr(csrPem: string): x509.Pkcs10CertificateRequest {
  if (typeof csrPem !== 'string' || !/-----BEGIN CERTIFICATE REQUEST-----/.test(csrPem)) {
    throw new CsrError('not a PEM certificate request');
  }
  try {
    return new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new CsrError('not a readable PKCS#10 certificate request', { cause: err });
  }
}

/** The CSR checked (protocol/csr.ts: self-signature, P-256, one CN at most), then parsed for issuing. */
async function checkCsr(csrPem: string): Promise<{ csr: x509.Pkcs10CertificateRequest }> {
  await inspectCsr(csrPem);
  return { csr: parseCsr(csrPem) };
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  const key = createPrivateKey(keyPem);
  requireP256(key);
  const der = key.export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, ECDSA_P256, false, ['sign']) as Promise<CryptoKey>;
}

async function newKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ECDSA_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function exportPrivateKey(key: CryptoKey): Promise<string> {
  return pem(x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY'));
}

/** A positive, non-zero 128-bit serial (RFC 5280 allows up to 20 octets; the top bit clear keeps it positive). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function validity(days: number, now: Date): { notBefore: Date; notAfter: Date } {
  if (!Number.isInteger(days) || days < 1) throw new Error('days must be a positive integer');
  return {
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
  };
}

interface LoadedCa {
  readonly cert: x509.X509Certificate;
  readonly key: CryptoKey;
}

async function loadCa(caKeyPem: string, caCertPem: string): Promise<LoadedCa> {
  const cert = new x509.X509Certificate(caCertPem);
  const publicFromKey = createPublicKey(createPrivateKey(caKeyPem)).export({ type: 'spki', format: 'der' });
  if (!publicFromKey.equals(Buffer.from(cert.publicKey.rawData))) {
    throw new Error('the CA key does not belong to the CA certificate');
  }
  return { cert, key: await importSigningKey(caKeyPem) };
}

async function issue(
  ca: LoadedCa,
  subject: x509.JsonName,
  publicKey: x509.PublicKey | CryptoKey,
  extensions: x509.Extension[],
  days: number,
  now: Date,
): Promise<string> {
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject,
    issuer: ca.cert.subjectName,
    ...validity(days, now),
    publicKey,
    signingKey: ca.key,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      ...extensions,
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
    ],
  });
  return pem(cert.toString('pem'));
}

/** A self-signed ECDSA P-256 CA that may sign end-entity certificates only (path length 0). */
export async function createCa(
  name: string,
  opts: { days?: number; now?: Date } = {},
): Promise<KeyAndCertificate> {
  const keys = await newKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [name] }],
    ...validity(opts.days ?? 3650, opts.now ?? new Date()),
    keys,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keyPem: await exportPrivateKey(keys.privateKey), certPem: pem(cert.toString('pem')) };
}

/**
 * Signs a vehicle's CSR into a clientAuth certificate for the CSR's own key, with CN = commonName (the VIN).
 * The CSR is checked first (self-signature, P-256); its subject and requested extensions are not copied.
 */
export async function issueClientCertificate(params: {
  csrPem: string;
  caKeyPem: string;
  caCertPem: string;
  commonName: string;
  days: number;
  now?: Date;
}): Promise<string> {
  const { csr } = await checkCsr(params.csrPem);
  const ca = await loadCa(params.caKeyPem, params.caCertPem);
  return issue(
    ca,
    [{ CN: [params.commonName] }],
    csr.publicKey,
    [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
    ],
    params.days,
    params.now ?? new Date(),
  );
}

/** A fresh key and a serverAuth certificate for 127.0.0.1 and localhost, signed by the CA. */
export async function issueServerCertificate(params: {
  caKeyPem: string;
  caCertPem: string;
  days?: number;
  now?: Date;
}): Promise<KeyAndCertificate> {
  const ca = await loadCa(params.caKeyPem, params.caCertPem);
  const keys = await newKeyPair();
  const certPem = await issue(
    ca,
    [{ CN: ['127.0.0.1'] }],
    keys.publicKey,
    [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
      ]),
    ],
    params.days ?? 397,
    params.now ?? new Date(),
  );
  return { keyPem: await exportPrivateKey(keys.privateKey), certPem };
}

/** A new ECDSA P-256 key and a CSR for it with CN = commonName, as a vehicle makes them (tests, agents). */
export async function generateKeyAndCsr(
  commonName: string,
): Promise<{ privateKeyPem: string; csrPem: string }> {
  const keys = await newKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [commonName] }],
    keys,
    signingAlgorithm: ECDSA_SHA256,
  });
  return { privateKeyPem: await exportPrivateKey(keys.privateKey), csrPem: pem(csr.toString('pem')) };
}
