/**
 * Every listing route pages (limit + opaque next_token), with more items than one page, and no unbounded list
 * lives in one item: a campaign's exclusions are items of their own, the campaign item keeps counts per reason.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { clientConfig } from '../../lambdas/adapters/aws-clients.js';
import { documentClient } from '../../lambdas/adapters/dynamo-common.js';
import { type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';

/** Starting or stopping the local cloud on a loaded machine. */
const HOOK_TIMEOUT = { timeout: 120_000 };

let cloud: LocalCloud;
let dataDir: string;
let operator: Operator;
const releaseKey = newReleaseKey();
const vin = (i: number) => `TESTP${String(i).padStart(12, '0')}`;
const unknown = (i: number) => `TESTU${String(i).padStart(12, '0')}`;

/** Reads a listing page by page; answers the items and how many pages it took. */
async function all(path: string, field: string, limit: number) {
  const items: Record<string, unknown>[] = [];
  let token: string | null = null;
  let pages = 0;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const next: string = token ? `&next_token=${encodeURIComponent(token)}` : '';
    const res = await operator.call('GET', `${path}${sep}limit=${limit}${next}`);
    assert.equal(res.status, 200, res.raw.toString());
    assert.ok(res.json[field].length <= limit, `a page holds at most ${limit}`);
    items.push(...res.json[field]);
    token = res.json.next_token;
    pages++;
    assert.ok(pages < 50, 'the listing ends');
  } while (token);
  return { items, pages };
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-pages-'));
  cloud = await startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    releasePublicKeys: [releaseKey.publicPem],
    // Ticks offer the started campaign, which gives its targets their wave.
    campaignTickMs: 500,
    throttle: { ratePerSecond: 10000, burst: 10000 },
  });
  operator = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  for (const version of ['2.0.0', '2.0.1', '2.0.2']) {
    const image = randomBytes(16 * 1024);
    const signed = await signedRelease(image, {
      releaseId: `tcu-${version}`,
      version,
      signer: releaseKey.signer,
    });
    assert.equal((await operator.publish(signed, image)).published?.status, 200);
  }
  for (let i = 0; i < 12; i++) {
    const v = await TestVehicle.create(vin(i));
    assert.equal((await operator.call('POST', '/vehicles', v.registration())).status, 201);
  }
  const campaign = async (id: string, vins: string[]) => {
    const res = await operator.createCampaign({
      campaign_id: id,
      name: id,
      release_id: 'tcu-2.0.2',
      targets: { vins },
      policy: { waves: [100], skip_canary: true },
    });
    assert.equal(res.json.status, 'created', res.raw.toString());
  };
  await campaign('pages-a', [
    ...Array.from({ length: 8 }, (_, i) => vin(i)),
    ...[0, 1, 2, 3, 4, 5, 6].map(unknown),
  ]);
  await campaign('pages-b', [vin(8), vin(9), unknown(0)]);
  await campaign('pages-c', [vin(10), vin(11)]);
  // A wave lists the vehicles it has taken (offered), so pages-a runs until its one wave has offered all eight.
  assert.equal((await operator.call('POST', '/campaigns/pages-a/start', {})).status, 200);
  for (let i = 0; ; i++) {
    const c = (await operator.call('GET', '/campaigns/pages-a')).json;
    if ((c.counts.offered ?? 0) === 8) break;
    assert.ok(i < 600, `pages-a offered ${JSON.stringify(c.counts)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('listings page with limit and next_token', { timeout: 180_000 }, () => {
  it('releases, without their manifests', async () => {
    const { items, pages } = await all('/releases', 'releases', 1);
    assert.deepEqual(items.map((r) => r.release_id).sort(), ['tcu-2.0.0', 'tcu-2.0.1', 'tcu-2.0.2']);
    assert.ok(pages >= 3);
    assert.ok(items.every((r) => r.manifest === undefined));
  });

  it('campaigns', async () => {
    const { items, pages } = await all('/campaigns', 'campaigns', 2);
    assert.deepEqual(items.map((c) => c.campaign_id).sort(), ['pages-a', 'pages-b', 'pages-c']);
    assert.ok(pages >= 2);
  });

  it("a wave's vehicles, in VIN order, each once", async () => {
    // pages-a was started in the set-up and has offered all eight: its wave lists what it took.
    const { items, pages } = await all('/campaigns/pages-a/vehicles?wave=0', 'vehicles', 3);
    assert.deepEqual(
      items.map((v) => v.vin),
      Array.from({ length: 8 }, (_, i) => vin(i)),
    );
    assert.ok(pages >= 3);
  });

  it("a campaign's exclusions, kept out of the campaign item", async () => {
    const { items, pages } = await all('/campaigns/pages-a/excluded', 'excluded', 3);
    assert.deepEqual(
      items,
      [0, 1, 2, 3, 4, 5, 6].map((i) => ({ vin: unknown(i), reason: 'unknown_vehicle' })),
    );
    assert.ok(pages >= 3);
    const summary = (await operator.call('GET', '/campaigns/pages-a')).json.excluded;
    assert.deepEqual(summary, { count: 7, by_reason: { unknown_vehicle: 7 } });

    const db = documentClient(new DynamoDBClient(clientConfig('DYNAMODB')));
    const stored = (
      await db.send(new GetCommand({ TableName: cloud.tables.campaigns, Key: { campaignId: 'pages-a' } }))
    ).Item!;
    assert.equal(stored.excluded, undefined, 'no list of VINs in the campaign item');
    assert.deepEqual(stored.excludedByReason, { unknown_vehicle: 7 });
    db.destroy();
  });

  it('refuses a bad limit, a forged token, a token of another listing and unknown parameters with 400', async () => {
    const status = async (path: string) => {
      const res = await operator.call('GET', path);
      return [res.status, res.json?.error?.code];
    };
    assert.deepEqual(await status('/releases?limit=0'), [400, 'invalid_limit']);
    assert.deepEqual(await status('/campaigns?limit=1001'), [400, 'invalid_limit']);
    assert.deepEqual(await status('/releases?cursor=abc'), [400, 'invalid_query']);
    assert.deepEqual(await status('/releases?next_token=not-a-token'), [400, 'invalid_next_token']);
    const excluded = await operator.call('GET', '/campaigns/pages-a/excluded?limit=1');
    const token = excluded.json.next_token as string;
    assert.equal(typeof token, 'string');
    assert.deepEqual(await status(`/campaigns/pages-b/excluded?next_token=${token}`), [
      400,
      'invalid_next_token',
    ]);
    assert.deepEqual(await status(`/campaigns/pages-a/vehicles?wave=0&next_token=${token}`), [
      400,
      'invalid_next_token',
    ]);
    assert.deepEqual(await status(`/releases?next_token=${token}`), [400, 'invalid_next_token']);
  });
});
