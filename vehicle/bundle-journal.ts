/**
 * The bundle journal: one atomically written file that says, at every instant of a bundle install, which way a
 * restart must settle the ECUs. It is written before the first slot is touched and holds, per member, the image
 * each ECU ran before and the one it is moving to. Its `decision` is the bundle's single commit point: until it
 * reads `commit` (written only once every member passed its health check) a restart returns every ECU to its old
 * image; once it reads `commit` a restart confirms every member. So a power cut between two activations can only
 * end all-old or all-new.
 *
 * Also kept here: the ids of rollback authorisations already used on this vehicle (protocol/rollback.ts), so one
 * document cannot take the car down twice.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import { ensureDir, writeFileAtomic } from './atomic-file.js';
import { StateError } from './errors.js';

const stepSchema = z.object({
  ecu: z.string(),
  from_version: z.string(),
  from_sha256: z.string(),
  to_version: z.string(),
  to_sha256: z.string(),
});
export type JournalStep = z.infer<typeof stepSchema>;

const journalSchema = z.object({
  schema: z.literal('ota.bundle-journal/v1'),
  update_id: z.string(),
  campaign_id: z.string().nullable(),
  bundle_id: z.string(),
  bundle_version: z.string(),
  /** The rollback authorisation admitting downgrades in this bundle, recorded as used once it commits. */
  authorisation_id: z.string().optional(),
  authorisation_expires_at: z.string().optional(),
  /** pending: nothing decided, a restart reverts; commit: all healthy, a restart confirms; revert: a member failed. */
  decision: z.enum(['pending', 'commit', 'revert']),
  failed_member: z.string().optional(),
  reason: z.string().optional(),
  /** Members that change, in install order. */
  steps: z.array(stepSchema),
});
export type BundleJournal = z.infer<typeof journalSchema>;

const usedSchema = z.object({
  schema: z.literal('ota.rollback-used/v1'),
  used: z.array(z.object({ id: z.string(), expires_at: z.string() })),
});

export class JournalStore {
  constructor(private readonly dir: string) {}

  private get journalFile(): string {
    return join(this.dir, 'bundle-journal.json');
  }

  private get usedFile(): string {
    return join(this.dir, 'rollback-used.json');
  }

  async read(): Promise<BundleJournal | undefined> {
    const text = await readText(this.journalFile);
    if (text === undefined) return undefined;
    const parsed = journalSchema.safeParse(safeJson(text));
    // A journal that cannot be read must not be guessed at: which way to settle would be a guess.
    if (!parsed.success) throw new StateError('journal_invalid', `${this.journalFile} is invalid`);
    return parsed.data;
  }

  async write(journal: BundleJournal): Promise<void> {
    await ensureDir(this.dir);
    await writeFileAtomic(this.journalFile, `${JSON.stringify(journalSchema.parse(journal), null, 2)}\n`);
  }

  async clear(): Promise<void> {
    await rm(this.journalFile, { force: true });
  }

  /** Authorisation ids used here that have not expired yet (an expired one is refused anyway). */
  async usedAuthorisations(now: number): Promise<string[]> {
    const text = await readText(this.usedFile);
    if (text === undefined) return [];
    const parsed = usedSchema.safeParse(safeJson(text));
    if (!parsed.success) throw new StateError('journal_invalid', `${this.usedFile} is invalid`);
    return parsed.data.used.filter((u) => Date.parse(u.expires_at) > now).map((u) => u.id);
  }

  async recordUsed(id: string, expiresAt: string, now: number): Promise<void> {
    const text = await readText(this.usedFile);
    const prior = text === undefined ? [] : (usedSchema.safeParse(safeJson(text)).data?.used ?? []);
    const used = prior.filter((u) => u.id !== id && Date.parse(u.expires_at) > now);
    used.push({ id, expires_at: expiresAt });
    await ensureDir(this.dir);
    await writeFileAtomic(this.usedFile, `${JSON.stringify({ schema: 'ota.rollback-used/v1', used })}\n`);
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
