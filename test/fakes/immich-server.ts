/**
 * A fake Immich server: a real HTTP server on 127.0.0.1 that answers like the real one
 * (docs: /work/shared/immich-api.md) for the calls an uploader makes, records what it received,
 * and injects the faults real deployments produce (5xx, 429, proxies' 413, resets, stalls, restarts).
 *
 * Its answers are typed from `@immich/sdk`, so a drift in the real API's types fails to compile.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { extname } from 'node:path';

import type {
  ApiKeyResponseDto,
  AssetBulkUploadCheckResponseDto,
  AssetBulkUploadCheckResult,
  AssetMediaResponseDto,
  Permission,
  ServerMediaTypesResponseDto,
  ServerPingResponse,
  ServerVersionResponseDto,
  UserAdminResponseDto,
} from '@immich/sdk';
import busboy from 'busboy';

/** The JSON form of an SDK type: its string enums become their string values. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends (infer U)[]
    ? Json<U>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

export type PermissionName = `${Permission}`;

export interface FakeKey {
  name: string;
  /** Permission names as Immich spells them (`asset.upload`, `user.read`, ...); `all` grants everything. */
  permissions: string[];
}

export interface FakeImmichOptions {
  /** Default 0: any free port. */
  port?: number;
  /** API generation to imitate; default 2. */
  major?: 2 | 3;
  /** The version `server/version` reports instead of the major's own (an Immich 1.x, say); the API stays the major's. */
  reportedVersion?: { major: number; minor: number; patch: number };
  /** API keys by secret. Default: `test-key` with `all`. */
  keys?: Record<string, FakeKey>;
  /** Keep each upload's bytes in `asset.bytes`. Default true; false still counts and hashes (benchmarks). */
  storeBytes?: boolean;
}

export interface FakeAsset {
  id: string;
  /** SHA-1 hex of the bytes received (or seeded). */
  checksum: string;
  /** The `x-immich-checksum` header as sent, if any. */
  headerChecksum?: string;
  /** The part's filename as received, UTF-8. */
  filename: string;
  /** Text fields as received. */
  fields: Record<string, string>;
  size: number;
  bytes?: Buffer;
  receivedAt: Date;
  /** In the user's trash: still a duplicate to the server, reported with `isTrashed: true`. */
  trashed?: boolean;
  /** The `sidecarData` part (an XMP sidecar) that came with the upload. */
  sidecar?: { filename: string; bytes: Buffer };
}

export interface FakeRequest {
  method: string;
  path: string;
  /** 0 while unanswered, and for requests that were dropped or stalled. */
  status: number;
}

export interface FakeImmich {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `url + '/api'` */
  readonly apiUrl: string;
  readonly port: number;
  readonly major: 2 | 3;
  readonly assets: readonly FakeAsset[];
  readonly requests: readonly FakeRequest[];
  /** POST /api/assets answered 201. */
  readonly uploadCount: number;
  /** Bytes of `assetData` parts received, duplicates included. */
  readonly bytesReceived: number;
  assetByChecksum(checksum: string): FakeAsset | undefined;
  /** Pre-populates an asset (hex or base64 checksum), e.g. to test duplicates; `trashed`: in the trash. */
  seedAsset(asset: { checksum: string; filename?: string; id?: string; size?: number; trashed?: boolean }): FakeAsset;
  setMajor(major: 2 | 3): void;
  /**
   * The next `count` requests (whose path starts with `opts.path`, or equals it with
   * `exact: true`, if given) are answered `status`.
   */
  failNext(count: number, status: number, opts?: { path?: string; exact?: boolean; retryAfterSeconds?: number; message?: string }): void;
  /** The next `count` requests (matched like failNext) wait `ms` before being handled. */
  delayNext(count: number, ms: number, opts?: { path?: string; exact?: boolean }): void;
  /** The next upload's connection is destroyed after `afterBytes` body bytes (default 0). */
  dropNextUpload(opts?: { afterBytes?: number }): void;
  /**
   * The next `count` requests (matched like failNext) are read whole and get no answer: the
   * connection is closed, as by a proxy that gave up waiting for Immich. `done` (default true):
   * Immich did the request all the same (an upload's asset is made).
   */
  loseNextAnswers(count: number, opts?: { path?: string; exact?: boolean; done?: boolean }): void;
  /** Every upload announcing this checksum (`x-immich-checksum`) is answered `status`: a file the server fails on. */
  failUploadsOf(checksum: string, status: number): void;
  /**
   * Each request answers `status` with probability `rate` (deterministic for a seed). Applies to
   * paths starting with `opts.paths` (default `/api/assets`: uploads and bulk checks). Rate 0 stops it.
   */
  setFailureRate(rate: number, status: number, seed?: number, opts?: { paths?: string[] }): void;
  /** From now on, accept connections and requests but never answer. */
  stall(): void;
  unstall(): void;
  /** Stops listening and destroys open connections: connections are refused. */
  down(): Promise<void>;
  /** Listens again, on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

/** `GET /api/server/media-types`, as recorded from v2.7.5. */
export const MEDIA_TYPES: Json<ServerMediaTypesResponseDto> = {
  image: [
    '.avif', '.bmp', '.gif', '.jpeg', '.jpg', '.png', '.webp', '.3fr', '.ari', '.arw', '.cap', '.cin', '.cr2',
    '.cr3', '.crw', '.dcr', '.dng', '.erf', '.fff', '.iiq', '.k25', '.kdc', '.mrw', '.nef', '.nrw', '.orf',
    '.ori', '.pef', '.psd', '.raf', '.raw', '.rw2', '.rwl', '.sr2', '.srf', '.srw', '.x3f', '.heic', '.heif',
    '.hif', '.insp', '.jp2', '.jpe', '.jxl', '.svg', '.tif', '.tiff',
  ],
  video: [
    '.3gp', '.3gpp', '.avi', '.flv', '.insv', '.m2t', '.m2ts', '.m4v', '.mkv', '.mov', '.mp4', '.mpe', '.mpeg',
    '.mpg', '.mts', '.mxf', '.ts', '.vob', '.webm', '.wmv',
  ],
  sidecar: ['.xmp'],
};

const SUPPORTED_EXTENSIONS = new Set([...MEDIA_TYPES.image, ...MEDIA_TYPES.video, ...MEDIA_TYPES.sidecar]);

const VERSIONS: Record<2 | 3, Json<ServerVersionResponseDto> | Omit<Json<ServerVersionResponseDto>, 'prerelease'>> = {
  2: { major: 2, minor: 7, patch: 5 },
  3: { major: 3, minor: 2, patch: 2, prerelease: null },
};

const DEFAULT_KEYS: Record<string, FakeKey> = { 'test-key': { name: 'test key', permissions: ['all'] } };

interface FailRule {
  remaining: number;
  status: number;
  path?: string;
  exact?: boolean;
  retryAfterSeconds?: number;
  message?: string;
}

interface DelayRule {
  remaining: number;
  ms: number;
  path?: string;
  exact?: boolean;
}

interface LoseRule {
  remaining: number;
  path?: string;
  exact?: boolean;
  done?: boolean;
}

interface FailureRate {
  rate: number;
  status: number;
  random: () => number;
  paths: string[];
}

/** Normalises a hex (40) or base64 (28) SHA-1 to lower-case hex; undefined if it is neither. */
export function checksumToHex(checksum: string): string | undefined {
  if (/^[0-9a-fA-F]{40}$/.test(checksum)) return checksum.toLowerCase();
  if (/^[A-Za-z0-9+/]{27}=$/.test(checksum)) return Buffer.from(checksum, 'base64').toString('hex');
  return undefined;
}

export async function startFakeImmich(options: FakeImmichOptions = {}): Promise<FakeImmich> {
  let major: 2 | 3 = options.major ?? 2;
  const keys = options.keys ?? DEFAULT_KEYS;
  const storeBytes = options.storeBytes ?? true;
  const assets: FakeAsset[] = [];
  const byChecksum = new Map<string, FakeAsset>();
  const requests: FakeRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const keyIds = new Map(Object.keys(keys).map((secret) => [secret, randomUUID()]));
  const keyCreatedAt = new Date().toISOString();
  let uploadCount = 0;
  let bytesReceived = 0;
  let failRules: FailRule[] = [];
  const failingChecksums = new Map<string, number>();
  let delayRules: DelayRule[] = [];
  let loseRules: LoseRule[] = [];
  let dropUpload: { afterBytes: number } | undefined;
  let failureRate: FailureRate | undefined;
  let stalled = false;
  let listening = false;
  let closed = false;

  const server: Server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => {
      // A bug in the fake: answer 500 so the test sees it rather than hang.
      if (!res.headersSent) send(res, undefined, 500, { message: `fake server error: ${String(error)}` });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  function addAsset(asset: FakeAsset): FakeAsset {
    assets.push(asset);
    byChecksum.set(asset.checksum, asset);
    return asset;
  }

  function correlationId(): string {
    return randomBytes(4).toString('hex');
  }

  function send(res: ServerResponse, entry: FakeRequest | undefined, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (entry) entry.status = status;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  }

  /** An error the way the configured major writes it. */
  function sendError(
    res: ServerResponse,
    entry: FakeRequest,
    status: number,
    message: string | string[],
    headers: Record<string, string> = {},
  ): void {
    const id = correlationId();
    if (major === 2) {
      send(res, entry, status, { message, error: STATUS_CODES[status] ?? 'Error', statusCode: status, correlationId: id }, headers);
    } else {
      send(res, entry, status, { message }, { 'x-correlation-id': id, ...headers });
    }
  }

  function sendValidationV3(res: ServerResponse, entry: FakeRequest, errors: object[]): void {
    send(res, entry, 400, { message: 'Validation failed', errors }, { 'x-correlation-id': correlationId() });
  }

  function sendFault(res: ServerResponse, entry: FakeRequest, status: number, retryAfterSeconds?: number, message?: string): void {
    const headers: Record<string, string> = {};
    if (retryAfterSeconds !== undefined) headers['retry-after'] = String(retryAfterSeconds);
    if (status === 413 && message === undefined) {
      // What nginx or Cloudflare in front of Immich answer: an HTML page, not Immich's JSON.
      entry.status = status;
      const html = '<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';
      res.writeHead(413, { 'content-type': 'text/html', 'content-length': Buffer.byteLength(html), ...headers });
      res.end(html);
      return;
    }
    sendError(res, entry, status, message ?? STATUS_CODES[status] ?? 'Error', headers);
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });
  }

  function takeRule<T extends { remaining: number; path?: string; exact?: boolean }>(rules: T[], path: string): T | undefined {
    const matches = (r: T): boolean => r.path === undefined || (r.exact ? path === r.path : path.startsWith(r.path));
    const rule = rules.find((r) => r.remaining > 0 && matches(r));
    if (rule) rule.remaining -= 1;
    return rule;
  }

  function permitted(secret: string, permission: PermissionName): boolean {
    const key = keys[secret];
    return key !== undefined && (key.permissions.includes('all') || key.permissions.includes(permission));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', 'http://fake').pathname;
    const entry: FakeRequest = { method, path, status: 0 };
    requests.push(entry);
    // Errors of a request whose client went away are expected; they must not crash the fake.
    req.on('error', () => undefined);
    res.on('error', () => undefined);

    if (stalled) return; // never answered; the socket is destroyed by down() or close()

    const delay = takeRule(delayRules, path);
    if (delay) {
      await sleep(delay.ms);
      if (closed) return;
    }

    const lose = takeRule(loseRules, path);
    if (lose?.done === false) {
      await new Promise((resolve) => req.on('end', resolve).resume());
      req.socket.destroy();
      return;
    }
    if (lose) {
      // Handled as usual; the answer never leaves.
      const hangUp = (): ServerResponse => {
        req.socket.destroy();
        return res;
      };
      res.writeHead = hangUp;
      res.end = hangUp as typeof res.end;
    }

    const poisoned = method === 'POST' && path === '/api/assets' ? failingChecksums.get(String(req.headers['x-immich-checksum'])) : undefined;
    if (poisoned !== undefined) {
      sendFault(res, entry, poisoned);
      return;
    }
    const fail = takeRule(failRules, path);
    if (fail) {
      sendFault(res, entry, fail.status, fail.retryAfterSeconds, fail.message);
      return;
    }
    if (failureRate && failureRate.paths.some((p) => path.startsWith(p)) && failureRate.random() < failureRate.rate) {
      sendFault(res, entry, failureRate.status);
      return;
    }
    if (method === 'POST' && path === '/api/assets' && dropUpload) {
      const { afterBytes } = dropUpload;
      dropUpload = undefined;
      dropAfter(req, afterBytes);
      return;
    }

    // Endpoints without authentication.
    if (method === 'GET' && path === '/.well-known/immich') {
      send(res, entry, 200, { api: { endpoint: '/api' } });
      return;
    }
    if (method === 'GET' && path === '/api/server/ping') {
      send(res, entry, 200, { res: 'pong' } satisfies Json<ServerPingResponse>);
      return;
    }
    if (method === 'GET' && path === '/api/server/version') {
      send(res, entry, 200, options.reportedVersion ?? VERSIONS[major]);
      return;
    }
    if (method === 'GET' && path === '/api/server/media-types') {
      send(res, entry, 200, MEDIA_TYPES);
      return;
    }

    const route = `${method} ${path}`;
    const known = ['GET /api/users/me', 'GET /api/api-keys/me', 'POST /api/assets/bulk-upload-check', 'POST /api/assets'];
    if (!known.includes(route)) {
      sendError(res, entry, 404, `Cannot ${method} ${path}`);
      return;
    }

    const header = req.headers['x-api-key'];
    const secret = Array.isArray(header) ? header[0] : header;
    if (secret === undefined || secret === '') {
      sendError(res, entry, 401, 'Authentication required');
      return;
    }
    const key = keys[secret];
    if (!key) {
      sendError(res, entry, 401, 'Invalid API key');
      return;
    }

    switch (route) {
      case 'GET /api/users/me':
        if (!permitted(secret, 'user.read')) {
          sendError(res, entry, 403, 'Missing required permission: user.read');
          return;
        }
        send(res, entry, 200, userBody());
        return;
      case 'GET /api/api-keys/me': {
        const body: Json<ApiKeyResponseDto> = {
          id: keyIds.get(secret) ?? randomUUID(),
          name: key.name,
          // Typed loosely in FakeKey so tests can pass plain string arrays; Immich echoes them as given.
          permissions: key.permissions as PermissionName[],
          createdAt: keyCreatedAt,
          updatedAt: keyCreatedAt,
        };
        send(res, entry, 200, body);
        return;
      }
      case 'POST /api/assets/bulk-upload-check':
        if (!permitted(secret, 'asset.upload')) {
          sendError(res, entry, 403, 'Missing required permission: asset.upload');
          return;
        }
        await bulkCheck(req, res, entry);
        return;
      case 'POST /api/assets':
        if (!permitted(secret, 'asset.upload')) {
          sendError(res, entry, 403, 'Missing required permission: asset.upload');
          return;
        }
        upload(req, res, entry);
        return;
    }
  }

  function dropAfter(req: IncomingMessage, afterBytes: number): void {
    if (afterBytes <= 0) {
      req.socket.destroy();
      return;
    }
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= afterBytes) req.socket.destroy();
    });
  }

  async function bulkCheck(req: IncomingMessage, res: ServerResponse, entry: FakeRequest): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      sendError(res, entry, 400, major === 2 ? ['assets must be an array'] : 'Validation failed');
      return;
    }
    const items = (body as { assets?: unknown } | null)?.assets;
    const valid =
      Array.isArray(items) &&
      items.every((item: unknown) => {
        const { id, checksum } = (item ?? {}) as Partial<Record<string, unknown>>;
        return typeof id === 'string' && typeof checksum === 'string';
      });
    if (!valid) {
      sendError(res, entry, 400, major === 2 ? ['assets must be an array'] : 'Validation failed');
      return;
    }
    const results = (items as { id: string; checksum: string }[]).map(({ id, checksum }): Json<AssetBulkUploadCheckResult> => {
      const hex = checksumToHex(checksum);
      const existing = hex === undefined ? undefined : byChecksum.get(hex);
      return existing
        ? { id, action: 'reject', reason: 'duplicate', assetId: existing.id, isTrashed: existing.trashed === true }
        : { id, action: 'accept' };
    });
    send(res, entry, 200, { results } satisfies Json<AssetBulkUploadCheckResponseDto>);
  }

  function upload(req: IncomingMessage, res: ServerResponse, entry: FakeRequest): void {
    const headerValue = req.headers['x-immich-checksum'];
    const headerChecksum = Array.isArray(headerValue) ? headerValue[0] : headerValue;
    const known = headerChecksum === undefined ? undefined : byChecksum.get(checksumToHex(headerChecksum) ?? '');
    if (known) {
      // Like the real server: answered at once, body unread, connection closed behind the answer.
      send(res, entry, 200, { status: 'duplicate', id: known.id } satisfies Json<AssetMediaResponseDto>, { connection: 'close' });
      return;
    }

    const fields: Record<string, string> = {};
    let file: { filename: string; size: number; hash: string; bytes?: Buffer } | undefined;
    let sidecar: { filename: string; bytes: Buffer } | undefined;
    let unsupported: string | undefined;
    let pending = 0; // file parts still being read
    let formDone = false;
    let answered = false;

    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: req.headers, defParamCharset: 'utf8' });
    } catch {
      // Not multipart: no fields, no file.
      finish();
      return;
    }

    parser.on('field', (name, value) => {
      fields[name] = value;
    });
    parser.on('file', (name, stream, info) => {
      stream.on('error', () => undefined);
      const filename = info.filename ?? '';
      if (name === 'sidecarData' && sidecar === undefined && unsupported === undefined) {
        // Like the real server: a sidecar must be an .xmp, or the whole upload is refused.
        if (!MEDIA_TYPES.sidecar.includes(extname(filename).toLowerCase())) {
          unsupported = filename;
          stream.resume();
          return;
        }
        pending += 1;
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          sidecar = { filename, bytes: Buffer.concat(chunks) };
          pending -= 1;
          if (formDone) finish();
        });
        return;
      }
      if (name !== 'assetData' || file !== undefined || unsupported !== undefined) {
        stream.resume();
        return;
      }
      if (!SUPPORTED_EXTENSIONS.has(extname(filename).toLowerCase())) {
        unsupported = filename;
        stream.resume();
        return;
      }
      pending += 1;
      const hash = createHash('sha1');
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
        bytesReceived += chunk.length;
        if (storeBytes) chunks.push(chunk);
      });
      stream.on('end', () => {
        file = {
          filename,
          size,
          hash: hash.digest('hex'),
          ...(storeBytes ? { bytes: Buffer.concat(chunks) } : {}),
        };
        pending -= 1;
        if (formDone) finish();
      });
    });
    parser.on('close', () => {
      formDone = true;
      if (pending === 0) finish();
    });
    parser.on('error', (error: Error) => {
      if (answered) return;
      answered = true;
      req.unpipe(parser);
      sendError(res, entry, 400, `Malformed multipart body: ${error.message}`);
    });
    req.on('close', () => {
      // The client went away mid-body: nothing to answer, nothing to record.
      if (!formDone) parser.destroy();
    });
    req.pipe(parser);

    function finish(): void {
      if (answered) return;
      answered = true;
      if (unsupported !== undefined) {
        sendError(res, entry, 400, `Unsupported file type ${unsupported}`);
        return;
      }
      const invalid = major === 2 ? validateV2(fields, file !== undefined) : validateV3(fields, file !== undefined);
      if (invalid) {
        if (major === 2) sendError(res, entry, 400, invalid as string[]);
        else sendValidationV3(res, entry, invalid as object[]);
        return;
      }
      if (!file) return; // validation demands a file
      const existing = byChecksum.get(file.hash);
      if (existing) {
        send(res, entry, 200, { status: 'duplicate', id: existing.id } satisfies Json<AssetMediaResponseDto>);
        return;
      }
      const asset = addAsset({
        id: randomUUID(),
        checksum: file.hash,
        ...(headerChecksum !== undefined ? { headerChecksum } : {}),
        filename: file.filename,
        fields: { ...fields },
        size: file.size,
        ...(file.bytes ? { bytes: file.bytes } : {}),
        ...(sidecar ? { sidecar } : {}),
        receivedAt: new Date(),
      });
      uploadCount += 1;
      send(res, entry, 201, { id: asset.id, status: 'created' } satisfies Json<AssetMediaResponseDto>);
    }
  }

  function userBody(): Json<UserAdminResponseDto> {
    return {
      id: '0e2d7f0a-7f4e-4c43-9c4b-3d4c9e1f0a11',
      email: 'admin@example.com',
      name: 'Admin',
      isAdmin: true,
      avatarColor: 'primary',
      clusterGroupId: '',
      createdAt: keyCreatedAt,
      updatedAt: keyCreatedAt,
      deletedAt: null,
      license: null,
      oauthId: '',
      profileChangedAt: keyCreatedAt,
      profileImagePath: '',
      quotaSizeInBytes: null,
      quotaUsageInBytes: 0,
      shouldChangePassword: false,
      status: 'active',
      storageLabel: 'admin',
    };
  }

  async function listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    listening = true;
  }

  async function stopListening(): Promise<void> {
    if (!listening) return;
    listening = false;
    const closing = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closing;
  }

  await listen(options.port ?? 0);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fake Immich: no TCP address');
  const port = address.port;
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    apiUrl: `${url}/api`,
    port,
    get major() {
      return major;
    },
    assets,
    requests,
    get uploadCount() {
      return uploadCount;
    },
    get bytesReceived() {
      return bytesReceived;
    },
    assetByChecksum: (checksum) => byChecksum.get(checksumToHex(checksum) ?? ''),
    seedAsset({ checksum, filename = 'seeded.jpg', id = randomUUID(), size = 0, trashed }) {
      const hex = checksumToHex(checksum);
      if (hex === undefined) throw new Error(`seedAsset: expected a SHA-1 in hex or base64, got ${checksum}`);
      return addAsset({ id, checksum: hex, filename, fields: {}, size, receivedAt: new Date(), ...(trashed ? { trashed } : {}) });
    },
    setMajor(next) {
      major = next;
    },
    failUploadsOf(checksum, status) {
      failingChecksums.set(checksum, status);
    },
    failNext(count, status, opts = {}) {
      failRules.push({ remaining: count, status, ...opts });
      failRules = failRules.filter((r) => r.remaining > 0);
    },
    delayNext(count, ms, opts = {}) {
      delayRules.push({ remaining: count, ms, ...opts });
      delayRules = delayRules.filter((r) => r.remaining > 0);
    },
    loseNextAnswers(count, opts = {}) {
      loseRules.push({ remaining: count, ...opts });
      loseRules = loseRules.filter((r) => r.remaining > 0);
    },
    dropNextUpload(opts = {}) {
      dropUpload = { afterBytes: opts.afterBytes ?? 0 };
    },
    setFailureRate(rate, status, seed = 1, opts = {}) {
      failureRate = rate > 0 ? { rate, status, random: mulberry32(seed), paths: opts.paths ?? ['/api/assets'] } : undefined;
    },
    stall() {
      stalled = true;
    },
    unstall() {
      stalled = false;
    },
    down: stopListening,
    up: () => (listening ? Promise.resolve() : listen(port)),
    async close() {
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await stopListening();
    },
  };
}

/** A small seeded PRNG, so a failure pattern repeats run after run. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** v2 (class-validator): a list of messages, or undefined when valid. */
function validateV2(fields: Record<string, string>, hasFile: boolean): string[] | undefined {
  const messages: string[] = [];
  for (const name of ['deviceAssetId', 'deviceId']) {
    const value = fields[name];
    if (value === undefined) messages.push(`${name} must be a string`, `${name} should not be empty`);
    else if (value === '') messages.push(`${name} should not be empty`);
  }
  for (const name of ['fileCreatedAt', 'fileModifiedAt']) {
    const value = fields[name];
    if (value === undefined || value === '' || Number.isNaN(Date.parse(value))) messages.push(`${name} must be a Date instance`);
  }
  if (!hasFile) messages.push('assetData is required');
  return messages.length > 0 ? messages : undefined;
}

/** ISO 8601 date-time with a mandatory offset or Z, as zod's `iso.datetime({ offset: true })`. */
const ISO_WITH_OFFSET = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)$/;

/** v3 (zod): issues, or undefined when valid. deviceAssetId and deviceId are ignored. */
function validateV3(fields: Record<string, string>, hasFile: boolean): object[] | undefined {
  const issues: object[] = [];
  for (const name of ['fileCreatedAt', 'fileModifiedAt']) {
    const value = fields[name];
    if (value === undefined) {
      issues.push({
        expected: 'string',
        code: 'invalid_type',
        path: [name],
        message: 'Invalid input: expected string, received undefined',
      });
    } else if (!ISO_WITH_OFFSET.test(value) || Number.isNaN(Date.parse(value))) {
      issues.push({
        origin: 'string',
        code: 'invalid_format',
        format: 'datetime',
        path: [name],
        message: 'Invalid input: expected ISO 8601 datetime string, received string',
      });
    }
  }
  if (!hasFile) {
    issues.push({ code: 'custom', path: ['assetData'], message: 'Invalid input: expected file, received undefined' });
  }
  return issues.length > 0 ? issues : undefined;
}
