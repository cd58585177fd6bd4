/**
 * A simulated vehicle of three ECUs (gateway, body controller, infotainment), each with file-backed A/B slots and
 * a boot counter, driven by the TCU's BundleInstaller. "Power cuts" throw from a step hook; a new instance on the
 * same folders is the reboot.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SignedManifest } from '../../protocol/manifest.js';
import type { TrustedKey } from '../../protocol/signatures.js';
import {
  BundleInstaller,
  type BundleInstallerOptions,
  type BundleStepName,
  type EcuProgress,
} from '../../vehicle/bundle-install.js';
import { verifyImageFile } from '../../vehicle/image-file.js';
import { FileSlotInstaller } from '../../vehicle/installer.js';
import type { TestRelease } from './bundle-fixtures.js';

export const ECUS = [
  { ecu: 'gateway', hardware_id: 'GW-1' },
  { ecu: 'bcm', hardware_id: 'BCM-A' },
  { ecu: 'ivi', hardware_id: 'IVI-9' },
] as const;

export class PowerCut extends Error {}

export interface SimVehicleOptions {
  readonly dir: string;
  readonly vin: string;
  readonly releaseKeys: readonly TrustedKey[];
  readonly backendKeys: readonly TrustedKey[];
  /** Factory images per ECU (the v1 releases). */
  readonly factory: Readonly<Record<string, TestRelease>>;
  /** ECUs whose health check fails. */
  readonly unhealthy?: ReadonlySet<string>;
  readonly bootBudget?: number;
  readonly beforeStep?: (step: BundleStepName, ecu: string) => Promise<void> | void;
  /** Downloads and verifies a member; the default takes the image from `images`. */
  readonly fetchImage?: BundleInstallerOptions['fetchImage'];
  readonly images?: ReadonlyMap<string, Buffer>;
}

/** One boot of the TCU: fresh ECU handles and a fresh installer over the same folders. */
export function bootVehicle(o: SimVehicleOptions) {
  const progress: EcuProgress[] = [];
  const fetched: string[] = [];
  const ecus = Object.fromEntries(
    ECUS.map(({ ecu }) => {
      const f = o.factory[ecu];
      if (!f) throw new Error(`no factory image for ${ecu}`);
      return [
        ecu,
        new FileSlotInstaller({
          dir: join(o.dir, 'ecus', ecu),
          ecu,
          factory: { version: f.manifest.version, image: f.image },
          healthCheck: () => !o.unhealthy?.has(ecu),
          freeSpace: async () => 1024 ** 3,
          ...(o.bootBudget !== undefined ? { bootBudget: o.bootBudget } : {}),
        }),
      ];
    }),
  );
  const fromImages: BundleInstallerOptions['fetchImage'] = async (sm: SignedManifest, signal) => {
    const m = sm.manifest;
    const bytes = o.images?.get(m.sha256);
    if (!bytes) throw new Error(`the server has no image ${m.release_id}`);
    const dir = join(o.dir, 'downloads');
    await mkdir(dir, { recursive: true });
    const path = join(dir, `${m.sha256}.img`);
    await writeFile(path, bytes);
    const problems = await verifyImageFile(path, m, signal);
    if (problems.length > 0) throw new Error(problems.join('; '));
    return path;
  };
  const installer = new BundleInstaller({
    dir: join(o.dir, 'tcu'),
    vin: o.vin,
    releaseKeys: () => o.releaseKeys,
    backendKeys: o.backendKeys,
    hardwareIds: Object.fromEntries(ECUS.map((e) => [e.ecu, e.hardware_id])),
    installers: ecus,
    now: () => Date.now(),
    fetchImage: async (sm, signal, onProgress) => {
      fetched.push(sm.manifest.ecu);
      return (o.fetchImage ?? fromImages)(sm, signal, onProgress);
    },
    onProgress: (p) => progress.push(p),
    ...(o.beforeStep ? { beforeStep: o.beforeStep } : {}),
  });
  const versions = async () =>
    Object.fromEntries(
      await Promise.all(ECUS.map(async ({ ecu }) => [ecu, (await ecus[ecu]!.active()).version])),
    );
  return { installer, ecus, progress, fetched, versions };
}
