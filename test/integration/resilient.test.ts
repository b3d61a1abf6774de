import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ByteSource, ImmichClient, StreamedUploadFile, UploadRequest } from '../../src/immich/client.js';
import { isImmichError } from '../../src/immich/errors.js';
import { createImmichClient } from '../../src/immich/http-client.js';
import { GaveUpWaitingError, ResilientImmich, ServerGate, UploadBreaker } from '../../src/immich/resilient.js';
import { messageOf } from '../../src/support/message.js';
import { systemClock } from '../../src/support/clock.js';
import { startFakeImmich, type FakeImmich } from '../fakes/immich-server.js';
import { sha1 } from '../helpers/media.js';
import { waitFor } from '../helpers/wait-for.js';

let server: FakeImmich;
let client: ImmichClient;
const stop = new AbortController();
const FAST = { maxAttempts: 2, baseDelayMs: 5, maxDelayMs: 20 };

beforeEach(async () => {
  server = await startFakeImmich({ major: 3 });
  client = createImmichClient({ apiUrl: server.apiUrl, apiKey: 'test-key' });
});

afterEach(async () => {
  client.close();
  await server.close();
});

/** What the gate and the breaker said of the problems they saw begin and end, in order. */
let problems: string[];

beforeEach(() => {
  problems = [];
});

/** Records in `problems` what it is told. */
const told = { raise: (kind: string) => void problems.push(`raise ${kind}`), clear: (kind: string) => void problems.push(`clear ${kind}`) };

/** The client as the pipeline has it, with two attempts per request, a quick probe and a quick breaker. */
function resilient(around: ImmichClient = client, logger: Logger = pino({ level: 'silent' })): ResilientImmich {
  const gate = new ServerGate({ client: around, clock: systemClock, logger, signal: stop.signal, policy: FAST, problems: told });
  const breaker = new UploadBreaker({ clock: systemClock, logger, firstDelayMs: 10, maxDelayMs: 40, problems: told });
  return new ResilientImmich({ client: around, gate, clock: systemClock, logger, policy: FAST, breaker });
}

/** A logger that keeps its lines' messages, by level. */
function recording(): { logger: Logger; lines: Array<{ level: number; msg: string }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  return { logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) }), lines };
}

function photo(): UploadRequest & { checksum: string } {
  const bytes = randomBytes(2048);
  const at = new Date(Date.UTC(2024, 0, 1)).toISOString();
  return { fields: { fileCreatedAt: at, fileModifiedAt: at }, checksum: sha1(bytes), file: { filename: 'IMG_1.jpg', contentType: 'image/jpeg', bytes } };
}

/** A file part read as it is sent, as a large file's is. */
function streamed(bytes: Buffer): StreamedUploadFile {
  const open = async (): Promise<ByteSource> => {
    let at = 0;
    return {
      read: async (buffer, length) => {
        const count = bytes.copy(buffer, 0, at, Math.min(at + length, bytes.length));
        at += count;
        return count;
      },
      close: async () => undefined,
    };
  };
  return { filename: 'VID_1.mp4', contentType: 'video/mp4', size: bytes.length, open };
}

/** Each upload has the server look down to the next ping, as a proxy whose Immich restarts. */
function downAtEachUpload(status: number): ImmichClient {
  return {
    ...client,
    uploadAsset: (request, signal) => {
      server.failNext(1, status, { path: '/api/server/ping' });
      return client.uploadAsset(request, signal);
    },
  };
}

describe('ResilientImmich', () => {
  for (const status of [502, 503, 504, 404]) {
    it(`waits out a proxy's ${status} while Immich behind it restarts, without using up the file's attempts`, async () => {
      // Traefik answers 404 for every route while Immich's container is made anew; nginx 502.
      server.failNext(3, status, { path: '/api/assets', exact: true });
      const result = await resilient(downAtEachUpload(status)).uploadAsset(photo(), {});
      expect(result.status).toBe('created');
      expect(server.assets).toHaveLength(1);
      // For `status` and `health`: the server away, three times, and back each time.
      expect(problems).toEqual(Array.from({ length: 3 }, () => ['raise server', 'clear server']).flat());
    });
  }

  it("takes a 404 from a server that answers its pings as Immich's own refusal", async () => {
    server.failNext(1, 404, { path: '/api/assets', exact: true });
    const error: unknown = await resilient().uploadAsset(photo(), {}).catch((caught: unknown) => caught);
    expect(isImmichError(error) && error.kind).toBe('rejected');
    expect(server.assets).toHaveLength(0);
  });

  it('fails an upload that takes the server down each time, in the end', async () => {
    // Five free retries, as the server was down each time, then the two attempts of FAST.
    server.failNext(100, 502, { path: '/api/assets', exact: true });
    const error: unknown = await resilient(downAtEachUpload(502)).uploadAsset(photo(), {}).catch((caught: unknown) => caught);
    expect(isImmichError(error) && error.status).toBe(502);
    expect(server.requests.filter((request) => request.path === '/api/assets')).toHaveLength(7);
  });

  it('holds the uploads while Immich fails them all (its disk full), one trying now and then, and sends them all once it takes them again', async () => {
    const { logger, lines } = recording();
    const immich = resilient(client, logger);
    // Two attempts each would fail all four files; a full disk is not the files' fault.
    server.failNext(12, 500, { path: '/api/assets', exact: true, message: 'ENOSPC: no space left on device' });
    const results = await Promise.all([photo(), photo(), photo(), photo()].map((request) => immich.uploadAsset(request, {})));
    expect(results.map((result) => result.status)).toEqual(['created', 'created', 'created', 'created']);
    expect(server.assets).toHaveLength(4);
    expect(lines.map((line) => [line.level, line.msg])).toEqual([
      [40, 'Immich failed the uploads of 3 files in a row (POST /api/assets answered 500: ENOSPC: no space left on device): uploads wait, and one is tried now and then until the server takes it'],
      [30, 'Immich takes uploads again; resuming'],
    ]);
    expect(problems).toEqual(['raise uploads', 'clear uploads']);
  });

  it('sends a file Immich fails on, or a proxy cuts off, again fewer times the larger it is, within one try, but any file again after a connection dropped while sending', async () => {
    const logger = pino({ level: 'silent' });
    const gate = new ServerGate({ client, clock: systemClock, logger, signal: stop.signal, policy: FAST });
    const policy = { ...FAST, maxAttempts: 5 };
    // As a 1 GiB budget is to a 1 GB video (one send more) and to a photo (all five sends).
    // Four files in a row fail here: the breaker is not what this test is about.
    const breaker = new UploadBreaker({ clock: systemClock, logger, threshold: 100 });
    const immich = new ResilientImmich({ client, gate, clock: systemClock, logger, policy, breaker, resendBudgetBytes: 2048 });
    const sends = async (bytes: number): Promise<number> => {
      const request = { ...photo(), file: { filename: 'IMG_1.jpg', contentType: 'image/jpeg', bytes: randomBytes(bytes) } };
      request.checksum = sha1(request.file.bytes);
      server.failUploadsOf(request.checksum, 500);
      await expect(immich.uploadAsset(request, {})).rejects.toThrow(/answered 500/);
      return server.requests.filter((sent) => sent.path === '/api/assets' && sent.status === 500).length;
    };
    expect(await sends(1024)).toBe(3);
    expect(await sends(2048)).toBe(3 + 2);
    expect(await sends(4096)).toBe(3 + 2 + 1);
    expect(await sends(100)).toBe(3 + 2 + 1 + 5);

    // A proxy timing out on it while Immich answers pings: held to the budget as well.
    const timedOut = { ...photo(), file: { filename: 'IMG_3.jpg', contentType: 'image/jpeg', bytes: randomBytes(4096) } };
    timedOut.checksum = sha1(timedOut.file.bytes);
    server.failNext(1, 504, { path: '/api/assets', exact: true });
    await expect(immich.uploadAsset(timedOut, {})).rejects.toThrow(/answered 504/);
    expect(server.requests.filter((sent) => sent.path === '/api/assets' && sent.status === 504)).toHaveLength(1);

    // No answer to a video sent whole, Immich answering pings: a proxy cutting it off, held to the budget as well.
    server.loseNextAnswers(1, { path: '/api/assets', exact: true, done: false });
    const video = { ...photo(), file: streamed(randomBytes(4096)) };
    await expect(immich.uploadAsset(video, {})).rejects.toThrow(/lost after the whole request was sent/);
    expect(server.requests.filter((sent) => sent.path === '/api/assets' && sent.status === 0)).toHaveLength(1);

    // A connection dropped while sending is no error of Immich's: only sending again gets past it.
    server.dropNextUpload({ afterBytes: 1000 });
    const large = { ...photo(), file: { filename: 'IMG_2.jpg', contentType: 'image/jpeg', bytes: randomBytes(4096) } };
    large.checksum = sha1(large.file.bytes);
    expect((await immich.uploadAsset(large, {})).status).toBe('created');
  });

  it('spends nothing of a large upload\'s budget on a send an outage cut short', async () => {
    const logger = pino({ level: 'silent' });
    const gate = new ServerGate({ client, clock: systemClock, logger, signal: stop.signal, policy: FAST });
    // The first send is lost as Immich restarts (its proxy answers the ping 502 then), the second to a proxy's timeout.
    let sends = 0;
    const restarting: ImmichClient = {
      ...client,
      uploadAsset: (request, signal) => {
        if (++sends === 1) server.failNext(1, 502, { path: '/api/server/ping' });
        return client.uploadAsset(request, signal);
      },
    };
    // One send again allowed within the try: as a 1 GB video has.
    const immich = new ResilientImmich({ client: restarting, gate, clock: systemClock, logger, policy: { ...FAST, maxAttempts: 5 }, resendBudgetBytes: 4096 });
    server.loseNextAnswers(2, { path: '/api/assets', exact: true, done: false });
    const video = { ...photo(), file: streamed(randomBytes(4096)) };
    expect((await immich.uploadAsset(video, {})).status).toBe('created');
    expect(sends).toBe(3);
  });

  it('`once`: gives up on a server that stopped answering after its patience, then waits one ping per request until it answers', async () => {
    const logger = pino({ level: 'silent' });
    let pings = 0;
    const counting: ImmichClient = { ...client, ping: (signal) => (pings++, client.ping(signal)) };
    const gaveUp: string[] = [];
    const patience = { giveUpAfterMs: 100, onGiveUp: (reason: string) => void gaveUp.push(reason) };
    const gate = new ServerGate({ client: counting, clock: systemClock, logger, signal: stop.signal, policy: FAST, problems: told, patience });
    const immich = new ResilientImmich({ client: counting, gate, clock: systemClock, logger, policy: FAST });
    await server.down();
    await expect(immich.uploadAsset(photo(), {})).rejects.toThrow(GaveUpWaitingError);
    expect(pings).toBeGreaterThan(1);
    pings = 0;
    await expect(immich.uploadAsset(photo(), {})).rejects.toThrow(/^the Immich server did not answer for 0.1 s \(.*\)$/);
    expect(pings).toBe(1);
    expect(gaveUp, 'told once, for the run to stop').toHaveLength(1);
    // Back: it goes on, and says the problem is over.
    await server.up();
    expect((await immich.uploadAsset(photo(), {})).status).toBe('created');
    expect(problems).toEqual(['raise server', 'clear server']);
  });

  it('`once`: gives up on uploads Immich fails all of after its patience, but a trial still goes, and closes it', async () => {
    const logger = pino({ level: 'silent' });
    let failing = true;
    const flaky: ImmichClient = {
      ...client,
      uploadAsset: (request, signal) => {
        if (failing) server.failNext(1, 500, { path: '/api/assets', exact: true, message: 'ENOSPC: no space left on device' });
        return client.uploadAsset(request, signal);
      },
    };
    const gaveUp: string[] = [];
    const patience = { giveUpAfterMs: 100, onGiveUp: (reason: string) => void gaveUp.push(reason) };
    const gate = new ServerGate({ client: flaky, clock: systemClock, logger, signal: stop.signal, policy: FAST });
    const breaker = new UploadBreaker({ clock: systemClock, logger, firstDelayMs: 10, maxDelayMs: 40, problems: told, patience });
    const immich = new ResilientImmich({ client: flaky, gate, clock: systemClock, logger, policy: FAST, breaker });
    const results = await Promise.allSettled([photo(), photo(), photo(), photo()].map((request) => immich.uploadAsset(request, {})));
    const reasons = results.map((result) => (result.status === 'rejected' ? messageOf(result.reason) : 'sent'));
    const givenUp = 'Immich failed every upload for 0.1 s (POST /api/assets answered 500: ENOSPC: no space left on device)';
    // The first three failed on their own (and opened the breaker); the fourth waited, and gave up.
    expect(reasons.filter((reason) => reason === givenUp).length).toBeGreaterThan(0);
    for (const reason of reasons) expect([givenUp, 'POST /api/assets answered 500: ENOSPC: no space left on device']).toContain(reason);
    expect(gaveUp).toEqual([givenUp]);
    expect(server.assets).toHaveLength(0);

    // Immich takes uploads again: the next trial that is due goes, and uploads go on.
    failing = false;
    await waitFor(() => immich.uploadAsset(photo(), {}), { message: 'a trial upload to go through' });
    expect((await immich.uploadAsset(photo(), {})).status).toBe('created');
    expect(problems).toEqual(['raise uploads', 'clear uploads']);
  });

  it('does not hold the other uploads for a file the server fails on alone', async () => {
    const { logger, lines } = recording();
    const immich = resilient(client, logger);
    const poison = photo();
    server.failUploadsOf(poison.checksum ?? '', 500);
    const [failed, ...others] = await Promise.allSettled([poison, photo(), photo(), photo()].map((request) => immich.uploadAsset(request, {})));
    expect(failed?.status).toBe('rejected');
    expect(others.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(server.requests.filter((request) => request.status === 500)).toHaveLength(FAST.maxAttempts);
    expect(lines).toEqual([]);
    expect(problems).toEqual([]);
  });
});
