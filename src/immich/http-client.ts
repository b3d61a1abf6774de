/**
 * The Immich client over node:http / node:https. Uploads are a hand-built multipart body written
 * to `http.request`: the leanest and fastest option measured (STACK.md, Trap 1: fetch keeps a copy
 * of every uploaded byte). A file on disk is read into two buffers of the upload's own, each reused
 * once the socket has taken it; a file already in memory is written with its head and tail in one
 * go. What fetch gave us for free is done here explicitly: an inactivity timeout on every request,
 * abort, and failing at once when reading the file fails.
 */
import http from 'node:http';
import https from 'node:https';

import { abortReason } from '../support/clock.js';
import type {
  ApiKeyInfo,
  BulkCheckItem,
  BulkCheckResult,
  ImmichClient,
  ServerVersion,
  UploadRequest,
  UploadResult,
} from './client.js';
import { ImmichError } from './errors.js';
import { buildMultipart, FileSizeMismatchError, type MultipartBody } from './multipart.js';

export interface ImmichClientOptions {
  /** Base URL of the API, already normalised to end in `/api`, e.g. `http://127.0.0.1:2283/api`. */
  apiUrl: string;
  /** Sent as `x-api-key`; never appears in errors or logs. */
  apiKey: string;
  /**
   * A request fails with ETIMEDOUT when no byte was sent or received for this long. It is not a
   * limit on the whole request: a 20 GB video may take an hour as long as bytes keep moving.
   * Default 60 000 ms.
   */
  inactivityTimeoutMs?: number;
  /** Default `immich-auto-uploader`. */
  userAgent?: string;
}

interface RequestSpec {
  method: 'GET' | 'POST';
  /** Relative to the API base, e.g. `server/ping`. */
  path: string;
  /** Whether to send the API key. */
  auth: boolean;
  headers?: Record<string, string>;
  /** A JSON body, or a multipart body (streamed, or in memory) with a known length. */
  body?: { json: unknown } | MultipartBody;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

interface Context {
  base: URL;
  origin: string;
  request: typeof http.request;
  agent: http.Agent;
  apiKey: string;
  userAgent: string;
  inactivityTimeoutMs: number;
}

/**
 * The wait for the answer to an upload once its body is sent: twice the inactivity timeout (2
 * minutes), or longer for a large body, so that a proxy that buffered it can pass it on to Immich
 * at 5 MB/s (a NAS's disk, a Raspberry Pi's card): 14 minutes for a 4 GB video.
 */
const ANSWER_BYTES_PER_MS = (5 * 1024 * 1024) / 1000;

/** Responses are small JSON documents; a bigger one is not the Immich API answering. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

/**
 * Why a file stops being read once the outcome is decided; never reaches a caller. Given as the
 * reason, it spares the DOMException that `abort()` would build (with its stack) per request.
 */
const OUTCOME_DECIDED = new Error('the outcome of the request is decided');

/** Free keep-alive sockets are closed before servers usually close them (Node's default is 5 s). */
const FREE_SOCKET_TIMEOUT_MS = 4_000;

export function createImmichClient(options: ImmichClientOptions): ImmichClient {
  const base = new URL(options.apiUrl.replace(/\/+$/, '') + '/');
  const isHttps = base.protocol === 'https:';
  if (!isHttps && base.protocol !== 'http:') {
    throw new Error(`expected an http:// or https:// Immich URL, got ${base.protocol}//${base.host}`);
  }
  const agentOptions = { keepAlive: true, timeout: FREE_SOCKET_TIMEOUT_MS };
  const context: Context = {
    base,
    origin: base.origin,
    request: isHttps ? https.request : http.request,
    agent: isHttps ? new https.Agent(agentOptions) : new http.Agent(agentOptions),
    apiKey: options.apiKey,
    userAgent: options.userAgent ?? 'immich-auto-uploader',
    inactivityTimeoutMs: options.inactivityTimeoutMs ?? 60_000,
  };

  const client: ImmichClient = {
    async ping(signal) {
      await callJson(context, { method: 'GET', path: 'server/ping', auth: false }, signal);
    },

    async serverVersion(signal): Promise<ServerVersion> {
      const spec: RequestSpec = { method: 'GET', path: 'server/version', auth: false };
      const body = await callJson(context, spec, signal);
      const { major, minor, patch } = body as Partial<Record<string, unknown>>;
      if (typeof major !== 'number' || typeof minor !== 'number' || typeof patch !== 'number') {
        throw unexpectedBody(context, spec, 'a version');
      }
      return { major, minor, patch };
    },

    async apiKeyInfo(signal): Promise<ApiKeyInfo> {
      const spec: RequestSpec = { method: 'GET', path: 'api-keys/me', auth: true };
      const body = await callJson(context, spec, signal);
      const { id, name, permissions } = body as Partial<Record<string, unknown>>;
      if (typeof id !== 'string' || !Array.isArray(permissions)) {
        throw unexpectedBody(context, spec, 'an API key description');
      }
      return {
        id,
        name: typeof name === 'string' ? name : '',
        permissions: permissions.filter((p): p is string => typeof p === 'string'),
      };
    },

    async bulkUploadCheck(items: BulkCheckItem[], signal): Promise<BulkCheckResult[]> {
      const spec: RequestSpec = {
        method: 'POST',
        path: 'assets/bulk-upload-check',
        auth: true,
        body: { json: { assets: items.map(({ id, checksum }) => ({ id, checksum })) } },
      };
      const body = await callJson(context, spec, signal);
      const results = (body as { results?: unknown }).results;
      if (!Array.isArray(results)) throw unexpectedBody(context, spec, 'bulk check results');
      return results.map((result) => toBulkCheckResult(result, () => unexpectedBody(context, spec, 'bulk check results')));
    },

    async uploadAsset(request: UploadRequest, signal): Promise<UploadResult> {
      const checksum = checksumOf(request);
      const sidecar = request.sidecar && { name: 'sidecarData', ...request.sidecar };
      const multipart = buildMultipart(request.fields, { name: 'assetData', ...request.file }, sidecar);
      const spec: RequestSpec = {
        method: 'POST',
        path: 'assets',
        auth: true,
        ...(checksum === undefined ? {} : { headers: { 'x-immich-checksum': checksum } }),
        body: multipart,
      };
      let body: unknown;
      try {
        body = await callJson(context, spec, signal);
      } catch (error) {
        // A large file's hash may have ended meanwhile.
        const known = await duplicateAfterLostAnswer(client, checksumOf(request), error, signal);
        if (known) return known;
        throw error;
      }
      const { id, status } = body as Partial<Record<string, unknown>>;
      if (typeof id !== 'string' || (status !== 'created' && status !== 'duplicate')) {
        throw unexpectedBody(context, spec, 'an upload result');
      }
      return { id, status };
    },

    close() {
      context.agent.destroy();
    },
  };
  return client;
}

function checksumOf(request: UploadRequest): string | undefined {
  return typeof request.checksum === 'function' ? request.checksum() : request.checksum;
}

/**
 * When the server knows the checksum it answers "duplicate" at once and may close the connection
 * while we are still sending. Node destroys a socket on the first failed write (EPIPE, ECONNRESET),
 * and an answer that had arrived but was not yet read goes with it. An upload sent whole may also
 * lose its answer (a proxy that gave up waiting), after Immich took it. So after such a failure we
 * ask the server whether it has the file: if it does, the upload's outcome is "duplicate" (also
 * when the answer we lost was "created": the asset is on the server either way). Otherwise the
 * original error stands.
 */
async function duplicateAfterLostAnswer(
  client: ImmichClient,
  checksum: string | undefined,
  error: unknown,
  signal: AbortSignal | undefined,
): Promise<UploadResult | undefined> {
  // Without a checksum known, there is nothing to ask about.
  if (checksum === undefined) return undefined;
  if (!(error instanceof ImmichError) || error.kind !== 'network') return undefined;
  if (error.details.code !== 'EPIPE' && error.details.code !== 'ECONNRESET' && !error.details.dropped) return undefined;
  let results: BulkCheckResult[];
  try {
    results = await client.bulkUploadCheck([{ id: 'upload', checksum }], signal);
  } catch (checkError) {
    if (signal?.aborted) throw checkError;
    return undefined;
  }
  const result = results[0];
  if (result?.action === 'reject' && result.reason === 'duplicate' && result.assetId !== undefined) {
    return { id: result.assetId, status: 'duplicate' };
  }
  return undefined;
}

function toBulkCheckResult(value: unknown, invalid: () => Error): BulkCheckResult {
  const { id, action, reason, assetId, isTrashed } = (value ?? {}) as Partial<Record<string, unknown>>;
  if (typeof id !== 'string') throw invalid();
  if (action === 'accept') return { id, action };
  if (action !== 'reject' || (reason !== 'duplicate' && reason !== 'unsupported-format')) throw invalid();
  return {
    id,
    action,
    reason,
    ...(typeof assetId === 'string' ? { assetId } : {}),
    ...(typeof isTrashed === 'boolean' ? { isTrashed } : {}),
  };
}

/** One request; 2xx answers are parsed as JSON, everything else becomes an ImmichError. */
async function callJson(context: Context, spec: RequestSpec, signal: AbortSignal | undefined): Promise<unknown> {
  const response = await exchangeWithStaleRetry(context, spec, signal);
  if (response.status >= 200 && response.status < 300) {
    if (response.body.length === 0) return {};
    try {
      return JSON.parse(response.body.toString('utf8')) as unknown;
    } catch {
      throw unexpectedBody(context, spec, 'JSON', response.headers['content-type']);
    }
  }
  throw httpError(context, spec, response);
}

/**
 * A keep-alive socket the server closed while it sat idle fails the next request at once with
 * ECONNRESET. That says nothing about the server, so such a request is sent once more on a fresh
 * socket (Node's documentation recommends exactly this, keyed on `reusedSocket`).
 */
async function exchangeWithStaleRetry(
  context: Context,
  spec: RequestSpec,
  signal: AbortSignal | undefined,
): Promise<RawResponse> {
  try {
    return await exchange(context, spec, signal);
  } catch (error) {
    if (!(error instanceof StaleSocket)) throw error;
    try {
      return await exchange(context, spec, signal);
    } catch (retryError) {
      throw retryError instanceof StaleSocket ? retryError.error : retryError;
    }
  }
}

/** Internal marker: the request failed on a reused keep-alive socket before any answer. */
class StaleSocket extends Error {
  constructor(readonly error: ImmichError) {
    super(error.message);
  }
}

function exchange(context: Context, spec: RequestSpec, signal: AbortSignal | undefined): Promise<RawResponse> {
  return new Promise<RawResponse>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const url = new URL(spec.path, context.base);
    // A key pasted into IMMICH_API_URL would otherwise travel on in every message.
    const endpoint = redact(context, url.pathname);
    const headers: Record<string, string | number> = {
      accept: 'application/json',
      'user-agent': context.userAgent,
      ...spec.headers,
    };
    if (spec.auth) headers['x-api-key'] = context.apiKey;

    let jsonBody: Buffer | undefined;
    // A file being sent stops being read when the outcome is decided.
    let stopSending: AbortController | undefined;
    if (spec.body && 'json' in spec.body) {
      jsonBody = Buffer.from(JSON.stringify(spec.body.json), 'utf8');
      headers['content-type'] = 'application/json';
      headers['content-length'] = jsonBody.length;
    } else if (spec.body) {
      headers['content-type'] = spec.body.contentType;
      headers['content-length'] = spec.body.contentLength;
    }

    // Node's `timeout` is a socket inactivity timeout: reset by every byte read or written, and it
    // also covers connecting.
    let req: http.ClientRequest;
    try {
      req = context.request(url, {
        method: spec.method,
        headers,
        agent: context.agent,
        timeout: context.inactivityTimeoutMs,
      });
    } catch (error) {
      // E.g. a key with a newline in it: Node refuses the header (and names the header, not its value).
      const reason = error instanceof Error ? redact(context, error.message) : 'invalid request';
      reject(new ImmichError('rejected', spec.method, endpoint, `cannot send ${spec.method} ${endpoint}: ${reason}`));
      return;
    }

    let settled = false;
    let requestSent = false;
    let responseStarted = false;
    let response: http.IncomingMessage | undefined;

    const settle = (outcome: { response: RawResponse } | { error: Error }): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      // Stop reading the file: the server answered (maybe early) or the request failed.
      stopSending?.abort(OUTCOME_DECIDED);
      // A request whose body was not fully sent leaves the connection unusable; so does any failure.
      if ('error' in outcome || !requestSent) req.destroy();
      if ('error' in outcome) reject(outcome.error);
      else resolve(outcome.response);
    };

    const onAbort = (): void => settle({ error: abortReason(signal) });
    signal?.addEventListener('abort', onAbort, { once: true });

    // These listeners stay for the life of the objects: events that arrive after the outcome is
    // decided (EPIPE after an early answer, for instance) are expected and ignored.
    req.on('error', (error: NodeJS.ErrnoException) => {
      // A write failed after the whole answer arrived (the server answered early and closed):
      // the answer stands, and its 'end' settles.
      if (response?.complete) return;
      // The whole request went out and no answer began: the server, or a proxy, dropped it.
      const dropped = requestSent && !responseStarted;
      const mapped = networkError(context, spec.method, endpoint, error, dropped);
      // An idle socket's reset comes at the first writes; a file streamed to its end was read by someone.
      const streamedWhole = dropped && spec.body !== undefined && 'file' in spec.body;
      const stale = req.reusedSocket && !responseStarted && !streamedWhole && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
      settle({ error: stale ? new StaleSocket(mapped) : mapped });
    });
    // Once the body is sent, the answer may take a while: a proxy that buffers a whole upload
    // before passing it on (nginx does by default) answers only once Immich has it all.
    let waitMs = context.inactivityTimeoutMs;
    req.on('timeout', () => {
      settle({ error: timeoutError(context, spec.method, endpoint, requestSent ? waitMs : undefined) });
    });
    req.on('finish', () => {
      requestSent = true;
      if (!spec.body || 'json' in spec.body) return;
      waitMs = Math.max(2 * context.inactivityTimeoutMs, Math.ceil(spec.body.contentLength / ANSWER_BYTES_PER_MS));
      req.setTimeout(waitMs);
    });
    req.on('response', (res) => {
      responseStarted = true;
      response = res;
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > MAX_RESPONSE_BYTES) {
          settle({ error: unexpectedBody(context, spec, `an answer under ${MAX_RESPONSE_BYTES} bytes`) });
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        settle({ response: { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) } });
      });
      res.on('error', (error: NodeJS.ErrnoException) => {
        settle({ error: networkError(context, spec.method, endpoint, error) });
      });
      res.on('aborted', () => {
        settle({ error: networkError(context, spec.method, endpoint, Object.assign(new Error('aborted'), { code: 'ECONNRESET' })) });
      });
    });

    if (jsonBody) {
      req.end(jsonBody);
    } else if (spec.body && 'buffers' in spec.body) {
      writeAtOnce(req, spec.body.buffers);
    } else if (spec.body && 'file' in spec.body) {
      stopSending = new AbortController();
      // The file's own error, unchanged: the caller knows what a changed or unreadable file means.
      sendFile(req, spec.body, stopSending.signal).catch((error: unknown) =>
        settle({ error: error instanceof Error ? error : new Error(String(error)) }),
      );
    } else {
      req.end();
    }
  });
}

/**
 * Writes a body held in memory with as few socket writes as possible: one `writev` carrying the
 * request head and every buffer. Corked, the writes are queued whether or not the request has its
 * socket yet (Node gives it one on a later tick and then flushes its queue corked); `end()`
 * uncorks. Written one by one, a 200 KB upload took three writes or more, and on a 2-core machine
 * each costs main-thread time.
 */
function writeAtOnce(req: http.ClientRequest, buffers: readonly Buffer[]): void {
  req.cork();
  const last = buffers.length - 1;
  for (let i = 0; i < last; i++) req.write(buffers[i]);
  req.end(buffers[last]);
}

/**
 * Read size of a file being sent. Each upload holds two such buffers: one being read into while
 * the socket takes the other. Reused, they leave no garbage per chunk: with a new 128 KiB buffer
 * per read (createReadStream), uploads of 1 GiB files peaked anywhere from 114 to 128 MB RSS as the
 * garbage waited for a collection.
 */
const SEND_CHUNK_BYTES = 512 * 1024;

/**
 * Writes a multipart body whose file part is read from disk: head, the file's bytes, tail. A
 * buffer is read into again only after the socket has taken it (the write's callback), so at most
 * two chunks are in flight and none is copied. The file must have exactly the announced size:
 * it is read to that size, then once more to see that it ended there (FileSizeMismatchError
 * either way, before the body is complete, so the server never gets a whole wrong file).
 */
async function sendFile(
  req: http.ClientRequest,
  body: Extract<MultipartBody, { file: unknown }>,
  stop: AbortSignal,
): Promise<void> {
  const { file } = body;
  const source = await file.open();
  try {
    const stopped = new Promise<void>((resolve) => stop.addEventListener('abort', () => resolve(), { once: true }));
    const taken = (buffer: Buffer): Promise<void> => {
      const written = new Promise<void>((resolve, reject) => req.write(buffer, (error) => (error ? reject(error) : resolve())));
      // A write failed after we stopped waiting (the answer came first): the request's own
      // error handler has it; this copy must not become an unhandled rejection.
      written.catch(() => undefined);
      return written;
    };
    const buffers: [Buffer, Buffer] = [Buffer.allocUnsafe(SEND_CHUNK_BYTES), Buffer.allocUnsafe(SEND_CHUNK_BYTES)];
    const inFlight: [Promise<void>, Promise<void>] = [taken(body.head), Promise.resolve()];
    let sent = 0;
    for (let turn = 0; sent < file.size; turn++) {
      const slot = turn % 2 === 0 ? 0 : 1;
      const buffer = buffers[slot];
      await Promise.race([inFlight[slot], stopped]);
      if (stop.aborted) return;
      const read = await source.read(buffer, Math.min(buffer.length, file.size - sent));
      if (stop.aborted) return;
      if (read === 0) throw new FileSizeMismatchError(file.filename, file.size, sent);
      sent += read;
      inFlight[slot] = taken(buffer.subarray(0, read));
    }
    await Promise.race([Promise.all(inFlight), stopped]);
    if (stop.aborted) return;
    // One byte more would make the file longer than announced.
    const extra = await source.read(buffers[0], 1);
    if (extra > 0) throw new FileSizeMismatchError(file.filename, file.size, sent + extra);
    if (!stop.aborted) req.end(body.tail);
  } finally {
    await source.close();
  }
}

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
]);

/** `dropped`: the connection went after the whole request was sent, before any answer. */
function networkError(context: Context, method: string, endpoint: string, error: NodeJS.ErrnoException, dropped = false): ImmichError {
  const code = error.code ?? (error.message === 'socket hang up' ? 'ECONNRESET' : 'ENETWORK');
  const message = CONNECT_CODES.has(code)
    ? `cannot reach the Immich server at ${context.origin} (${code})`
    : code.startsWith('ERR_TLS') || code.includes('CERT') || code.startsWith('ERR_SSL') || code === 'EPROTO'
      ? `${method} ${endpoint}: TLS with the Immich server at ${context.origin} failed (${code}): ${redact(context, oneLine(error.message))}${tlsFix(code, error.message)}`
      : dropped
        ? `${method} ${endpoint}: the connection to the Immich server at ${context.origin} was lost after the whole request was sent, before an answer (${code})${PROXY_TIMEOUT_HINT}`
        : `${method} ${endpoint}: the connection to the Immich server at ${context.origin} was lost (${code})`;
  return new ImmichError('network', method, endpoint, message, { code, ...(dropped ? { dropped } : {}) });
}

/** Why a request sent whole may get no answer: a proxy that gives up waiting for Immich closes the connection. */
const PROXY_TIMEOUT_HINT =
  "; a proxy between you and Immich may give up waiting for Immich's answer: raise its timeout (nginx: proxy_read_timeout; Traefik: respondingTimeouts)";

/** What to do about a certificate Node refused, or a server that speaks no TLS; it will not change by trying again. */
function tlsFix(code: string, message: string): string {
  // OpenSSL's words for an answer that is no TLS record: plain HTTP on the port.
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test(message)) {
    return '. Fix: the server at this address speaks plain http: use http:// in IMMICH_API_URL, or the https port of its proxy';
  }
  if (/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) {
    return '. Fix: for a self-signed certificate or one from your own CA, give that certificate (PEM) in NODE_EXTRA_CA_CERTS=/path/to/cert.pem';
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return ". Fix: renew the server's certificate, or set this machine's clock right";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return '. Fix: use the host name the certificate was made for in IMMICH_API_URL';
  return '';
}

/** `answerWaitMs`: how long the answer was waited for once the whole request was sent. */
function timeoutError(context: Context, method: string, endpoint: string, answerWaitMs?: number): ImmichError {
  const what =
    answerWaitMs === undefined
      ? `no byte sent to or received from the Immich server at ${context.origin} for ${context.inactivityTimeoutMs / 1000} s`
      : `no answer from the Immich server at ${context.origin} ${Math.round(answerWaitMs / 1000)} s after the whole request was sent`;
  const dropped = answerWaitMs !== undefined;
  return new ImmichError('network', method, endpoint, `${method} ${endpoint}: ${what} (ETIMEDOUT)`, { code: 'ETIMEDOUT', ...(dropped ? { dropped } : {}) });
}

function unexpectedBody(context: Context, spec: RequestSpec, expected: string, contentType?: string): ImmichError {
  const endpoint = redact(context, new URL(spec.path, context.base).pathname);
  const got = contentType ? ` (got ${contentType})` : '';
  return new ImmichError(
    'rejected',
    spec.method,
    endpoint,
    redact(
      context,
      `${spec.method} ${endpoint} did not answer with ${expected}${got}: is ${context.base.href} the Immich API? ` +
        'Fix: set IMMICH_API_URL to the address you open Immich at in a browser (port 2283 unless you changed it)',
    ),
  );
}

function httpError(context: Context, spec: RequestSpec, response: RawResponse): ImmichError {
  const { status, headers } = response;
  const endpoint = redact(context, new URL(spec.path, context.base).pathname);
  const parsed = parseErrorBody(redact(context, response.body.toString('utf8')));
  const serverMessage = parsed.message;
  const headerId = headers['x-correlation-id'];
  const correlationId = parsed.correlationId ?? (typeof headerId === 'string' ? headerId : undefined);
  const retryAfterMs = parseRetryAfter(headers['retry-after']);
  // A 401 to a request sent without the key is a proxy asking for a login, not Immich refusing the key.
  const proxyLogin = status === 401 && !spec.auth;
  const kind =
    status === 401 && !proxyLogin
      ? 'auth'
      : status === 403
        ? 'forbidden'
        : status === 408 || status === 429 || status >= 500
          ? 'server'
          : 'rejected';

  let explanation = serverMessage ?? (http.STATUS_CODES[status] || 'no message');
  if (status === 413) {
    explanation =
      'the upload is larger than a proxy between you and Immich allows ' +
      "(Cloudflare's limit is 100 MB; nginx: client_max_body_size): raise the proxy's limit or upload around it";
  } else if (status === 404 && (spec.path === 'server/ping' || spec.path === 'server/version')) {
    // Every Immich answers these: this is another server, or Immich behind another path.
    explanation += '; fix: set IMMICH_API_URL to the address you open Immich at in a browser';
  } else if (proxyLogin) {
    explanation +=
      '; a proxy in front of Immich asks for a login (Immich itself answers this without a key): ' +
      'fix: let the uploader through the proxy, or point IMMICH_API_URL at Immich directly';
  } else if (status >= 300 && status < 400) {
    const location = headers.location;
    explanation = location ? `redirected to ${location}: ${redirectFix(context, spec, location)}` : 'redirected: use the address the server redirects to';
  }
  const message = redact(context, `${spec.method} ${endpoint} answered ${status}: ${explanation}`);
  return new ImmichError(kind, spec.method, endpoint, message, {
    status,
    ...(serverMessage !== undefined ? { serverMessage } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    ...(correlationId !== undefined ? { correlationId } : {}),
  });
}

/** Where IMMICH_API_URL should point, from where a request was redirected: the endpoint's own path is not part of it. */
function redirectFix(context: Context, spec: RequestSpec, location: string): string {
  let target: URL;
  try {
    target = new URL(location, new URL(spec.path, context.base));
  } catch {
    return 'use the address the server redirects to';
  }
  const suffix = `/${spec.path}`;
  if (!target.pathname.endsWith(suffix)) return 'use the address the server redirects to';
  return `set IMMICH_API_URL to ${target.origin}${target.pathname.slice(0, -suffix.length)}`;
}

/**
 * The server's message as one line. v2 bodies: `{"message": "..." | ["...", ...]}`; v3 validation
 * bodies: `{"message":"Validation failed","errors":[{"path":[...],"message":"..."}]}`. A proxy's
 * HTML page is reduced to its title.
 */
function parseErrorBody(text: string): { message?: string; correlationId?: string } {
  if (text.trim() === '') return {};
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    const title = /<title>([^<]*)<\/title>/i.exec(text)?.[1];
    const plain = oneLine(title ?? text);
    return plain === '' ? {} : { message: plain.slice(0, 300) };
  }
  if (typeof json !== 'object' || json === null) return { message: oneLine(String(json)).slice(0, 300) };
  const { message, errors, correlationId } = json as Partial<Record<string, unknown>>;
  const parts: string[] = [];
  if (typeof message === 'string') parts.push(message);
  else if (Array.isArray(message)) parts.push(message.map(String).join('; '));
  if (Array.isArray(errors)) {
    const details = errors.map((item: unknown) => {
      const { path, message: detail } = (item ?? {}) as Partial<Record<string, unknown>>;
      const where = Array.isArray(path) ? path.map(String).join('.') : typeof path === 'string' ? path : '';
      const what = typeof detail === 'string' ? detail : JSON.stringify(item);
      return where ? `${where}: ${what}` : what;
    });
    if (details.length > 0) parts.push(details.join('; '));
  }
  return {
    ...(parts.length > 0 ? { message: oneLine(parts.join(': ')) } : {}),
    ...(typeof correlationId === 'string' ? { correlationId } : {}),
  };
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Retry-After is either delta-seconds or an HTTP-date. */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** A server could echo what it was sent; the key must not travel on in an error. */
function redact(context: Context, text: string): string {
  return context.apiKey === '' ? text : text.split(context.apiKey).join('[redacted]');
}
