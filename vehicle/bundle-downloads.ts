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
    this.resume = { offer_digest: offerDigest, runs: 0, verified: {} };
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

  private async run(
    m: ReleaseManifest,
    signal: AbortSignal,
    onProgress: (percent: number) => void,
    member: MemberContext,
  ): Promise<string> {
    const part = this.partFile(m);
    const stats = await this.downloader.download({
      manifest: m,
      file: part,
      verifiedBytes: this.resume?.verified[m.sha256] ?? 0,
      source: member.source,
      signal,
      onProgress: (bytes) => onProgress((bytes * 100) / m.size),
      onCheckpoint: async (verified) => {
        if (!this.resume) return;
        this.resume.verified[m.sha256] = verified;
        await this.save();
      },
      onRequest: (r) => this.ctx.emit({ type: 'request', update_id: member.update_id, ...r }),
      onChunkVerified: (info) =>
        this.ctx.options.hooks?.onChunkVerified?.({ update_id: member.update_id, ecu: m.ecu, ...info }),
    });
    if (stats.sha256 !== m.sha256) {
      await this.forget(m);
      throw new AgentError('verification_failed', `whole-image SHA-256 of ${m.ecu} is not the manifest's`);
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
