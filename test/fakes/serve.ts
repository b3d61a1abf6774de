/**
 * The fake Immich server as its own process, for benchmarks and manual demos:
 *
 *   node --import tsx test/fakes/serve.ts [--port N] [--major 2|3] [--discard] [--key SECRET] [--sink]
 *
 * Prints `{"url":"http://127.0.0.1:PORT"}` once listening; on SIGTERM or SIGINT prints one JSON line
 * of statistics and exits 0.
 *
 * `--sink` also starts, in the same process, a second listener on 127.0.0.1 that takes any request,
 * reads its body, counts it and answers 201 `{"bytes":N}`. The benchmark streams raw bytes to it
 * (`curl -T`) to measure what loopback carries without hashing or multipart framing on either
 * side. Its URL is printed as `sinkUrl` in the first line.
 */
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';

import { startFakeImmich, type FakeImmichOptions } from './immich-server.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    major: { type: 'string' },
    discard: { type: 'boolean', default: false },
    key: { type: 'string' },
    sink: { type: 'boolean', default: false },
  },
});

const port = values.port === undefined ? 0 : Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  throw new Error(`--port: expected an integer 0-65535, got ${values.port}`);
}
if (values.major !== undefined && values.major !== '2' && values.major !== '3') {
  throw new Error(`--major: expected 2 or 3, got ${values.major}`);
}

const options: FakeImmichOptions = {
  port,
  major: values.major === '3' ? 3 : 2,
  storeBytes: !values.discard,
  ...(values.key !== undefined ? { keys: { [values.key]: { name: 'serve', permissions: ['all'] } } } : {}),
};
const fake = await startFakeImmich(options);
const sink = values.sink ? await startSink() : undefined;
process.stdout.write(`${JSON.stringify({ url: fake.url, ...(sink ? { sinkUrl: sink.url } : {}) })}\n`);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  const stats = {
    assets: fake.assets.length,
    uploads: fake.uploadCount,
    bytesReceived: fake.bytesReceived,
    requests: fake.requests.length,
    ...(sink ? { sinkRequests: sink.requests, sinkBytes: sink.bytes } : {}),
  };
  await sink?.close();
  await fake.close();
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  // Nothing else keeps the loop alive once the server is closed: the process ends with code 0.
  process.exitCode = 0;
};
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    void stop().catch((error: unknown) => {
      process.stderr.write(`fake Immich: ${String(error)}\n`);
      process.exitCode = 1;
    });
  });
}

interface Sink {
  url: string;
  readonly requests: number;
  readonly bytes: number;
  close(): Promise<void>;
}

/** The raw-bytes sink of `--sink` (see the top of this file). */
async function startSink(): Promise<Sink> {
  let requests = 0;
  let bytes = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    requests += 1;
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
    });
    req.on('end', () => {
      bytes += size;
      const body = JSON.stringify({ bytes: size });
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    req.on('error', () => undefined);
    res.on('error', () => undefined);
  });
  server.keepAliveTimeout = 5_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('sink: no TCP address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    get requests() {
      return requests;
    },
    get bytes() {
      return bytes;
    },
    close: async () => {
      const closing = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closing;
    },
  };
}
