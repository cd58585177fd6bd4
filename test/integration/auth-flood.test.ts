/**
 * Issue 18, finding 1: anyone who knows a VIN could keep that vehicle from logging in, because each new challenge
 * replaced the one outstanding challenge the car was answering (5 challenges/s: 0 of 20 logins). Here the same
 * flood runs over real HTTPS against a private local cloud, and every login of the real vehicle succeeds; the
 * per-VIN issuance cap bounds what a flood can cost without revealing which VINs exist.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, TestVehicle } from '../support/fleet.js';
import { jsonRequest } from '../support/https.js';

const CAP = 120;
const CAR = '1HGCM82633A004352';
const OTHER = '5YJSA1E26HF000337';
const CAPPED = 'WVWZZZ1JZXW000001';
const UNKNOWN = '2T1BURHE0JC000001';
const UNKNOWN_CAPPED = '2T1BURHE0JC000002';

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
const vehicles = new Map<string, TestVehicle>();

const post = (path: string, body: unknown) =>
  jsonRequest(cloud.endpoints.api, 'POST', path, cloud.caCertPem, body);
const challenge = (vin: string) => post('/auth/challenge', { vin });

/** One login as the vehicle, with a pause between challenge and answer (the finding's 300 ms round trip). */
async function login(vin: string, pauseMs: number): Promise<number> {
  const c = await challenge(vin);
  assert.equal(c.status, 200, c.raw.toString());
  await sleep(pauseMs);
  const t = await post('/auth/token', {
    vin,
    nonce: c.json.nonce,
    signature: vehicles.get(vin)!.signChallenge(c.json.nonce),
  });
  return t.status;
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-auth-flood-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [newReleaseKey().publicPem],
    campaignTickMs: 0,
    challengesPerVinPerMinute: CAP,
    // The gateway's per-address throttle is WAF's stand-in; raised so only the per-VIN cap can answer 429 here.
    throttle: { ratePerSecond: 10000, burst: 10000 },
  });
  const operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  for (const vin of [CAR, OTHER, CAPPED]) {
    const v = await TestVehicle.create(vin);
    vehicles.set(vin, v);
    const reg = await operator.call('POST', '/vehicles', v.registration());
    assert.equal(reg.status, 201, reg.raw.toString());
  }
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('login under a challenge flood', { timeout: 120_000 }, () => {
  it('an attacker requesting 5 challenges/s for the VIN no longer keeps the vehicle from logging in (20 of 20)', async () => {
    let flooding = true;
    const attacker: number[] = [];
    const flood = (async () => {
      while (flooding) {
        attacker.push((await challenge(CAR)).status);
        await sleep(200);
      }
    })();
    const logins: number[] = [];
    try {
      for (let i = 0; i < 20; i++) logins.push(await login(CAR, 300));
    } finally {
      flooding = false;
      await flood;
    }
    assert.deepEqual(logins, Array(20).fill(200), 'every login succeeded');
    // The flood really ran alongside: at 5/s over 20 logins of 300 ms or more, at least 20 challenges.
    assert.ok(attacker.length >= 20, `the attacker sent ${attacker.length} challenges`);
    assert.deepEqual([...new Set(attacker)], [200], 'and was answered like anyone else');
  });

  it('challenges issued between a vehicle’s challenge and its answer do not invalidate it', async () => {
    const mine = await challenge(CAR);
    for (let i = 0; i < 10; i++) assert.equal((await challenge(CAR)).status, 200);
    const t = await post('/auth/token', {
      vin: CAR,
      nonce: mine.json.nonce,
      signature: vehicles.get(CAR)!.signChallenge(mine.json.nonce),
    });
    assert.equal(t.status, 200, t.raw.toString());
  });

  it('spends each challenge once, binds it to its VIN, and answers unknown VINs alike', async () => {
    const car = vehicles.get(CAR)!;
    const c = await challenge(CAR);
    const answer = { vin: CAR, nonce: c.json.nonce, signature: car.signChallenge(c.json.nonce) };
    assert.equal((await post('/auth/token', answer)).status, 200);
    const replay = await post('/auth/token', answer);
    assert.equal(replay.status, 401);
    assert.equal(replay.json.error.code, 'invalid_challenge');

    // A challenge issued for another VIN cannot be answered for this one, even with this car's valid signature.
    const foreign = await challenge(OTHER);
    const crossed = await post('/auth/token', {
      vin: CAR,
      nonce: foreign.json.nonce,
      signature: car.signChallenge(foreign.json.nonce),
    });
    assert.equal(crossed.status, 401);
    // ... and it was not spent by that attempt: its own vehicle still redeems it.
    const own = await post('/auth/token', {
      vin: OTHER,
      nonce: foreign.json.nonce,
      signature: vehicles.get(OTHER)!.signChallenge(foreign.json.nonce),
    });
    assert.equal(own.status, 200, own.raw.toString());

    const unknown = await challenge(UNKNOWN);
    assert.equal(unknown.status, 200);
    assert.deepEqual(Object.keys(unknown.json).sort(), Object.keys(c.json).sort());
  });

  it(`caps challenges per VIN at ${CAP} a minute (429 JSON), for unknown VINs alike, leaving other VINs alone`, async () => {
    for (const vin of [CAPPED, UNKNOWN_CAPPED]) {
      const statuses: number[] = [];
      let refused: Awaited<ReturnType<typeof challenge>> | undefined;
      // A minute boundary may fall inside the burst and refill the window once: at most two windows' worth.
      while (!refused && statuses.length < 2 * CAP + 20) {
        const batch = await Promise.all(Array.from({ length: 20 }, () => challenge(vin)));
        for (const r of batch) {
          statuses.push(r.status);
          if (r.status === 429) refused ??= r;
        }
      }
      const ok = statuses.filter((s) => s === 200).length;
      assert.ok(refused, `${vin}: no 429 after ${statuses.length} challenges`);
      assert.ok(ok >= CAP && ok <= 2 * CAP, `${vin}: ${ok} challenges issued, cap ${CAP}`);
      assert.deepEqual(
        statuses.filter((s) => s !== 200 && s !== 429),
        [],
        'nothing but 200 and 429',
      );
      assert.equal(refused.json.error.code, 'rate_limited');
      assert.match(refused.json.error.message, /challenges a minute/);
    }
    assert.equal(await login(CAR, 0), 200, 'another VIN logs in while one is capped');
  });
});
