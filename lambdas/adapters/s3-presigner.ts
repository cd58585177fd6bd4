/**
 * Presigned S3 GET URLs made with the SigV4 signer alone, for functions that only hand out download links
 * (vehicle-api). @aws-sdk/client-s3 and its presigner would do the same with about 100 KiB more code whose module
 * init and compilation were the largest share of vehicle-api's cold start over issue 11's 3x target (npm run
 * bench:cold-start, BENCHMARKS.md). The URL is the one the SDK presigner makes: path-style on a configured endpoint
 * (the local cloud, LocalStack), virtual-hosted on AWS; unsigned payload; the object version as `versionId`.
 * Presigning makes no call, so there is nothing to count or trace.
 */
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '../../protocol/sigv4-sha256.js';
import { requireEnv } from '../core/env.js';
import type { ObjectStore } from '../core/ports.js';
import { endpointFor } from './aws-clients.js';

/** S3's encoding of a key's path segments (the SDK's extendedEncodeURIComponent): RFC 3986 unreserved only. */
const encodeSegment = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

export class S3Presigner implements Pick<ObjectStore, 'presignGet'> {
  private readonly signer: SignatureV4;
  private readonly base: URL;
  private readonly pathStyle: boolean;

  constructor(
    private readonly bucket: string,
    region: string = requireEnv('AWS_REGION'),
    endpoint: string | undefined = endpointFor('S3'),
  ) {
    // Same choice as clientConfig('S3'): path-style wherever an endpoint is configured.
    this.pathStyle = endpoint !== undefined;
    this.base = new URL(endpoint ?? `https://${bucket}.s3.${region}.amazonaws.com`);
    // S3 signs the path as sent (no second escaping) and takes no checksum of a presigned GET.
    this.signer = new SignatureV4({
      service: 's3',
      region,
      credentials: defaultProvider(),
      sha256: Sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
  }

  async presignGet(key: string, versionId: string | undefined, ttlSeconds: number): Promise<string> {
    const keyPath = key.split('/').map(encodeSegment).join('/');
    const prefix = this.base.pathname.replace(/\/$/, '');
    const path = this.pathStyle ? `${prefix}/${this.bucket}/${keyPath}` : `${prefix}/${keyPath}`;
    const signed = await this.signer.presign(
      {
        method: 'GET',
        protocol: this.base.protocol,
        hostname: this.base.hostname,
        ...(this.base.port ? { port: Number(this.base.port) } : {}),
        path,
        query: versionId ? { versionId } : {},
        // Hoisted into the query as X-Amz-Content-Sha256, as the SDK presigner does: S3 then signs no payload.
        headers: { host: this.base.host, 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD' },
      },
      { expiresIn: ttlSeconds },
    );
    const url = new URL(`${this.base.protocol}//${this.base.host}${path}`);
    const query = signed.query ?? {};
    url.search = Object.keys(query)
      .sort()
      .map((k) => `${encodeSegment(k)}=${encodeSegment(String(query[k]))}`)
      .join('&');
    return url.toString();
  }
}
