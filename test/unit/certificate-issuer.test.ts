/** The IoT registration sequence, against a recording stand-in for the IoT control-plane client. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IoTClient } from '@aws-sdk/client-iot';
import { IotCertificateIssuer } from '../../lambdas/adapters/certificate-issuer.js';
import { generateKeyAndCsr } from '../../protocol/x509.js';

const VIN = '1HGCM82633A004352';

function recordingClient() {
  const calls: { command: string; input: Record<string, unknown> }[] = [];
  const client = {
    send: async (command: { constructor: { name: string }; input: Record<string, unknown> }) => {
      calls.push({ command: command.constructor.name, input: command.input });
      if (command.constructor.name === 'CreateCertificateFromCsrCommand') {
        return {
          certificateArn: 'arn:aws:iot:eu-west-1:111122223333:cert/abc',
          certificateId: 'abc',
          certificatePem: 'PEM',
        };
      }
      return {};
    },
  };
  return { client: client as unknown as IoTClient, calls };
}

describe('IoT certificate issuer', { timeout: 60_000 }, () => {
  it('creates the thing, a certificate from the CSR, attaches it to the thing and adds the thing to the vehicles group, never attaching a policy', async () => {
    const { client, calls } = recordingClient();
    const { csrPem } = await generateKeyAndCsr(VIN);
    const issued = await new IotCertificateIssuer(client, 'VehicleGroup', 'Vehicle').issue(VIN, csrPem);
    assert.deepEqual(issued, { certificatePem: 'PEM', certificateId: 'abc' });
    assert.deepEqual(calls, [
      { command: 'CreateThingCommand', input: { thingName: VIN, thingTypeName: 'Vehicle' } },
      {
        command: 'CreateCertificateFromCsrCommand',
        input: { certificateSigningRequest: csrPem, setAsActive: true },
      },
      {
        command: 'AttachThingPrincipalCommand',
        input: { thingName: VIN, principal: 'arn:aws:iot:eu-west-1:111122223333:cert/abc' },
      },
      {
        command: 'AddThingToThingGroupCommand',
        input: { thingName: VIN, thingGroupName: 'VehicleGroup' },
      },
    ]);
  });

  it('refuses a CSR for another VIN before calling IoT at all', async () => {
    const { client, calls } = recordingClient();
    const { csrPem } = await generateKeyAndCsr('5YJSA1E26HF000337');
    await assert.rejects(
      new IotCertificateIssuer(client, 'P', 'T').issue(VIN, csrPem),
      /common name must be the VIN/,
    );
    assert.equal(calls.length, 0);
  });

  it('revokes by marking the certificate REVOKED', async () => {
    const { client, calls } = recordingClient();
    await new IotCertificateIssuer(client, 'P', 'T').revoke(VIN, 'abc');
    assert.deepEqual(calls, [
      { command: 'UpdateCertificateCommand', input: { certificateId: 'abc', newStatus: 'REVOKED' } },
    ]);
  });
});
