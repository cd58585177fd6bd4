/**
 * Issue 18 #6 and #11, attacked as another user or process on the same host would: the emulators must refuse
 * anyone who does not hold the data folder's own random credentials (no fixed S3RVER pair, DynamoDB signatures
 * checked), and the data folder must be owner-only even when it existed before.
 */
import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { type LocalCloud, startLocalCloud } from '../../local/cloud.js';
import type { LocalCredentials } from '../../local/sigv4.js';
import { vehicleTopic } from '../../protocol/topics.js';
import { https } from '../support/https.js';

const VIN = '1HGCM82633A004352';
const WELL_KNOWN = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

let root: string;
let dataDir: string;
let cloud: LocalCloud;

const start = () =>
  startLocalCloud({
    dataDir,
    ports: { api: 0, s3: 0, dynamodb: 0, mqtt: 0, iotData: 0 },
    loadHandler: async () => async () => ({ statusCode: 200, body: '{}' }),
  });

const agent = () => new Agent({ ca: cloud.caCertPem });
const s3 = (credentials: LocalCredentials) =>
  new S3Client({
    endpoint: cloud.endpoints.s3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { ...credentials },
    maxAttempts: 1,
    requestHandler: { httpsAgent: agent() },
  });
const dynamo = (credentials: LocalCredentials) =>
  new DynamoDBClient({
    endpoint: cloud.endpoints.dynamodb,
    region: 'us-east-1',
    credentials: { ...credentials },
    maxAttempts: 1,
    requestHandler: { httpsAgent: agent() },
  });
const iotData = (credentials: LocalCredentials) =>
  new IoTDataPlaneClient({
    endpoint: cloud.endpoints.iotData,
    region: 'us-east-1',
    credentials: { ...credentials },
    maxAttempts: 1,
    requestHandler: { httpsAgent: agent() },
  });

/** Every path under dir whose mode lets group or others in. */
function openToOthers(dir: string): string[] {
  const found: string[] = [];
  const walk = (path: string) => {
    const st = statSync(path);
    if ((st.mode & 0o077) !== 0) found.push(`${path} ${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const e of readdirSync(path)) walk(join(path, e));
  };
  walk(dir);
  return found;
}

/** Bounds the file's set-up and tear-down, which no suite's timeout covers. */
const HOOK_TIMEOUT = { timeout: 60_000 };

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'ota-hardening-'));
  dataDir = join(root, 'data');
  // The attack's precondition: a data folder that already exists, world-readable, with readable files in it.
  mkdirSync(join(dataDir, 's3'), { recursive: true, mode: 0o755 });
  chmodSync(dataDir, 0o755);
  writeFileSync(join(dataDir, 's3', 'left-over.bin'), 'firmware', { mode: 0o644 });
  cloud = await start();
}, HOOK_TIMEOUT);

after(async () => {
  await cloud?.stop();
  rmSync(root, { recursive: true, force: true });
}, HOOK_TIMEOUT);

describe('local data folder (issue 18 #11)', { timeout: 60_000 }, () => {
  it('is forced to 0700 with 0600 files although it existed world-readable, and stays so after use', async () => {
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dataDir, 's3', 'left-over.bin')).mode & 0o777, 0o600);
    const client = s3(cloud.credentials);
    const db = dynamo(cloud.credentials);
    try {
      await client.send(new PutObjectCommand({ Bucket: cloud.bucket, Key: 'releases/x', Body: 'image' }));
      await db.send(
        new PutItemCommand({
          TableName: cloud.tables.vehicles,
          Item: { vin: { S: VIN }, model: { S: 'T' } },
        }),
      );
    } finally {
      client.destroy();
      db.destroy();
    }
    await cloud.stop();
    assert.deepEqual(openToOthers(dataDir), [], 'nothing in the data folder is open to other users');
    cloud = await start();
    assert.deepEqual(openToOthers(dataDir), []);
  });
});

describe('emulator credentials (issue 18 #6)', { timeout: 60_000 }, () => {
  it('are random per data folder, kept 0600, and survive a restart', async () => {
    const file = join(dataDir, 'emulator-credentials.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const stored = JSON.parse(readFileSync(file, 'utf8'));
    assert.equal(stored.accessKeyId, cloud.credentials.accessKeyId);
    assert.equal(stored.secretAccessKey, cloud.credentials.secretAccessKey);
    assert.notEqual(cloud.credentials.accessKeyId, 'S3RVER');
    assert.ok(cloud.credentials.secretAccessKey.length >= 40);
    assert.equal(process.env.AWS_ACCESS_KEY_ID, cloud.credentials.accessKeyId);
  });

  it('S3: the well-known S3RVER pair and a wrong secret are refused; the folder credentials work', async () => {
    const good = s3(cloud.credentials);
    try {
      await good.send(new PutObjectCommand({ Bucket: cloud.bucket, Key: 'releases/a', Body: 'genuine' }));
    } finally {
      good.destroy();
    }
    for (const [credentials, name] of [
      [WELL_KNOWN, 'InvalidAccessKeyId'],
      [{ ...cloud.credentials, secretAccessKey: 'guessed' }, 'SignatureDoesNotMatch'],
    ] as const) {
      const client = s3(credentials);
      try {
        await assert.rejects(
          client.send(new PutObjectCommand({ Bucket: cloud.bucket, Key: 'releases/a', Body: 'forged' })),
          (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
            assert.equal(err.name, name);
            assert.equal(err.$metadata?.httpStatusCode, 403);
            return true;
          },
        );
        await assert.rejects(client.send(new GetObjectCommand({ Bucket: cloud.bucket, Key: 'releases/a' })));
      } finally {
        client.destroy();
      }
    }
    const check = s3(cloud.credentials);
    try {
      const got = await check.send(new GetObjectCommand({ Bucket: cloud.bucket, Key: 'releases/a' }));
      assert.equal(await got.Body!.transformToString(), 'genuine', 'the forged writes changed nothing');
    } finally {
      check.destroy();
    }
  });

  it('DynamoDB: unsigned, well-known, wrongly signed and tampered requests are refused; nothing is written', async () => {
    const good = dynamo(cloud.credentials);
    const key = { vin: { S: VIN } };
    try {
      await good.send(
        new PutItemCommand({
          TableName: cloud.tables.vehicles,
          Item: { ...key, deviceKeyId: { S: 'genuine' } },
        }),
      );
      const forgedItem = {
        TableName: cloud.tables.vehicles,
        Item: { ...key, deviceKeyId: { S: 'attacker' } },
      };
      for (const [credentials, name] of [
        [WELL_KNOWN, 'UnrecognizedClientException'],
        [{ ...cloud.credentials, secretAccessKey: 'guessed' }, 'InvalidSignatureException'],
      ] as const) {
        const client = dynamo(credentials);
        try {
          await assert.rejects(
            client.send(new PutItemCommand(forgedItem)),
            (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
              assert.equal(err.name, name);
              assert.equal(err.$metadata?.httpStatusCode, 400);
              return true;
            },
          );
        } finally {
          client.destroy();
        }
      }
      // A correctly signed request whose body was swapped after signing.
      const tampering = dynamo(cloud.credentials);
      tampering.middlewareStack.add(
        (next) => async (args) => {
          // Same length, another VIN: only the signature can notice.
          const request = args.request as { body?: string };
          request.body = String(request.body).replace(VIN, '5YJSA1E26HF000337');
          return next(args);
        },
        { step: 'finalizeRequest', priority: 'low', name: 'tamperAfterSigning' },
      );
      try {
        await assert.rejects(
          tampering.send(new GetItemCommand({ TableName: cloud.tables.vehicles, Key: key })),
          { name: 'InvalidSignatureException' },
        );
      } finally {
        tampering.destroy();
      }
      const unsigned = await https(cloud.endpoints.dynamodb, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-amz-json-1.0',
          'x-amz-target': 'DynamoDB_20120810.PutItem',
        },
        body: JSON.stringify(forgedItem),
        ca: cloud.caCertPem,
      });
      assert.equal(unsigned.status, 400);
      assert.match(unsigned.json.__type, /UnrecognizedClientException/);
      const item = await good.send(new GetItemCommand({ TableName: cloud.tables.vehicles, Key: key }));
      assert.equal(item.Item?.deviceKeyId?.S, 'genuine');
    } finally {
      good.destroy();
    }
  });

  it('IoT Data shim: the well-known pair and a wrong secret cannot publish offers', async () => {
    for (const credentials of [WELL_KNOWN, { ...cloud.credentials, secretAccessKey: 'guessed' }]) {
      const client = iotData(credentials);
      try {
        await assert.rejects(
          client.send(
            new PublishCommand({
              topic: vehicleTopic(VIN, 'issue_details'),
              qos: 1,
              payload: Buffer.from('{}'),
            }),
          ),
          (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
            assert.equal(err.name, 'ForbiddenException');
            assert.equal(err.$metadata?.httpStatusCode, 403);
            return true;
          },
        );
      } finally {
        client.destroy();
      }
    }
    const good = iotData(cloud.credentials);
    try {
      await good.send(
        new PublishCommand({ topic: vehicleTopic(VIN, 'issue_details'), qos: 1, payload: Buffer.from('{}') }),
      );
    } finally {
      good.destroy();
    }
  });
});
