/** Issue 18, findings 7 and 13: free text without control characters, numbers the store can hold. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { statusReportSchema } from '../../protocol/schemas.js';
import {
  escapeUnsafe,
  isStorableNumber,
  plainText,
  storableNumber,
  toPlainText,
} from '../../protocol/text.js';
import { mqttReportSchema } from '../../protocol/topics.js';

const CONTROLS = [
  '\x1b[2J',
  '\x07',
  '\x00',
  '\n',
  '\t',
  '\x7f',
  '\u0085',
  '\u009b31m',
  '\u202e',
  '\u2066',
  '\ud800',
];

describe('plain text', { timeout: 10_000 }, () => {
  it('refuses C0/C1 controls (ESC first), DEL, bidi overrides and lone surrogates, with a clear message', () => {
    const schema = plainText(100);
    for (const c of CONTROLS) {
      const r = schema.safeParse(`ok ${c} ok`);
      assert.equal(r.success, false, JSON.stringify(c));
      assert.match(r.error!.issues[0]!.message, /control characters/);
    }
    for (const fine of ['', 'flash write failed at 0x1000: ünïcödé ✓ 日本', 'a'.repeat(100), '😀 pair']) {
      assert.equal(schema.safeParse(fine).success, true, fine);
    }
    assert.equal(schema.safeParse('a'.repeat(101)).success, false);
  });

  it('toPlainText makes any text acceptable; escapeUnsafe shows what was there', () => {
    for (const c of CONTROLS) assert.equal(plainText(100).safeParse(toPlainText(`x${c}y`)).success, true);
    assert.equal(escapeUnsafe('a\x1b[2Jb\u009b\u202e\ud800'), 'a\\x1b[2Jb\\x9b\\u202e\\ud800');
    assert.equal(escapeUnsafe('nothing to see'), 'nothing to see');
  });
});

describe('storable numbers', { timeout: 10_000 }, () => {
  it('accepts what DynamoDB holds and refuses underflow, overflow and non-finite numbers', () => {
    for (const n of [0, -0, 1e-130, -1e-130, 0.1 + 0.2, 100, 9.99e125, Number.MAX_SAFE_INTEGER])
      assert.equal(isStorableNumber(n), true, String(n));
    for (const n of [5e-324, 1e-131, -1e-131, 1e126, 1e308, Number.POSITIVE_INFINITY, Number.NaN])
      assert.equal(isStorableNumber(n), false, String(n));
    assert.match(storableNumber().safeParse(5e-324).error!.issues[0]!.message, /magnitude between 1e-130/);
  });

  it('the status report over HTTPS and MQTT refuses progress 5e-324 and 1e-131 and escapes in reason', () => {
    for (const schema of [statusReportSchema, mqttReportSchema]) {
      for (const progress of [5e-324, 1e-131]) {
        const r = schema.safeParse({ status: 'downloading', progress });
        assert.equal(r.success, false);
        assert.deepEqual(r.error!.issues[0]!.path, ['progress']);
      }
      assert.equal(schema.safeParse({ status: 'downloading', progress: 12.5 }).success, true);
      assert.equal(schema.safeParse({ status: 'failed', reason: 'x\x1b[2J' }).success, false);
      assert.equal(schema.safeParse({ status: 'failed', campaign_id: 'c\x07' }).success, false);
      assert.equal(schema.safeParse({ status: 'completed', assignment_counter: 7 }).success, true);
      assert.equal(schema.safeParse({ status: 'completed', assignment_counter: 0 }).success, false);
    }
    assert.equal(mqttReportSchema.safeParse({ status: 'completed', timestamp: 1e-200 }).success, false);
    assert.equal(mqttReportSchema.safeParse({ status: 'completed', timestamp: 'now\x1b' }).success, false);
  });
});
