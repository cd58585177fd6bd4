import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ingestVehicleMessage } from '../../lambdas/core/ingest.js';
import type { VehicleRepository } from '../../lambdas/core/ports.js';
import { VinRateLimiter } from '../../lambdas/core/rate-limit.js';
import type { UpdateStatusService } from '../../lambdas/core/vehicle-updates.js';

const A = '1HGCM82633A004352';
const B = '5YJSA1E26HF000337';

describe('VinRateLimiter (issue 18 #8)', { timeout: 10_000 }, () => {
  it('allows a burst, then the sustained rate, per VIN independently', () => {
    const limiter = new VinRateLimiter({ ratePerSecond: 2, burst: 3 });
    const t0 = 1_000_000;
    assert.deepEqual(
      Array.from({ length: 5 }, () => limiter.take(A, t0)),
      [true, true, true, false, false],
    );
    assert.equal(limiter.take(B, t0), true, 'another vehicle has its own bucket');
    assert.equal(limiter.take(A, t0 + 499), false, 'under one token refilled');
    assert.equal(limiter.take(A, t0 + 500), true, 'one token after half a second at 2/s');
    assert.equal(limiter.take(A, t0 + 500), false);
    // A long quiet period refills to the burst, not beyond.
    assert.deepEqual(
      Array.from({ length: 4 }, () => limiter.take(A, t0 + 60_000)),
      [true, true, true, false],
    );
  });

  it('forgets the least recently seen VINs beyond maxTracked (they start full again)', () => {
    const limiter = new VinRateLimiter({ ratePerSecond: 1, burst: 1, maxTracked: 2 });
    assert.equal(limiter.take(A, 0), true);
    assert.equal(limiter.take(A, 0), false);
    limiter.take(B, 0);
    limiter.take('WVWZZZ1JZXW000001', 0);
    assert.equal(limiter.take(A, 0), true, 'A was evicted');
  });

  it('refuses a flooding vehicle in ingest before any table is read', async () => {
    let reads = 0;
    const vehicles = {
      get: async () => {
        reads++;
        return undefined;
      },
    } as unknown as VehicleRepository;
    const limiter = new VinRateLimiter({ ratePerSecond: 1, burst: 2 });
    const clock = { now: () => new Date(5_000_000) };
    const event = {
      payload: Buffer.from(JSON.stringify({ status: 'downloading', progress: 1, sequence: 1 })).toString(
        'base64',
      ),
      vin: A,
      channel: 'progress',
      received_at: 0,
    };
    const outcomes = [];
    for (let i = 0; i < 5; i++) {
      outcomes.push(
        await ingestVehicleMessage(event, {
          vehicles,
          updates: {} as UpdateStatusService,
          limiter,
          clock,
        }),
      );
    }
    assert.deepEqual(
      outcomes.map((o) => (o.result === 'rejected' ? o.code : o.result)),
      ['unknown_vehicle', 'unknown_vehicle', 'rate_limited', 'rate_limited', 'rate_limited'],
    );
    assert.equal(reads, 2);
  });
});
