/**
 * The member downloads of the bundle in progress, resumable like a single release's (download-phase.ts) and by the
 * same Downloader: each member is fetched into `<state>/bundle/members/<sha256>.part` and its verified prefix is
 * checkpointed in `members/resume.json`, so a cut connection, an expired URL or a restart costs only the bytes after
 * the last verified chunk (the Downloader reads that prefix back and checks it chunk by chunk before it trusts it).
 * A member verified before is kept as `<sha256>.img` and checked again instead of fetched.
 *
 * Failed runs spend the download budget (budgets.downloadRuns) of the bundle, counted across restarts like a single
 * release's; the same failures are worth another run (DownloadError.resumable), and an unreachable backend (a fresh
 * URL could not be had) waits without spending it. Corrupt bytes are dropped, never resumed from. Everything here
 * belongs to one offer: begin() keeps it for the same offer (a restart) and drops it for any other, and clear()
 * removes it once the bundle has its outcome.
 */
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import type { ReleaseManifest, SignedManifest } from '../protocol/manifest.js';
import { type AgentContext, DEFAULT_RETRY_BACKOFF, RetryLater } from './agent-context.js';
import { ensureDir, writeFileAtomic } from './atomic-file.js';
import { backoffDelay } from './backoff.js';
import type { Downloader, DownloadSource } from './downloader.js';
import type { EcuBases } from './ecu-bases.js';
import { AgentError, DownloadError } from './errors.js';
import { verifyImageFile } from './image-file.js';
import { describeError } from './logger.js';
import { abortReason } from './runtime.js';

const resumeSchema = z.object({
  offer_digest: z.string(),
  /** Failed download runs of this bundle so far (the budget). */
  runs: z.number().int().nonnegative(),
  /** Verified bytes (a chunk boundary) by member image SHA-256. */
  verified: z.record(z.string(), z.number().int().nonnegative()),
  /** What each member's runs fetched and rebuilt locally so far, by image SHA-256 (the outcome report sums them). */
  transfer: z
    .record(
      z.string(),
      z.object({
        fetched: z.number().int().nonnegative(),
        reused: z.number().int().nonnegative(),
        image: z.number().int().nonnegative(),
      }),
    )
    .optional(),
});
type Resume = z.infer<typeof resumeSchema>;

/** Where a member's URLs come from, and the update its events are about. */
export interface MemberContext {
  readonly update_id: string;
  readonly source: DownloadSource;
}

export class BundleDownloads {
  private resume: Resume | undefined;

  constructor(
    private readonly ctx: AgentContext,
    private readonly downloader: Downloader,
    private readonly dir: string,
    /** The ECUs' installed images: a compressed member is built from its ECU's like a single release. */
    private readonly bases: EcuBases,
  ) {}

  private get file(): string {
    return join(this.dir, 'resume.json');
  }

  private partFile(m: ReleaseManifest): string {
    return join(this.dir, `${m.sha256}.part`);
  }

  private imageFile(m: ReleaseManifest): string {
    return join(this.dir, `${m.sha256}.img`);
  }

  /** Starts (or, for the same offer after a restart, continues) the downloads of a bundle offer. */
  async begin(offerDigest: string): Promise<void> {
    const kept = await this.read();
    if (kept?.offer_digest === offerDigest) {
      this.resume = kept;
      return;
    }
    // Another offer's members (one settled without its outcome cleaning up, or an unreadable resume file): the
    // bytes are not trusted to belong to this one, whatever their names.
    await this.clear();
    this.resume = { offer_digest: offerDigest, runs: 0, verified: {}, transfer: {} };
    await this.save();
  }

  /** Everything of the bundle's downloads; called once its outcome is recorded. */
  async clear(): Promise<void> {
    this.resume = undefined;
    await rm(this.dir, { recursive: true, force: true });
  }

  /** One member downloaded and verified (chunk digests while fetching, then the whole image); answers its file. */
  async fetch(
    sm: SignedManifest,
    signal: AbortSignal,
    onProgress: (percent: number) => void,
    member: MemberContext,
  ): Promise<string> {
    const m = sm.manifest;
    if (await this.verifiedBefore(m, signal)) {
      onProgress(100);
      return this.imageFile(m);
    }
    const budget = this.ctx.options.budgets?.downloadRuns ?? 3;
    let unreachable = 0;
    for (;;) {
      let wait: number;
      try {
        return await this.run(m, signal, onProgress, member);
      } catch (err) {
        if (signal.aborted) throw abortReason(signal);
        const policy = this.ctx.options.retryBackoff ?? DEFAULT_RETRY_BACKOFF;
        const random = () => this.ctx.runtime.random();
        if (err instanceof RetryLater) {
          // No URL could be had (the backend is unreachable): as for a single release, waiting spends no budget.
          wait = backoffDelay(unreachable++, policy, random);
        } else {
          if (!(err instanceof DownloadError) || !err.resumable) {
            if (err instanceof DownloadError && err.failure === 'corrupt') await this.forget(m);
            throw err;
          }
          const runs = (this.resume?.runs ?? 0) + 1;
          if (this.resume) this.resume.runs = runs;
          await this.save();
          if (runs >= budget) throw err;
          wait = backoffDelay(runs, policy, random);
        }
        this.ctx.logger.warn('bundle member download run failed; resuming from its checkpoint', {
          ecu: m.ecu,
          error: describeError(err),
          runs: this.resume?.runs,
          budget,
          in_ms: wait,
        });
      }
      await this.ctx.runtime.sleep(wait, signal);
    }
  }

  /**
   * What the bundle's member downloads cost so far (every run, across restarts): bytes fetched, image bytes rebuilt
   * from the installed images, and the size of the images downloaded. Undefined when nothing was downloaded.
   */
  transfer(): { fetched: number; reused: number; image: number } | undefined {
    const members = Object.values(this.resume?.transfer ?? {});
    if (members.length === 0) return undefined;
    return members.reduce(
      (sum, t) => ({
        fetched: sum.fetched + t.fetched,
        reused: sum.reused + t.reused,
        image: sum.image + t.image,
      }),
      { fetched: 0, reused: 0, image: 0 },
    );
  }

  private async run(
    m: ReleaseManifest,
    signal: AbortSignal,
    onProgress: (percent: number) => void,
    member: MemberContext,
  ): Promise<string> {
    const part = this.partFile(m);
    // A compressed member is built like a single release: from its ECU's installed image (chunk reuse, a delta),
    // every chunk verified the same whatever its source.
    const base = m.compression ? await this.bases.baseImage(m.ecu) : undefined;
    const before = this.resume?.transfer?.[m.sha256] ?? { fetched: 0, reused: 0, image: m.size };
    const stats = await this.downloader.download({
      manifest: m,
      ...(base?.image ? { base: base.image } : {}),
      ...(base?.missing ? { noBase: base.missing } : {}),
      onBaseIndexed: (index) => this.bases.keepIndex(m.ecu, base?.image?.sha256, index, []),
      file: part,
      verifiedBytes: this.resume?.verified[m.sha256] ?? 0,
      source: member.source,
      signal,
      onProgress: (bytes) => onProgress((bytes * 100) / m.size),
      onCheckpoint: async (verified, run) => {
        if (!this.resume) return;
        this.resume.verified[m.sha256] = verified;
        this.resume.transfer = {
          ...this.resume.transfer,
          [m.sha256]: {
            fetched: before.fetched + run.bytesReceived,
            reused: Math.min(before.reused + run.bytesReused, m.size),
            image: m.size,
          },
        };
        await this.save();
      },
      onRequest: (r) => this.ctx.emit({ type: 'request', update_id: member.update_id, ...r }),
      onChunkVerified: (info) =>
        this.ctx.options.hooks?.onChunkVerified?.({ update_id: member.update_id, ecu: m.ecu, ...info }),
    });
    const cost = {
      path: stats.path,
      bytes_fetched: before.fetched + stats.bytesReceived,
      bytes_reused: Math.min(before.reused + stats.bytesReused, m.size),
      ...(stats.fallback !== undefined ? { fallback: stats.fallback } : {}),
    };
    this.ctx.logger.info('bundle member downloaded', { ecu: m.ecu, ...cost });
    this.ctx.emit({ type: 'downloaded', update_id: member.update_id, ecu: m.ecu, ...cost });
    if (stats.sha256 !== m.sha256) {
      await this.forget(m);
      throw new AgentError('verification_failed', `whole-image SHA-256 of ${m.ecu} is not the manifest's`);
    }
    // Its index kept beside the installed image's: once the bundle installs it, the next update reuses from it.
    if (stats.index) {
      await this.bases.keepIndex(m.ecu, m.sha256, stats.index, base?.image ? [base.image.sha256] : []);
    }
    await rename(part, this.imageFile(m));
    return this.imageFile(m);
  }

  /** Whether the member's image was downloaded and verified before (a restart); a damaged one is dropped. */
  private async verifiedBefore(m: ReleaseManifest, signal: AbortSignal): Promise<boolean> {
    let problems: string[];
    try {
      problems = await verifyImageFile(this.imageFile(m), m, signal);
    } catch (err) {
      if (signal.aborted) throw abortReason(signal);
      if ((err as { code?: string }).code === 'ENOENT') return false;
      throw err;
    }
    if (problems.length === 0) return true;
    this.ctx.logger.warn('a kept bundle member no longer verifies; fetched again', { ecu: m.ecu, problems });
    await rm(this.imageFile(m), { force: true });
    return false;
  }

  /** Drops a member's partial download and its resume point. */
  private async forget(m: ReleaseManifest): Promise<void> {
    await rm(this.partFile(m), { force: true });
    if (this.resume) delete this.resume.verified[m.sha256];
    await this.save();
  }

  private async read(): Promise<Resume | undefined> {
    try {
      return resumeSchema.parse(JSON.parse(await readFile(this.file, 'utf8')));
    } catch {
      return undefined; // none, or unreadable: begin() starts afresh (only bytes are lost)
    }
  }

  private async save(): Promise<void> {
    // After a power cut nothing more is written.
    if (!this.resume || this.ctx.killed()) return;
    await ensureDir(this.dir);
    await writeFileAtomic(this.file, JSON.stringify(this.resume));
  }
}
