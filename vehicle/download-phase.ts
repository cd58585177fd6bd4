/**
 * The download and verify phases of one update: the image is fetched into its .part file (resuming from the
 * checkpoint the state names) with URLs asked of the backend as they expire, then checked whole against the signed
 * manifest and renamed to the verified image. Failures spend the download and verify budgets.
 */
import { rename } from 'node:fs/promises';
import { manifestDigest } from '../protocol/assignment.js';
import type { FullOffer } from '../protocol/offer.js';
import {
  type AgentContext,
  DEFAULT_RETRY_BACKOFF,
  imageFile,
  partFile,
  RetryLater,
  reportBase,
} from './agent-context.js';
import { backoffDelay } from './backoff.js';
import { whileUnmetered } from './conditions.js';
import type { Downloader, DownloadSource } from './downloader.js';
import { EcuBases } from './ecu-bases.js';
import { AgentError, ApiError, DownloadError } from './errors.js';
import { verifyImageFile } from './image-file.js';
import { ProgressThrottle } from './rate.js';
import { abortReason } from './runtime.js';
import type { CurrentUpdate } from './state-store.js';
import type { UpdateOutcomes } from './update-outcome.js';

/** Presigned download URLs known in this process, by update (from a poll's /download answer or the source). */
export class DownloadUrls {
  private readonly urls = new Map<string, { url: string; expiresAt: number }>();

  /** A URL still valid for a few seconds more, if any. */
  valid(updateId: string, now: number): string | undefined {
    const cached = this.urls.get(updateId);
    return cached && cached.expiresAt - 5000 > now ? cached.url : undefined;
  }

  set(updateId: string, url: string, expiresAt: number): void {
    this.urls.set(updateId, { url, expiresAt });
  }

  delete(updateId: string): void {
    this.urls.delete(updateId);
  }
}

export class DownloadPhase {
  /** Whole-image digests the downloader computed in this process, by .part file. */
  private readonly streamedDigests = new Map<string, string>();
  /** What each download in this process fetched and reused, for the 'verifying' report. */
  private readonly summaries = new Map<string, string>();

  /** The ECUs' installed images to build from, and the chunk indexes kept for them. */
  private readonly bases: EcuBases;

  constructor(
    private readonly ctx: AgentContext,
    private readonly downloader: Downloader,
    private readonly urls: DownloadUrls,
    private readonly outcomes: UpdateOutcomes,
  ) {
    this.bases = new EcuBases(ctx);
  }

  private urlSource(offer: FullOffer): DownloadSource {
    return {
      url: async (refresh, signal) => {
        const cached = this.urls.valid(offer.update_id, this.ctx.runtime.now());
        if (!refresh && cached) return cached;
        this.ctx.emit({ type: 'url', update_id: offer.update_id, refresh });
        const answer = await this.ctx.options.api.download(offer.firmware_version, signal);
        if (manifestDigest(answer.manifest.manifest) !== manifestDigest(offer.manifest.manifest)) {
          throw new AgentError(
            'manifest_changed',
            'the backend now serves another manifest for this version',
          );
        }
        this.urls.set(
          offer.update_id,
          answer.download_url,
          this.ctx.runtime.now() + answer.expires_in * 1000,
        );
        return answer.download_url;
      },
    };
  }

  async download(cur: CurrentUpdate, offer: FullOffer): Promise<void> {
    const store = this.ctx.store;
    const m = offer.manifest.manifest;
    if (cur.phase === 'accepted') {
      await store.update((d) => {
        if (d.current) d.current.phase = 'downloading';
      });
      await this.ctx.reporter.status({ status: 'downloading', progress: 0, ...reportBase(cur) });
    }
    this.ctx.emit({
      type: 'phase',
      update_id: cur.update_id,
      firmware_version: m.version,
      phase: 'downloading',
    });
    const throttle = new ProgressThrottle();
    const base = m.compression ? await this.bases.baseImage(cur.ecu) : undefined;
    let summary: string | undefined;
    // What earlier runs of this update fetched and reused (saved with their checkpoints): the report counts them all.
    const before = store.state.current?.transfer ?? { fetched: 0, reused: 0 };
    const link = whileUnmetered(this.ctx, offer.assignment.assignment.conditions);
    try {
      const stats = await this.downloader.download({
        manifest: m,
        ...(base?.image ? { base: base.image } : {}),
        ...(base?.missing ? { noBase: base.missing } : {}),
        onBaseIndexed: (index) => this.bases.keepIndex(cur.ecu, base?.image?.sha256, index, []),
        file: partFile(this.ctx.store, m),
        verifiedBytes: store.state.current?.verified_bytes ?? 0,
        source: this.urlSource(offer),
        signal: link ? AbortSignal.any([this.ctx.signal, link.signal]) : this.ctx.signal,
        onProgress: (bytes, bytesPerSecond) => {
          const percent = (bytes * 100) / m.size;
          this.ctx.emit({
            type: 'progress',
            update_id: cur.update_id,
            firmware_version: m.version,
            phase: 'downloading',
            bytes,
            total: m.size,
            percent,
            bytesPerSecond,
          });
          if (throttle.shouldReport(percent, this.ctx.runtime.now())) {
            void this.ctx.reporter.progress({ status: 'downloading', progress: percent, ...reportBase(cur) });
          }
        },
        onCheckpoint: (verified, run) =>
          store.update((d) => {
            if (!d.current) return;
            d.current.verified_bytes = verified;
            d.current.transfer = {
              fetched: before.fetched + run.bytesReceived,
              reused: before.reused + run.bytesReused,
              image: m.size,
            };
          }),
        onRequest: (r) => this.ctx.emit({ type: 'request', update_id: cur.update_id, ...r }),
        onChunkVerified: (info) =>
          this.ctx.options.hooks?.onChunkVerified?.({ update_id: cur.update_id, ...info }),
      });
      this.ctx.logger.info('download complete', { firmware_version: m.version, ...stats });
      const fetched = before.fetched + stats.bytesReceived;
      const reused = Math.min(before.reused + stats.bytesReused, m.size);
      this.ctx.emit({
        type: 'downloaded',
        update_id: cur.update_id,
        path: stats.path,
        bytes_fetched: fetched,
        bytes_reused: reused,
        ...(stats.fallback !== undefined ? { fallback: stats.fallback } : {}),
      });
      summary =
        `${stats.path}: fetched ${fetched} bytes, reused ${reused} of ${m.size}` +
        (fetched !== stats.bytesReceived ? ` (${stats.bytesReceived} in the last run)` : '') +
        (stats.fallback ? `; fallback: ${stats.fallback}` : '');
      this.streamedDigests.set(partFile(this.ctx.store, m), stats.sha256);
      // The new image's chunk index (its signed frame table's), kept with the installed image's: once this image is
      // installed, the next update reuses from it without reading it. Named by the digest, used only for it.
      if (stats.index && stats.sha256 === m.sha256) {
        await this.bases.keepIndex(cur.ecu, m.sha256, stats.index, base?.image ? [base.image.sha256] : []);
      }
    } catch (err) {
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
      if (link?.signal.aborted) {
        // Not a failure: the campaign allows no metered download. The runner comes back to the gate, which waits.
        this.ctx.logger.info('metered link: the download pauses at its last checkpoint', {
          firmware_version: m.version,
          verified_bytes: store.state.current?.verified_bytes ?? 0,
        });
        return;
      }
      if (err instanceof ApiError) {
        if (err.transient) throw new RetryLater(err.code, err.message, { cause: err });
        await this.outcomes.finishAndClean(
          cur,
          m,
          'failed',
          `the backend refused a download URL: ${err.message}`,
        );
        return;
      }
      if (err instanceof AgentError && err.code === 'manifest_changed') {
        await this.outcomes.finishAndClean(cur, m, 'failed', err.message);
        return;
      }
      if (!(err instanceof DownloadError)) throw err;
      if (err.failure === 'corrupt') {
        await this.outcomes.finishAndClean(
          cur,
          m,
          'verification_failed',
          `${err.message}; the image was deleted`,
        );
        return;
      }
      const runs = cur.attempts.download + 1;
      const budget = this.ctx.options.budgets?.downloadRuns ?? 3;
      if (runs >= budget || !err.resumable) {
        await this.outcomes.finishAndClean(cur, m, 'failed', `download failed: ${err.message}`);
        return;
      }
      await store.update((d) => {
        if (d.current) d.current.attempts.download = runs;
      });
      const wait = backoffDelay(runs, this.ctx.options.retryBackoff ?? DEFAULT_RETRY_BACKOFF, () =>
        this.ctx.runtime.random(),
      );
      this.ctx.logger.warn('download run failed; retrying later', {
        error: err.message,
        run: runs,
        budget,
        in_ms: wait,
      });
      await this.ctx.runtime.sleep(wait, this.ctx.signal);
      return;
    } finally {
      link?.stop();
    }
    await store.update((d) => {
      if (d.current) {
        d.current.phase = 'downloaded';
        d.current.verified_bytes = m.size;
      }
    });
    // No 'downloaded' report: verify() follows at once (also after a restart in this phase) and reports
    // 'verifying', which says as much; each status change costs the backend its writes (update, count, history).
    // What the download path fetched and reused (or why it fell back) goes with that report.
    if (summary) this.summaries.set(cur.update_id, summary);
  }

  async verify(cur: CurrentUpdate, offer: FullOffer): Promise<void> {
    const store = this.ctx.store;
    const m = offer.manifest.manifest;
    this.ctx.emit({
      type: 'phase',
      update_id: cur.update_id,
      firmware_version: m.version,
      phase: 'verifying',
    });
    // After a restart in this phase the summary of the run is gone, but the counts were saved with its checkpoint.
    // The counts themselves go with the outcome report (update-outcome.ts): this report travels over MQTT and can
    // arrive after the outcome, when the backend ignores it.
    const saved = store.state.current?.transfer;
    const summary =
      this.summaries.get(cur.update_id) ??
      (saved ? `fetched ${saved.fetched} bytes, reused ${saved.reused} of ${m.size}` : undefined);
    this.summaries.delete(cur.update_id);
    await this.ctx.reporter.status({
      status: 'verifying',
      ...(summary ? { reason: summary.slice(0, 200) } : {}),
      ...reportBase(cur),
    });
    const part = partFile(this.ctx.store, m);
    // The digest the downloader computed over the bytes it wrote, in this process; after a restart the file is
    // read back instead.
    const streamed = this.streamedDigests.get(part);
    this.streamedDigests.delete(part);
    let problems: string[];
    try {
      problems =
        streamed === undefined
          ? await verifyImageFile(part, m, this.ctx.signal)
          : streamed === m.sha256
            ? []
            : [`whole-image SHA-256 ${streamed} is not the manifest's ${m.sha256}`];
    } catch (err) {
      if (this.ctx.signal.aborted) throw abortReason(this.ctx.signal);
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      problems = ['the downloaded image is missing'];
    }
    if (problems.length === 0) {
      await rename(part, imageFile(this.ctx.store, m));
      await store.update((d) => {
        if (d.current) d.current.phase = 'verified';
      });
      this.ctx.logger.info('image verified', { firmware_version: m.version, sha256: m.sha256 });
      return;
    }
    await this.outcomes.imageRefused(cur, m, problems);
  }
}
