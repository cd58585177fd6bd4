/**
 * The operator console in a real browser (Debian's chromium driven by playwright-core) against a private local
 * cloud with simulated vehicles on MQTT: release-manager uploads and publishes a release; operator creates, starts,
 * pauses and resumes a campaign and watches it complete; viewer finds no mutating control and the API refuses it
 * (403); the audit page lists all of it. Screenshots of the main views go to test-artifacts/console/.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect } from 'node:tls';
import { type Browser, chromium, type Page } from 'playwright-core';
import { buildConsole, CONSOLE_JS_BUDGET_GZIP } from '../../bin/console-bundle.js';
import { startLocalCloud } from '../../local/cloud.js';
import type { OperatorRole } from '../../protocol/roles.js';
import { newReleaseKey, Operator, signedRelease, TestVehicle } from '../support/fleet.js';
import { SignedOperator } from '../support/signed-operator.js';
import { SIM_TRANSFER, SimVehicle } from '../support/sim-vehicle.js';

const HOOK_TIMEOUT = { timeout: 120_000 };
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = resolve('test-artifacts/console');
const FLEET = 4;
const vinOf = (i: number) => `CNSL${String(i).padStart(13, '0')}`;

let cloud: Awaited<ReturnType<typeof startLocalCloud>>;
let dataDir: string;
let browser: Browser;
let page: Page;
const sims: SimVehicle[] = [];
const consoleErrors: string[] = [];
const releaseKey = newReleaseKey();
let bundle: { jsBytes: number; jsGzipBytes: number };

/** SHA-256 of the server certificate's public key, base64: chromium trusts exactly that certificate. */
async function serverSpki(url: string, ca: string): Promise<string> {
  const { hostname, port } = new URL(url);
  const pem = await new Promise<string>((done, fail) => {
    const socket = connect({ host: hostname, port: Number(port), ca, servername: undefined }, () => {
      const raw = socket.getPeerX509Certificate();
      socket.end();
      if (!raw) return fail(new Error('no server certificate'));
      done(raw.toString());
    });
    socket.on('error', fail);
  });
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ota-console-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  bundle = await buildConsole(join(dataDir, 'console'));
  cloud = await startLocalCloud({
    dataDir: join(dataDir, 'state'),
    consoleDir: join(dataDir, 'console'),
    releasePublicKeys: [releaseKey.publicPem],
    campaignTickMs: 500,
    throttle: { ratePerSecond: 10_000, burst: 10_000 },
  });
  const admin = new Operator(cloud.endpoints.api, cloud.caCertPem, cloud.adminToken);
  for (let i = 0; i < FLEET; i++) {
    const car = await TestVehicle.create(vinOf(i));
    const reg = await admin.call('POST', '/vehicles', car.registration());
    assert.equal(reg.status, 201, reg.raw.toString());
    // 'hold': each vehicle stays at installing until the test releases it, so the campaign can be paused mid-way.
    const sim = new SimVehicle(car.vin, { keyPem: car.keyPem, certPem: reg.json.certificate_pem }, 'hold');
    await sim.connect(cloud.endpoints.mqtt, cloud.caCertPem);
    sims.push(sim);
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Trust the local cloud's certificate (gateway and S3 emulator share it) by its key, and nothing else.
    args: [`--ignore-certificate-errors-spki-list=${await serverSpki(cloud.endpoints.api, cloud.caCertPem)}`],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  page.on('response', (r) => {
    if (r.status() >= 500) consoleErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
}, HOOK_TIMEOUT);

after(async () => {
  await browser?.close();
  for (const s of sims) await s.end().catch(() => {});
  await cloud?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}, HOOK_TIMEOUT);

async function signIn(role: OperatorRole) {
  const account = cloud.operators.find((a) => a.role === role)!;
  await page.goto(cloud.endpoints.console);
  // The page restores a stored session (GET /me) before it shows either the shell or the sign-in form: wait for
  // one of them, so a slow restore is not taken for "signed out".
  const out = page.getByRole('button', { name: 'Sign out' });
  const keyId = page.getByLabel('Access key id');
  await out.or(keyId).waitFor();
  if (await out.isVisible()) await out.click();
  await keyId.fill(account.accessKeyId);
  await page.getByLabel('Secret access key').fill(account.secretAccessKey);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator(`.who[data-role="${role}"]`).waitFor();
}

async function until(check: () => Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, 'condition not reached');
    await new Promise((r) => setTimeout(r, 100));
  }
}

const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

describe('the operator console in chromium', { timeout: 600_000 }, () => {
  it('ships at most 300 KB of gzipped JavaScript', () => {
    assert.ok(bundle.jsGzipBytes <= CONSOLE_JS_BUDGET_GZIP, `${bundle.jsGzipBytes} bytes gzipped`);
    assert.ok(bundle.jsGzipBytes > 10_000, 'the bundle holds the app');
  });

  it('serves the console with its security headers on the API origin', async () => {
    const res = await page.goto(cloud.endpoints.console);
    const headers = res!.headers();
    assert.match(headers['content-security-policy']!, /script-src 'self'/);
    assert.match(headers['content-security-policy']!, /frame-ancestors 'none'/);
    assert.equal(headers['x-frame-options'], 'DENY');
    assert.equal(new URL(page.url()).origin, new URL(cloud.endpoints.api).origin);
    await shot('sign-in');
  });

  it('refuses a wrong secret at sign-in', async () => {
    const viewer = cloud.operators.find((a) => a.role === 'viewer')!;
    await page.goto(cloud.endpoints.console);
    await page.getByLabel('Access key id').fill(viewer.accessKeyId);
    await page.getByLabel('Secret access key').fill(`${viewer.secretAccessKey}x`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: '403' }).waitFor();
  });

  it('release-manager uploads and publishes a release with progress', async () => {
    await signIn('release-manager');
    const image = randomBytes(256 * 1024);
    const signed = await signedRelease(image, {
      releaseId: 'tcu-2.0.0',
      version: '2.0.0',
      signer: releaseKey.signer,
    });
    writeFileSync(join(dataDir, 'manifest.json'), JSON.stringify(signed));
    writeFileSync(join(dataDir, 'tcu-2.0.0.bin'), image);
    await page.getByRole('link', { name: 'Releases' }).click();
    await page.getByLabel('Signed manifest (JSON)').setInputFiles(join(dataDir, 'manifest.json'));
    await page.getByLabel('Firmware image').setInputFiles(join(dataDir, 'tcu-2.0.0.bin'));
    await page.getByRole('button', { name: 'Upload and publish' }).click();
    await page.locator('[data-state="published"]').waitFor({ timeout: 180_000 });
    assert.equal(
      await page.getByRole('progressbar', { name: 'Upload' }).getAttribute('value'),
      String(image.length),
    );
    await page.getByRole('link', { name: 'tcu-2.0.0' }).click();
    await page.getByText(signed.signatures[0]!.key_id, { exact: true }).waitFor();
    await page.getByText(signed.manifest.sha256, { exact: true }).waitFor();
    await shot('release-detail');
    await page.getByRole('link', { name: 'Releases' }).click();
    await page.getByRole('link', { name: 'tcu-2.0.0' }).waitFor();
    await shot('releases');
    // Campaign controls are not the release-manager's.
    await page.getByRole('link', { name: 'Campaigns' }).click();
    await page.getByRole('heading', { name: 'Campaigns', level: 1 }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Create campaign' }).count(), 0);
  });

  it('operator creates, starts, pauses and resumes a campaign and watches it complete', async () => {
    await signIn('operator');
    await page.getByRole('link', { name: 'Campaigns' }).click();
    await page.getByLabel('Name').fill('console rollout');
    await page.getByLabel('Release').selectOption('tcu-2.0.0');
    await page.getByLabel('Model').fill('Model T');
    await page.getByLabel('Waves (cumulative percentages)').fill('25, 100');
    await page.getByRole('button', { name: 'Preview targets' }).click();
    await page.locator(`[data-preview="${FLEET}"]`).getByText('waves of 1, 3 vehicles').waitFor();
    await page.getByRole('button', { name: 'Create campaign' }).click();
    // 202 preparing: the page follows the background preparation of the targets to created, and says what it did.
    await page.locator('[data-status="created"]').waitFor({ timeout: 30_000 });
    await page
      .locator('[data-preparation="finished"]')
      .getByText(new RegExp(`Prepared: ${FLEET} targeted, 0 excluded`))
      .waitFor();
    const campaignId = decodeURIComponent(page.url().split('/').pop()!);

    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Start' }).click();
    await page.locator('[data-status="running"]').waitFor();
    // The canary vehicle installs and is held there; the page shows it without a reload.
    await page.getByText('installing 1').waitFor({ timeout: 30_000 });
    await shot('campaign-running');

    page.once('dialog', (d) => void d.dismiss());
    await page.getByRole('button', { name: 'Pause' }).click();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(
      await page.locator('[data-status="running"]').count(),
      1,
      'a dismissed confirmation does nothing',
    );
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Pause' }).click();
    await page.locator('[data-status="paused"]').waitFor();
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.locator('[data-status="running"]').waitFor();

    // Let the vehicles finish as they get their offers; the page follows the campaign to completed.
    const releaseHeld = setInterval(() => {
      for (const s of sims) void s.release('completed');
    }, 300);
    try {
      await page.locator('[data-status="completed"]').waitFor({ timeout: 90_000 });
    } finally {
      clearInterval(releaseHeld);
    }
    await page.getByText(`${FLEET} of ${FLEET} completed`).waitFor();
    // What the vehicles' downloads cost, as they reported it with their outcomes (SIM_TRANSFER each).
    const image = FLEET * SIM_TRANSFER.bytes_image;
    const saved = image - FLEET * SIM_TRANSFER.bytes_fetched;
    await page
      .locator(`.transfer[data-downloads="${FLEET}"]`)
      .getByText(`${((saved * 100) / image).toFixed(1)}% saved`)
      .waitFor();
    await shot('campaign-completed');
    assert.ok(campaignId.length > 2);
    // Release controls are not the operator's.
    await page.getByRole('link', { name: 'Releases' }).click();
    await page.getByRole('heading', { name: 'Releases', level: 1 }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Upload and publish' }).count(), 0);
  });

  it('viewer sees no mutating control, and the API refuses the viewer with 403', async () => {
    await signIn('viewer');
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByText(`${FLEET} vehicles`).waitFor();
    await shot('overview');
    await page.getByRole('link', { name: 'Releases' }).click();
    await page.getByRole('link', { name: 'tcu-2.0.0' }).waitFor();
    await page.getByRole('link', { name: 'Campaigns' }).click();
    await page.getByRole('link', { name: 'console rollout' }).click();
    await page.locator('[data-status="completed"]').waitFor();
    await page.getByRole('link', { name: 'Vehicles' }).click();
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('link', { name: vinOf(0) }).click();
    await page
      .getByRole('list', { name: 'Status history, newest first' })
      .getByText('completed')
      .first()
      .waitFor();
    // The vehicle itself (registry-api) answers separately from its history: its ECU shows the installed version.
    await page
      .getByRole('table', { name: 'ECUs' })
      .getByRole('cell', { name: '2.0.0', exact: true })
      .waitFor();
    await shot('vehicle-detail');
    for (const view of ['#/', '#/releases', '#/campaigns', '#/vehicles', '#/audit']) {
      await page.goto(`${cloud.endpoints.console}${view}`);
      await page.locator('main h1').waitFor();
      const mutating = page.getByRole('button', {
        name: /Upload and publish|Create campaign|Start|Pause|Resume|Cancel|Preview targets/,
      });
      assert.equal(await mutating.count(), 0, `no mutating control on ${view}`);
    }
    const viewer = await SignedOperator.as(cloud, 'viewer');
    const refused = await viewer.call('POST', '/campaigns', {
      name: 'viewer try',
      release_id: 'tcu-2.0.0',
      targets: { all: true },
    });
    assert.equal(refused.status, 403, refused.raw.toString());
  });

  it('the audit page lists the actions and the refusal', async () => {
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByRole('link', { name: 'Audit log' }).click();
    const rows = page.locator('table.audit tbody tr');
    await rows.first().waitFor();
    const text = (await rows.allInnerTexts()).join('\n');
    for (const expected of [
      /viewer\tviewer\tPOST \/campaigns\t-\trefused \(403\)/,
      /operator\toperator\tPOST \/campaigns\/\{campaignId\}\/resume\t\S+\tallowed \(200\)/,
      /operator\toperator\tPOST \/campaigns\/\{campaignId\}\/pause\t\S+\tallowed \(200\)/,
      /operator\toperator\tPOST \/campaigns\/\{campaignId\}\/start\t\S+\tallowed \(200\)/,
      /operator\toperator\tPOST \/campaigns\t\S+\tallowed \(20[12]\)/,
      /release-manager\trelease-manager\tPOST \/releases\/\{releaseId\}\/publish\ttcu-2\.0\.0\tallowed \(202\)/,
      /release-manager\trelease-manager\tPOST \/releases\ttcu-2\.0\.0\tallowed \(201\)/,
    ]) {
      assert.match(text, expected);
    }
    await page.getByLabel('Outcome').selectOption('refused');
    await page.getByRole('button', { name: 'Filter' }).click();
    await until(async () => (await rows.count()) === 1);
    await page.getByLabel('Outcome').selectOption('');
    await page.getByRole('button', { name: 'Filter' }).click();
    await until(async () => (await rows.count()) > 1);
    await shot('audit');
  });

  it('logged no error in the browser console', () => {
    // The one expected: the refused sign-in's 403 answer, which chromium logs as a failed resource load.
    const unexpected = consoleErrors.filter((e) => !/status of 403/.test(e));
    assert.deepEqual(unexpected, []);
  });
});
