/** The state file: durable, atomic, serialised updates; a damaged file is an error, never silently replaced. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { StateError } from '../../vehicle/errors.js';
import { initialState, StateStore, StoreClosedError } from '../../vehicle/state-store.js';

const VIN = '1HGCM82633A004352';
const root = mkdtempSync(join(tmpdir(), 'agent-state-'));
/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 30_000 };

after(() => rmSync(root, { recursive: true, force: true }), HOOK_TIMEOUT);
let n = 0;
const fresh = () => join(root, `s${++n}`);
const init = () => initialState(VIN, { tcu: { hardware_id: 'TCU-HW-1', version: '1.0.0' } });

describe('StateStore', { timeout: 60_000 }, () => {
  it('creates the state on first run (0600) and finds it again after a restart', async () => {
    const dir = fresh();
    const a = await StateStore.open(dir, init);
    await a.update((s) => {
      s.last_counter = 5;
      s.next_sequence = 12;
    });
    assert.equal(statSync(a.file).mode & 0o777, 0o600);
    a.close();
    const b = await StateStore.open(dir, () => {
      throw new Error('must not re-initialise');
    });
    assert.equal(b.state.last_counter, 5);
    assert.equal(b.state.next_sequence, 12);
    assert.equal(b.state.ecus.tcu?.version, '1.0.0');
  });

  it('runs updates one at a time, each on the previous result, and leaves no temp files', async () => {
    const dir = fresh();
    const store = await StateStore.open(dir, init);
    const taken = await Promise.all(Array.from({ length: 50 }, () => store.update((s) => s.next_sequence++)));
    assert.deepEqual(
      taken,
      Array.from({ length: 50 }, (_, i) => i),
      'every caller got its own sequence number',
    );
    assert.equal(JSON.parse(readFileSync(store.file, 'utf8')).next_sequence, 50);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
    );
  });

  it('rejects an update that would make the state invalid, and keeps the previous state on disk and in memory', async () => {
    const store = await StateStore.open(fresh(), init);
    await store.update((s) => {
      s.last_counter = 3;
    });
    const before = readFileSync(store.file, 'utf8');
    await assert.rejects(
      store.update((s) => {
        s.last_counter = -1;
      }),
    );
    await assert.rejects(
      store.update(() => {
        throw new Error('bug in the mutator');
      }),
    );
    assert.equal(readFileSync(store.file, 'utf8'), before);
    assert.equal(store.state.last_counter, 3);
    await store.update((s) => {
      s.last_counter = 4;
    });
    assert.equal(store.state.last_counter, 4, 'later updates still work');
  });

  it('hands out frozen snapshots', async () => {
    const store = await StateStore.open(fresh(), init);
    assert.throws(() => {
      (store.state as { last_counter: number }).last_counter = 99;
    });
  });

  it('refuses updates once closed (power cut in tests, shutdown)', async () => {
    const store = await StateStore.open(fresh(), init);
    store.close();
    await assert.rejects(
      store.update(() => {}),
      StoreClosedError,
    );
  });

  it('refuses to start from a damaged or invalid file instead of forgetting counters', async () => {
    const dir = fresh();
    (await StateStore.open(dir, init)).close();
    writeFileSync(join(dir, 'state.json'), '{"schema": "ota.agent-state/v1", "vin": ');
    await assert.rejects(
      StateStore.open(dir, init),
      (e: unknown) => e instanceof StateError && e.code === 'state_unreadable',
    );
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ ...init(), next_sequence: 'x' }));
    await assert.rejects(
      StateStore.open(dir, init),
      (e: unknown) => e instanceof StateError && e.code === 'state_invalid',
    );
  });

  it('keeps offers in immutable files named in the state', async () => {
    const store = await StateStore.open(fresh(), init);
    const offer = {
      type: 'update_offer' as const,
      campaign_id: null,
      update_id: 'release#x',
      firmware_version: '2.0.0',
      ecu: 'tcu',
      size: 1,
      release_id: 'x',
      manifest_sha256: 'a'.repeat(64),
      manifest: {
        manifest: {
          schema: 'ota.release-manifest/v1' as const,
          release_id: 'x',
          ecu: 'tcu',
          hardware_ids: ['H'],
          version: '2.0.0',
          size: 1,
          sha256: 'a'.repeat(64),
          chunk_size: 65536,
          chunks: ['a'.repeat(64)],
          created_at: '2026-11-27T00:00:00.000Z',
        },
        signatures: [{ key_id: 'a'.repeat(16), signature: 'A'.repeat(20) }],
      },
      assignment: {
        assignment: {
          schema: 'ota.assignment/v1' as const,
          vin: VIN,
          update_id: 'release#x',
          campaign_id: null,
          release_id: 'x',
          version: '2.0.0',
          ecu: 'tcu',
          manifest_sha256: 'a'.repeat(64),
          counter: 3,
          issued_at: '2026-11-27T00:00:00.000Z',
          expires_at: '2026-11-28T00:00:00.000Z',
        },
        key_id: 'a'.repeat(16),
        signature: 'A'.repeat(20),
      },
    };
    const name = await store.saveOffer(offer);
    assert.match(name, /^3-[0-9a-f]{24}\.json$/);
    assert.equal(await store.saveOffer(offer), name, 'the same offer gets the same file');
    assert.deepEqual(await store.loadOffer(name), offer);
    await store.deleteOffer(name);
    await assert.rejects(store.loadOffer(name));
  });
});
