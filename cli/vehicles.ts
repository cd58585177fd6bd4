/** `ota vehicles register|show`: the vehicle registry. */
import { readFileSync, writeFileSync } from 'node:fs';
import type { VehicleRegistered } from '../protocol/operator-responses.js';
import { requireString, stringList, stringOption, UsageError } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';
import { checkVin, parseEcuSpec } from './inputs.js';
import { renderVehicle, type VehicleView } from './render.js';

export async function register(ctx: Context): Promise<void> {
  const v = ctx.args.values;
  const vin = checkVin(requireString(v, 'vin').trim().toUpperCase(), '--vin');
  const ecus = stringList(v, 'ecu').map(parseEcuSpec);
  const duplicate = ecus.find((e, i) => ecus.findIndex((x) => x.ecu === e.ecu) !== i);
  if (duplicate) throw new UsageError(`--ecu ${duplicate.ecu} is given twice; each ECU appears once`);
  const csrFile = ctx.path(requireString(v, 'csr'));
  let csr: string;
  try {
    csr = readFileSync(csrFile, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read the CSR ${csrFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!csr.includes('-----BEGIN CERTIFICATE REQUEST-----')) {
    throw new CliError(`${csrFile} is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)`);
  }
  const out = stringOption(v, 'out');
  const api = await ctx.api();
  const registered = await api.post<VehicleRegistered>('/vehicles', {
    vin,
    model: requireString(v, 'model'),
    ecus,
    csr,
  });
  if (out !== undefined) {
    const path = ctx.path(out);
    try {
      writeFileSync(path, registered.certificate_pem);
    } catch (err) {
      // The vehicle is registered: say so, and how to get the certificate anyway.
      throw new CliError(
        `${registered.vin} is registered but ${path} could not be written (${(err as Error).message}); --json prints the certificate`,
      );
    }
  }
  ctx.printJson(registered);
  ctx.print(`registered ${registered.vin} (${registered.model}), certificate ${registered.certificate_id}`);
  if (out !== undefined) ctx.print(`device certificate written to ${ctx.display(ctx.path(out))}`);
  else ctx.print(registered.certificate_pem);
}

export async function show(ctx: Context): Promise<void> {
  const vin = ctx.args.positionals[0]!.trim().toUpperCase();
  const api = await ctx.api();
  const vehicle = await api.get<VehicleView>(`/vehicles/${encodeURIComponent(vin)}`);
  ctx.printJson(vehicle);
  ctx.print(renderVehicle(vehicle).join('\n'));
}
