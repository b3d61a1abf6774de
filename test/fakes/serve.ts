/**
 * The fake Immich server as its own process, for benchmarks and manual demos:
 *
 *   node --import tsx test/fakes/serve.ts [--port N] [--major 2|3] [--discard] [--key SECRET]
 *
 * Prints `{"url":"http://127.0.0.1:PORT"}` once listening; on SIGTERM or SIGINT prints one JSON line
 * of statistics and exits 0.
 */
import { parseArgs } from 'node:util';

import { startFakeImmich, type FakeImmichOptions } from './immich-server.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    major: { type: 'string' },
    discard: { type: 'boolean', default: false },
    key: { type: 'string' },
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
process.stdout.write(`${JSON.stringify({ url: fake.url })}\n`);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  const stats = {
    assets: fake.assets.length,
    uploads: fake.uploadCount,
    bytesReceived: fake.bytesReceived,
    requests: fake.requests.length,
  };
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
