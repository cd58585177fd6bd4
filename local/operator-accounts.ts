/**
 * The local cloud's operator accounts: one per operator role (viewer, operator, release-manager, admin), each with
 * SigV4 credentials (access key id and secret), made on the first start and kept in <dataDir>/operators.json
 * (0600). They stand in for the Cognito users and IAM roles of the deployed stack: the gateway checks their
 * signatures and refuses a route their role is not listed for (ROUTES `roles`), exactly as IAM does on AWS.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { isOperatorRole, OPERATOR_ROLES, type OperatorRole, operatorRoleName } from '../protocol/roles.js';
import { readPrivateFile, writePrivateFile } from './files.js';

export interface LocalOperatorAccount {
  /** The account name, shown in the audit log as the actor. */
  readonly name: string;
  readonly role: OperatorRole;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** The role names local principals appear under: `fleet-ota-<role>`, parsed back by principalOf. */
export const LOCAL_ROLE_PREFIX = 'fleet';
const LOCAL_ACCOUNT_ID = '000000000000';

/** The assumed-role ARN API Gateway would report for this account (requestContext.identity.userArn). */
export function principalArn(account: { readonly name: string; readonly role: OperatorRole }): string {
  return `arn:aws:sts::${LOCAL_ACCOUNT_ID}:assumed-role/${operatorRoleName(LOCAL_ROLE_PREFIX, account.role)}/${account.name}`;
}

function newAccount(role: OperatorRole): LocalOperatorAccount {
  return {
    name: role,
    role,
    // AKIA-like: 20 upper-case characters, as the SDKs and the console's form expect.
    accessKeyId: `LOCAL${randomBytes(10).toString('hex').toUpperCase().slice(0, 15)}`,
    secretAccessKey: randomBytes(30).toString('base64url'),
  };
}

function valid(value: unknown): value is LocalOperatorAccount {
  const a = value as Record<string, unknown>;
  return (
    typeof a === 'object' &&
    a !== null &&
    typeof a.name === 'string' &&
    /^[A-Za-z0-9._-]{1,64}$/.test(a.name) &&
    isOperatorRole(a.role) &&
    typeof a.accessKeyId === 'string' &&
    /^[A-Z0-9]{16,128}$/.test(a.accessKeyId) &&
    typeof a.secretAccessKey === 'string' &&
    a.secretAccessKey.length >= 32
  );
}

/**
 * The accounts in `file`, one per role; any role missing (first start, or an older data folder) gets a new
 * account and the file is rewritten. A malformed file is refused rather than silently replaced.
 */
export function loadOperatorAccounts(file: string): LocalOperatorAccount[] {
  let accounts: LocalOperatorAccount[] = [];
  if (existsSync(file)) {
    const parsed = JSON.parse(readPrivateFile(file)) as unknown;
    if (!Array.isArray(parsed) || !parsed.every(valid)) {
      throw new Error(`${file} is not a list of operator accounts; delete it to make new ones`);
    }
    accounts = parsed;
  }
  const missing = OPERATOR_ROLES.filter((role) => !accounts.some((a) => a.role === role));
  if (missing.length > 0 || !existsSync(file)) {
    accounts = [...accounts, ...missing.map(newAccount)];
    writePrivateFile(file, `${JSON.stringify(accounts, null, 2)}\n`);
  }
  return accounts;
}
