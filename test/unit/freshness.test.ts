import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { BUCKET_SIZE, FreshnessService } from '../../lambdas/core/freshness.js';
import type { FreshnessAlertRecord, FreshnessRepository } from '../../lambdas/core/ports.js';
import {
  checkFreshness,
  EMPTY_ROOT,
  type FreshnessAnswer,
  leafHash,
  merkleProof,
  merkleRoot,
  type ProofStep,
  rootFromProof,
  type SignedFreshness,
} from '../../protocol/freshness.js';
import { trustedKeysFromPems } from '../../protocol/signatures.js';
import { newReleaseKey } from '../support/fleet.js';

/** An in-memory FreshnessRepository: the service's logic is under test here, DynamoDB in the integration tests. */
class MemoryRepo implements FreshnessRepository {
  leaves: { vin: string; counter: number }[] = [];
  statements: { signed: SignedFreshness; bucketCount: number }[] = [];
  buckets = new Map<string, { leaves: { vin: string; counter: number }[]; path: ProofStep[] }>();
  alerts: FreshnessAlertRecord[] = [];
  scans = 0;
  async latestOffers(cursor?: string) {
    this.scans++;
    const from = Number(cursor ?? 0);
    const items = this.leaves.slice(from, from + 100);
    return { items, ...(from + 100 < this.leaves.length ? { cursor: String(from + 100) } : {}) };
  }
  async latest() {
    return this.statements.at(-1);
  }
  async bucket(sequence: number, index: number) {
    return this.buckets.get(`${sequence}#${index}`);
  }
  async publish(
    signed: SignedFreshness,
    buckets: { leaves: { vin: string; counter: number }[]; path: ProofStep[] }[],
  ) {
    buckets.forEach((b, i) => void this.buckets.set(`${signed.statement.sequence}#${i}`, b));
    this.statements.push({ signed, bucketCount: buckets.length });
    return true;
  }
  async recordAlert(_vin: string, alert: FreshnessAlertRecord) {
    this.alerts.push(alert);
  }
}

/** Valid VINs: 17 characters, no I, O or Q. */
const vinOf = (i: number) => `1HGCM8263${String(i).padStart(8, '0')}`;

function fleet(size: number): MemoryRepo {
  const repo = new MemoryRepo();
  repo.leaves = Array.from({ length: size }, (_, i) => ({ vin: vinOf(i), counter: i % 7 }));
  return repo;
}

const backend = newReleaseKey();
const keys = trustedKeysFromPems([backend.publicPem]);
let now = Date.parse('2026-12-04T06:00:00.000Z');
const clock = { now: () => new Date(now) };

function service(repo: MemoryRepo, maxVehicles = 1_000_000) {
  return new FreshnessService({ repo, signer: backend.signer, clock, periodSeconds: 300, maxVehicles });
}

const vehicle = (vin: string) => ({ vin }) as Parameters<FreshnessService['answer']>[0];
const ctx = (vin: string, over: Partial<Parameters<typeof checkFreshness>[1]> = {}) => ({
  keys,
  vin,
  ownNow: now,
  maxFutureMs: 60_000,
  ...over,
});

describe('freshness statements', { timeout: 60_000 }, () => {
  it('keeps the empty root precomputed right: SHA-256 of the byte 0x02', () => {
    assert.equal(EMPTY_ROOT, createHash('sha256').update(Uint8Array.of(2)).digest('hex'));
  });

  it('proves every leaf of trees of 1 to 9 leaves, and no leaf at another position', () => {
    for (let n = 1; n <= 9; n++) {
      const hashes = Array.from({ length: n }, (_, i) => leafHash(vinOf(i), i));
      const root = merkleRoot(hashes);
      for (let i = 0; i < n; i++) {
        assert.equal(rootFromProof(hashes[i]!, merkleProof(hashes, i)), root, `leaf ${i} of ${n}`);
        if (n > 1) assert.notEqual(rootFromProof(hashes[(i + 1) % n]!, merkleProof(hashes, i)), root);
      }
    }
  });

  it('signs one statement for the whole fleet and answers each vehicle a proof of its own leaf', async () => {
    const repo = fleet(3 * BUCKET_SIZE + 17);
    const published = await service(repo).publish();
    assert.deepEqual(published, { sequence: 1, leafCount: 3 * BUCKET_SIZE + 17, bucketCount: 4 });
    assert.equal(repo.statements.length, 1, 'one signature per period');
    for (const i of [0, 5, 700, 3 * BUCKET_SIZE + 16]) {
      const answer = await service(repo).answer(vehicle(vinOf(i)));
      assert.equal(answer.counter, i % 7);
      const verdict = checkFreshness(answer, ctx(vinOf(i)));
      assert.equal(reason(verdict), 'ok', JSON.stringify(verdict));
      assert.equal(verdict.ok && verdict.counter, i % 7);
    }
    const second = await service(repo).publish();
    assert.equal(second.sequence, 2);
  });

  it('refuses a forged signature, a proof for another VIN, a changed counter, an older or the same statement', async () => {
    const repo = fleet(40);
    await service(repo).publish();
    const first = await service(repo).answer(vehicle(vinOf(3)));
    now += 300_000;
    await service(repo).publish();
    const answer = await service(repo).answer(vehicle(vinOf(3)));
    const held = { sequence: 1, issuedAt: Date.parse(first.signed.statement.issued_at) };
    assert.equal(reason(checkFreshness(answer, ctx(vinOf(3), { last: held }))), 'ok');

    const forger = newReleaseKey();
    const forged: FreshnessAnswer = {
      ...answer,
      signed: {
        ...answer.signed,
        signature: (await forger.signer.sign(Buffer.from('x'))).toString('base64'),
      },
    };
    assert.equal(reason(checkFreshness(forged, ctx(vinOf(3)))), 'bad_signature');
    const otherKeyId = { ...answer, signed: { ...answer.signed, key_id: '0'.repeat(16) } };
    assert.equal(reason(checkFreshness(otherKeyId, ctx(vinOf(3)))), 'bad_signature');

    // Another vehicle's valid answer: its proof is for its VIN, not ours.
    const other = await service(repo).answer(vehicle(vinOf(4)));
    assert.equal(reason(checkFreshness(other, ctx(vinOf(3)))), 'wrong_vin');
    assert.equal(reason(checkFreshness({ ...other, vin: vinOf(3) }, ctx(vinOf(3)))), 'bad_proof');
    // A lower counter than the backend's: would hide a withheld offer.
    assert.equal(reason(checkFreshness({ ...answer, counter: 0 }, ctx(vinOf(3)))), 'bad_proof');

    const newest = { sequence: 2, issuedAt: Date.parse(answer.signed.statement.issued_at) };
    assert.equal(reason(checkFreshness(first, ctx(vinOf(3), { last: newest }))), 'stale_sequence');
    assert.equal(reason(checkFreshness(answer, ctx(vinOf(3), { last: newest }))), 'same_sequence');
  });

  it('judges future dates and expiry by the later of the own clock and the newest signed time', async () => {
    const repo = fleet(10);
    await service(repo).publish();
    const first = await service(repo).answer(vehicle(vinOf(1)));
    now += 300_000;
    await service(repo).publish();
    const answer = await service(repo).answer(vehicle(vinOf(1)));
    const twoDays = 2 * 86_400_000;
    // A clock two days behind and nothing held: the statement looks future-dated.
    assert.equal(reason(checkFreshness(answer, ctx(vinOf(1), { ownNow: now - twoDays }))), 'future_dated');
    // The same clock, but the vehicle holds the previous statement: signed time says it is not from the future.
    const held = { sequence: 1, issuedAt: Date.parse(first.signed.statement.issued_at) };
    const verdict = checkFreshness(
      answer,
      ctx(vinOf(1), { ownNow: now - twoDays, last: held, maxFutureMs: 600_000 }),
    );
    assert.equal(reason(verdict), 'ok');
    // Expired by the own clock (4 periods later)...
    assert.equal(reason(checkFreshness(answer, ctx(vinOf(1), { ownNow: now + 1_200_000 }))), 'expired');
    // ...and by signed time when the own clock was set back.
    const later = { sequence: 1, issuedAt: now + 1_200_000 };
    assert.equal(reason(checkFreshness({ ...answer }, ctx(vinOf(1), { ownNow: 0, last: later }))), 'expired');
  });

  it('refuses to publish a partial statement beyond its bound, and answers 404 before any statement', async () => {
    const repo = fleet(250);
    await assert.rejects(service(repo).answer(vehicle(vinOf(1))), { code: 'no_statement', statusCode: 404 });
    await assert.rejects(service(repo, 200).publish(), { code: 'fleet_too_large' });
    assert.equal(repo.statements.length, 0);
    await service(repo).publish();
    await assert.rejects(service(repo).answer(vehicle(vinOf(999))), {
      code: 'not_in_statement',
      statusCode: 404,
    });
  });
});

function reason(v: ReturnType<typeof checkFreshness>): string {
  return v.ok ? 'ok' : v.reason;
}
