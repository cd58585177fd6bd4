/**
 * The credential provider of the deployed bundles: OTA_BUNDLING (lib/ota-function.ts) aliases
 * `@aws-sdk/credential-provider-node` to this file. Lambda always hands a function its role's credentials in
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, the first link of the SDK's default chain, so the
 * rest of that chain (SSO, STS web identity, INI files, process, container and instance metadata, with the nested
 * STS/SSO/sign-in clients they bring) is code no function runs: about 130 KiB of every bundle and part of its
 * init. Outside a bundle (the local cloud, tests) the SDK's own default chain is used, which reads the same
 * variables first.
 */
export interface EnvCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Same shape as the SDK's `defaultProvider(init)`: returns a provider, read on every call (never cached stale). */
export function defaultProvider(_init?: unknown): () => Promise<EnvCredentials> {
  return async () => {
    const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey) {
      // The SDK's name for "no link of the chain had credentials", so callers see the error they would expect.
      throw Object.assign(new Error('No AWS credentials in the environment (AWS_ACCESS_KEY_ID)'), {
        name: 'CredentialsProviderError',
      });
    }
    const sessionToken = process.env.AWS_SESSION_TOKEN;
    return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
  };
}
