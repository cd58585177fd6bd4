/**
 * `--aws`: operator routes of a deployed stack are IAM-authorised, so each request is signed with SigV4
 * (service execute-api) using the default AWS credential chain (environment, SSO, shared config, container and
 * instance roles). The signer and the credential chain ship with the AWS SDK clients the project installs; they
 * are loaded only when --aws is used.
 */
import { Sha256 } from '../protocol/sigv4-sha256.js';
import type { Authorizer, SignableRequest } from './api.js';
import { CliError } from './errors.js';

export interface SigV4Options {
  readonly region: string;
  /** @default the default AWS credential chain */
  readonly credentials?: () => Promise<{
    accessKeyId: string;
    secretAccessKey: string;
    sessionToken?: string;
  }>;
  /** For tests. */
  readonly signingDate?: Date;
}

export async function sigV4Authorizer(options: SigV4Options): Promise<Authorizer> {
  let modules: [typeof import('@smithy/signature-v4'), typeof import('@aws-sdk/credential-provider-node')];
  try {
    modules = await Promise.all([
      import('@smithy/signature-v4'),
      import('@aws-sdk/credential-provider-node'),
    ]);
  } catch (err) {
    throw new CliError(
      '--aws is not available here: @smithy/signature-v4 and @aws-sdk/credential-provider-node (installed with the AWS SDK clients) cannot be loaded',
      2,
      { cause: err },
    );
  }
  const [{ SignatureV4 }, { defaultProvider }] = modules;
  const signer = new SignatureV4({
    service: 'execute-api',
    region: options.region,
    credentials: options.credentials ?? defaultProvider(),
    sha256: Sha256,
  });
  return {
    hint: `check that your AWS credentials (default credential chain, region ${options.region}) may call execute-api:Invoke on this API`,
    secrets: () => [],
    async headers(req: SignableRequest): Promise<Record<string, string>> {
      const query: Record<string, string> = {};
      for (const [k, v] of req.url.searchParams) query[k] = v;
      let signed: { headers: Record<string, string> };
      try {
        signed = await signer.sign(
          {
            method: req.method,
            protocol: req.url.protocol,
            hostname: req.url.hostname,
            ...(req.url.port ? { port: Number(req.url.port) } : {}),
            path: req.url.pathname,
            query,
            headers: { ...req.headers, host: req.url.host },
            body: req.body,
          },
          options.signingDate ? { signingDate: options.signingDate } : {},
        );
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        throw new CliError(`no usable AWS credentials for --aws: ${message}`, 1, { cause: err });
      }
      // Node sets host itself; everything else the signature covers must be sent as signed.
      const { host: _host, ...headers } = signed.headers;
      return headers;
    },
  };
}
