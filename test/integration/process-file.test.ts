import { appendFile, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createImmichClient } from '../../src/immich/http-client.js';
import type { ImmichClient } from '../../src/immich/client.js';
import { ResilientImmich, ServerGate } from '../../src/immich/resilient.js';
import { CheckBatcher } from '../../src/pipeline/check.js';
import { processFile, type ProcessDeps } from '../../src/pipeline/process-file.js';
import type { FileState } from '../../src/pipeline/states.js';
import type { SettledFile } from '../../src/pipeline/types.js';
import { systemClock } from '../../src/support/clock.js';
import { startFakeImmich, type FakeImmich } from '../fakes/immich-server.js';
import { readIfExists, sha1, writeMedia } from '../helpers/media.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

let temp: { path: string; remove: () => Promise<void> };
let server: FakeImmich;
let client: ImmichClient;
let watchDir: string;
let archiveDir: string;
const states: FileState[] = [];

beforeEach(async () => {
  temp = await makeTempDir();
  watchDir = join(temp.path, 'in');
  archiveDir = join(temp.path, 'out');
  await mkdir(watchDir);
  server = await startFakeImmich({ major: 3 });
  client = createImmichClient({ apiUrl: server.apiUrl, apiKey: 'test-key' });
  states.length = 0;
});

afterEach(async () => {
  client.close();
  await server.close();
  await temp.remove();
});

function deps(): ProcessDeps {
  const logger = pino({ level: 'silent' });
  const stop = new AbortController();
  const gate = new ServerGate({ client, clock: systemClock, logger, signal: stop.signal });
  const immich = new ResilientImmich({ client, gate, clock: systemClock, logger });
  const signals = {};
  const queue = new PQueue({ concurrency: 2 });
  return {
    immich,
    checker: new CheckBatcher({ send: (items) => immich.bulkUploadCheck(items, signals), clock: systemClock }),
    serverMajor: 3,
    afterUpload: 'move',
    clock: systemClock,
    limitHash: (work) => queue.add(work),
    limitUpload: (work) => queue.add(work),
    // Every state is "committed" at once; a write-ahead caller gets a resolved promise.
    record: async (_file, state) => void states.push(state),
    signals,
  };
}

async function settled(name: string): Promise<SettledFile> {
  const path = join(watchDir, name);
  const info = await stat(path);
  return {
    path,
    root: { path: watchDir, archivePath: archiveDir },
    size: info.size,
    mtimeMs: info.mtimeMs,
    birthtimeMs: info.birthtimeMs,
  };
}

describe('processFile', () => {
  it('uploads, then archives, recording each state before the step that depends on it', async () => {
    const files = await writeMedia(watchDir, ['a.jpg']);
    const outcome = await processFile(await settled('a.jpg'), deps());
    expect(outcome.kind).toBe('uploaded');
    expect(states).toEqual(['settled', 'hashed', 'uploading', 'on-server', 'archiving', 'archived']);
    expect(sha1((await readIfExists(join(archiveDir, 'a.jpg'))) ?? Buffer.alloc(0))).toBe(sha1(files.get('a.jpg') ?? Buffer.alloc(1)));
  });

  it('does not archive a file that changed during its upload: it goes round again', async () => {
    await writeMedia(watchDir, ['b.jpg'], 64 * 1024);
    server.delayNext(1, 1_500, { path: '/api/assets', exact: true });
    const file = await settled('b.jpg');
    const running = processFile(file, deps());
    await waitFor(() => states.includes('hashed'), { message: 'hashing to finish' });
    await appendFile(file.path, 'edited while uploading');
    const outcome = await running;
    expect(outcome.kind).toBe('changed');
    expect(await readIfExists(join(archiveDir, 'b.jpg'))).toBeUndefined();
    expect(await readIfExists(file.path)).toBeDefined();
  });

  it('fails a file the server refuses, leaving it in place', async () => {
    await writeMedia(watchDir, ['c.txt']);
    const outcome = await processFile(await settled('c.txt'), deps());
    expect(outcome).toMatchObject({ kind: 'failed', stage: 'upload', retryable: false });
    expect(outcome.kind === 'failed' && outcome.message).toContain('Unsupported file type');
    expect(await readIfExists(join(watchDir, 'c.txt'))).toBeDefined();
  });

  it('archives without uploading what the server already has', async () => {
    const files = await writeMedia(watchDir, ['d.jpg']);
    server.seedAsset({ checksum: sha1(files.get('d.jpg') ?? Buffer.alloc(0)), filename: 'd.jpg' });
    const outcome = await processFile(await settled('d.jpg'), deps());
    expect(outcome.kind).toBe('already-on-server');
    expect(states).toEqual(['settled', 'hashed', 'on-server', 'archiving', 'archived']);
    expect(server.uploadCount).toBe(0);
  });
});
