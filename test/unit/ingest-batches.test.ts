/**
 * How the ingest function splits a batch from its queue (lambdas/core/ingest.ts): one vehicle's messages stay in
 * the batch's order (they are recorded one after the other), different vehicles' form separate groups (recorded at
 * once), and a body that is not a rule event still gets a group, to be refused like any bad message.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { groupByVehicle, queuedEvent } from '../../lambdas/core/ingest.js';

const message = (id: string, body: string) => ({ id, body });
const rule = (vin: string, n: number) =>
  JSON.stringify({ vin, channel: 'progress', payload: '', received_at: n });

describe('ingest batches', { timeout: 10_000 }, () => {
  it("groups a batch by vehicle, each vehicle's messages in the batch's order", () => {
    const batch = [
      message('a1', rule('A', 1)),
      message('b1', rule('B', 2)),
      message('a2', rule('A', 3)),
      message('c1', rule('C', 4)),
      message('b2', rule('B', 5)),
      message('a3', rule('A', 6)),
    ];
    const groups = groupByVehicle(batch, (m) => queuedEvent(m.body)).map((g) => g.map((m) => m.id));
    assert.deepEqual(groups, [['a1', 'a2', 'a3'], ['b1', 'b2'], ['c1']]);
  });

  it('keeps messages without a VIN (not JSON, not an event, a VIN that is not text) together, none dropped', () => {
    const batch = [
      message('x', '{"payload": '),
      message('a', rule('A', 1)),
      message('y', JSON.stringify({ vin: 42 })),
      message('z', 'null'),
    ];
    const groups = groupByVehicle(batch, (m) => queuedEvent(m.body)).map((g) => g.map((m) => m.id));
    assert.deepEqual(groups, [['x', 'y', 'z'], ['a']]);
    assert.equal(queuedEvent('{"payload": '), undefined);
    assert.deepEqual(queuedEvent(rule('A', 1)), {
      vin: 'A',
      channel: 'progress',
      payload: '',
      received_at: 1,
    });
  });
});
