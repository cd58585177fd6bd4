/**
 * Sends background jobs to SQS (SendMessage, JSON protocol) with a SigV4-signed HTTPS request. A hand-made
 * request rather than @aws-sdk/client-sqs: one call, and the signer and credential chain already ship with the
 * SDK clients the functions bundle. The local cloud's queue stand-in (local/job-queue.ts) speaks the same request.
 */
import { request } from 'node:https';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '../../protocol/sigv4-sha256.js';
import type { Job } from '../core/jobs.js';
import type { JobQueue, OfferMessage, OfferQueue } from '../core/ports.js';
import { httpsAgent } from './aws-clients.js';
import { recordOperation } from './operation-counter.js';

/** One SigV4-signed call of SQS's JSON protocol on the queue's endpoint; rejects unless SQS answers 200. */
class SqsClient {
  private readonly signer: SignatureV4;
  private readonly endpoint: URL;

  constructor(queueUrl: string, region: string) {
    this.endpoint = new URL('/', queueUrl);
    this.signer = new SignatureV4({ service: 'sqs', region, credentials: defaultProvider(), sha256: Sha256 });
  }

  async call(action: 'SendMessage' | 'SendMessageBatch', input: unknown): Promise<Record<string, unknown>> {
    // Counted like the SDK clients' calls (operation-counter.ts): jobs, and the pacer's and offer worker's sends.
    recordOperation(`sqs.op.${action}`);
    const body = JSON.stringify(input);
    const signed = await this.signer.sign({
      method: 'POST',
      protocol: this.endpoint.protocol,
      hostname: this.endpoint.hostname,
      ...(this.endpoint.port ? { port: Number(this.endpoint.port) } : {}),
      path: '/',
      headers: {
        host: this.endpoint.host,
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': `AmazonSQS.${action}`,
      },
      body,
    });
    try {
      return await this.send(action, signed.headers, body);
    } catch (err) {
      // A kept-alive connection the server closed as the request went out (its idle timeout): the request never
      // reached it, so it is sent once more on a new connection, as the SDK clients retry such resets. Seen
      // locally as a job failing with "socket hang up" and waiting out the visibility timeout.
      if (!(err instanceof StaleConnectionError)) throw err;
      return this.send(action, signed.headers, body);
    }
  }

  private send(
    action: string,
    headers: Record<string, string>,
    body: string,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const req = request(
        this.endpoint,
        { method: 'POST', headers, agent: httpsAgent(), timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            if (res.statusCode === 200) resolve(text ? (JSON.parse(text) as Record<string, unknown>) : {});
            else reject(new Error(`SQS ${action} answered ${res.statusCode}: ${text.slice(0, 300)}`));
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`SQS ${action} timed out`)));
      req.on('error', (err: NodeJS.ErrnoException) =>
        reject(req.reusedSocket && err.code === 'ECONNRESET' ? new StaleConnectionError(err) : err),
      );
      req.end(body);
    });
  }
}

/** A reset of a reused keep-alive connection before any answer: safe to send again. */
class StaleConnectionError extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
    this.name = 'StaleConnectionError';
  }
}

export class SqsJobQueue implements JobQueue {
  private readonly client: SqsClient;

  constructor(
    private readonly queueUrl: string,
    region: string,
  ) {
    this.client = new SqsClient(queueUrl, region);
  }

  async send(job: Job): Promise<void> {
    await this.client.call('SendMessage', { QueueUrl: this.queueUrl, MessageBody: JSON.stringify(job) });
  }
}

/** SendMessageBatch's most entries per call. */
const BATCH_ENTRIES = 10;
/** Batches in flight at once while fanning out one pacer step. */
const BATCHES_IN_FLIGHT = 8;

/** The campaign offers queue: pacer steps and offers, ten to a SendMessageBatch, each with its delay. */
export class SqsOfferQueue implements OfferQueue {
  private readonly client: SqsClient;

  constructor(
    private readonly queueUrl: string,
    region: string,
  ) {
    this.client = new SqsClient(queueUrl, region);
  }

  async send(messages: readonly { message: OfferMessage; delaySeconds: number }[]): Promise<void> {
    const batches: (typeof messages)[] = [];
    for (let i = 0; i < messages.length; i += BATCH_ENTRIES)
      batches.push(messages.slice(i, i + BATCH_ENTRIES));
    let next = 0;
    const worker = async () => {
      while (next < batches.length) await this.sendBatch(batches[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(BATCHES_IN_FLIGHT, batches.length) }, worker));
  }

  private async sendBatch(batch: readonly { message: OfferMessage; delaySeconds: number }[]): Promise<void> {
    let entries = batch.map((m, i) => ({
      Id: String(i),
      MessageBody: JSON.stringify(m.message),
      DelaySeconds: m.delaySeconds,
    }));
    for (let attempt = 0; entries.length > 0; attempt++) {
      if (attempt >= 5) throw new Error(`SQS SendMessageBatch kept failing for ${entries.length} entries`);
      if (attempt > 0) await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
      const out = await this.client.call('SendMessageBatch', { QueueUrl: this.queueUrl, Entries: entries });
      const failed = new Set(((out.Failed ?? []) as { Id: string }[]).map((f) => f.Id));
      entries = entries.filter((e) => failed.has(e.Id));
    }
  }
}
