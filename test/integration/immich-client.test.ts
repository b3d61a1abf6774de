/**
 * The HTTP client against the fake Immich server: answers, every failure kind, streaming uploads
 * that fail fast, and an API key that never leaks into an error.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { inspect } from 'node:util';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { ByteSource, ImmichClient, InMemoryUploadFile, StreamedUploadFile, UploadRequest } from '../../src/immich/client.js';
import { ImmichError, isImmichError, isMissingPermission } from '../../src/immich/errors.js';
import { createImmichClient, parseRetryAfter, type ImmichClientOptions } from '../../src/immich/http-client.js';
import { FileSizeMismatchError } from '../../src/immich/multipart.js';
import { startFakeImmich, type FakeImmich, type FakeImmichOptions } from '../fakes/immich-server.js';
import { hasOpenssl } from '../helpers/openssl.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

/** Distinctive, so a leak anywhere is found by a plain substring search. */
const SECRET = 'sk-LEAKCHECK-7f3a9c1e5b2d4860a1f2e3d4c5b6a798';

const V2_FIELDS = {
  deviceAssetId: 'photo.jpg-1',
  deviceId: 'immich-auto-uploader',
  fileCreatedAt: '2024-05-01T12:00:00.000Z',
  fileModifiedAt: '2024-05-01T12:00:00.000Z',
};
const V3_FIELDS = { fileCreatedAt: '2024-05-01T12:00:00.000Z', fileModifiedAt: '2024-05-01T12:00:00.000+02:00' };

let fake: FakeImmich | undefined;
let client: ImmichClient | undefined;
let temp: { path: string; remove: () => Promise<void> };

beforeEach(async () => {
  temp = await makeTempDir();
});

afterEach(async () => {
  client?.close();
  client = undefined;
  await fake?.close();
  fake = undefined;
  await temp.remove();
});

async function setup(
  serverOptions: FakeImmichOptions = {},
  clientOptions: Partial<ImmichClientOptions> = {},
): Promise<{ server: FakeImmich; immich: ImmichClient }> {
  fake = await startFakeImmich({ keys: { [SECRET]: { name: 'test', permissions: ['all'] } }, ...serverOptions });
  client = createImmichClient({ apiUrl: fake.apiUrl, apiKey: SECRET, ...clientOptions });
  return { server: fake, immich: client };
}

function sha1(bytes: Buffer): string {
  return createHash('sha1').update(bytes).digest('hex');
}

/** A server of a test's own on 127.0.0.1 (a proxy, say), closed after `use`. */
async function withServer(handler: RequestListener, use: (url: string) => Promise<void>): Promise<void> {
  const server = createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await use(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

/** A client of `apiUrl` for one call, closed after it. */
async function useClient<T>(apiUrl: string, call: (immich: ImmichClient) => Promise<T>): Promise<T> {
  const immich = createImmichClient({ apiUrl, apiKey: SECRET });
  try {
    return await call(immich);
  } finally {
    immich.close();
  }
}

/** An upload of real bytes from a real file. */
async function fileUpload(
  bytes: Buffer,
  filename = 'photo.jpg',
  fields: Record<string, string> = V2_FIELDS,
): Promise<UploadRequest & { file: StreamedUploadFile }> {
  const path = join(temp.path, `${sha1(bytes)}.bin`);
  await writeFile(path, bytes);
  return {
    fields,
    checksum: sha1(bytes),
    file: { filename, contentType: 'image/jpeg', size: bytes.length, open: () => fileSource(path) },
  };
}

/** A file's bytes as the client reads them, and whether it closed them again. */
async function fileSource(path: string): Promise<ByteSource & { closed: boolean }> {
  const handle = await open(path, 'r');
  const source = {
    closed: false,
    read: async (buffer: Buffer, length: number) => (await handle.read(buffer, 0, length, null)).bytesRead,
    close: async () => {
      source.closed = true;
      await handle.close();
    },
  };
  return source;
}

/** An upload of bytes already in memory (a small file read once for its hash). */
function memoryUpload(
  bytes: Buffer,
  filename = 'photo.jpg',
  fields: Record<string, string> = V2_FIELDS,
): UploadRequest & { file: InMemoryUploadFile; checksum?: string } {
  return { fields, checksum: sha1(bytes), file: { filename, contentType: 'image/jpeg', bytes } };
}

/** A source that delivers `bytes` then fails with `error`, as a read error mid-file would. */
function failingSource(bytes: number, error: Error): Promise<ByteSource> {
  let sent = false;
  return Promise.resolve({
    read: (buffer: Buffer, length: number) => {
      if (sent) return Promise.reject(error);
      sent = true;
      const count = Math.min(bytes, length);
      buffer.fill(3, 0, count);
      return Promise.resolve(count);
    },
    close: () => Promise.resolve(),
  });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

async function immichRejection(promise: Promise<unknown>): Promise<ImmichError> {
  const error = await rejection(promise);
  if (!isImmichError(error)) throw new Error(`expected an ImmichError, got ${String(error)}`, { cause: error });
  return error;
}

function expectNoSecret(error: unknown): void {
  const views = [
    String(error),
    error instanceof Error ? error.message : '',
    error instanceof Error ? String(error.stack) : '',
    JSON.stringify(error),
    inspect(error, { depth: 10, showHidden: true }),
  ];
  for (const view of views) expect(view).not.toContain(SECRET);
}

describe('server information', () => {
  it('pings, reads the version of both majors and describes the key', async () => {
    const { server, immich } = await setup({ keys: { [SECRET]: { name: 'uploader', permissions: ['asset.upload'] } } });
    await immich.ping();
    expect(await immich.serverVersion()).toEqual({ major: 2, minor: 7, patch: 5 });
    server.setMajor(3);
    expect(await immich.serverVersion()).toEqual({ major: 3, minor: 2, patch: 2 });
    expect(await immich.apiKeyInfo()).toEqual({ id: expect.any(String) as unknown, name: 'uploader', permissions: ['asset.upload'] });
  });

  it('sends the key only where it is needed', async () => {
    const { immich } = await setup({ keys: {} });
    // With no valid key at all, the unauthenticated calls still work.
    await immich.ping();
    await immich.serverVersion();
    expect((await immichRejection(immich.apiKeyInfo())).kind).toBe('auth');
  });
});

describe('bulk check', () => {
  it('accepts unknown files and reports duplicates with their asset id', async () => {
    const { server, immich } = await setup();
    const known = server.seedAsset({ checksum: sha1(Buffer.from('known')) });
    const results = await immich.bulkUploadCheck([
      { id: 'new.jpg', checksum: sha1(Buffer.from('new')) },
      { id: 'known.jpg', checksum: known.checksum },
    ]);
    expect(results).toEqual([
      { id: 'new.jpg', action: 'accept' },
      { id: 'known.jpg', action: 'reject', reason: 'duplicate', assetId: known.id, isTrashed: false },
    ]);
  });
});

describe('upload', () => {
  for (const major of [2, 3] as const) {
    it(`v${major}: creates, then reports the duplicate; the server got exactly the bytes`, async () => {
      const { server, immich } = await setup({ major });
      const bytes = randomBytes(3 * 1024 * 1024 + 17);
      const request = await fileUpload(bytes, 'photo.jpg', major === 2 ? V2_FIELDS : V3_FIELDS);
      const created = await immich.uploadAsset(request);
      expect(created).toEqual({ id: expect.any(String) as unknown, status: 'created' });
      const asset = server.assetByChecksum(sha1(bytes));
      expect(asset).toMatchObject({ id: created.id, size: bytes.length, headerChecksum: sha1(bytes), filename: 'photo.jpg' });
      expect(sha1(asset?.bytes ?? Buffer.alloc(0))).toBe(sha1(bytes));
      expect(asset?.fields).toEqual(major === 2 ? V2_FIELDS : V3_FIELDS);

      expect(await immich.uploadAsset(request)).toEqual({ id: created.id, status: 'duplicate' });
      expect(await immich.bulkUploadCheck([{ id: 'x', checksum: sha1(bytes) }])).toEqual([
        { id: 'x', action: 'reject', reason: 'duplicate', assetId: created.id, isTrashed: false },
      ]);
      expect(server.uploadCount).toBe(1);
    });
  }

  it('a duplicate found from the bytes (not the header) is reported as duplicate', async () => {
    const { server, immich } = await setup();
    const bytes = Buffer.from('same bytes');
    const first = await immich.uploadAsset(await fileUpload(bytes));
    const second = await immich.uploadAsset({ ...(await fileUpload(bytes)), checksum: sha1(Buffer.from('a wrong hint')) });
    expect(second).toEqual({ id: first.id, status: 'duplicate' });
    expect(server.assets).toHaveLength(1);
  });

  it('an empty file uploads', async () => {
    const { server, immich } = await setup();
    expect((await immich.uploadAsset(await fileUpload(Buffer.alloc(0), 'empty.jpg'))).status).toBe('created');
    expect(server.assets[0]?.size).toBe(0);
  });

  it('a UTF-8 filename, quotes included, arrives unchanged', async () => {
    const { server, immich } = await setup({ major: 3 });
    for (const filename of ['Été 2024 – 海.jpg', 'the "best" one.jpg']) {
      await immich.uploadAsset(await fileUpload(randomBytes(100), filename, V3_FIELDS));
    }
    expect(server.assets.map((a) => a.filename)).toEqual(['Été 2024 – 海.jpg', 'the "best" one.jpg']);
  });

  it('an early duplicate answer to a large body neither hangs nor crashes', async () => {
    const { server, immich } = await setup();
    const bytes = randomBytes(30 * 1024 * 1024);
    const request = await fileUpload(bytes);
    const created = await immich.uploadAsset(request);
    const opened: { closed: boolean }[] = [];
    const watched: UploadRequest = {
      ...request,
      file: {
        ...request.file,
        open: async () => {
          const source = (await request.file.open()) as ByteSource & { closed: boolean };
          opened.push(source);
          return source;
        },
      },
    };
    for (let i = 0; i < 3; i++) {
      expect(await immich.uploadAsset(watched)).toEqual({ id: created.id, status: 'duplicate' });
    }
    // Every file that was opened is closed again, whether or not it was read to the end.
    await waitFor(() => opened.length > 0 && opened.every((stream) => stream.closed), { message: 'the files to be closed' });
    // The client still works afterwards, on the same agent.
    await immich.ping();
    expect(server.assets).toHaveLength(1);
  });
});

describe('upload from memory', () => {
  for (const major of [2, 3] as const) {
    it(`v${major}: creates, then reports the duplicate on a second send of the same buffers`, async () => {
      const { server, immich } = await setup({ major });
      const bytes = randomBytes(200 * 1024);
      const fields = major === 2 ? V2_FIELDS : V3_FIELDS;
      const request = memoryUpload(bytes, 'Été "x".jpg', fields);
      const created = await immich.uploadAsset(request);
      expect(created.status).toBe('created');
      const asset = server.assetByChecksum(sha1(bytes));
      expect(asset).toMatchObject({ id: created.id, size: bytes.length, headerChecksum: sha1(bytes), filename: 'Été "x".jpg' });
      expect(asset?.bytes?.equals(bytes)).toBe(true);
      expect(asset?.fields).toEqual(fields);
      expect(await immich.uploadAsset(request)).toEqual({ id: created.id, status: 'duplicate' });
      expect(server.uploadCount).toBe(1);
    });
  }

  it('an empty file uploads', async () => {
    const { server, immich } = await setup();
    expect((await immich.uploadAsset(memoryUpload(Buffer.alloc(0), 'empty.jpg'))).status).toBe('created');
    expect(server.assets[0]?.size).toBe(0);
  });

  it('an early duplicate answer neither hangs nor crashes, and the client goes on', async () => {
    const { server, immich } = await setup();
    const request = memoryUpload(randomBytes(1024 * 1024));
    const created = await immich.uploadAsset(request);
    for (let i = 0; i < 3; i++) {
      expect(await immich.uploadAsset(request)).toEqual({ id: created.id, status: 'duplicate' });
    }
    await immich.ping();
    expect(server.assets).toHaveLength(1);
  });

  it('a connection dropped mid-body is network; the same buffers succeed on the next attempt', async () => {
    const { server, immich } = await setup();
    const request = memoryUpload(randomBytes(1024 * 1024));
    server.dropNextUpload({ afterBytes: 256 * 1024 });
    const fresh = createImmichClient({ apiUrl: server.apiUrl, apiKey: SECRET });
    try {
      const error = await immichRejection(fresh.uploadAsset(request));
      expect(error.kind).toBe('network');
      expect(error.details.code).toMatch(/^(ECONNRESET|EPIPE)$/);
    } finally {
      fresh.close();
    }
    expect(server.assets).toHaveLength(0);
    expect((await immich.uploadAsset(request)).status).toBe('created');
    expect(server.assetByChecksum(request.checksum ?? '')?.bytes?.equals(request.file.bytes)).toBe(true);
  });

  it('an answer lost with the connection is found by the bulk check', async () => {
    const { server, immich } = await setup();
    const bytes = randomBytes(100_000);
    const seeded = server.seedAsset({ checksum: sha1(bytes) });
    server.dropNextUpload();
    expect(await immich.uploadAsset(memoryUpload(bytes))).toEqual({ id: seeded.id, status: 'duplicate' });
  });

  it('a reset on a reused socket before any answer is sent again on a fresh one', async () => {
    const { server, immich } = await setup();
    await immich.ping();
    server.dropNextUpload();
    const bytes = randomBytes(100_000);
    expect((await immich.uploadAsset(memoryUpload(bytes))).status).toBe('created');
    expect(server.requests.filter((r) => r.path === '/api/assets').map((r) => r.status)).toEqual([0, 201]);
    expect(server.assetByChecksum(sha1(bytes))?.bytes?.equals(bytes)).toBe(true);
  });

  it('a file streamed whole whose answer is lost is not sent again at once, and the error names the proxy', async () => {
    const { server, immich } = await setup();
    // A socket kept from the ping: a reset there would pass for an idle socket's, sent again.
    await immich.ping();
    server.loseNextAnswers(1, { path: '/api/assets', exact: true, done: false });
    const { checksum: _unknown, ...request } = await fileUpload(randomBytes(3 * 1024 * 1024));
    const error = await immichRejection(immich.uploadAsset(request));
    expect(error).toMatchObject({ kind: 'network', details: { dropped: true } });
    expect(error.message).toMatch(/was lost after the whole request was sent, before an answer \((ECONNRESET|EPIPE)\); a proxy between you and Immich may give up waiting for Immich's answer: raise its timeout/);
    expect(server.requests.filter((r) => r.path === '/api/assets')).toHaveLength(1);
    expect(server.assets).toHaveLength(0);
  });

  it('an upload whose answer is lost after Immich made the asset is found by the checksum known by then', async () => {
    const { server, immich } = await setup();
    server.loseNextAnswers(1, { path: '/api/assets', exact: true });
    const bytes = randomBytes(3 * 1024 * 1024);
    const request = await fileUpload(bytes);
    // A large file's upload starts before its hash is done: the checksum is asked for at the failure.
    const hash: { known?: string } = {};
    const pending = immich.uploadAsset({ ...request, checksum: () => hash.known });
    hash.known = sha1(bytes);
    expect(await pending).toEqual({ id: server.assetByChecksum(sha1(bytes))?.id, status: 'duplicate' });
    expect(server.requests.filter((r) => r.path === '/api/assets')).toHaveLength(1);
    expect(server.requests.filter((r) => r.path === '/api/assets/bulk-upload-check')).toHaveLength(1);
  });

  it('a server that takes the body but never answers is ETIMEDOUT', { timeout: 10_000 }, async () => {
    const { server, immich } = await setup({}, { inactivityTimeoutMs: 300 });
    server.stall();
    const error = await immichRejection(immich.uploadAsset(memoryUpload(randomBytes(1024 * 1024))));
    expect(error).toMatchObject({ kind: 'network', details: { code: 'ETIMEDOUT' } });
  });

  it('waits longer for the answer once an upload is sent, as a proxy that buffers it first answers late', { timeout: 10_000 }, async () => {
    const { server, immich } = await setup({}, { inactivityTimeoutMs: 300 });
    // nginx passes an upload on to Immich only once it has it whole: the answer comes that much later.
    server.delayNext(1, 450, { path: '/api/assets', exact: true });
    expect((await immich.uploadAsset(memoryUpload(randomBytes(2048)))).status).toBe('created');
    server.stall();
    const error = await immichRejection(immich.uploadAsset(memoryUpload(randomBytes(2048))));
    expect(error.message).toMatch(/: no answer from the Immich server at http:\/\/127\.0\.0\.1:\d+ 1 s after the whole request was sent \(ETIMEDOUT\)$/);
  });

  it('aborts with the signal reason while on the wire', { timeout: 5_000 }, async () => {
    const { server, immich } = await setup();
    server.stall();
    const reason = new Error('shutting down');
    const controller = new AbortController();
    const pending = rejection(immich.uploadAsset(memoryUpload(randomBytes(1024 * 1024)), controller.signal));
    await waitFor(() => server.requests.some((r) => r.path === '/api/assets'), { message: 'the upload to reach the server' });
    controller.abort(reason);
    expect(await pending).toBe(reason);
  });
});

describe('answers that are errors', () => {
  it('401 is auth', async () => {
    const { immich } = await setup({ keys: { 'another-key': { name: 'x', permissions: ['all'] } } });
    const error = await immichRejection(immich.bulkUploadCheck([]));
    expect(error).toMatchObject({ kind: 'auth', method: 'POST', endpoint: '/api/assets/bulk-upload-check', status: 401 });
    expect(error.message).toBe('POST /api/assets/bulk-upload-check answered 401: Invalid API key');
    expect(error.details.correlationId).toEqual(expect.any(String));
    expect(error.retryable).toBe(false);
  });

  it('403 is forbidden and names the permission', async () => {
    const { immich } = await setup({ keys: { [SECRET]: { name: 'reader', permissions: ['user.read'] } } });
    const error = await immichRejection(immich.uploadAsset(await fileUpload(Buffer.from('x'))));
    expect(error.kind).toBe('forbidden');
    expect(error.message).toBe('POST /api/assets answered 403: Missing required permission: asset.upload');
    expect(isMissingPermission(error), "Immich's own: the key may no longer upload").toBe(true);
  });

  it("a proxy's 403 is no missing permission of the key's: it fails only its file", async () => {
    await withServer(
      (_req, res) => res.writeHead(403, { 'content-type': 'application/json' }).end('{"message":"You do not have permission to access this resource"}'),
      async (url) => {
        const error = await immichRejection(useClient(`${url}/api`, (immich) => immich.bulkUploadCheck([])));
        expect([error.kind, isMissingPermission(error)]).toEqual(['forbidden', false]);
      },
    );
  });

  it('a redirect says which IMMICH_API_URL to set: the address redirected to, without the endpoint', async () => {
    // A proxy that moved Immich under a path of its own, as a reverse proxy's rule may.
    await withServer(
      (req, res) => res.writeHead(308, { location: `/photos${req.url ?? ''}` }).end(),
      async (url) => {
        const error = await immichRejection(useClient(`${url}/api`, (immich) => immich.ping()));
        expect(error.message).toBe(`GET /api/server/ping answered 308: redirected to /photos/api/server/ping: set IMMICH_API_URL to ${url}/photos/api`);
      },
    );
  });

  it('another web application at the address is no Immich API, with the fix', async () => {
    await withServer(
      (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>Portainer</html>'),
      async (url) => {
        const error = await immichRejection(useClient(`${url}/api`, (immich) => immich.serverVersion()));
        expect(error.message).toBe(
          `GET /api/server/version did not answer with JSON (got text/html): is ${url}/api/ the Immich API? Fix: set IMMICH_API_URL to the address you open Immich at in a browser (port 2283 unless you changed it)`,
        );
      },
    );
  });

  it("a proxy's 401 to a request sent without the key asks for a login; it is no rejected key", async () => {
    await withServer(
      (_req, res) => res.writeHead(401, { 'content-type': 'text/html', 'www-authenticate': 'Basic realm="home"' }).end('<html><head><title>401 Authorization Required</title></head></html>'),
      async (url) => {
        const error = await immichRejection(useClient(`${url}/api`, (immich) => immich.serverVersion()));
        expect(error.kind).toBe('rejected');
        expect(error.message).toBe(
          'GET /api/server/version answered 401: 401 Authorization Required; a proxy in front of Immich asks for a login (Immich itself answers this without a key): fix: let the uploader through the proxy, or point IMMICH_API_URL at Immich directly',
        );
      },
    );
  });

  it('never says the key, wherever a server or the address puts it', async () => {
    await withServer(
      (req, res) => {
        if (req.url?.endsWith('/server/ping')) res.writeHead(302, { location: `/login?token=${SECRET}` }).end();
        // A body cut to its first 300 characters where the key begins.
        else res.writeHead(500, { 'content-type': 'text/plain' }).end(`${'x'.repeat(295)}${SECRET}`);
      },
      async (url) => {
        const errors = [
          await immichRejection(useClient(url, (immich) => immich.ping())),
          await immichRejection(useClient(url, (immich) => immich.serverVersion())),
          // The key pasted into the address.
          await immichRejection(useClient(`${url}/${SECRET}`, (immich) => immich.serverVersion())),
        ];
        for (const error of errors) expect(`${error.message} ${error.endpoint} ${inspect(error.details)}`).not.toContain(SECRET.slice(0, 6));
        expect(errors[0]?.message).toContain('token=[redacted]');
      },
    );
  });

  it('400 is rejected with the server message (v2 and v3 unsupported type)', async () => {
    const { server, immich } = await setup();
    const request = await fileUpload(Buffer.from('hello'), 'not-an-image.txt');
    const v2 = await immichRejection(immich.uploadAsset(request));
    expect(v2).toMatchObject({ kind: 'rejected', status: 400, details: { serverMessage: 'Unsupported file type not-an-image.txt' } });
    expect(v2.message).toBe('POST /api/assets answered 400: Unsupported file type not-an-image.txt');
    server.setMajor(3);
    const v3 = await immichRejection(immich.uploadAsset({ ...request, fields: V3_FIELDS }));
    expect(v3.message).toBe('POST /api/assets answered 400: Unsupported file type not-an-image.txt');
    expect(v3.details.correlationId).toEqual(expect.any(String));
  });

  it('v2 missing fields: the message lists them', async () => {
    const { immich } = await setup({ major: 2 });
    const error = await immichRejection(immich.uploadAsset(await fileUpload(Buffer.from('x'), 'a.jpg', V3_FIELDS)));
    expect(error.kind).toBe('rejected');
    expect(error.message).toContain('POST /api/assets answered 400: deviceAssetId must be a string; ');
    expect(error.message).not.toContain('\n');
  });

  it('v3 validation errors name the path', async () => {
    const { immich } = await setup({ major: 3 });
    const fields = { ...V3_FIELDS, fileCreatedAt: '2024-05-03T12:00:00.000' };
    const error = await immichRejection(immich.uploadAsset(await fileUpload(Buffer.from('x'), 'a.jpg', fields)));
    expect(error.kind).toBe('rejected');
    expect(error.message).toBe(
      'POST /api/assets answered 400: Validation failed: fileCreatedAt: Invalid input: expected ISO 8601 datetime string, received string',
    );
  });

  it('503 with Retry-After is server, with retryAfterMs', async () => {
    const { server, immich } = await setup();
    server.failNext(1, 503, { retryAfterSeconds: 7 });
    const error = await immichRejection(immich.bulkUploadCheck([]));
    expect(error).toMatchObject({ kind: 'server', status: 503, details: { retryAfterMs: 7000 } });
    expect(error.retryable).toBe(true);
    expect(error.message).toBe('POST /api/assets/bulk-upload-check answered 503: Service Unavailable');
  });

  it('429 and 500 are server', async () => {
    const { server, immich } = await setup();
    server.failNext(1, 429);
    expect((await immichRejection(immich.bulkUploadCheck([]))).kind).toBe('server');
    server.failNext(1, 500, { message: 'database is down' });
    const error = await immichRejection(immich.uploadAsset(await fileUpload(randomBytes(1000))));
    expect(error).toMatchObject({ kind: 'server', status: 500 });
    expect(error.message).toBe('POST /api/assets answered 500: database is down');
  });

  it('413 from a proxy says so', async () => {
    const { server, immich } = await setup();
    server.failNext(1, 413, { path: '/api/assets' });
    const error = await immichRejection(immich.uploadAsset(await fileUpload(randomBytes(2 * 1024 * 1024))));
    expect(error).toMatchObject({ kind: 'rejected', status: 413 });
    expect(error.message).toMatch(/^POST \/api\/assets answered 413: .*proxy between you and Immich.*100 MB/);
  });

  it('404 from the version or the ping says IMMICH_API_URL is not the Immich server', async () => {
    const { server, immich } = await setup();
    server.failNext(1, 404, { path: '/api/server/version' });
    const error = await immichRejection(immich.serverVersion());
    expect(error.message).toBe('GET /api/server/version answered 404: Not Found; fix: set IMMICH_API_URL to the address you open Immich at in a browser');
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

describe('network failures', () => {
  it('a server that is down is network ECONNREFUSED; it works again once up', async () => {
    const { server, immich } = await setup();
    await immich.ping();
    await server.down();
    const error = await immichRejection(immich.ping());
    expect(error).toMatchObject({ kind: 'network', details: { code: 'ECONNREFUSED' } });
    expect(error.message).toBe(`cannot reach the Immich server at ${server.url} (ECONNREFUSED)`);
    expect(error.retryable).toBe(true);
    await server.up();
    await immich.ping();
  });

  it('a stalled server is network ETIMEDOUT after the inactivity timeout', { timeout: 10_000 }, async () => {
    const { server, immich } = await setup({}, { inactivityTimeoutMs: 300 });
    server.stall();
    const error = await immichRejection(immich.serverVersion());
    expect(error).toMatchObject({ kind: 'network', details: { code: 'ETIMEDOUT' } });
    expect(error.message).toContain('(ETIMEDOUT)');
  });

  it('a server that stops reading an upload is network ETIMEDOUT', { timeout: 10_000 }, async () => {
    const { server, immich } = await setup({}, { inactivityTimeoutMs: 300 });
    server.stall();
    const error = await immichRejection(immich.uploadAsset(await fileUpload(randomBytes(20 * 1024 * 1024))));
    expect(error).toMatchObject({ kind: 'network', details: { code: 'ETIMEDOUT' } });
  });

  it('a connection dropped mid-upload is network', async () => {
    const { server, immich } = await setup();
    server.dropNextUpload({ afterBytes: 256 * 1024 });
    const error = await immichRejection(immich.uploadAsset(await fileUpload(randomBytes(8 * 1024 * 1024))));
    expect(error.kind).toBe('network');
    expect(error.details.code).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(server.assets).toHaveLength(0);
  });
});

describe('TLS', () => {
  it('https:// to a port that speaks plain http says to use http://', async () => {
    await withServer(
      (_req, res) => res.end('{}'),
      async (url) => {
        const error = await immichRejection(useClient(url.replace('http:', 'https:'), (immich) => immich.ping()));
        expect(error.kind).toBe('network');
        expect(error.message).toMatch(/: TLS with the Immich server at https:\/\/127\.0\.0\.1:\d+ failed \(.*\): .*\. Fix: the server at this address speaks plain http: use http:\/\/ in IMMICH_API_URL/);
      },
    );
  });

  it.skipIf(!hasOpenssl())('a self-signed certificate is network, with the fix in the message (skipped without openssl)', async () => {
    const dir = await makeTempDir('iau-tls-');
    try {
      const key = join(dir.path, 'key.pem');
      const cert = join(dir.path, 'cert.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], {
        stdio: 'ignore',
      });
      const server = createHttpsServer({ key: await readFile(key), cert: await readFile(cert) }, (_req, res) => res.end('{}'));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = server.address() as AddressInfo;
        const immich = createImmichClient({ apiUrl: `https://127.0.0.1:${port}/api`, apiKey: SECRET });
        const error = await immichRejection(immich.ping());
        expect(error).toMatchObject({ kind: 'network', details: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } });
        // Node's own words in between differ by version (24 adds a hint of its own).
        expect(error.message).toMatch(
          new RegExp(`^GET /api/server/ping: TLS with the Immich server at https://127\\.0\\.0\\.1:${port} failed \\(DEPTH_ZERO_SELF_SIGNED_CERT\\): self-signed certificate`),
        );
        expect(error.message).toMatch(
          /\. Fix: for a self-signed certificate or one from your own CA, give that certificate \(PEM\) in NODE_EXTRA_CA_CERTS=\/path\/to\/cert\.pem$/,
        );
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    } finally {
      await dir.remove();
    }
  });
});

describe('an answer lost with the connection', () => {
  it('when the upload fails with a reset and the server has the file, the result is duplicate', async () => {
    const { server, immich } = await setup();
    const bytes = randomBytes(100_000);
    const seeded = server.seedAsset({ checksum: sha1(bytes) });
    // Answering, then closing while the client still writes, can lose the answer in Node's client;
    // a reset before any answer is the same situation seen from the client.
    server.dropNextUpload();
    expect(await immich.uploadAsset(await fileUpload(bytes))).toEqual({ id: seeded.id, status: 'duplicate' });
    expect(server.requests.map((r) => r.path)).toEqual(['/api/assets', '/api/assets/bulk-upload-check']);
  });
});

describe('keep-alive', () => {
  it('a reset on a reused socket before any answer is retried once on a fresh one', async () => {
    const { server, immich } = await setup();
    await immich.ping(); // leaves a keep-alive socket in the pool
    server.dropNextUpload();
    const bytes = randomBytes(100_000);
    expect((await immich.uploadAsset(await fileUpload(bytes))).status).toBe('created');
    expect(server.requests.filter((r) => r.path === '/api/assets').map((r) => r.status)).toEqual([0, 201]);
    expect(server.assetByChecksum(sha1(bytes))?.size).toBe(bytes.length);
  });
});

describe('the file stream', () => {
  // The default inactivity timeout is 60 s: the short test timeout proves the failure is prompt.
  it('an error mid-file rejects with that same error, promptly', { timeout: 5_000 }, async () => {
    const { server, immich } = await setup();
    const readError = Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    const size = 10 * 1024 * 1024;
    const error = await rejection(
      immich.uploadAsset({
        fields: V2_FIELDS,
        checksum: sha1(Buffer.from('whatever')),
        file: { filename: 'a.jpg', contentType: 'image/jpeg', size, open: () => failingSource(1024 * 1024, readError) },
      }),
    );
    expect(error).toBe(readError);
    expect(server.assets).toHaveLength(0);
    // The failed request left nothing behind that breaks the next one.
    expect((await immich.uploadAsset(await fileUpload(randomBytes(1000)))).status).toBe('created');
  });

  it('a file shorter than announced fails promptly with FileSizeMismatchError', { timeout: 5_000 }, async () => {
    const { server, immich } = await setup();
    const request = await fileUpload(randomBytes(1024 * 1024));
    const error = await rejection(immich.uploadAsset({ ...request, file: { ...request.file, size: 2 * 1024 * 1024 } }));
    expect(error).toBeInstanceOf(FileSizeMismatchError);
    expect(error).toMatchObject({ expected: 2 * 1024 * 1024, actual: 1024 * 1024 });
    expect(server.assets).toHaveLength(0);
  });

  it('a file longer than announced fails with FileSizeMismatchError', { timeout: 5_000 }, async () => {
    const { immich } = await setup();
    const request = await fileUpload(randomBytes(1024 * 1024));
    const error = await rejection(immich.uploadAsset({ ...request, file: { ...request.file, size: 1000 } }));
    expect(error).toBeInstanceOf(FileSizeMismatchError);
  });
});

describe('abort', () => {
  it('rejects with the signal reason, before or during a request', { timeout: 5_000 }, async () => {
    const { server, immich } = await setup();
    const reason = new Error('shutting down');
    expect(await rejection(immich.ping(AbortSignal.abort(reason)))).toBe(reason);

    server.stall();
    const controller = new AbortController();
    const pending = rejection(immich.uploadAsset(await fileUpload(randomBytes(20 * 1024 * 1024)), controller.signal));
    await waitFor(() => server.requests.some((r) => r.path === '/api/assets'), { message: 'the upload to reach the server' });
    controller.abort(reason);
    expect(await pending).toBe(reason);
  });

  it('a reason that is not an Error becomes an AbortError', async () => {
    const { immich } = await setup();
    const controller = new AbortController();
    controller.abort('just a string');
    expect(await rejection(immich.ping(controller.signal))).toMatchObject({ name: 'AbortError' });
  });
});

describe('the API key never leaks', () => {
  it('from any kind of failure', { timeout: 20_000 }, async () => {
    const errors: unknown[] = [];
    // auth: the secret is the wrong key.
    {
      const { immich } = await setup({ keys: {} });
      errors.push(await rejection(immich.apiKeyInfo()));
      client?.close();
      await fake?.close();
    }
    const { server, immich } = await setup(
      { keys: { [SECRET]: { name: 'reader', permissions: ['user.read'] } } },
      { inactivityTimeoutMs: 300 },
    );
    errors.push(await rejection(immich.bulkUploadCheck([]))); // forbidden
    server.failNext(1, 400, { message: 'Bad Request' });
    errors.push(await rejection(immich.bulkUploadCheck([]))); // rejected
    server.failNext(1, 503, { retryAfterSeconds: 1 });
    errors.push(await rejection(immich.apiKeyInfo())); // server
    server.failNext(1, 413);
    errors.push(await rejection(immich.apiKeyInfo())); // rejected, proxy page
    // On a fresh socket: a reset on a reused one is retried once (see 'keep-alive' below).
    const fresh = createImmichClient({ apiUrl: server.apiUrl, apiKey: SECRET });
    server.dropNextUpload();
    errors.push(await rejection(fresh.uploadAsset(await fileUpload(randomBytes(4 * 1024 * 1024))))); // network, reset
    fresh.close();
    server.stall();
    errors.push(await rejection(immich.apiKeyInfo())); // network, timeout
    await server.down();
    errors.push(await rejection(immich.apiKeyInfo())); // network, refused

    const kinds = errors.map((e) => (isImmichError(e) ? e.kind : 'not an ImmichError'));
    expect(kinds).toEqual(['auth', 'forbidden', 'rejected', 'server', 'rejected', 'network', 'network', 'network']);
    for (const error of errors) expectNoSecret(error);
  });
});

describe('a key that cannot be sent', () => {
  it('is rejected without naming the key', async () => {
    fake = await startFakeImmich();
    client = createImmichClient({ apiUrl: fake.apiUrl, apiKey: `${SECRET}\n` });
    const error = await immichRejection(client.apiKeyInfo());
    expect(error.kind).toBe('rejected');
    expectNoSecret(error);
  });
});
