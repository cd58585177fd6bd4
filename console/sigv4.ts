/**
 * SigV4 in the browser: the same signer the CLI uses (@smithy/signature-v4), hashing with WebCrypto. On AWS the
 * credentials are the operator role's temporary ones from the Cognito identity pool; locally, a local operator
 * account's keys. Either way the API authorises the signature, never the console.
 */
import { SignatureV4 } from '@smithy/signature-v4';

type Data = string | ArrayBuffer | ArrayBufferView;

function bytes(data: Data): Uint8Array {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** SHA-256 and HMAC-SHA256 over WebCrypto in the shape the SDK signer expects (update, then async digest). */
class WebSha256 {
  private chunks: Uint8Array[] = [];

  constructor(private readonly secret?: Data) {}

  update(data: Data): void {
    this.chunks.push(bytes(data));
  }

  async digest(): Promise<Uint8Array> {
    const size = this.chunks.reduce((n, c) => n + c.length, 0);
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of this.chunks) {
      all.set(c, at);
      at += c.length;
    }
    if (this.secret === undefined) return new Uint8Array(await crypto.subtle.digest('SHA-256', all));
    const key = await crypto.subtle.importKey(
      'raw',
      bytes(this.secret) as BufferSource,
      { name: 'HMAC', hash: 'SHA-256' },
      false,
      ['sign'],
    );
    return new Uint8Array(await crypto.subtle.sign('HMAC', key, all));
  }

  reset(): void {
    this.chunks = [];
  }
}

export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export function signer(credentials: Credentials, region: string): SignatureV4 {
  return new SignatureV4({ service: 'execute-api', region, credentials, sha256: WebSha256 });
}

/** Signs a request to `url` and answers the headers to send (the browser sets Host itself). */
export async function signedHeaders(
  sign: SignatureV4,
  method: string,
  url: URL,
  headers: Record<string, string>,
  body: string,
  /** The API's own host when a CDN in front of it forwards the request there (AWS: CloudFront -> API Gateway). */
  signingHost?: string,
): Promise<Record<string, string>> {
  const query: Record<string, string> = {};
  for (const [k, v] of url.searchParams) query[k] = v;
  const signed = await sign.sign({
    method,
    protocol: url.protocol,
    hostname: signingHost ?? url.hostname,
    path: url.pathname,
    query,
    headers: { ...headers, host: signingHost ?? url.host },
    body,
  });
  const { host: _host, ...rest } = signed.headers;
  return rest;
}
