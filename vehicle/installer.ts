/**
 * ECU installation with A/B slots. EcuInstaller is what a real flasher implements (UDS over CAN, an eMMC
 * partition pair, a bootloader flag...); FileSlotInstaller keeps the two slots as files in a folder and the
 * active-slot pointer in an atomically written JSON file, which is enough to show and test the guarantees:
 *
 * - the new image goes to the inactive slot and is read back and hashed before anything points at it;
 * - switching is one atomic write of the pointer, into a "trial" state;
 * - a health check then decides: commit, or switch back (rolled back);
 * - after a power cut, recover() finds either the old slot active, or a committed new one; a trial that was never
 *   confirmed is switched back. Never a mix.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import { ensureDir, fsyncDir, writeFileAtomic } from './atomic-file.js';
import { InstallError } from './errors.js';
import { type FreeSpace, systemFreeSpace } from './image-file.js';
import { throwIfAborted } from './runtime.js';

/** The verified image to install. */
export interface ImageToInstall {
  readonly path: string;
  readonly version: string;
  readonly size: number;
  readonly sha256: string;
}

export interface ActiveImage {
  readonly version: string;
  readonly sha256: string;
}

/** What recover() found after a restart. */
export interface RecoveryReport {
  /** What runs now. */
  readonly active: ActiveImage;
  /** A switched but unconfirmed image was found and the previous slot made active again. */
  readonly revertedTrial?: ActiveImage;
}

export interface HealthCheckContext {
  readonly ecu: string;
  readonly version: string;
  /** Where the image now active lives (FileSlotInstaller: the slot file). */
  readonly location: string;
}

/** True when the ECU runs the new image correctly. Injectable: a real one boots and probes the ECU. */
export type HealthCheck = (ctx: HealthCheckContext) => Promise<boolean> | boolean;

export interface EcuInstaller {
  readonly ecu: string;
  /** Settles any interrupted install (call at start-up, before anything else) and answers what runs now. */
  recover(): Promise<RecoveryReport>;
  active(): Promise<ActiveImage>;
  /** Writes the image to the inactive slot and verifies it there; the active slot is untouched. */
  writeInactive(
    image: ImageToInstall,
    opts: { signal: AbortSignal; onProgress?: (written: number) => void },
  ): Promise<void>;
  /** Points at the slot just written, as a trial (atomic). */
  activate(image: ImageToInstall): Promise<void>;
  healthCheck(): Promise<boolean>;
  /** Makes the trial permanent. */
  commit(): Promise<void>;
  /** Switches back to the previous slot after a failed trial. */
  rollback(): Promise<ActiveImage>;
  /**
   * A readable file of the image the ECU runs and its digest recorded at install, for chunk reuse (delta
   * downloads); undefined when the ECU cannot read its image back.
   */
  baseImage?(): Promise<{ path: string; sha256: string } | undefined>;
}

const slotName = z.enum(['a', 'b']);
type SlotName = z.infer<typeof slotName>;
const slotSchema = z.object({
  status: z.enum(['empty', 'writing', 'valid']),
  version: z.string().optional(),
  sha256: z.string().optional(),
  size: z.number().int().optional(),
});
const slotsFileSchema = z.object({
  schema: z.literal('ota.ab-slots/v1'),
  ecu: z.string(),
  active: slotName,
  /** committed: the active slot is confirmed; trial: switched, waiting for the health check. */
  state: z.enum(['committed', 'trial']),
  previous: slotName.optional(),
  /**
   * Boots a trial slot still gets without being confirmed (the bootloader's boot counter); at 0 the next boot
   * switches back. Absent in files written before boot counters: such a trial is counted as having none left.
   */
  boots_left: z.number().int().min(0).optional(),
  slots: z.object({ a: slotSchema, b: slotSchema }),
});
export type SlotsFile = z.infer<typeof slotsFileSchema>;

export interface FileSlotInstallerOptions {
  readonly dir: string;
  readonly ecu: string;
  /** What slot A holds on first run (the factory image). */
  readonly factory: { readonly version: string; readonly image: Buffer };
  /** @default re-hash the active slot and compare with what was written */
  readonly healthCheck?: HealthCheck;
  /** @default statfs */
  readonly freeSpace?: FreeSpace;
  /** Boots an activated, unconfirmed slot gets before the bootloader switches back. @default 3 */
  readonly bootBudget?: number;
}

/** What a (simulated) ECU reset did: the slot it boots, and the trial it gave up when its boots ran out. */
export interface BootReport {
  readonly active: ActiveImage;
  readonly gaveUp?: ActiveImage;
  /** Boots the trial still has (undefined when nothing is on trial). */
  readonly bootsLeft?: number;
}

const other = (s: SlotName): SlotName => (s === 'a' ? 'b' : 'a');

async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const data of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(data as Buffer);
    size += (data as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

export class FileSlotInstaller implements EcuInstaller {
  readonly ecu: string;
  private slots: SlotsFile | undefined;

  constructor(private readonly options: FileSlotInstallerOptions) {
    this.ecu = options.ecu;
  }

  slotPath(slot: SlotName): string {
    return join(this.options.dir, `slot-${slot}.img`);
  }

  private get pointerFile(): string {
    return join(this.options.dir, 'slots.json');
  }

  /** The pointer file, creating the factory state on first use. */
  async read(): Promise<SlotsFile> {
    if (this.slots) return this.slots;
    await ensureDir(this.options.dir);
    let text: string | undefined;
    try {
      text = await readFile(this.pointerFile, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
    }
    if (text === undefined) {
      const f = this.options.factory;
      await writeFileAtomic(this.slotPath('a'), f.image, 0o600);
      const initial: SlotsFile = {
        schema: 'ota.ab-slots/v1',
        ecu: this.ecu,
        active: 'a',
        state: 'committed',
        slots: {
          a: {
            status: 'valid',
            version: f.version,
            sha256: createHash('sha256').update(f.image).digest('hex'),
            size: f.image.length,
          },
          b: { status: 'empty' },
        },
      };
      await this.write(initial);
      return initial;
    }
    this.slots = slotsFileSchema.parse(JSON.parse(text));
    return this.slots;
  }

  private async write(next: SlotsFile): Promise<void> {
    await writeFileAtomic(this.pointerFile, `${JSON.stringify(next, null, 2)}\n`);
    this.slots = next;
  }

  async active(): Promise<ActiveImage> {
    const s = await this.read();
    const slot = s.slots[s.active];
    if (slot.status !== 'valid' || !slot.version || !slot.sha256) {
      throw new InstallError('no_valid_active_slot', `${this.ecu}: the active slot holds no valid image`);
    }
    return { version: slot.version, sha256: slot.sha256 };
  }

  async baseImage(): Promise<{ path: string; sha256: string } | undefined> {
    const s = await this.read();
    const slot = s.slots[s.active];
    if (s.state !== 'committed' || slot.status !== 'valid' || !slot.sha256) return undefined;
    return { path: this.slotPath(s.active), sha256: slot.sha256 };
  }

  /** The file of the slot in use (what a bootloader would start). */
  async activeSlotPath(): Promise<string> {
    return this.slotPath((await this.read()).active);
  }

  async recover(): Promise<RecoveryReport> {
    const s = await this.read();
    let revertedTrial: ActiveImage | undefined;
    if (s.state === 'trial') {
      const slot = s.slots[s.active];
      revertedTrial = { version: slot.version ?? 'unknown', sha256: slot.sha256 ?? '' };
      await this.rollback();
    }
    const now = await this.read();
    const inactive = other(now.active);
    if (now.slots[inactive].status === 'writing') {
      // Power was cut while writing the inactive slot: its content is garbage and is never pointed at.
      await this.write({ ...now, slots: { ...now.slots, [inactive]: { status: 'empty' } } });
    }
    return { active: await this.active(), ...(revertedTrial ? { revertedTrial } : {}) };
  }

  async writeInactive(
    image: ImageToInstall,
    opts: { signal: AbortSignal; onProgress?: (written: number) => void },
  ): Promise<void> {
    const s = await this.read();
    if (s.state !== 'committed')
      throw new InstallError('trial_pending', `${this.ecu}: a trial install is pending`);
    const target = other(s.active);
    const free = await (this.options.freeSpace ?? systemFreeSpace)(this.options.dir);
    if (free < image.size)
      throw new InstallError('no_space', `${this.ecu}: ${image.size} bytes needed, ${free} free`);
    await this.write({ ...s, slots: { ...s.slots, [target]: { status: 'writing' } } });

    const path = this.slotPath(target);
    const out = await open(path, 'w', 0o600);
    const hash = createHash('sha256');
    let written = 0;
    try {
      for await (const data of createReadStream(image.path, {
        highWaterMark: 1024 * 1024,
        signal: opts.signal,
      })) {
        const buf = data as Buffer;
        await out.write(buf, 0, buf.length, written);
        hash.update(buf);
        written += buf.length;
        opts.onProgress?.(written);
      }
      await out.sync();
    } finally {
      await out.close();
    }
    await fsyncDir(this.options.dir);
    throwIfAborted(opts.signal);
    // The image as read now, at the time of use: damage on disk since the download is caught here.
    const source = hash.digest('hex');
    if (source !== image.sha256 || written !== image.size) {
      await this.write({ ...(await this.read()), slots: { ...s.slots, [target]: { status: 'empty' } } });
      throw new InstallError(
        'image_damaged',
        `${this.ecu}: the image file read for slot ${target} has SHA-256 ${source} (${written} bytes), not the signed ${image.sha256}`,
      );
    }
    // Read back what the slot holds: this is what would boot, so this is what must match the signed digest.
    const back = await sha256File(path);
    if (back.sha256 !== image.sha256 || back.size !== image.size) {
      await this.write({ ...(await this.read()), slots: { ...s.slots, [target]: { status: 'empty' } } });
      throw new InstallError(
        'slot_verification_failed',
        `${this.ecu}: slot ${target} does not hold the verified image after writing`,
      );
    }
    const after = await this.read();
    await this.write({
      ...after,
      slots: {
        ...after.slots,
        [target]: { status: 'valid', version: image.version, sha256: image.sha256, size: image.size },
      },
    });
  }

  async activate(image: ImageToInstall): Promise<void> {
    const s = await this.read();
    const target = other(s.active);
    const slot = s.slots[target];
    if (s.state !== 'committed' || slot.status !== 'valid' || slot.sha256 !== image.sha256) {
      throw new InstallError('slot_not_ready', `${this.ecu}: slot ${target} does not hold ${image.version}`);
    }
    await this.write({
      ...s,
      active: target,
      state: 'trial',
      previous: s.active,
      boots_left: this.options.bootBudget ?? 3,
    });
  }

  /**
   * An ECU reset, as its bootloader sees it: a trial slot spends one of its boots, and once none is left the
   * bootloader switches back to the previous slot on its own, whatever the agent does (a hung TCU cannot leave an
   * ECU on an unconfirmed image for ever).
   */
  async boot(): Promise<BootReport> {
    const s = await this.read();
    if (s.state !== 'trial') return { active: await this.active() };
    const left = s.boots_left ?? 0;
    if (left === 0) {
      const slot = s.slots[s.active];
      const gaveUp = { version: slot.version ?? 'unknown', sha256: slot.sha256 ?? '' };
      return { active: await this.rollback(), gaveUp };
    }
    await this.write({ ...s, boots_left: left - 1 });
    return { active: await this.active(), bootsLeft: left - 1 };
  }

  /**
   * Switches a committed ECU back to its other slot when that still holds exactly `sha256` (A/B keeps the previous
   * image until the next write): how a bundle whose other member fell back is made whole again.
   */
  async switchBackTo(sha256: string): Promise<ActiveImage> {
    const s = await this.read();
    const prev = other(s.active);
    if (s.state !== 'committed' || s.slots[prev].status !== 'valid' || s.slots[prev].sha256 !== sha256) {
      throw new InstallError('previous_unavailable', `${this.ecu}: the other slot no longer holds ${sha256}`);
    }
    await this.write({ ...s, active: prev });
    return this.active();
  }

  async healthCheck(): Promise<boolean> {
    const s = await this.read();
    const slot = s.slots[s.active];
    const location = this.slotPath(s.active);
    if (this.options.healthCheck) {
      return this.options.healthCheck({ ecu: this.ecu, version: slot.version ?? 'unknown', location });
    }
    const { sha256 } = await sha256File(location);
    return sha256 === slot.sha256;
  }

  async commit(): Promise<void> {
    const s = await this.read();
    if (s.state !== 'trial') throw new InstallError('no_trial', `${this.ecu}: nothing to commit`);
    const { previous: _previous, boots_left: _boots, ...rest } = s;
    await this.write({ ...rest, state: 'committed' });
  }

  async rollback(): Promise<ActiveImage> {
    const s = await this.read();
    if (s.state === 'trial' && s.previous) {
      const failed = s.active;
      const { previous, boots_left: _boots, ...rest } = s;
      // The failed image is dropped from its slot so nothing boots it again.
      await this.write({
        ...rest,
        active: previous,
        state: 'committed',
        slots: { ...s.slots, [failed]: { status: 'empty' } },
      });
      await rm(this.slotPath(failed), { force: true });
    }
    return this.active();
  }
}
