/**
 * The local cloud's certificate authority. Made once per data folder and kept: it issues the TLS certificate
 * every local endpoint serves (127.0.0.1 / localhost) and signs vehicle CSRs, as IoT Core does on AWS.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CsrError,
  createCa,
  inspectCsr,
  issueClientCertificate,
  issueServerCertificate,
} from '../protocol/x509.js';
import { readIfExists, readPrivateFile, writePrivateFile, writePublicFile } from './files.js';

/** A cached server certificate is replaced when it has less than this left. */
const RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;

export interface TlsMaterial {
  readonly keyPem: string;
  readonly certPem: string;
}

export class LocalCa {
  /** PEM file of the CA certificate: what clients trust. */
  public readonly certFile: string;
  public readonly keyFile: string;

  private constructor(
    public readonly dir: string,
    public readonly certPem: string,
    private readonly keyPem: string,
  ) {
    this.certFile = join(dir, 'ca.cert.pem');
    this.keyFile = join(dir, 'ca.key.pem');
  }

  /** Loads the CA in `dir`, or makes one there (ca.key.pem 0600, ca.cert.pem) when there is none. */
  static async open(dir: string, opts: { name?: string } = {}): Promise<LocalCa> {
    const keyFile = join(dir, 'ca.key.pem');
    const certFile = join(dir, 'ca.cert.pem');
    const hasKey = existsSync(keyFile);
    const hasCert = existsSync(certFile);
    if (hasKey && hasCert) {
      const ca = new LocalCa(dir, readFileSync(certFile, 'utf8'), readPrivateFile(keyFile));
      const cert = new X509Certificate(ca.certPem);
      if (!cert.ca) throw new Error(`${certFile} is not a CA certificate`);
      if (Date.parse(cert.validTo) < Date.now()) {
        throw new Error(`The local CA in ${dir} has expired; delete the folder to make a new one`);
      }
      return ca;
    }
    if (hasKey !== hasCert) {
      throw new Error(
        `${dir} holds only half of a CA (ca.key.pem and ca.cert.pem go together); delete it to start over`,
      );
    }
    const made = await createCa(opts.name ?? 'Fleet OTA local CA');
    writePrivateFile(keyFile, made.keyPem);
    writePublicFile(certFile, made.certPem);
    return new LocalCa(dir, made.certPem, made.keyPem);
  }

  /**
   * The 127.0.0.1 / localhost server certificate, cached in the folder (server.key.pem 0600, server.cert.pem)
   * and reissued when missing, not from this CA, or close to expiry.
   */
  async serverCertificate(now = new Date()): Promise<TlsMaterial> {
    const keyFile = join(this.dir, 'server.key.pem');
    const certFile = join(this.dir, 'server.cert.pem');
    const certPem = readIfExists(certFile);
    if (certPem !== undefined && existsSync(keyFile) && this.stillGood(certPem, now)) {
      return { keyPem: readPrivateFile(keyFile), certPem };
    }
    const issued = await issueServerCertificate({ caKeyPem: this.keyPem, caCertPem: this.certPem, now });
    writePrivateFile(keyFile, issued.keyPem);
    writePublicFile(certFile, issued.certPem);
    return issued;
  }

  /** Signs a vehicle CSR into a clientAuth certificate with CN = the VIN; the CSR must name the same VIN. */
  async signCsr(csrPem: string, vin: string, days = 825): Promise<string> {
    const { commonName } = await inspectCsr(csrPem);
    if (commonName !== vin) throw new CsrError('the CSR subject common name must be the VIN');
    return issueClientCertificate({
      csrPem,
      caKeyPem: this.keyPem,
      caCertPem: this.certPem,
      commonName: vin,
      days,
    });
  }

  private stillGood(certPem: string, now: Date): boolean {
    try {
      const cert = new X509Certificate(certPem);
      const ca = new X509Certificate(this.certPem);
      return (
        cert.verify(ca.publicKey) &&
        cert.checkIP('127.0.0.1') !== undefined &&
        Date.parse(cert.validTo) - now.getTime() > RENEW_BEFORE_MS
      );
    } catch {
      return false;
    }
  }
}
