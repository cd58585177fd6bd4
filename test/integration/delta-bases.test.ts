/**
 * Delta bases chosen from the fleet (issue 13) on the local cloud: the registry holds vehicles on several versions
 * of tcu; `ota vehicles versions` counts them through GET /fleet/versions, and `ota firmware sign --delta-auto`
 * builds deltas from the most common ones whose images are in a folder (refusing a file that is not the published
 * image of its version). After upload, a vehicle on a chosen base takes the delta, one on another base reuses chunks.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SignedManifest } from '../../protocol/manifest.js';
import {
  type AgentCloud,
  assertVehicleRuns,
  publishRelease,
  registerAgentVehicle,
  startAgentCloud,
  TCU,
} from '../support/agent-cloud.js';
import {
  otaCli,
  patched,
  proxyToS3,
  textImage,
  transportVia,
  updateVehicle,
} from '../support/delta-vehicle.js';

const KiB = 1024;
const HOOK_TIMEOUT = { timeout: 120_000 };
let ac: AgentCloud;

/** Three installed images; the next release holds all of C, an edited copy of A and a piece of B. */
const A = textImage(400 * KiB, 'bases-a');
const B = textImage(400 * KiB, 'bases-b');
const C = textImage(400 * KiB, 'bases-c');
const NEXT = Buffer.concat([C, patched(A), B.subarray(0, 160 * KiB)]);

before(async () => {
  ac = await startAgentCloud();
}, HOOK_TIMEOUT);

after(async () => {
  await ac?.stop();
}, HOOK_TIMEOUT);

let serial = 0;
const vin = () => `1FTFW1ET5DFC${String(++serial).padStart(5, '0')}`;

describe('delta bases from the fleet', { timeout: 600_000 }, () => {
  it('ota firmware sign --delta-auto builds deltas from the versions the targets run', async () => {
    // The registry: 1.0.0 x3, 1.0.1 x2, 0.9.0 x1, and one already on 2.0.0 (not a target of 1.2.0).
    const fleet = ['1.0.0', '1.0.0', '1.0.0', '1.0.1', '1.0.1', '0.9.0', '2.0.0'];
    for (const version of fleet) await registerAgentVehicle(ac, vin(), [{ ...TCU, version }]);
    // 1.0.1 went out as a release: the file given for it must be that image.
    await publishRelease(ac, { version: '1.0.1', image: B });
    const env = {
      OTA_ENDPOINT: ac.cloud.endpoints.api,
      OTA_CA_FILE: ac.cloud.caFile,
      OTA_ADMIN_TOKEN_FILE: ac.cloud.adminTokenFile!,
    };

    const counted = await otaCli(ac, env, [
      'vehicles',
      'versions',
      '--ecu',
      'tcu',
      '--below',
      '1.2.0',
      '--json',
    ]);
    assert.equal(counted.code, 0, counted.stderr);
    assert.deepEqual(JSON.parse(counted.stdout), {
      ecu: 'tcu',
      vehicles: 6,
      versions: [
        { version: '1.0.0', vehicles: 3 },
        { version: '1.0.1', vehicles: 2 },
        { version: '0.9.0', vehicles: 1 },
      ],
    });

    const dir = join(ac.root, 'old-images');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, '1.0.0.img'), A);
    writeFileSync(join(dir, 'tcu-1.0.1.bin'), C); // not the published 1.0.1
    writeFileSync(join(ac.root, 'next.img'), NEXT);
    writeFileSync(join(ac.root, 'release.key.pem'), ac.releaseKey.privatePem);
    const sign = () =>
      otaCli(ac, env, [
        ...['firmware', 'sign', 'next.img', '--release-id', 'tcu-1.2.0', '--ecu', 'tcu'],
        ...['--hardware-id', 'TCU-HW-1', '--version', '1.2.0', '--key', 'release.key.pem'],
        ...['--out', 'next.json', '--compressed-out', 'next.frames'],
        ...['--delta-auto', 'old-images'],
      ]);
    const refused = await sign();
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /tcu-1\.0\.1\.bin is not the image of tcu-1\.0\.1/);

    writeFileSync(join(dir, 'tcu-1.0.1.bin'), B);
    const signed = await sign();
    assert.equal(signed.code, 0, signed.stderr);
    assert.match(signed.stderr, /6 target vehicle\(s\) run 3 version\(s\) of tcu below 1\.2\.0/);
    // Defaults: up to 3 bases until 90% of targets; 1.0.0 and 1.0.1 cover 5 of 6, 0.9.0 has no image.
    assert.match(signed.stderr, /no image of 0\.9\.0 in .*old-images: its 1 vehicle\(s\) use chunk reuse/);
    assert.match(signed.stderr, /deltas from 1\.0\.0, 1\.0\.1: 5 of 6 target vehicle\(s\) \(83\.3%\)/);
    const manifest = (JSON.parse(readFileSync(join(ac.root, 'next.json'), 'utf8')) as SignedManifest)
      .manifest;
    assert.deepEqual(
      manifest.compression?.deltas?.map((d) => d.from_version),
      ['1.0.0', '1.0.1'],
    );
    const up = await otaCli(ac, env, ['firmware', 'upload', 'next.frames', '--manifest', 'next.json']);
    assert.equal(up.code, 0, up.stderr);

    // A vehicle running the 1.0.0 image takes its delta; one running an image no delta is from reuses chunks.
    const proxy = await proxyToS3(ac);
    const viaDelta = await updateVehicle(ac, '1.2.0', {
      factory: A,
      overrides: { downloadTransport: transportVia(ac, proxy) },
    });
    assert.equal(viaDelta.outcome.status, 'completed', viaDelta.outcome.reason);
    assertVehicleRuns(viaDelta.dir, '1.2.0', NEXT);
    assert.equal(viaDelta.downloaded?.path, 'delta');
    assert.ok(proxy.bytesToClient < NEXT.length * 0.5, `served ${proxy.bytesToClient} of ${NEXT.length}`);
    const viaReuse = await updateVehicle(ac, '1.2.0', { factory: C });
    assert.equal(viaReuse.outcome.status, 'completed', viaReuse.outcome.reason);
    assertVehicleRuns(viaReuse.dir, '1.2.0', NEXT);
    assert.equal(viaReuse.downloaded?.path, 'chunk-reuse', JSON.stringify(viaReuse.downloaded));
    assert.match(
      viaReuse.downloaded?.fallback ?? '',
      /no delta from the installed image \(deltas from 1\.0\.0, 1\.0\.1\)/,
    );
  });
});
