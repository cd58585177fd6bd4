/**
 * Cancelling a campaign of any size. The operator's cancel only marks the campaign `cancelling` and queues a job;
 * the jobs worker withdraws every update not yet being installed, one page of a wave at a time, saving the next
 * page's cursor on the campaign after each, and marks it `cancelled` at the end. A worker that runs out of time
 * continues in a new invocation; one that is stopped is redelivered and resumes from the saved page. Withdrawing
 * is a conditional state change (before installing -> cancelled), so a page done twice withdraws nobody twice.
 * Meanwhile the campaign tick offers nothing (it runs only `running` campaigns) and a vehicle asking for the
 * release through the campaign is refused and withdrawn on the spot (vehicle-updates.ts).
 */
import { cancelledInPreparation } from './campaign-creation.js';
import { transition } from './campaigns.js';
import type { JobResult } from './jobs.js';
import type {
  CampaignRecord,
  CampaignRepository,
  CancelCheckpoint,
  Clock,
  HistoryRepository,
  UpdateRecord,
  UpdateRepository,
  VehicleRepository,
} from './ports.js';
import { BEFORE_INSTALL_STATUSES, isTerminal } from './update-state.js';

export interface WithdrawDeps {
  readonly updates: UpdateRepository;
  readonly campaigns: Pick<CampaignRepository, 'count'>;
  readonly history: HistoryRepository;
  readonly vehicles: Pick<VehicleRepository, 'unlockCampaign'>;
  readonly clock: Clock;
}

export interface CampaignCancellerDeps extends WithdrawDeps {
  readonly campaigns: CampaignRepository;
  /** Updates withdrawn per slice (one page of a wave, a checkpoint after each). @default 100 */
  readonly sliceSize?: number;
}

/**
 * Withdraws one campaign update if it has not begun installing, and releases the vehicle's campaign lock once
 * its update is over. A vehicle's report can land between the read and the write (downloading -> downloaded): the
 * write then fails on the revision and the update is read again. Answers whether this call withdrew it.
 */
export async function withdrawUpdate(
  deps: WithdrawDeps,
  campaign: Pick<CampaignRecord, 'campaignId' | 'ecu'>,
  listed: UpdateRecord,
): Promise<boolean> {
  let u: UpdateRecord | undefined = listed;
  let withdrew = false;
  for (let attempt = 0; u && attempt < 5; attempt++) {
    if (!BEFORE_INSTALL_STATUSES.has(u.status)) break;
    if (
      await transition(deps, campaign.campaignId, u, { status: 'cancelled', reason: 'campaign cancelled' })
    ) {
      u = { ...u, status: 'cancelled' };
      withdrew = true;
      break;
    }
    u = await deps.updates.get(u.vin, u.updateId);
  }
  if (u && isTerminal(u.status)) await deps.vehicles.unlockCampaign(u.vin, campaign.ecu, campaign.campaignId);
  return withdrew;
}

/** Runs fn over items with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export class CampaignCanceller {
  constructor(private readonly deps: CampaignCancellerDeps) {}

  /**
   * Continues the withdrawal from the campaign's checkpoint; 'continue' when the invocation is nearly over. Each
   * wave takes two passes of pages: withdraw, then recount. An update's state and its campaign count are two
   * writes, so a worker stopped between them leaves the count behind; the recount tallies the wave's statuses page
   * by page (the running tally saved with the cursor) and replaces the wave's counts with it at the end.
   */
  async run(campaignId: string, shouldYield: () => boolean): Promise<JobResult> {
    let c = await this.deps.campaigns.get(campaignId);
    if (c?.status !== 'cancelling') return 'done';
    // Cancelled while its targets were being prepared: the preparation job takes them back (prepare_campaign).
    if (cancelledInPreparation(c)) return 'done';
    let at: CancelCheckpoint = c.cancel ?? { wave: 0, startedAt: c.updatedAt };
    // After the waves, one more pass over the targets never given a wave (the `q#` range of byCampaign).
    while (at.wave <= c.waves.length) {
      if (shouldYield()) return 'continue';
      const queued = at.wave === c.waves.length;
      const limit = this.deps.sliceSize ?? 100;
      const page = queued
        ? await this.deps.updates.pageQueued(campaignId, limit, at.cursor)
        : await this.deps.updates.pageByCampaignWave(campaignId, at.wave, limit, at.cursor);
      const campaign = c;
      let next: CancelCheckpoint;
      if (queued) {
        // No wave, so no wave counts to move or recount.
        await pool(page.items, 16, async (u) => {
          await withdrawUpdate(this.deps, campaign, u);
        });
        next = page.token
          ? { wave: at.wave, cursor: page.token, startedAt: at.startedAt }
          : { wave: at.wave + 1, startedAt: at.startedAt };
      } else if (at.phase !== 'recount') {
        await pool(page.items, 16, async (u) => {
          await withdrawUpdate(this.deps, campaign, u);
        });
        next = page.token
          ? { wave: at.wave, cursor: page.token, startedAt: at.startedAt }
          : { wave: at.wave, phase: 'recount', tally: {}, startedAt: at.startedAt };
      } else {
        const tally: Record<string, number> = { ...at.tally };
        for (const u of page.items) tally[u.status] = (tally[u.status] ?? 0) + 1;
        if (page.token) {
          next = { wave: at.wave, phase: 'recount', cursor: page.token, tally, startedAt: at.startedAt };
        } else {
          await this.deps.campaigns.resetCounts(campaignId, at.wave, tally);
          next = { wave: at.wave + 1, startedAt: at.startedAt };
        }
      }
      const now = this.deps.clock.now().toISOString();
      // Conditional on the revision read: of two workers on one cancel, only one moves the checkpoint on.
      if (!(await this.deps.campaigns.change(campaignId, c.revision, { cancel: next }, now))) return 'done';
      c = { ...c, cancel: next, revision: c.revision + 1 };
      at = next;
    }
    await this.deps.campaigns.change(
      campaignId,
      c.revision,
      { status: 'cancelled' },
      this.deps.clock.now().toISOString(),
    );
    return 'done';
  }
}
