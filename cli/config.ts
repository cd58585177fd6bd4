/**
 * Where the CLI sends requests and how it authenticates: flags first, then OTA_* environment variables, then the
 * local cloud's defaults (.ota-local in the working folder). Pure; files are read later, and only when needed.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { isOperatorRole, OPERATOR_ROLES, type OperatorRole } from '../protocol/roles.js';
import { booleanOption, type OptionValues, stringOption, UsageError } from './args.js';

export const DEFAULT_ENDPOINT = 'https://127.0.0.1:8443';
export const DEFAULT_CA_FILE = '.ota-local/ca/ca.cert.pem';
export const DEFAULT_TOKEN_FILE = '.ota-local/admin-token';
export const DEFAULT_OPERATORS_FILE = '.ota-local/operators.json';
/** The local cloud's region (local/storage-emulators.ts LOCAL_REGION; a unit test keeps the two equal). */
export const LOCAL_CLOUD_REGION = 'us-east-1';

export type Credentials =
  | { readonly kind: 'admin-token'; readonly file: string }
  | { readonly kind: 'aws'; readonly region: string }
  /** `--as <role>`: a local operator account's SigV4 credentials from the local cloud's operators file. */
  | { readonly kind: 'local-account'; readonly role: OperatorRole; readonly file: string };

export interface Connection {
  readonly endpoint: URL;
  /** Extra CA to trust; undefined: the system roots only. */
  readonly caFile: string | undefined;
  readonly credentials: Credentials;
}

export interface ConnectionInputs {
  readonly values: OptionValues;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** @default existsSync */
  readonly fileExists?: (path: string) => boolean;
}

/** Region of an API Gateway host: <id>.execute-api.<region>.amazonaws.com. */
export function regionFromHost(host: string): string | undefined {
  return /\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(host)?.[1];
}

export function resolveConnection({
  values,
  env,
  cwd,
  fileExists = existsSync,
}: ConnectionInputs): Connection {
  const aws = booleanOption(values, 'aws');
  const given = stringOption(values, 'endpoint') ?? nonEmpty(env.OTA_ENDPOINT);
  if (aws && given === undefined) {
    throw new UsageError(
      '--aws needs the API URL of the deployed stack: --endpoint <url> or OTA_ENDPOINT (stack output ApiUrl)',
    );
  }
  const endpoint = parseEndpoint(given ?? DEFAULT_ENDPOINT);

  const caGiven = stringOption(values, 'ca') ?? nonEmpty(env.OTA_CA_FILE);
  const defaultCa = resolve(cwd, DEFAULT_CA_FILE);
  // An explicit CA must exist (reading it reports the problem); the default is used only where it exists.
  const caFile =
    caGiven !== undefined ? resolve(cwd, caGiven) : !aws && fileExists(defaultCa) ? defaultCa : undefined;

  const as = stringOption(values, 'as');
  if (as !== undefined) {
    if (aws || stringOption(values, 'token-file') !== undefined) {
      throw new UsageError('--as excludes --aws and --token-file');
    }
    if (!isOperatorRole(as)) throw new UsageError(`--as takes one of ${OPERATOR_ROLES.join(', ')}`);
    const file = nonEmpty(env.OTA_OPERATORS_FILE) ?? DEFAULT_OPERATORS_FILE;
    return { endpoint, caFile, credentials: { kind: 'local-account', role: as, file: resolve(cwd, file) } };
  }
  if (aws) {
    if (stringOption(values, 'token-file') !== undefined)
      throw new UsageError('--token-file and --aws exclude each other');
    const region =
      stringOption(values, 'region') ??
      nonEmpty(env.AWS_REGION) ??
      nonEmpty(env.AWS_DEFAULT_REGION) ??
      regionFromHost(endpoint.hostname);
    if (!region) throw new UsageError('--aws needs a region: --region <region> or AWS_REGION');
    return { endpoint, caFile, credentials: { kind: 'aws', region } };
  }
  if (stringOption(values, 'region') !== undefined) throw new UsageError('--region applies with --aws only');
  const tokenFile =
    stringOption(values, 'token-file') ?? nonEmpty(env.OTA_ADMIN_TOKEN_FILE) ?? DEFAULT_TOKEN_FILE;
  return { endpoint, caFile, credentials: { kind: 'admin-token', file: resolve(cwd, tokenFile) } };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function parseEndpoint(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`the endpoint must be a URL such as ${DEFAULT_ENDPOINT} (got '${raw}')`);
  }
  // The admin token and SigV4-signed requests never travel in clear text.
  if (url.protocol !== 'https:') throw new UsageError(`the endpoint must be an https:// URL (got '${raw}')`);
  if (url.search || url.hash)
    throw new UsageError(`the endpoint must not have a query or fragment (got '${raw}')`);
  return url;
}
