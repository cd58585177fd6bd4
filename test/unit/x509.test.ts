import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, webcrypto, X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import {
  CsrError,
  createCa,
  generateKeyAndCsr,
  inspectCsr,
  issueClientCertificate,
  issueServerCertificate,
} from '../../protocol/x509.js';

const VIN = '1HGCM82633A004352';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

async function csrWith(
  algorithm: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams,
  signing: webcrypto.Algorithm | webcrypto.EcdsaParams,
) {
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [VIN] }],
    keys: keys as never,
    signingAlgorithm: signing,
  });
  return csr.toString('pem');
}

/** Re-encodes the CSR with one byte of the signed subject changed; the signature is left as it was. */
function tamperSubject(csrPem: string, from: string, to: string): string {
  const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
  const at = der.indexOf(Buffer.from(from, 'ascii'));
  assert.ok(at > 0, 'the subject is in the DER');
  Buffer.from(to, 'ascii').copy(der, at);
  return x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
}

describe('inspectCsr', { timeout: 60_000 }, () => {
  it('accepts a P-256 CSR and answers its CN and public key', async () => {
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(VIN);
    const inspected = await inspectCsr(csrPem);
    assert.equal(inspected.commonName, VIN);
    const expected = createPublicKey(privateKeyPem).export({ type: 'spki', format: 'pem' }).toString();
    assert.equal(inspected.publicKeyPem, expected);
  });

  it('rejects a CSR changed after it was signed', async () => {
    const { csrPem } = await generateKeyAndCsr(VIN);
    const tampered = tamperSubject(csrPem, VIN, `5YJ${VIN.slice(3)}`);
    assert.notEqual(tampered, csrPem);
    await assert.rejects(inspectCsr(tampered), (err: Error) => {
      assert.ok(err instanceof CsrError);
      assert.match(err.message, /signature does not match/);
      return true;
    });
  });

  it('rejects garbled base64 and non-CSR input with a CsrError', async () => {
    const { csrPem } = await generateKeyAndCsr(VIN);
    const end = csrPem.indexOf('-----END') - 12;
    const garbled = `${csrPem.slice(0, end)}${csrPem[end] === 'A' ? 'B' : 'A'}${csrPem.slice(end + 1)}`;
    assert.notEqual(garbled, csrPem);
    await assert.rejects(inspectCsr(garbled), CsrError);
    await assert.rejects(inspectCsr('hello'), CsrError);
    const ca = await createCa('not a csr');
    await assert.rejects(inspectCsr(ca.certPem), CsrError);
  });

  it('refuses RSA and P-384 keys', async () => {
    const rsa = await csrWith(
      {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      },
      { name: 'RSASSA-PKCS1-v1_5' },
    );
    const p384 = await csrWith({ name: 'ECDSA', namedCurve: 'P-384' }, { name: 'ECDSA', hash: 'SHA-384' });
    for (const pem of [rsa, p384]) {
      await assert.rejects(inspectCsr(pem), /ECDSA P-256/);
    }
  });

  it('refuses a subject with two common names', async () => {
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: [{ CN: [VIN] }, { CN: ['5YJSA1E26HF000337'] }],
      keys: keys as never,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
    });
    await assert.rejects(inspectCsr(csr.toString('pem')), /more than one common name/);
  });
});

describe('issueClientCertificate', { timeout: 60_000 }, () => {
  it('issues a clientAuth certificate for the CSR key, CN = VIN, that chains to the CA', async () => {
    const ca = await createCa('Test CA');
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(VIN);
    const pem = await issueClientCertificate({
      csrPem,
      caKeyPem: ca.keyPem,
      caCertPem: ca.certPem,
      commonName: VIN,
      days: 30,
    });
    const cert = new X509Certificate(pem);
    const caCert = new X509Certificate(ca.certPem);
    assert.ok(cert.verify(caCert.publicKey), 'signed by the CA key');
    assert.ok(cert.checkIssued(caCert), 'issuer matches the CA subject');
    assert.equal(cert.subject, `CN=${VIN}`);
    assert.deepEqual(cert.keyUsage, [CLIENT_AUTH]);
    assert.equal(cert.ca, false);
    assert.ok(cert.publicKey.equals(createPublicKey(privateKeyPem)), 'the certificate carries the CSR key');
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.ok(days > 30 && days < 31, `valid for ${days} days`);

    const again = await issueClientCertificate({
      csrPem,
      caKeyPem: ca.keyPem,
      caCertPem: ca.certPem,
      commonName: VIN,
      days: 30,
    });
    assert.notEqual(new X509Certificate(again).serialNumber, cert.serialNumber, 'serials are random');
  });

  it('does not issue for a tampered CSR or with a CA key that is not the CA certificate key', async () => {
    const ca = await createCa('Test CA');
    const other = await createCa('Other CA');
    const { csrPem } = await generateKeyAndCsr(VIN);
    const base = { caKeyPem: ca.keyPem, caCertPem: ca.certPem, commonName: VIN, days: 1 };
    await assert.rejects(
      issueClientCertificate({ ...base, csrPem: tamperSubject(csrPem, VIN, `5YJ${VIN.slice(3)}`) }),
      CsrError,
    );
    await assert.rejects(
      issueClientCertificate({ ...base, csrPem, caKeyPem: other.keyPem }),
      /does not belong/,
    );
  });
});

describe('createCa and issueServerCertificate', { timeout: 60_000 }, () => {
  it('makes a P-256 CA that can only sign certificates, and a 127.0.0.1 server certificate under it', async () => {
    const ca = await createCa('Local CA');
    const caCert = new X509Certificate(ca.certPem);
    assert.equal(caCert.ca, true);
    assert.ok(caCert.verify(caCert.publicKey), 'self-signed');
    assert.equal(caCert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const parsed = new x509.X509Certificate(ca.certPem);
    const usage = parsed.getExtension(x509.KeyUsagesExtension);
    assert.equal(usage?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(usage?.critical, true);
    assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----/);

    const server = await issueServerCertificate({ caKeyPem: ca.keyPem, caCertPem: ca.certPem });
    const cert = new X509Certificate(server.certPem);
    assert.ok(cert.verify(caCert.publicKey));
    assert.deepEqual(cert.keyUsage, [SERVER_AUTH]);
    assert.equal(cert.subjectAltName, 'IP Address:127.0.0.1, DNS:localhost');
    const peer = {
      subject: { CN: '127.0.0.1' },
      subjectaltname: cert.subjectAltName,
    } as unknown as PeerCertificate;
    assert.equal(checkServerIdentity('127.0.0.1', peer), undefined);
    assert.equal(checkServerIdentity('localhost', peer), undefined);
    assert.ok(checkServerIdentity('10.0.0.1', peer) instanceof Error);
    assert.ok(cert.checkPrivateKey(createPrivateKey(server.keyPem)));
  });
});
