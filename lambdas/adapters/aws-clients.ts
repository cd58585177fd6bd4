/**
 * One place that configures AWS SDK clients. On AWS nothing is overridden. Against the local cloud or
 * LocalStack, endpoints come from AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL, and a private CA
 * (OTA_ENDPOINT_CA_FILE) is trusted in addition to the system roots: certificate checks are never disabled.
 */
import { readFileSync } from 'node:fs';
import type { Agent } from 'node:https';
import { trustingAgent } from '../../protocol/tls-trust.js';
import { ENV, optionalEnv } from '../core/env.js';

export type ServiceId = 'S3' | 'DYNAMODB' | 'KMS' | 'IOT' | 'IOT_DATA_PLANE';

let agent: Agent | undefined;

/** The agent trusting the local CA, when one is configured (also used by the SQS job queue adapter). */
export function httpsAgent(): Agent | undefined {
  const caFile = optionalEnv(ENV.endpointCaFile);
  if (!caFile) return undefined;
  agent ??= trustingAgent(readFileSync(caFile, 'utf8'), { keepAlive: true, maxSockets: 64 });
  return agent;
}

export function endpointFor(service: ServiceId): string | undefined {
  return optionalEnv(`AWS_ENDPOINT_URL_${service}`) ?? optionalEnv('AWS_ENDPOINT_URL');
}

export function clientConfig(service: ServiceId): Record<string, unknown> {
  const config: Record<string, unknown> = {};
  const endpoint = endpointFor(service);
  if (endpoint) config.endpoint = endpoint;
  const a = httpsAgent();
  if (a) config.requestHandler = { httpsAgent: a };
  if (service === 'S3') {
    // Presigned URLs must not carry a checksum the uploader cannot know in advance, and emulators reject the
    // aws-chunked trailer encoding; checksums are still sent where S3 requires them.
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
    if (endpoint) config.forcePathStyle = true;
  }
  return config;
}
