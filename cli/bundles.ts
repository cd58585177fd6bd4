/**
 * `ota bundles ...` and `ota rollbacks sign`: OEM-signed documents made offline with the release key (like
 * `ota firmware sign`), then stored through the API.
 *
 * - bundles sign: a bundle of signed release manifests (the files `ota firmware sign` wrote), installed in the
 *   order given, with optional version constraints; bundles publish stores it (POST /bundles); bundles show.
 * - rollbacks sign: an authorisation to take a campaign from one bundle back to another, naming per ECU the exact
 *   versions and the manifest of the release it returns to (protocol/rollback.ts); `ota campaigns rollback` uses it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { BundleView } from '../protocol/bundle-api.js';
import { numberOption, requireString, stringList, stringOption, UsageError } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';

function readJson(ctx: Context, file: string, what: string): unknown {
  const p = ctx.path(file);
  try {
    return JSON.parse(readFileSync(p, 'utf8'));
  } catch (err) {
    throw new CliError(`cannot read ${what} ${p}: ${(err as Error).message}`);
  }
}

async function releaseSigner(ctx: Context) {
  const { KeyFileSigner } = await import('../protocol/signatures.js');
  const keyFile = ctx.path(requireString(ctx.args.values, 'key'));
  try {
    return new KeyFileSigner(readFileSync(keyFile, 'utf8'));
  } catch (err) {
    throw new CliError(`cannot use the release key ${keyFile}: ${(err as Error).message}`);
  }
}

function write(ctx: Context, doc: unknown): string {
  const out = ctx.path(requireString(ctx.args.values, 'out'));
  try {
    writeFileSync(out, `${JSON.stringify(doc, null, 2)}\n`);
  } catch (err) {
    throw new CliError(`cannot write ${out}: ${(err as Error).message}`);
  }
  return out;
}

/** "ivi:gw>=2.0.0<3.0.0": while ivi runs the bundle's version, gw must be in [2.0.0, 3.0.0). */
export function parseConstraint(text: string) {
  const m = /^([a-z][a-z0-9_-]*):([a-z][a-z0-9_-]*)(?:>=([^<]+))?(?:<(.+))?$/.exec(text);
  if (!m || (m[3] === undefined && m[4] === undefined)) {
    throw new UsageError(
      `--constraint ${text}: expected <member>:<ecu>>=<min><<below> (either bound optional)`,
    );
  }
  return {
    member: m[1]!,
    requires: m[2]!,
    ...(m[3] !== undefined ? { min_version: m[3] } : {}),
    ...(m[4] !== undefined ? { below_version: m[4] } : {}),
  };
}

export async function sign(ctx: Context): Promise<void> {
  const v = ctx.args.values;
  const [{ signedManifestSchema }, { bundleOfManifests, signBundle }] = await Promise.all([
    import('../protocol/schemas.js'),
    import('../protocol/bundle.js'),
  ]);
  const manifests = stringList(v, 'manifest').map((file) => {
    const parsed = signedManifestSchema.safeParse(readJson(ctx, file, 'the manifest'));
    if (!parsed.success) throw new CliError(`${file} is not a signed release manifest`);
    return parsed.data.manifest;
  });
  const bundle = bundleOfManifests(
    requireString(v, 'bundle-id'),
    requireString(v, 'version'),
    manifests,
    stringList(v, 'constraint').map(parseConstraint),
  );
  let signed: Awaited<ReturnType<typeof signBundle>>;
  try {
    signed = await signBundle(bundle, [await releaseSigner(ctx)]);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const out = write(ctx, signed);
  ctx.printJson({ bundle_id: bundle.bundle_id, version: bundle.version, file: out });
  ctx.print(
    `signed bundle ${bundle.bundle_id} ${bundle.version} (${bundle.install_order.join(' -> ')}) to ${out}; store it: ota bundles publish ${out}`,
  );
}

export function bundleLines(b: BundleView): string[] {
  return [
    `bundle ${b.bundle_id} ${b.version} (digest ${b.digest.slice(0, 16)}), created ${b.created_at}`,
    ...b.members.map(
      (m) => `  ${m.ecu.padEnd(8)} ${m.release_id.padEnd(24)} ${m.version.padEnd(10)} ${m.size} bytes`,
    ),
    `  install order: ${b.install_order.join(' -> ')}`,
  ];
}

export async function publish(ctx: Context): Promise<void> {
  const doc = readJson(ctx, ctx.args.positionals[0]!, 'the signed bundle');
  const api = await ctx.api();
  const b = await api.post<BundleView>('/bundles', doc);
  ctx.printJson(b);
  ctx.print(
    [...bundleLines(b), `roll it out: ota campaigns create --bundle-id ${b.bundle_id} ...`].join('\n'),
  );
}

export async function show(ctx: Context): Promise<void> {
  const api = await ctx.api();
  const b = await api.get<BundleView>(`/bundles/${encodeURIComponent(ctx.args.positionals[0]!)}`);
  ctx.printJson(b);
  ctx.print(bundleLines(b).join('\n'));
}

/**
 * An authorisation to take campaign --campaign from the bundle --from to the bundle --to: one step per ECU whose
 * version goes down, naming both versions and the manifest of the release it returns to.
 */
export async function signRollback(ctx: Context): Promise<void> {
  const v = ctx.args.values;
  const [
    { signedBundleSchema },
    { signRollbackAuthorisation, MAX_ROLLBACK_VALIDITY_MS },
    { compareVersions },
  ] = await Promise.all([
    import('../protocol/bundle.js'),
    import('../protocol/rollback.js'),
    import('../protocol/versions.js'),
  ]);
  const bundleFile = (flag: string) => {
    const parsed = signedBundleSchema.safeParse(readJson(ctx, requireString(v, flag), `--${flag}`));
    if (!parsed.success) throw new CliError(`--${flag} is not a signed bundle`);
    return parsed.data.bundle;
  };
  const from = bundleFile('from');
  const to = bundleFile('to');
  const steps = to.members.flatMap((m) => {
    const was = from.members.find((x) => x.ecu === m.ecu);
    if (!was || compareVersions(m.version, was.version) >= 0) return [];
    return [
      { ecu: m.ecu, from_version: was.version, to_version: m.version, to_manifest_sha256: m.manifest_sha256 },
    ];
  });
  if (steps.length === 0) throw new CliError(`bundle ${to.bundle_id} lowers no ECU of ${from.bundle_id}`);
  const days = numberOption(v, 'valid-days', { min: 0.01, max: MAX_ROLLBACK_VALIDITY_MS / 86_400_000 }) ?? 7;
  const now = Date.now();
  const campaign = requireString(v, 'campaign');
  const vins = stringList(v, 'vin');
  const authorisation = {
    schema: 'ota.rollback-authorisation/v1' as const,
    authorisation_id: stringOption(v, 'authorisation-id') ?? `rollback-${campaign}-${now.toString(36)}`,
    campaign_id: campaign,
    bundle_id: from.bundle_id,
    ...(vins.length ? { vins } : {}),
    ecus: steps,
    issued_at: new Date(now).toISOString(),
    expires_at: new Date(now + days * 86_400_000).toISOString(),
  };
  let signed: Awaited<ReturnType<typeof signRollbackAuthorisation>>;
  try {
    signed = await signRollbackAuthorisation(authorisation, [await releaseSigner(ctx)]);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const out = write(ctx, signed);
  ctx.printJson({ authorisation_id: authorisation.authorisation_id, file: out, ecus: steps });
  ctx.print(
    [
      `signed rollback authorisation ${authorisation.authorisation_id} for campaign ${campaign}, valid until ${authorisation.expires_at}:`,
      ...steps.map((s) => `  ${s.ecu} ${s.from_version} -> ${s.to_version}`),
      `use it: ota campaigns rollback ${campaign} --bundle-id ${to.bundle_id} --authorisation ${out}`,
    ].join('\n'),
  );
}
