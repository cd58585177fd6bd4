/** The head-unit API's Unix socket: private from the moment it is reachable at its path, and replaced when stale. */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { HeadUnit } from '../../vehicle/head-unit.js';
import { startHeadUnitServer } from '../../vehicle/head-unit-server.js';

const HOOK_TIMEOUT = 10_000;

/** Only what GET /v1/update reads; the decisions are tested against a real agent in driver-consent.test.ts. */
const source = {
  headUnit: { view: async () => ({ pending: null }) } as unknown as HeadUnit,
  onEvent: () => () => {},
};

function get(socketPath: string, path: string): Promise<{ status: number; body: unknown }> {
  return new Promise((ok, fail) => {
    request({ socketPath, path, headers: { host: 'localhost' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    })
      .on('error', fail)
      .end();
  });
}

describe('head-unit socket', { timeout: 30_000 }, () => {
  const dirs: string[] = [];
  after(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))), {
    timeout: HOOK_TIMEOUT,
  });

  it('appears at its path already 0600, leaves no staging folder behind, and answers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hu-'));
    dirs.push(dir);
    const path = join(dir, 'head-unit.sock');
    const server = await startHeadUnitServer(source, { socket: path });
    try {
      const st = await stat(path);
      assert.equal(st.isSocket(), true);
      assert.equal(st.mode & 0o777, 0o600);
      assert.deepEqual(await readdir(dir), ['head-unit.sock'], 'only the socket: the staging folder is gone');
      assert.deepEqual(await get(path, '/v1/update'), { status: 200, body: { pending: null } });
    } finally {
      await server.close();
    }
    assert.deepEqual(await readdir(dir), [], 'close removes the socket');
  });

  it('takes a group mode when asked and replaces a stale file at its path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hu-'));
    dirs.push(dir);
    const path = join(dir, 'head-unit.sock');
    await writeFile(path, 'left over from a crash');
    const server = await startHeadUnitServer(source, { socket: path, mode: 0o660 });
    try {
      const st = await stat(path);
      assert.equal(st.isSocket(), true);
      assert.equal(st.mode & 0o777, 0o660);
      assert.equal((await get(path, '/v1/nothing')).status, 404);
    } finally {
      await server.close();
    }
  });
});
