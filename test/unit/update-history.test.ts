/**
 * The status history kept on the update item (lambdas/core/update-history.ts): bounded, the first transition kept,
 * undefined fields left out of the stored item, and a vehicle's history read newest first across its updates.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { UpdateRecord } from '../../lambdas/core/ports.js';
import {
  MAX_TRANSITIONS,
  UpdateHistoryReader,
  vehicleHistory,
  withTransition,
} from '../../lambdas/core/update-history.js';

const base: UpdateRecord = {
  vin: 'VIN00000000000001',
  updateId: 'campaign#c1',
  releaseId: 'tcu-2.0.0',
  version: '2.0.0',
  ecu: 'tcu',
  status: 'offered',
  progress: 0,
  lastSequence: -1,
  attempt: 1,
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
  revision: 1,
};

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();

describe('update history on the update item', { timeout: 10_000 }, () => {
  it('appends transitions in order and leaves undefined fields out', () => {
    let u = withTransition(base, { status: 'offered', source: 'backend', at: at(1), reason: undefined });
    u = withTransition(u, { status: 'downloading', source: 'mqtt', sequence: 3, progress: 0, at: at(2) });
    assert.deepEqual(u.history, [
      { status: 'offered', source: 'backend', at: at(1) },
      { status: 'downloading', source: 'mqtt', sequence: 3, progress: 0, at: at(2) },
    ]);
    assert.equal(base.history, undefined, 'the input record is not changed');
  });

  it(`keeps at most ${MAX_TRANSITIONS} transitions: the first and the newest`, () => {
    let u = base;
    for (let i = 0; i < MAX_TRANSITIONS + 10; i++) {
      u = withTransition(u, { status: i % 2 ? 'downloading' : 'offered', source: 'backend', at: at(i) });
    }
    assert.equal(u.history?.length, MAX_TRANSITIONS);
    assert.equal(u.history?.[0]?.at, at(0), 'how the update began stays');
    assert.equal(u.history?.[1]?.at, at(11));
    assert.equal(u.history?.at(-1)?.at, at(MAX_TRANSITIONS + 9));
  });

  it("reads a vehicle's history newest first across its updates, up to the limit", async () => {
    const a = withTransition(withTransition(base, { status: 'offered', source: 'backend', at: at(1) }), {
      status: 'completed',
      source: 'https',
      at: at(5),
    });
    const b = withTransition(
      { ...base, updateId: 'direct#tcu-2.1.0' },
      { status: 'initiated', source: 'backend', at: at(3) },
    );
    const events = vehicleHistory([a, b], 10);
    assert.deepEqual(
      events.map((e) => `${e.updateId} ${e.status}`),
      ['campaign#c1 completed', 'direct#tcu-2.1.0 initiated', 'campaign#c1 offered'],
    );
    assert.ok(events.every((e) => e.vin === base.vin && e.applied));
    const reader = new UpdateHistoryReader({ listForVehicle: async () => [a, b] });
    assert.equal((await reader.listForVehicle(base.vin, 2)).length, 2);
  });
});
