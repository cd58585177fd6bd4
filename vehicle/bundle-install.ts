/**
 * All-or-nothing installation of a multi-ECU bundle (protocol/bundle.ts) across the TCU's ECUs.
 *
 * 1. Before a byte is downloaded: the backend assignment binds this bundle for this VIN, the bundle is signed by a
 *    trusted release key, the offer brings exactly the member manifests the bundle names (partial bundle, mix and
 *    match), each manifest is signed, the whole bundle fits the ECU inventory (hardware ids, constraints on ECUs
 *    outside it), and any member below what its ECU runs is admitted by a rollback authorisation.
 * 2. Every changing member is downloaded and verified (the caller's verified download path) before any slot is
 *    written; a failed download installs nothing.
 * 3. The journal (bundle-journal.ts) is written, then each member goes to its ECU's inactive slot in install order,
 *    then each is activated (trial, with the bootloader's boot counter), then each is health-checked. Any failure:
 *    every ECU returns to the image it ran, and the outcome names the member. All healthy: the journal's decision
 *    becomes `commit` (the one commit point), then every member is confirmed.
 * 4. recover() at start-up, before the ECUs' own recovery, settles an interrupted bundle from the journal: all old
 *    unless the decision was commit, all new if it was, and all old again if an ECU's bootloader gave its trial up
 *    meanwhile (the other ECUs still hold their old images in the other slot).
 */
import { manifestDigest, type SignedAssignment } from '../protocol/assignment.js';
import {
  type Bundle,
  type BundleStep,
  bundleAssignmentProblem,
  checkBundleMembers,
  planBundle,
  verifySignedBundle,
} from '../protocol/bundle.js';
import { ProtocolError } from '../protocol/errors.js';
import {
  checkManifestConsistency,
  type ReleaseManifest,
  type SignedManifest,
  verifyManifestSignatures,
} from '../protocol/manifest.js';
import { admitDowngrades, type RollbackAuthorisation } from '../protocol/rollback.js';
import type { TrustedKey } from '../protocol/signatures.js';
import { type BundleJournal, type JournalStep, JournalStore } from './bundle-journal.js';
import type { ActiveImage, EcuInstaller } from './installer.js';
import { describeError } from './logger.js';

/** An ECU that can also go back to the image in its other slot after a commit (FileSlotInstaller). */
export type BundleEcu = EcuInstaller & { switchBackTo(sha256: string): Promise<ActiveImage> };

export interface BundleOffer {
  readonly update_id: string;
  readonly campaign_id: string | null;
  /** The OEM-signed bundle (checked here). */
  readonly bundle: unknown;
  readonly assignment: SignedAssignment;
  /** The signed manifests of the members, as fetched. */
  readonly manifests: readonly SignedManifest[];
  readonly rollback_authorisation?: unknown;
  /** The campaign a rollback campaign takes back: the one its authorisation must name (default: campaign_id). */
  readonly rollback_of?: string;
}

export type EcuPhase =
  | 'downloading'
  | 'downloaded'
  | 'unchanged'
  | 'writing'
  | 'written'
  | 'activated'
  | 'healthy'
  | 'unhealthy'
  | 'committed'
  | 'reverted';

export interface EcuProgress {
  readonly ecu: string;
  readonly phase: EcuPhase;
  readonly version: string;
  /** 0-100 within the phase, for downloading and writing. */
  readonly percent?: number;
}

export type BundleStatus = 'completed' | 'rolled_back' | 'failed' | 'rejected';

export interface BundleOutcome {
  readonly status: BundleStatus;
  readonly update_id: string;
  readonly bundle_id?: string;
  /** The member that failed (download, write, activation or health check). */
  readonly failed_member?: string;
  readonly reason?: string;
  /** What every ECU runs afterwards. */
  readonly versions: Readonly<Record<string, string>>;
}

export type BundleStepName = 'write' | 'activate' | 'health' | 'decide' | 'commit';

export interface BundleInstallerOptions {
  /** Where the journal lives (the agent's state folder). */
  readonly dir: string;
  readonly vin: string;
  readonly releaseKeys: () => readonly TrustedKey[];
  readonly backendKeys: readonly TrustedKey[];
  /** ECU name -> its hardware id. */
  readonly hardwareIds: Readonly<Record<string, string>>;
  readonly installers: Readonly<Record<string, BundleEcu>>;
  readonly now: () => number;
  /** Downloads and verifies one member's image; answers the verified file. Throws when it cannot. */
  readonly fetchImage: (
    manifest: SignedManifest,
    signal: AbortSignal,
    onProgress: (percent: number) => void,
  ) => Promise<string>;
  readonly onProgress?: (p: EcuProgress) => void;
  /**
   * Called once every member is downloaded and verified, before anything is written: waits as long as the install
   * must (a maintenance window, a safe car), then answers why the bundle must not be installed after all (the
   * backend cancelled it meanwhile), which ends it rejected with nothing written, or undefined to go on.
   */
  readonly beforeInstall?: (signal: AbortSignal) => Promise<string | undefined>;
  /** Called before each step of each member (tests cut the power here). */
  readonly beforeStep?: (step: BundleStepName, ecu: string) => Promise<void> | void;
}

interface Checked {
  readonly bundle: Bundle;
  readonly manifests: ReleaseManifest[];
  readonly signedManifests: Map<string, SignedManifest>;
  readonly plan: BundleStep[];
  readonly authorisation?: RollbackAuthorisation;
}

export class BundleInstaller {
  private readonly journal: JournalStore;

  constructor(private readonly options: BundleInstallerOptions) {
    this.journal = new JournalStore(options.dir);
  }

  /** Everything checked before downloading; throws a ProtocolError saying what is refused. */
  async check(offer: BundleOffer, lastCounter: number): Promise<Checked> {
    const o = this.options;
    const releaseKeys = o.releaseKeys();
    const bundle = verifySignedBundle(offer.bundle, releaseKeys).bundle;
    const problem = bundleAssignmentProblem(offer.assignment, bundle, {
      keys: o.backendKeys,
      vin: o.vin,
      now: new Date(o.now()),
      lastCounter,
    });
    if (problem) throw new ProtocolError('bundle_assignment', problem);
    const signedManifests = new Map<string, SignedManifest>();
    for (const sm of offer.manifests) {
      checkManifestConsistency(sm.manifest);
      if (!verifyManifestSignatures(sm, releaseKeys)) {
        throw new ProtocolError(
          'manifest_signature',
          `the manifest of ${sm.manifest.release_id} is not signed by a trusted release key`,
        );
      }
      signedManifests.set(sm.manifest.ecu, sm);
    }
    const manifests = checkBundleMembers(
      bundle,
      offer.manifests.map((m) => m.manifest),
      manifestDigest,
    );
    const plan = planBundle(bundle, await this.inventory());
    const downgrades = plan
      .filter((s) => s.downgrade)
      .map((s) => ({
        ecu: s.ecu,
        from: s.from,
        to: s.to,
        manifestSha256: manifestDigest(manifests.find((m) => m.ecu === s.ecu) as ReleaseManifest),
      }));
    const authorisation = admitDowngrades(downgrades, offer.rollback_authorisation, {
      releaseKeys,
      vin: o.vin,
      now: new Date(o.now()),
      campaignId: offer.rollback_of ?? offer.campaign_id,
      used: await this.journal.usedAuthorisations(o.now()),
    });
    return { bundle, manifests, signedManifests, plan, ...(authorisation ? { authorisation } : {}) };
  }

  /** What each ECU runs (version and image digest). */
  async inventory(): Promise<Record<string, { hardware_id: string; version: string; sha256: string }>> {
    const out: Record<string, { hardware_id: string; version: string; sha256: string }> = {};
    for (const [ecu, installer] of Object.entries(this.options.installers)) {
      const a = await installer.active();
      out[ecu] = {
        hardware_id: this.options.hardwareIds[ecu] ?? 'unknown',
        version: a.version,
        sha256: a.sha256,
      };
    }
    return out;
  }

  private async versions(): Promise<Record<string, string>> {
    const inv = await this.inventory();
    return Object.fromEntries(Object.entries(inv).map(([e, v]) => [e, v.version]));
  }

  /** Installs the bundle all or nothing; answers what happened (a refusal installs and downloads nothing). */
  async run(offer: BundleOffer, lastCounter: number, signal: AbortSignal): Promise<BundleOutcome> {
    if (await this.journal.read()) {
      throw new ProtocolError('bundle_in_progress', 'a bundle install is unsettled; recover() first');
    }
    let checked: Checked;
    try {
      checked = await this.check(offer, lastCounter);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      return this.outcome(offer.update_id, 'rejected', { reason: `${err.code}: ${err.message}` });
    }
    const { bundle, plan } = checked;
    const changing = plan.filter((s) => !s.unchanged);
    for (const s of plan.filter((p) => p.unchanged)) this.progress(s.ecu, 'unchanged', s.to);

    const images = new Map<string, string>();
    for (const step of changing) {
      const sm = checked.signedManifests.get(step.ecu) as SignedManifest;
      this.progress(step.ecu, 'downloading', step.to, 0);
      try {
        images.set(
          step.ecu,
          await this.options.fetchImage(sm, signal, (p) =>
            this.progress(step.ecu, 'downloading', step.to, p),
          ),
        );
      } catch (err) {
        if (signal.aborted) throw err;
        return this.outcome(offer.update_id, 'failed', {
          bundle_id: bundle.bundle_id,
          failed_member: step.ecu,
          reason: `download of ${step.ecu} ${step.to} failed (${describeError(err)}); nothing installed`,
        });
      }
      this.progress(step.ecu, 'downloaded', step.to);
    }
    const refusal = await this.options.beforeInstall?.(signal);
    if (refusal !== undefined) {
      return this.outcome(offer.update_id, 'rejected', { bundle_id: bundle.bundle_id, reason: refusal });
    }

    const steps: JournalStep[] = [];
    for (const s of changing) {
      const m = checked.manifests.find((x) => x.ecu === s.ecu) as ReleaseManifest;
      const active = await this.ecu(s.ecu).active();
      steps.push({
        ecu: s.ecu,
        from_version: active.version,
        from_sha256: active.sha256,
        to_version: m.version,
        to_sha256: m.sha256,
      });
    }
    const a = checked.authorisation;
    const journal: BundleJournal = {
      schema: 'ota.bundle-journal/v1',
      update_id: offer.update_id,
      campaign_id: offer.campaign_id,
      bundle_id: bundle.bundle_id,
      bundle_version: bundle.version,
      ...(a ? { authorisation_id: a.authorisation_id, authorisation_expires_at: a.expires_at } : {}),
      decision: 'pending',
      steps,
    };
    await this.journal.write(journal);
    return this.apply(journal, checked, images, signal);
  }

  private async apply(
    journal: BundleJournal,
    checked: Checked,
    images: Map<string, string>,
    signal: AbortSignal,
  ): Promise<BundleOutcome> {
    let stage: 'write' | 'activate' | 'health' = 'write';
    let member = '';
    try {
      for (const s of journal.steps) {
        member = s.ecu;
        const m = checked.manifests.find((x) => x.ecu === s.ecu) as ReleaseManifest;
        await this.options.beforeStep?.('write', s.ecu);
        this.progress(s.ecu, 'writing', s.to_version, 0);
        await this.ecu(s.ecu).writeInactive(
          { path: images.get(s.ecu) as string, version: m.version, size: m.size, sha256: m.sha256 },
          { signal, onProgress: (w) => this.progress(s.ecu, 'writing', s.to_version, (w * 100) / m.size) },
        );
        this.progress(s.ecu, 'written', s.to_version);
      }
      stage = 'activate';
      for (const s of journal.steps) {
        member = s.ecu;
        await this.options.beforeStep?.('activate', s.ecu);
        const m = checked.manifests.find((x) => x.ecu === s.ecu) as ReleaseManifest;
        await this.ecu(s.ecu).activate({
          path: images.get(s.ecu) as string,
          version: m.version,
          size: m.size,
          sha256: m.sha256,
        });
        this.progress(s.ecu, 'activated', s.to_version);
      }
      stage = 'health';
      for (const s of journal.steps) {
        member = s.ecu;
        await this.options.beforeStep?.('health', s.ecu);
        if (!(await this.ecu(s.ecu).healthCheck())) {
          this.progress(s.ecu, 'unhealthy', s.to_version);
          return this.revert(journal, s.ecu, `health check of ${s.ecu} ${s.to_version} failed`);
        }
        this.progress(s.ecu, 'healthy', s.to_version);
      }
    } catch (err) {
      if (signal.aborted) throw err;
      // Nothing was activated when a write fails: the old images never stopped running.
      const status = stage === 'write' ? 'failed' : 'rolled_back';
      return this.revert(journal, member, `${stage} of ${member} failed (${describeError(err)})`, status);
    }
    await this.options.beforeStep?.('decide', '');
    const decided: BundleJournal = { ...journal, decision: 'commit' };
    await this.journal.write(decided);
    return this.commitAll(decided);
  }

  /** Every ECU back to the image the journal says it ran; the journal records why first. */
  private async revert(
    journal: BundleJournal,
    failed: string,
    reason: string,
    status: BundleStatus = 'rolled_back',
  ): Promise<BundleOutcome> {
    const j: BundleJournal = { ...journal, decision: 'revert', failed_member: failed, reason };
    await this.journal.write(j);
    return this.settleOld(j, reason, status);
  }

  private async settleOld(j: BundleJournal, reason: string, status: BundleStatus): Promise<BundleOutcome> {
    for (const s of j.steps) {
      const ecu = this.ecu(s.ecu);
      await ecu.recover(); // a trial is switched back; a half-written inactive slot is emptied
      const now = await ecu.active();
      if (now.sha256 !== s.from_sha256) await ecu.switchBackTo(s.from_sha256);
      this.progress(s.ecu, 'reverted', s.from_version);
    }
    await this.journal.clear();
    const names = j.steps.map((s) => `${s.ecu} ${s.from_version}`).join(', ');
    return this.outcome(j.update_id, status, {
      bundle_id: j.bundle_id,
      ...(j.failed_member ? { failed_member: j.failed_member } : {}),
      reason: `${reason}; every ECU restored (${names})`,
    });
  }

  private async commitAll(j: BundleJournal): Promise<BundleOutcome> {
    if (j.authorisation_id && j.authorisation_expires_at) {
      await this.journal.recordUsed(j.authorisation_id, j.authorisation_expires_at, this.options.now());
    }
    // An ECU whose bootloader gave its trial up (boots ran out) runs the old image: the bundle cannot be all new.
    for (const s of j.steps) {
      const now = await this.ecu(s.ecu).active();
      if (now.sha256 === s.from_sha256) {
        return this.settleOld(
          { ...j, failed_member: s.ecu },
          `${s.ecu} fell back to ${s.from_version} before the bundle was confirmed`,
          'rolled_back',
        );
      }
    }
    for (const s of j.steps) {
      await this.options.beforeStep?.('commit', s.ecu);
      const ecu = this.ecu(s.ecu);
      try {
        await ecu.commit();
      } catch (err) {
        if (!(err instanceof Error && 'code' in err && err.code === 'no_trial')) throw err;
      }
      this.progress(s.ecu, 'committed', s.to_version);
    }
    await this.journal.clear();
    return this.outcome(j.update_id, 'completed', { bundle_id: j.bundle_id });
  }

  /**
   * Settles a bundle interrupted by a power cut or crash. Call at start-up before the ECUs' own recover() (which
   * would switch back trials the journal decided to keep). Undefined when no bundle was in progress.
   */
  async recover(): Promise<BundleOutcome | undefined> {
    const j = await this.journal.read();
    if (!j) return undefined;
    if (j.decision === 'commit') return this.commitAll(j);
    return this.settleOld(j, j.reason ?? 'interrupted before every member was confirmed', 'rolled_back');
  }

  private ecu(name: string): BundleEcu {
    const i = this.options.installers[name];
    if (!i) throw new ProtocolError('bundle_unknown_ecu', `no installer for ECU ${name}`);
    return i;
  }

  private progress(ecu: string, phase: EcuPhase, version: string, percent?: number): void {
    this.options.onProgress?.({ ecu, phase, version, ...(percent !== undefined ? { percent } : {}) });
  }

  private async outcome(
    update_id: string,
    status: BundleStatus,
    extra: Partial<Omit<BundleOutcome, 'status' | 'update_id' | 'versions'>>,
  ): Promise<BundleOutcome> {
    return { status, update_id, ...extra, versions: await this.versions() };
  }
}
