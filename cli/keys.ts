/**
 * `ota keys create`: an OEM release key pair (ECDSA P-256) for signing firmware manifests.
 * `ota keys set`: the document of release keys vehicles trust, published as the release-keys pseudo-ECU's image.
 * `ota keys backend`: the public half of the deployed stack's KMS signing key, as the PEM vehicles trust.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { keyIdOf } from '../protocol/signatures.js';
import { TRUST_ECU, TRUST_HARDWARE_ID, trustDocument } from '../protocol/trust-document.js';
import { booleanOption, requireString, stringOption } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';

export const PRIVATE_KEY_FILE = 'release.key.pem';
export const PUBLIC_KEY_FILE = 'release.pub.pem';

export async function create(ctx: Context): Promise<void> {
  const dir = ctx.path(requireString(ctx.args.values, 'out'));
  const privatePath = join(dir, PRIVATE_KEY_FILE);
  const publicPath = join(dir, PUBLIC_KEY_FILE);
  const force = booleanOption(ctx.args.values, 'force');
  for (const p of [privatePath, publicPath]) {
    if (existsSync(p) && !force) {
      throw new CliError(`${p} exists; a release key is not replaced by accident (--force replaces it)`);
    }
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // mode applies only when the file is created; chmod covers --force over an existing file.
    writeFileSync(privatePath, privatePem, { mode: 0o600 });
    chmodSync(privatePath, 0o600);
    writeFileSync(publicPath, publicPem, { mode: 0o644 });
  } catch (err) {
    throw new CliError(`cannot write the key files in ${dir}: ${(err as Error).message}`);
  }
  const keyId = keyIdOf(publicPem);
  ctx.printJson({ key_id: keyId, private_key_file: privatePath, public_key_file: publicPath });
  const show = (p: string) => ctx.display(p);
  ctx.print(
    [
      `key id       ${keyId}`,
      `private key  ${show(privatePath)}  (0600: keep it offline, it signs firmware)`,
      `public key   ${show(publicPath)}`,
      `Trust it locally: npm start -- --release-public-key ${show(publicPath)}`,
      `or on AWS:        npx cdk deploy -c releasePublicKeysFile=${show(publicPath)}`,
    ].join('\n'),
  );
}

export async function keySet(ctx: Context): Promise<void> {
  const files = ctx.args.values.key;
  const list = (Array.isArray(files) ? files : [files]).filter((f): f is string => typeof f === 'string');
  if (list.length === 0) throw new CliError('--key: at least one public key file');
  const pems = list.map((f) => {
    try {
      return readFileSync(ctx.path(f), 'utf8');
    } catch (err) {
      throw new CliError(`cannot read ${f}: ${(err as Error).message}`);
    }
  });
  let doc: Buffer;
  try {
    doc = trustDocument(pems);
  } catch (err) {
    throw new CliError(`not an ECDSA P-256 public key among --key: ${(err as Error).message}`);
  }
  const out = ctx.path(requireString(ctx.args.values, 'out'));
  writeFileSync(out, doc);
  const keyIds = pems.map((p) => keyIdOf(p));
  ctx.printJson({ out, ecu: TRUST_ECU, hardware_id: TRUST_HARDWARE_ID, key_ids: keyIds });
  ctx.print(
    [
      `key set      ${ctx.display(out)} (${keyIds.join(', ')})`,
      `Sign it as firmware for ECU ${TRUST_ECU}, hardware id ${TRUST_HARDWARE_ID}, with a key vehicles trust now.`,
    ].join('\n'),
  );
}

/**
 * The PEM of a KMS GetPublicKey answer, refusing any key vehicles could not use: backend signatures are ECDSA P-256
 * (ECC_NIST_P256, SIGN_VERIFY). Pure, so it is unit-tested without KMS.
 */
export function backendPublicKeyPem(answer: {
  PublicKey?: Uint8Array;
  KeySpec?: string;
  KeyUsage?: string;
}): string {
  if (answer.KeySpec !== 'ECC_NIST_P256' || answer.KeyUsage !== 'SIGN_VERIFY' || !answer.PublicKey) {
    throw new CliError(
      `not the backend signing key: ${answer.KeySpec ?? 'no key spec'} / ${answer.KeyUsage ?? 'no key usage'} ` +
        '(expected ECC_NIST_P256 / SIGN_VERIFY: the SigningKeyArn stack output)',
    );
  }
  const key = createPublicKey({ key: Buffer.from(answer.PublicKey), format: 'der', type: 'spki' });
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

export async function backend(ctx: Context): Promise<void> {
  const keyId = requireString(ctx.args.values, 'key-id');
  const region =
    stringOption(ctx.args.values, 'region') ??
    process.env.AWS_REGION ??
    /^arn:aws[a-z-]*:kms:([a-z0-9-]+):/.exec(keyId)?.[1];
  if (!region)
    throw new CliError('--region is needed when --key-id is not a key ARN and AWS_REGION is unset');
  const { KMSClient, GetPublicKeyCommand } = await import('@aws-sdk/client-kms');
  const kms = new KMSClient({ region });
  let pem: string;
  try {
    pem = backendPublicKeyPem(await kms.send(new GetPublicKeyCommand({ KeyId: keyId })));
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`kms:GetPublicKey on ${keyId} failed: ${(err as Error).message}`);
  } finally {
    kms.destroy();
  }
  const out = ctx.path(requireString(ctx.args.values, 'out'));
  writeFileSync(out, pem, { mode: 0o644 });
  const keyIdOfPem = keyIdOf(pem);
  ctx.printJson({ out, key_id: keyIdOfPem });
  ctx.print(
    [
      `backend key  ${ctx.display(out)} (key id ${keyIdOfPem})`,
      `Give it to vehicles: vehicle-agent --backend-key ${ctx.display(out)}`,
    ].join('\n'),
  );
}
