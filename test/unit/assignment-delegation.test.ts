/**
 * Assignments signed by a per-instance online key that the backend key certifies (protocol/delegation.ts): the
 * chain a vehicle checks, every way it can be broken, and the backend Signs it costs.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { AssignmentIssuer } from '../../lambdas/core/assignment-issuer.js';
import type { UpdateRecord, VehicleRecord } from '../../lambdas/core/ports.js';
import { DelegatedTokenSigner } from '../../lambdas/core/token.js';
import {
  type Assignment,
  checkAssignment,
  manifestDigest,
  type SignedAssignment,
  signAssignment,
  signAssignmentDelegated,
} from '../../protocol/assignment.js';
import {
  certifyKey,
  DelegatedSigner,
  type DelegationStatement,
  delegatedKey,
  MAX_DELEGATION_SECONDS,
} from '../../protocol/delegation.js';
import { KeyFileSigner, keyIdOf, type Signer, trustedKeysFromPems } from '../../protocol/signatures.js';
import { SAMPLE_MANIFEST } from '../support/fleet.js';

const VIN = '1HGCM82633A004352';
const OTHER_VIN = '5YJSA1E26HF000337';
const manifest = SAMPLE_MANIFEST;
const T0 = Date.parse('2026-11-27T00:00:00.000Z');
const HOUR = 3600_000;

/** A backend key that counts its Signs (the KMS key in production). */
class CountingSigner implements Signer {
  signs = 0;
  private readonly inner: KeyFileSigner;
  constructor() {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    this.inner = new KeyFileSigner(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  }
  publicKeyPem() {
    return this.inner.publicKeyPem();
  }
  sign(data: Buffer) {
    this.signs++;
    return this.inner.sign(data);
  }
}

function assignment(change: Partial<Assignment> = {}, issuedAt = T0 + HOUR / 2): Assignment {
  return {
    schema: 'ota.assignment/v1',
    vin: VIN,
    update_id: 'campaign#c1',
    campaign_id: 'c1',
    release_id: manifest.release_id,
    version: manifest.version,
    ecu: manifest.ecu,
    manifest_sha256: manifestDigest(manifest),
    counter: 7,
    issued_at: new Date(issuedAt).toISOString(),
    expires_at: new Date(issuedAt + 24 * HOUR).toISOString(),
    ...change,
  };
}

/** An online-key signer for scope, certified by backend at T0, for assignments of up to 24 h. */
function online(backend: Signer, scope = 'assignment', at = () => new Date(T0)) {
  return new DelegatedSigner(backend, { scope, maxDocumentSeconds: 86400, now: at });
}

async function setup() {
  const backend = new CountingSigner();
  const keys = trustedKeysFromPems([await backend.publicKeyPem()]);
  return { backend, keys, signer: online(backend) };
}

const check = (signed: SignedAssignment, keys: ReturnType<typeof trustedKeysFromPems>, over = {}) => {
  const r = checkAssignment(signed, {
    keys,
    vin: VIN,
    now: new Date(T0 + HOUR),
    lastCounter: 6,
    manifest,
    ...over,
  });
  return r.ok ? 'ok' : r.reason;
};

describe('delegated assignments', { timeout: 60_000 }, () => {
  it('chain back to the backend key: accepted by the same check as a directly signed one', async () => {
    const { backend, keys, signer } = await setup();
    const signed = await signAssignmentDelegated(assignment(), signer);
    assert.notEqual(signed.key_id, keyIdOf(await backend.publicKeyPem()), 'signed by the online key');
    assert.equal(signed.delegation?.statement.scope, 'assignment');
    assert.equal(signed.delegation?.statement.issuer_key_id, keyIdOf(await backend.publicKeyPem()));
    assert.equal(check(signed, keys), 'ok');
    // Directly signed assignments (older backends, ASSIGNMENT_SIGNING=direct) still pass.
    assert.equal(check(await signAssignment(assignment(), backend), keys), 'ok');
  });

  it('refuses an expired delegation, and an assignment outside its delegation window', async () => {
    const { keys, signer } = await setup();
    const signed = await signAssignmentDelegated(assignment(), signer);
    const notAfter = Date.parse(signed.delegation!.statement.not_after);
    // The assignment cannot outlive its delegation: past the delegation's end it has expired as well.
    assert.ok(Date.parse(signed.assignment.expires_at) <= notAfter);
    assert.equal(check(signed, keys, { now: new Date(notAfter) }), 'expired');
    // The online key signing an assignment that claims to outlive the delegation (a stolen key used after its
    // delegation ran out, with a long expiry) is refused whatever the vehicle's clock says.
    const online = await signer.onlineKey();
    const outliving = await signAssignmentDelegated(
      assignment({ expires_at: new Date(notAfter + 1000).toISOString() }),
      signer,
    );
    assert.equal(outliving.key_id, online.keyId);
    assert.equal(check(outliving, keys), 'bad_signature');
    const later = await signAssignmentDelegated(assignment({}, notAfter + 1000), signer);
    assert.equal(check(later, keys, { now: new Date(notAfter + 2000) }), 'bad_signature');
    const before = await signAssignmentDelegated(assignment({}, T0 - 3 * HOUR), signer);
    assert.equal(check(before, keys, { now: new Date(T0) }), 'bad_signature', 'issued before its delegation');
  });

  it('refuses a forged delegation: signed by another key, whether it names that key or the trusted one', async () => {
    const { backend, keys } = await setup();
    const rogue = new CountingSigner();
    const byRogue = await signAssignmentDelegated(assignment(), online(rogue));
    assert.equal(check(byRogue, keys), 'bad_signature');
    // The same rogue delegation relabelled with the trusted issuer's key id: the signature does not verify.
    const relabelled: SignedAssignment = {
      ...byRogue,
      delegation: {
        ...byRogue.delegation!,
        statement: { ...byRogue.delegation!.statement, issuer_key_id: keys[0]!.keyId },
      },
    };
    assert.equal(check(relabelled, keys), 'bad_signature');
    // A genuine delegation of a trusted instance, carried by an assignment that another key signed and that
    // claims the delegated key's id.
    const trusted = await online(backend).onlineKey();
    const swapped: SignedAssignment = { ...byRogue, key_id: trusted.keyId, delegation: trusted.delegation };
    assert.equal(check(swapped, keys), 'bad_signature');
  });

  it('refuses a delegation of another scope, and a token delegation passed off as one', async () => {
    const { backend, keys } = await setup();
    const forTokens = await signAssignmentDelegated(assignment(), online(backend, 'token'));
    assert.equal(check(forTokens, keys), 'bad_signature');
    // The same key and window relabelled "assignment": the backend signed the other scope.
    const relabelled: SignedAssignment = {
      ...forTokens,
      delegation: {
        ...forTokens.delegation!,
        statement: { ...forTokens.delegation!.statement, scope: 'assignment' },
      },
    };
    assert.equal(check(relabelled, keys), 'bad_signature');
    // A real v2 token delegation (signed by this very backend key) over the same kind of key: its signature is over
    // the token context, so it cannot certify an assignment key.
    const tokens = new DelegatedTokenSigner(backend, { now: () => new Date(T0) }, { maxTokenSeconds: 900 });
    const { token } = await tokens.issue({
      vin: VIN,
      deviceKeyId: 'a'.repeat(16),
      nowSeconds: T0 / 1000,
      ttlSeconds: 900,
    });
    const [, , , part, sig] = token.split('.') as [string, string, string, string, string];
    const d = JSON.parse(Buffer.from(part, 'base64url').toString()) as {
      kid: string;
      pub: string;
      iss: string;
    };
    const statement: DelegationStatement = {
      schema: 'ota.key-delegation/v1',
      scope: 'assignment',
      key_id: d.kid,
      public_key: d.pub,
      issuer_key_id: d.iss,
      not_before: new Date(T0).toISOString(),
      not_after: new Date(T0 + 24 * HOUR).toISOString(),
    };
    const tokenSig = Buffer.from(sig, 'base64url').toString('base64');
    assert.equal(delegatedKey({ statement, signature: tokenSig }, keys, 'assignment'), undefined);
    // ...while the same statement signed over the delegation context is accepted: the refusal is the context's.
    assert.ok(delegatedKey(await certifyKey(statement, backend), keys, 'assignment'));
  });

  it('refuses an assignment for another VIN, and a replayed one (counter not above the last accepted)', async () => {
    const { keys, signer } = await setup();
    const other = await signAssignmentDelegated(assignment({ vin: OTHER_VIN }), signer);
    assert.equal(check(other, keys), 'wrong_vin');
    const signed = await signAssignmentDelegated(assignment(), signer);
    assert.equal(check(signed, keys, { lastCounter: 7 }), 'stale_counter');
    assert.equal(check(signed, keys, { lastCounter: 8 }), 'stale_counter');
  });

  it('refuses a tampered online-key signature, a changed field, and a changed delegation', async () => {
    const { keys, signer } = await setup();
    const signed = await signAssignmentDelegated(assignment(), signer);
    const sig = Buffer.from(signed.signature, 'base64');
    sig[sig.length - 3]! ^= 0x01;
    assert.equal(check({ ...signed, signature: sig.toString('base64') }, keys), 'bad_signature');
    assert.equal(
      check({ ...signed, assignment: { ...signed.assignment, counter: 70 } }, keys),
      'bad_signature',
    );
    const stretched = {
      ...signed.delegation!,
      statement: { ...signed.delegation!.statement, not_after: new Date(T0 + 72 * HOUR).toISOString() },
    };
    assert.equal(check({ ...signed, delegation: stretched }, keys), 'bad_signature');
    // A delegation longer than any verifier accepts, even when the backend key signed it.
    const { backend } = await setup();
    const s = signed.delegation!.statement;
    const long = await certifyKey(
      {
        ...s,
        issuer_key_id: keyIdOf(await backend.publicKeyPem()),
        not_after: new Date(Date.parse(s.not_before) + (MAX_DELEGATION_SECONDS + 1) * 1000).toISOString(),
      },
      backend,
    );
    assert.equal(
      delegatedKey(long, trustedKeysFromPems([await backend.publicKeyPem()]), 'assignment'),
      undefined,
    );
    // A delegation whose public key is not the one its key id names.
    const mismatched = await certifyKey(
      { ...s, issuer_key_id: keyIdOf(await backend.publicKeyPem()), key_id: 'f'.repeat(16) },
      backend,
    );
    assert.equal(
      delegatedKey(mismatched, trustedKeysFromPems([await backend.publicKeyPem()]), 'assignment'),
      undefined,
    );
  });

  it('costs one backend Sign per instance per hour, shared by a burst, and keeps the key out of any output', async () => {
    const backend = new CountingSigner();
    const keys = trustedKeysFromPems([await backend.publicKeyPem()]);
    let now = T0;
    const signer = online(backend, 'assignment', () => new Date(now));
    const burst = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        signAssignmentDelegated(assignment({ counter: i + 1 }, now), signer),
      ),
    );
    assert.equal(backend.signs, 1, 'one certification for 500 concurrent assignments');
    assert.equal(new Set(burst.map((b) => b.key_id)).size, 1);
    for (let minute = 1; minute < 60; minute++) {
      now = T0 + minute * 60_000;
      assert.equal(
        check(await signAssignmentDelegated(assignment({}, now), signer), keys, { now: new Date(now) }),
        'ok',
      );
    }
    assert.equal(backend.signs, 1, 'still one an hour later');
    now = T0 + HOUR;
    const renewed = await signAssignmentDelegated(assignment({}, now), signer);
    assert.equal(backend.signs, 2, 'a new key after its hour');
    assert.notEqual(renewed.key_id, burst[0]!.key_id);
    assert.equal(check(renewed, keys, { now: new Date(now + 23 * HOUR) }), 'ok', 'covers the full 24 h');
    // Nothing of the private key in what an instance could log or serialise.
    const text = JSON.stringify(await signer.onlineKey());
    assert.deepEqual(Object.keys(JSON.parse(text)).sort(), ['delegation', 'keyId']);
    assert.doesNotMatch(text, /PRIVATE|"d"/);
  });

  it('retries a failed certification on the next assignment', async () => {
    const backend = new CountingSigner();
    let fail = true;
    const flaky: Signer = {
      publicKeyPem: () => backend.publicKeyPem(),
      sign: (data) => (fail ? Promise.reject(new Error('ThrottlingException')) : backend.sign(data)),
    };
    const signer = online(flaky);
    await assert.rejects(signAssignmentDelegated(assignment(), signer), /Throttling/);
    fail = false;
    const keys = trustedKeysFromPems([await backend.publicKeyPem()]);
    assert.equal(check(await signAssignmentDelegated(assignment(), signer), keys), 'ok');
  });

  it('AssignmentIssuer: 200 offers cost one backend Sign delegated, 200 direct', async () => {
    const vehicle = { vin: VIN } as VehicleRecord;
    const update = { updateId: 'campaign#c1', campaignId: 'c1' } as UpdateRecord;
    const clock = { now: () => new Date(T0) };
    let counter = 0;
    const vehicles = { nextAssignmentCounter: async () => ++counter };
    for (const [signing, expected] of [
      ['delegated', 1],
      ['direct', 200],
    ] as const) {
      const backend = new CountingSigner();
      const keys = trustedKeysFromPems([await backend.publicKeyPem()]);
      const issuer = new AssignmentIssuer({ vehicles, signer: backend, clock, signing });
      for (let i = 0; i < 200; i++) {
        const signed = await issuer.assign(vehicle, update, manifest);
        assert.equal(check(signed, keys, { now: new Date(T0 + HOUR), lastCounter: counter - 1 }), 'ok');
      }
      assert.equal(backend.signs, expected, signing);
    }
  });
});
