/** The offer verifier, pure: every reason an offer is refused, and release-key rotation. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import {
  type Assignment,
  manifestDigest,
  signAssignment,
  signAssignmentDelegated,
} from '../../protocol/assignment.js';
import { DelegatedSigner } from '../../protocol/delegation.js';
import { signManifest } from '../../protocol/manifest.js';
import type { FullOffer } from '../../protocol/offer.js';
import { trustedKeysFromPems } from '../../protocol/signatures.js';
import { type OfferCheckContext, verifyOffer, verifyOfferHeader } from '../../vehicle/offer-verifier.js';
import type { TrustAnchors } from '../../vehicle/provisioning.js';
import { newReleaseKey, signedRelease } from '../support/fleet.js';

const VIN = '1HGCM82633A004352';
const NOW = new Date('2026-11-27T12:00:00Z');
const releaseKey = newReleaseKey();
const nextReleaseKey = newReleaseKey();
const backendKey = newReleaseKey();
const rogue = newReleaseKey();
let offer: FullOffer;
let trust: TrustAnchors;

async function assignmentFor(o: FullOffer, change: Partial<Assignment> = {}, signer = backendKey.signer) {
  const m = o.manifest.manifest;
  return signAssignment(
    {
      schema: 'ota.assignment/v1',
      vin: VIN,
      update_id: 'release#tcu-2.0.0',
      campaign_id: null,
      release_id: m.release_id,
      version: m.version,
      ecu: m.ecu,
      manifest_sha256: manifestDigest(m),
      counter: 7,
      issued_at: new Date(NOW.getTime() - 60_000).toISOString(),
      expires_at: new Date(NOW.getTime() + 3600_000).toISOString(),
      ...change,
    },
    signer,
  );
}

const ctx = (over: Partial<OfferCheckContext> = {}): OfferCheckContext => ({
  vin: VIN,
  now: NOW,
  lastCounter: 6,
  trust,
  ecus: { tcu: { hardware_id: 'TCU-HW-1', version: '1.0.0' } },
  ...over,
});

function reason(o: unknown, c = ctx()): string {
  const v = verifyOffer(o, c);
  return v.ok ? 'ok' : v.reason;
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

before(async () => {
  const manifest = await signedRelease(randomBytes(100_000), {
    releaseId: 'tcu-2.0.0',
    version: '2.0.0',
    signer: releaseKey.signer,
  });
  offer = {
    type: 'update_offer',
    campaign_id: null,
    update_id: 'release#tcu-2.0.0',
    firmware_version: '2.0.0',
    ecu: 'tcu',
    size: manifest.manifest.size,
    release_id: manifest.manifest.release_id,
    manifest_sha256: manifestDigest(manifest.manifest),
    manifest,
    assignment: undefined as never,
  };
  offer = { ...offer, assignment: await assignmentFor(offer) };
  trust = {
    releaseKeys: trustedKeysFromPems([releaseKey.publicPem, nextReleaseKey.publicPem]),
    backendKeys: trustedKeysFromPems([backendKey.publicPem]),
  };
}, HOOK_TIMEOUT);

describe('verifyOffer', { timeout: 60_000 }, () => {
  it('accepts a consistent offer signed by both trusted keys', () => {
    const v = verifyOffer(offer, ctx());
    assert.equal(v.ok, true, v.ok ? '' : v.message);
  });

  it('accepts an offer of an earlier backend: the manifest embedded, no release_id or manifest_sha256', () => {
    const { release_id: _r, manifest_sha256: _d, ...earlier } = offer;
    const v = verifyOffer(earlier, ctx());
    assert.equal(v.ok, true, v.ok ? '' : v.message);
  });

  it('follows a delegated assignment back to the backend key, and still requires the OEM-signed manifest', async () => {
    const delegatedBy = (backend: typeof backendKey.signer, scope = 'assignment') =>
      new DelegatedSigner(backend, {
        scope,
        maxDocumentSeconds: 86400,
        now: () => new Date(NOW.getTime() - 120_000),
      });
    const a = offer.assignment.assignment;
    const delegated = {
      ...offer,
      assignment: await signAssignmentDelegated(a, delegatedBy(backendKey.signer)),
    };
    assert.equal(reason(delegated), 'ok');
    assert.equal(
      reason({ ...delegated, manifest: await signManifest(offer.manifest.manifest, [rogue.signer]) }),
      'manifest_signature',
      'a backend-side key alone does not make a car install anything',
    );
    const forged = { ...offer, assignment: await signAssignmentDelegated(a, delegatedBy(rogue.signer)) };
    const verdict = verifyOffer(forged, ctx());
    assert.equal(verdict.ok ? 'ok' : verdict.reason, 'assignment_signature');
    assert.equal(!verdict.ok && verdict.authentic, false, 'a forged chain is not reportable');
    const otherScope = {
      ...offer,
      assignment: await signAssignmentDelegated(a, delegatedBy(backendKey.signer, 'freshness')),
    };
    assert.equal(reason(otherScope), 'assignment_signature');
    assert.equal(reason(delegated, ctx({ lastCounter: a.counter })), 'stale_counter', 'a replayed offer');
    assert.equal(reason(delegated, ctx({ vin: '5YJSA1E26HF000337' })), 'wrong_vin');
  });

  it('refuses malformed offers', () => {
    assert.equal(reason({ type: 'update_offer' }), 'invalid_offer');
    assert.equal(reason({ ...offer, extra: 1 }), 'invalid_offer');
  });

  it('refuses a manifest that is not signed by a trusted release key, or was changed after signing', async () => {
    assert.equal(
      reason({ ...offer, manifest: await signManifest(offer.manifest.manifest, [rogue.signer]) }),
      'manifest_signature',
    );
    const changed = {
      ...offer.manifest,
      manifest: { ...offer.manifest.manifest, hardware_ids: ['TCU-HW-1', 'OTHER'] },
    };
    assert.equal(reason({ ...offer, manifest: changed }), 'manifest_signature');
  });

  it('follows release-key rotation: trusts a set, and a key taken out of the set is no longer accepted', async () => {
    const byNext = {
      ...offer,
      manifest: await signManifest(offer.manifest.manifest, [nextReleaseKey.signer]),
    };
    assert.equal(reason(byNext), 'ok', 'the new key is already trusted');
    const rotated = { ...trust, releaseKeys: trustedKeysFromPems([nextReleaseKey.publicPem]) };
    assert.equal(reason(offer, ctx({ trust: rotated })), 'manifest_signature', 'the retired key is refused');
    assert.equal(reason(byNext, ctx({ trust: rotated })), 'ok');
  });

  it('refuses a manifest that contradicts itself', async () => {
    const m = offer.manifest.manifest;
    const bad = { ...m, chunks: [...m.chunks, m.chunks[0]!] };
    const signed = await signManifest(bad, [releaseKey.signer]);
    const o = { ...offer, manifest: signed, manifest_sha256: manifestDigest(bad) };
    assert.equal(reason({ ...o, assignment: await assignmentFor(o) }), 'manifest_inconsistent');
  });

  it('refuses assignments: forged, for another VIN, expired, stale or replayed, for another manifest', async () => {
    assert.equal(
      reason({ ...offer, assignment: await assignmentFor(offer, {}, rogue.signer) }),
      'assignment_signature',
    );
    const forgedKeyId = {
      ...(await assignmentFor(offer, {}, rogue.signer)),
      key_id: offer.assignment.key_id,
    };
    assert.equal(reason({ ...offer, assignment: forgedKeyId }), 'assignment_signature');
    assert.equal(
      reason({ ...offer, assignment: await assignmentFor(offer, { vin: '5YJSA1E26HF000337' }) }),
      'wrong_vin',
    );
    assert.equal(
      reason({ ...offer, assignment: await assignmentFor(offer, { expires_at: NOW.toISOString() }) }),
      'expired',
    );
    assert.equal(
      reason(offer, ctx({ lastCounter: 7 })),
      'stale_counter',
      'the same counter again is a replay',
    );
    assert.equal(reason(offer, ctx({ lastCounter: 9 })), 'stale_counter');
    // The offer and its assignment name another manifest than the one that came with it (mix-and-match).
    assert.equal(
      reason({
        ...offer,
        manifest_sha256: 'a'.repeat(64),
        assignment: await assignmentFor(offer, { manifest_sha256: 'a'.repeat(64) }),
      }),
      'manifest_mismatch',
    );
  });

  it('says a rejection is authentic (reportable) only when the assignment is genuinely for this VIN', async () => {
    const authentic = async (o: unknown, c = ctx()) => {
      const v = verifyOffer(o, c);
      assert.equal(v.ok, false);
      return !v.ok && v.authentic;
    };
    assert.equal(
      await authentic({ ...offer, assignment: await assignmentFor(offer, {}, rogue.signer) }),
      false,
    );
    assert.equal(
      await authentic({ ...offer, assignment: await assignmentFor(offer, { vin: '5YJSA1E26HF000337' }) }),
      false,
    );
    assert.equal(await authentic({ ...offer, size: 'big', assignment: { forged: true } }), false);
    assert.equal(
      await authentic({ ...offer, size: 'big' }),
      true,
      'malformed, but under a genuine assignment',
    );
    assert.equal(await authentic(offer, ctx({ lastCounter: 9 })), true);
    assert.equal(await authentic({ ...offer, firmware_version: '9.9.9' }), true);
    assert.equal(
      await authentic(offer, ctx({ ecus: { tcu: { hardware_id: 'TCU-HW-2', version: '1.0.0' } } })),
      true,
    );
  });

  it('checks an offer without its manifest against its assignment first (verifyOfferHeader)', async () => {
    const { manifest: _fetchedLater, ...compact } = offer;
    assert.equal(verifyOfferHeader(compact, ctx()), undefined, 'a genuine compact offer passes');
    assert.equal(verifyOffer(compact, ctx()).ok, false, 'but is never accepted without its manifest');
    const header = (o: typeof compact, c = ctx()) => verifyOfferHeader(o, c)?.reason ?? 'ok';
    assert.equal(header({ ...compact, manifest_sha256: 'b'.repeat(64) }), 'offer_mismatch');
    const { manifest_sha256: _named, ...nameless } = compact;
    assert.equal(reason(nameless), 'invalid_offer', 'neither names nor carries its manifest');
    assert.equal(header({ ...compact, release_id: 'tcu-9.9.9' }), 'offer_mismatch');
    assert.equal(
      header({ ...compact, assignment: await assignmentFor(offer, {}, rogue.signer) }),
      'assignment_signature',
    );
    assert.equal(header(compact, ctx({ lastCounter: 7 })), 'stale_counter');
    assert.equal(
      header({ ...compact, assignment: await assignmentFor(offer, { expires_at: NOW.toISOString() }) }),
      'expired',
    );
  });

  it('refuses offers whose unsigned fields disagree with the signed documents', async () => {
    assert.equal(reason({ ...offer, firmware_version: '9.9.9' }), 'offer_mismatch');
    assert.equal(reason({ ...offer, size: offer.size + 1 }), 'offer_mismatch');
    assert.equal(reason({ ...offer, campaign_id: 'c-1' }), 'offer_mismatch');
    assert.equal(reason({ ...offer, update_id: 'campaign#x' }), 'offer_mismatch');
    assert.equal(reason({ ...offer, release_id: 'tcu-9.9.9' }), 'offer_mismatch');
    assert.equal(reason({ ...offer, manifest_sha256: 'b'.repeat(64) }), 'offer_mismatch');
  });

  it('refuses other hardware, unknown ECUs, downgrades, reinstalls and oversized images', () => {
    assert.equal(
      reason(offer, ctx({ ecus: { tcu: { hardware_id: 'TCU-HW-2', version: '1.0.0' } } })),
      'hardware_mismatch',
    );
    assert.equal(
      reason(offer, ctx({ ecus: { bcm: { hardware_id: 'TCU-HW-1', version: '1.0.0' } } })),
      'unknown_ecu',
    );
    assert.equal(
      reason(offer, ctx({ ecus: { tcu: { hardware_id: 'TCU-HW-1', version: '2.0.1' } } })),
      'downgrade',
    );
    assert.equal(
      reason(offer, ctx({ ecus: { tcu: { hardware_id: 'TCU-HW-1', version: '2.0.0' } } })),
      'already_installed',
    );
    assert.equal(
      reason(offer, ctx({ ecus: { tcu: { hardware_id: 'TCU-HW-1', version: '2.0.0-rc.1' } } })),
      'ok',
      'a release outranks its pre-release',
    );
    assert.equal(reason(offer, ctx({ maxImageBytes: offer.size - 1 })), 'too_large');
  });
});
