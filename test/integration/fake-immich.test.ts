/**
 * The fake Immich server answers like the real one (/work/shared/immich-api.md). Raw requests only:
 * what the client makes of the answers is tested in immich-client.test.ts.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { startFakeImmich, type FakeImmich, type FakeImmichOptions } from '../fakes/immich-server.js';
import { waitFor } from '../helpers/wait-for.js';

const KEY = 'test-key';
const V2_FIELDS = {
  deviceAssetId: 'photo.jpg-5',
  deviceId: 'immich-auto-uploader',
  fileCreatedAt: '2024-05-01T12:00:00.000Z',
  fileModifiedAt: '2024-05-01T12:00:00.000Z',
};
const V3_FIELDS = { fileCreatedAt: '2024-05-01T12:00:00.000Z', fileModifiedAt: '2024-05-01T14:00:00+02:00' };

let fake: FakeImmich | undefined;

afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

async function start(options?: FakeImmichOptions): Promise<FakeImmich> {
  fake = await startFakeImmich(options);
  return fake;
}

function sha1(bytes: Buffer): string {
  return createHash('sha1').update(bytes).digest('hex');
}

function form(fields: Record<string, string>, file?: { name: string; bytes: Buffer }): FormData {
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) data.append(name, value);
  if (file) data.append('assetData', new Blob([file.bytes], { type: 'image/jpeg' }), file.name);
  return data;
}

async function call(
  server: FakeImmich,
  method: string,
  path: string,
  options: { key?: string | null; body?: FormData | object; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { ...options.headers };
  const key = options.key === undefined ? KEY : options.key;
  if (key !== null) headers['x-api-key'] = key;
  let body: FormData | string | undefined;
  if (options.body instanceof FormData) body = options.body;
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] = 'application/json';
  }
  const response = await fetch(`${server.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}

describe('endpoints without authentication', () => {
  it('answers ping, well-known, media types', async () => {
    const server = await start();
    expect((await call(server, 'GET', '/api/server/ping', { key: null })).json).toEqual({ res: 'pong' });
    expect((await call(server, 'GET', '/.well-known/immich', { key: null })).json).toEqual({ api: { endpoint: '/api' } });
    const types = (await call(server, 'GET', '/api/server/media-types', { key: null })).json;
    expect(types.image).toContain('.heic');
    expect(types.video).toContain('.mov');
    expect(types.sidecar).toEqual(['.xmp']);
  });

  it('reports version 2 without prerelease and version 3 with prerelease null', async () => {
    const server = await start();
    expect((await call(server, 'GET', '/api/server/version', { key: null })).json).toEqual({ major: 2, minor: 7, patch: 5 });
    server.setMajor(3);
    expect((await call(server, 'GET', '/api/server/version', { key: null })).json).toEqual({
      major: 3,
      minor: 2,
      patch: 2,
      prerelease: null,
    });
  });
});

describe('authentication', () => {
  it('v2: no key and wrong key are 401 with the Nest error shape and a correlation id', async () => {
    const server = await start({ major: 2 });
    const none = await call(server, 'GET', '/api/api-keys/me', { key: null });
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ message: 'Authentication required', error: 'Unauthorized', statusCode: 401 });
    expect(none.json.correlationId).toEqual(expect.any(String));
    const wrong = await call(server, 'POST', '/api/assets/bulk-upload-check', { key: 'nope', body: { assets: [] } });
    expect(wrong.status).toBe(401);
    expect(wrong.json).toMatchObject({ message: 'Invalid API key', error: 'Unauthorized', statusCode: 401 });
  });

  it('v3: the correlation id travels in the X-Correlation-ID header', async () => {
    const server = await start({ major: 3 });
    const wrong = await call(server, 'GET', '/api/users/me', { key: 'nope' });
    expect(wrong.status).toBe(401);
    expect(wrong.json).toEqual({ message: 'Invalid API key' });
    expect(wrong.headers.get('x-correlation-id')).toMatch(/\S+/);
  });

  it('a key without user.read gets 403 naming the permission; api-keys/me needs none', async () => {
    const server = await start({ keys: { 'upload-only': { name: 'uploader', permissions: ['asset.upload'] } } });
    const me = await call(server, 'GET', '/api/users/me', { key: 'upload-only' });
    expect(me.status).toBe(403);
    expect(me.json.message).toBe('Missing required permission: user.read');
    const key = await call(server, 'GET', '/api/api-keys/me', { key: 'upload-only' });
    expect(key.status).toBe(200);
    expect(key.json).toMatchObject({ name: 'uploader', permissions: ['asset.upload'] });
    expect(key.json.id).toEqual(expect.any(String));
  });

  it('a key without asset.upload cannot check or upload', async () => {
    const server = await start({ keys: { reader: { name: 'reader', permissions: ['user.read'] } } });
    expect((await call(server, 'GET', '/api/users/me', { key: 'reader' })).status).toBe(200);
    const check = await call(server, 'POST', '/api/assets/bulk-upload-check', { key: 'reader', body: { assets: [] } });
    expect(check.status).toBe(403);
    expect(check.json.message).toBe('Missing required permission: asset.upload');
  });

  it("'all' grants everything", async () => {
    const server = await start();
    const me = await call(server, 'GET', '/api/users/me');
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ email: expect.any(String) as unknown, isAdmin: true, status: 'active' });
  });
});

describe('POST /api/assets', () => {
  it('v2: missing fields are 400 with class-validator messages', async () => {
    const server = await start({ major: 2 });
    const response = await call(server, 'POST', '/api/assets', {
      body: form({ fileCreatedAt: V2_FIELDS.fileCreatedAt }, { name: 'a.jpg', bytes: Buffer.from('x') }),
    });
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ error: 'Bad Request', statusCode: 400 });
    expect(response.json.message).toEqual(
      expect.arrayContaining(['deviceAssetId must be a string', 'deviceId must be a string', 'fileModifiedAt must be a Date instance']),
    );
    expect(server.assets).toHaveLength(0);
  });

  it('v2: a date without offset is accepted', async () => {
    const server = await start({ major: 2 });
    const fields = { ...V2_FIELDS, fileCreatedAt: '2024-05-03T12:00:00.000' };
    const response = await call(server, 'POST', '/api/assets', { body: form(fields, { name: 'a.jpg', bytes: Buffer.from('x') }) });
    expect(response.status).toBe(201);
  });

  it('v3: a date without offset is 400 Validation failed with the path', async () => {
    const server = await start({ major: 3 });
    const fields = { ...V3_FIELDS, fileCreatedAt: '2024-05-03T12:00:00.000' };
    const response = await call(server, 'POST', '/api/assets', { body: form(fields, { name: 'a.jpg', bytes: Buffer.from('x') }) });
    expect(response.status).toBe(400);
    expect(response.json).toEqual({
      message: 'Validation failed',
      errors: [
        {
          origin: 'string',
          code: 'invalid_format',
          format: 'datetime',
          path: ['fileCreatedAt'],
          message: 'Invalid input: expected ISO 8601 datetime string, received string',
        },
      ],
    });
    expect(response.headers.get('x-correlation-id')).toMatch(/\S+/);
  });

  it('v3: deviceAssetId and deviceId are ignored, with or without them', async () => {
    const server = await start({ major: 3 });
    const withDevice = await call(server, 'POST', '/api/assets', {
      body: form({ ...V2_FIELDS }, { name: 'a.jpg', bytes: Buffer.from('one') }),
    });
    expect(withDevice.status).toBe(201);
    const without = await call(server, 'POST', '/api/assets', { body: form(V3_FIELDS, { name: 'b.jpg', bytes: Buffer.from('two') }) });
    expect(without.status).toBe(201);
    expect(server.assets).toHaveLength(2);
  });

  it('refuses an unsupported extension, but not a text file named .jpg', async () => {
    const server = await start({ major: 3 });
    const text = await call(server, 'POST', '/api/assets', {
      body: form(V3_FIELDS, { name: 'not-an-image.txt', bytes: Buffer.from('hello') }),
    });
    expect(text.status).toBe(400);
    expect(text.json).toEqual({ message: 'Unsupported file type not-an-image.txt' });
    const disguised = await call(server, 'POST', '/api/assets', {
      body: form(V3_FIELDS, { name: 'hello.JPG', bytes: Buffer.from('hello') }),
    });
    expect(disguised.status).toBe(201);
  });

  it('answers 201 created, then 200 duplicate for the same bytes; records what it received', async () => {
    const server = await start({ major: 2 });
    const bytes = Buffer.from('some image bytes');
    const first = await call(server, 'POST', '/api/assets', { body: form(V2_FIELDS, { name: 'Été – 海.jpg', bytes }) });
    expect(first.status).toBe(201);
    expect(first.json).toEqual({ id: expect.any(String) as unknown, status: 'created' });
    const second = await call(server, 'POST', '/api/assets', { body: form(V2_FIELDS, { name: 'other.jpg', bytes }) });
    expect(second.status).toBe(200);
    expect(second.json).toEqual({ status: 'duplicate', id: first.json.id });

    expect(server.uploadCount).toBe(1);
    expect(server.assets).toHaveLength(1);
    const asset = server.assetByChecksum(sha1(bytes));
    expect(asset).toMatchObject({ id: first.json.id, filename: 'Été – 海.jpg', size: bytes.length, fields: V2_FIELDS });
    expect(asset?.bytes?.equals(bytes)).toBe(true);
    expect(server.requests.filter((r) => r.path === '/api/assets').map((r) => r.status)).toEqual([201, 200]);
  });

  it('keeps a sidecarData part with the asset; refuses a sidecar that is not an .xmp', async () => {
    const server = await start({ major: 3 });
    const xmp = Buffer.from('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>');
    const withSidecar = form(V3_FIELDS, { name: 'a.jpg', bytes: Buffer.from('pixels') });
    withSidecar.append('sidecarData', new Blob([xmp]), 'a.jpg.xmp');
    expect((await call(server, 'POST', '/api/assets', { body: withSidecar })).status).toBe(201);
    expect(server.assets[0]?.sidecar).toEqual({ filename: 'a.jpg.xmp', bytes: xmp });

    const wrong = form(V3_FIELDS, { name: 'b.jpg', bytes: Buffer.from('other pixels') });
    wrong.append('sidecarData', new Blob([xmp]), 'b.txt');
    const refused = await call(server, 'POST', '/api/assets', { body: wrong });
    expect(refused.status).toBe(400);
    expect(refused.json).toEqual({ message: 'Unsupported file type b.txt' });
    expect(server.assets).toHaveLength(1);
  });

  it('accepts an empty file', async () => {
    const server = await start({ major: 3 });
    const response = await call(server, 'POST', '/api/assets', { body: form(V3_FIELDS, { name: 'empty.jpg', bytes: Buffer.alloc(0) }) });
    expect(response.status).toBe(201);
    expect(server.assets[0]?.size).toBe(0);
  });

  it('storeBytes false still counts and hashes', async () => {
    const server = await start({ storeBytes: false });
    const bytes = Buffer.from('benchmark bytes');
    expect((await call(server, 'POST', '/api/assets', { body: form(V2_FIELDS, { name: 'a.jpg', bytes }) })).status).toBe(201);
    expect(server.assets[0]).toMatchObject({ checksum: sha1(bytes), size: bytes.length });
    expect(server.assets[0]?.bytes).toBeUndefined();
    expect(server.bytesReceived).toBe(bytes.length);
  });

  it('with the checksum header of a known file, answers 200 duplicate without reading the body', async () => {
    const server = await start();
    const seeded = server.seedAsset({ checksum: sha1(Buffer.from('known')), filename: 'known.jpg' });
    // Headers and a first piece of a body that is never finished: only an early answer can come back.
    const answer = await new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
      const req = http.request(`${server.apiUrl}/assets`, {
        method: 'POST',
        headers: {
          'x-api-key': KEY,
          'x-immich-checksum': Buffer.from(seeded.checksum, 'hex').toString('base64'),
          'content-type': 'multipart/form-data; boundary=xyz',
          'content-length': 10_000_000,
        },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection });
          req.destroy();
        });
      });
      req.write('--xyz\r\n');
    });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ status: 'duplicate', id: seeded.id });
    expect(answer.connection).toBe('close');
    expect(server.uploadCount).toBe(0);
  });

  it('an unknown checksum header changes nothing: the body decides', async () => {
    const server = await start();
    const bytes = Buffer.from('new bytes');
    const response = await call(server, 'POST', '/api/assets', {
      body: form(V2_FIELDS, { name: 'a.jpg', bytes }),
      headers: { 'x-immich-checksum': sha1(bytes) },
    });
    expect(response.status).toBe(201);
    expect(server.assets[0]).toMatchObject({ checksum: sha1(bytes), headerChecksum: sha1(bytes) });
  });
});

describe('POST /api/assets/bulk-upload-check', () => {
  it('accepts unknown checksums and rejects known ones as duplicates, hex or base64', async () => {
    const server = await start();
    const bytes = Buffer.from('photo');
    const hex = sha1(bytes);
    const base64 = Buffer.from(hex, 'hex').toString('base64');
    const assets = [
      { id: 'a.jpg', checksum: hex },
      { id: 'b.jpg', checksum: base64 },
    ];
    const before = await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { assets } });
    expect(before.json).toEqual({
      results: [
        { id: 'a.jpg', action: 'accept' },
        { id: 'b.jpg', action: 'accept' },
      ],
    });
    const created = await call(server, 'POST', '/api/assets', { body: form(V2_FIELDS, { name: 'a.jpg', bytes }) });
    const after = await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { assets } });
    expect(after.json).toEqual({
      results: [
        { id: 'a.jpg', action: 'reject', reason: 'duplicate', assetId: created.json.id, isTrashed: false },
        { id: 'b.jpg', action: 'reject', reason: 'duplicate', assetId: created.json.id, isTrashed: false },
      ],
    });
  });

  it('refuses a body without an assets array', async () => {
    const server = await start();
    expect((await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { items: [] } })).status).toBe(400);
  });
});

describe('faults', () => {
  it('failNext answers the given status for matching paths only, with Retry-After', async () => {
    const server = await start();
    server.failNext(2, 503, { path: '/api/assets', retryAfterSeconds: 7 });
    expect((await call(server, 'GET', '/api/server/ping', { key: null })).status).toBe(200);
    const first = await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { assets: [] } });
    expect(first.status).toBe(503);
    expect(first.headers.get('retry-after')).toBe('7');
    expect((await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { assets: [] } })).status).toBe(503);
    expect((await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { assets: [] } })).status).toBe(200);
  });

  it('failNext with a message; 413 looks like a proxy page', async () => {
    const server = await start();
    server.failNext(1, 500, { message: 'database is down' });
    expect((await call(server, 'GET', '/api/server/version', { key: null })).json.message).toBe('database is down');
    server.failNext(1, 413);
    const response = await fetch(`${server.apiUrl}/assets`, { method: 'POST', body: 'x' });
    expect(response.status).toBe(413);
    expect(await response.text()).toContain('413 Request Entity Too Large');
  });

  it('delayNext holds the answer back', async () => {
    const server = await start();
    server.delayNext(1, 300, { path: '/api/server' });
    const pending = call(server, 'GET', '/api/server/ping', { key: null });
    await waitFor(() => server.requests.length === 1, { message: 'the delayed request to arrive' });
    expect(server.requests[0]?.status).toBe(0);
    expect((await pending).status).toBe(200);
    expect(server.requests[0]?.status).toBe(200);
  });

  it('setFailureRate is deterministic for a seed and spares ping', async () => {
    const pattern = async (): Promise<number[]> => {
      const server = await startFakeImmich();
      try {
        server.setFailureRate(0.5, 503, 42);
        const statuses: number[] = [];
        for (let i = 0; i < 12; i++) {
          statuses.push((await call(server, 'POST', '/api/assets/bulk-upload-check', { body: { assets: [] } })).status);
          expect((await call(server, 'GET', '/api/server/ping', { key: null })).status).toBe(200);
        }
        return statuses;
      } finally {
        await server.close();
      }
    };
    const first = await pattern();
    expect(first).toContain(503);
    expect(first).toContain(200);
    expect(await pattern()).toEqual(first);
  });

  it('dropNextUpload destroys the connection mid-body', async () => {
    const server = await start();
    server.dropNextUpload({ afterBytes: 1000 });
    const body = form(V2_FIELDS, { name: 'a.jpg', bytes: Buffer.alloc(5_000_000, 1) });
    await expect(call(server, 'POST', '/api/assets', { body })).rejects.toThrow();
    expect(server.assets).toHaveLength(0);
    // Only the next upload is dropped.
    expect((await call(server, 'POST', '/api/assets', { body: form(V2_FIELDS, { name: 'a.jpg', bytes: Buffer.from('x') }) })).status).toBe(201);
  });

  it('stall accepts requests but never answers', async () => {
    const server = await start();
    server.stall();
    const controller = new AbortController();
    const pending = fetch(`${server.apiUrl}/server/ping`, { signal: controller.signal });
    await waitFor(() => server.requests.length === 1, { message: 'the stalled request to arrive' });
    expect(server.requests[0]?.status).toBe(0);
    controller.abort();
    await expect(pending).rejects.toThrow();
    server.unstall();
    expect((await call(server, 'GET', '/api/server/ping', { key: null })).status).toBe(200);
  });

  it('down refuses connections; up listens again on the same port', async () => {
    const server = await start();
    await server.down();
    await expect(fetch(`${server.apiUrl}/server/ping`)).rejects.toMatchObject({ cause: { code: 'ECONNREFUSED' } });
    await server.up();
    expect((await call(server, 'GET', '/api/server/ping', { key: null })).status).toBe(200);
  });

  it('down while a request is stalled destroys its connection', async () => {
    const server = await start();
    server.stall();
    const pending = fetch(`${server.apiUrl}/server/ping`);
    await waitFor(() => server.requests.length === 1, { message: 'the stalled request to arrive' });
    await server.down();
    await expect(pending).rejects.toThrow();
  });
});

describe('serve.ts', () => {
  it('runs as a process, prints its URL, and prints statistics on SIGTERM', async () => {
    const script = fileURLToPath(new URL('../fakes/serve.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script, '--major', '3', '--key', 'serve-secret'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const first = await lines.next();
      const { url } = JSON.parse(String(first.value)) as { url: string };
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const version = (await (await fetch(`${url}/api/server/version`)).json()) as { major: number };
      expect(version.major).toBe(3);
      const data = form(V3_FIELDS, { name: 'a.jpg', bytes: Buffer.from('12345') });
      const upload = await fetch(`${url}/api/assets`, { method: 'POST', headers: { 'x-api-key': 'serve-secret' }, body: data });
      expect(upload.status).toBe(201);
      child.kill('SIGTERM');
      const stats = JSON.parse(String((await lines.next()).value)) as Record<string, number>;
      expect(stats).toMatchObject({ assets: 1, bytesReceived: 5 });
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
