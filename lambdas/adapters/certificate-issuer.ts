/**
 * The vehicle identity issuer on AWS: IoT Core signs the CSR, the vehicle becomes a Thing with that certificate, and
 * the thing joins the static vehicles thing group, which carries the vehicle policy (attached at deploy time): the
 * issuer never attaches a policy to a certificate. The local cloud's issuer is local-ca-issuer.ts. Both refuse a CSR
 * that is not self-signed by an ECDSA P-256 key or whose subject CN is not the VIN.
 */
import {
  AddThingToThingGroupCommand,
  AttachThingPrincipalCommand,
  CreateCertificateFromCsrCommand,
  CreateThingCommand,
  type IoTClient,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { inspectCsr } from '../../protocol/csr.js';
import { BadRequestError } from '../core/errors.js';
import type { CertificateIssuer, IssuedCertificate } from '../core/ports.js';

/** Refuses (400) a CSR that is not self-signed by a P-256 key or whose CN is not the VIN. */
export async function checkCsr(vin: string, csrPem: string): Promise<void> {
  let inspected: { commonName: string | undefined };
  try {
    inspected = await inspectCsr(csrPem);
  } catch (err) {
    throw new BadRequestError(
      'invalid_csr',
      `The CSR is not acceptable: ${err instanceof Error ? err.message : 'unreadable'}`,
    );
  }
  if (inspected.commonName !== vin) {
    throw new BadRequestError('csr_subject_mismatch', 'The CSR subject common name must be the VIN');
  }
}

export class IotCertificateIssuer implements CertificateIssuer {
  constructor(
    private readonly iot: IoTClient,
    private readonly thingGroupName: string,
    private readonly thingTypeName: string,
  ) {}

  async issue(vin: string, csrPem: string): Promise<IssuedCertificate> {
    await checkCsr(vin, csrPem);
    await this.iot.send(new CreateThingCommand({ thingName: vin, thingTypeName: this.thingTypeName }));
    const cert = await this.iot.send(
      new CreateCertificateFromCsrCommand({ certificateSigningRequest: csrPem, setAsActive: true }),
    );
    await this.iot.send(new AttachThingPrincipalCommand({ thingName: vin, principal: cert.certificateArn! }));
    // The vehicle policy applies to the certificate through the thing's group (client id = thing name).
    await this.iot.send(
      new AddThingToThingGroupCommand({ thingName: vin, thingGroupName: this.thingGroupName }),
    );
    return { certificatePem: cert.certificatePem!, certificateId: cert.certificateId! };
  }

  async revoke(_vin: string, certificateId: string): Promise<void> {
    await this.iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'REVOKED' }));
  }
}
