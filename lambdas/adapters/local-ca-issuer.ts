/**
 * The vehicle identity issuer of the local cloud: the local CA signs the CSR, and the thing joins the local vehicles
 * group the broker honours as IoT Core honours the group's policy. Its own module so that registry-api's Lambda
 * bundle does not carry it nor the X.509 issuing library it needs (see lambdas/registry-api/handler.ts).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { issueClientCertificate } from '../../protocol/x509.js';
import type { CertificateIssuer, IssuedCertificate } from '../core/ports.js';
import { checkCsr } from './certificate-issuer.js';
import { RevocationList, ThingGroupMembers } from './revocation-list.js';

export class LocalCaCertificateIssuer implements CertificateIssuer {
  constructor(private readonly caDir: string) {}

  async issue(vin: string, csrPem: string): Promise<IssuedCertificate> {
    await checkCsr(vin, csrPem);
    const certificatePem = await issueClientCertificate({
      csrPem,
      caKeyPem: readFileSync(join(this.caDir, 'ca.key.pem'), 'utf8'),
      caCertPem: readFileSync(join(this.caDir, 'ca.cert.pem'), 'utf8'),
      commonName: vin,
      days: 825,
    });
    // As on AWS, the vehicle policy reaches the thing only through the vehicles group: the broker admits it now.
    new ThingGroupMembers(this.caDir).add(vin);
    return {
      certificatePem,
      certificateId: new X509Certificate(certificatePem).fingerprint256.replaceAll(':', '').toLowerCase(),
    };
  }

  /** Lists the certificate as revoked: the local broker refuses its connections and publishes from then on. */
  async revoke(_vin: string, certificateId: string): Promise<void> {
    new RevocationList(this.caDir).add(certificateId);
  }
}
