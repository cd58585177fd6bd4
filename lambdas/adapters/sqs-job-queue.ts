/**
 * Sends background jobs to SQS (SendMessage, JSON protocol) with a SigV4-signed HTTPS request. A hand-made
 * request rather than @aws-sdk/client-sqs: one call, and the signer and credential chain already ship with the
 * SDK clients the functions bundle. The local cloud's queue stand-in (local/job-queue.ts) speaks the same request.
 */
import { createHash, createHmac } from 'node:crypto';
import { request } from 'node:https';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Job } from '../core/jobs.js';
import type { JobQueue } from '../core/ports.js';
import { httpsAgent } from './aws-clients.js';
import { recordOperation } from './operation-counter.js';

type Data = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: Data) =>
  typeof d === 'string'
    ? d
    : d instanceof ArrayBuffer
      ? Buffer.from(d)
      : Buffer.from(d.buffer, d.byteOffset, d.byteLength);

/** SHA-256 / HMAC from node:crypto in the shape the smithy signer expects. */
class Sha256 {
  private hash;
  constructor(private readonly secret?: Data) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: Data): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    this.hash = this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(this.secret));
  }
}

export class SqsJobQueue implements JobQueue {
  private readonly signer: SignatureV4;
  private readonly endpoint: URL;

  constructor(
    private readonly queueUrl: string,
    region: string,
  ) {
    this.endpoint = new URL('/', queueUrl);
    this.signer = new SignatureV4({ service: 'sqs', region, credentials: defaultProvider(), sha256: Sha256 });
  }

  async send(job: Job): Promise<void> {
    recordOperation('sqs.op.SendMessage');
    const body = JSON.stringify({ QueueUrl: this.queueUrl, MessageBody: JSON.stringify(job) });
    const signed = await this.signer.sign({
      method: 'POST',
      protocol: this.endpoint.protocol,
      hostname: this.endpoint.hostname,
      ...(this.endpoint.port ? { port: Number(this.endpoint.port) } : {}),
      path: '/',
      headers: {
        host: this.endpoint.host,
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'AmazonSQS.SendMessage',
      },
      body,
    });
    await new Promise<void>((resolve, reject) => {
      const req = request(
        this.endpoint,
        { method: 'POST', headers: signed.headers, agent: httpsAgent(), timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            if (res.statusCode === 200) resolve();
            else
              reject(
                new Error(
                  `SQS SendMessage answered ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 300)}`,
                ),
              );
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('SQS SendMessage timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }
}
