/**
 * Certificates for the MQTT tests, made the way the local cloud makes them: the local CA (LocalCa) with its
 * 127.0.0.1 server certificate, vehicle certificates signed from the vehicle's own CSR (CN = VIN), and a
 * certificate from an unrelated CA that carries the very same names, which the broker must refuse.
 */

import { LocalCa } from '../../local/ca.js';
import { createCa, generateKeyAndCsr, issueClientCertificate } from '../../protocol/x509.js';

export interface KeyAndCert {
  readonly keyPem: string;
  readonly certPem: string;
}

export interface MqttTestPki {
  /** PEM of the local CA: what clients trust and the only issuer the broker accepts. */
  readonly caPem: string;
  /** The local CA's server certificate for 127.0.0.1. */
  readonly server: KeyAndCert;
  /** A key and a clientAuth certificate from the local CA with this CN (a VIN for vehicles). */
  vehicle(commonName: string): Promise<KeyAndCert>;
  /** The same, from a CA the broker does not trust (its name is the local CA's). */
  foreign(commonName: string): Promise<KeyAndCert>;
}

const CA_NAME = 'Fleet OTA MQTT test CA';

export async function createMqttTestPki(dir: string): Promise<MqttTestPki> {
  const ca = await LocalCa.open(dir, { name: CA_NAME });
  const foreignCa = await createCa(CA_NAME);
  const server = await ca.serverCertificate();
  return {
    caPem: ca.certPem,
    server,
    async vehicle(commonName) {
      const { privateKeyPem, csrPem } = await generateKeyAndCsr(commonName);
      return { keyPem: privateKeyPem, certPem: await ca.signCsr(csrPem, commonName) };
    },
    async foreign(commonName) {
      const { privateKeyPem, csrPem } = await generateKeyAndCsr(commonName);
      const certPem = await issueClientCertificate({
        csrPem,
        caKeyPem: foreignCa.keyPem,
        caCertPem: foreignCa.certPem,
        commonName,
        days: 30,
      });
      return { keyPem: privateKeyPem, certPem };
    },
  };
}
