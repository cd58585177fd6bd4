/**
 * `--as <role>`: requests signed with SigV4 as one of the local cloud's operator accounts (operators.json, made
 * by the local cloud on its first start), so the local gateway applies that role's rights as IAM would on AWS.
 */
import { readFile } from 'node:fs/promises';
import type { OperatorRole } from '../protocol/roles.js';
import type { Authorizer } from './api.js';
import { sigV4Authorizer } from './aws-auth.js';
import { LOCAL_CLOUD_REGION } from './config.js';
import { CliError } from './errors.js';

export async function localAccountAuthorizer(file: string, role: OperatorRole): Promise<Authorizer> {
  let accounts: unknown;
  try {
    accounts = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new CliError(
      `cannot read the local operator accounts in ${file}: start the local cloud (npm start) or set OTA_OPERATORS_FILE`,
      2,
      { cause: err },
    );
  }
  const account = Array.isArray(accounts)
    ? (accounts as { role?: unknown; accessKeyId?: unknown; secretAccessKey?: unknown }[]).find(
        (a) => a.role === role,
      )
    : undefined;
  if (typeof account?.accessKeyId !== 'string' || typeof account.secretAccessKey !== 'string') {
    throw new CliError(`${file} has no ${role} account`, 2);
  }
  const credentials = { accessKeyId: account.accessKeyId, secretAccessKey: account.secretAccessKey };
  const signer = await sigV4Authorizer({ region: LOCAL_CLOUD_REGION, credentials: async () => credentials });
  return {
    ...signer,
    hint: `the local ${role} account may not do this (see the route's roles in the README), or ${file} is from another data folder`,
    secrets: () => [credentials.secretAccessKey],
  };
}
