/**
 * A bare uploader, for comparison only: it reads each file whole, SHA-1s it and uploads it with
 * one multipart POST (the v3 fields and the checksum header, in the body ours builds), `concurrency`
 * at a time over one keep-alive agent, and does nothing else: no duplicate check, journal,
 * settling, archiving or logging. It shows what Node's HTTP client and the benchmark server allow
 * at this concurrency on this machine: the ceiling for any Node uploader, before the work that
 * keeps the user's files safe. Small files only, since it holds a file whole.
 *
 * With `safe` it also does, the leanest way, every step ours takes to keep a small file safe:
 * ours's `Journal` with the same seven transitions (the write-ahead `archiving` committed before
 * the link), a second look at the file before it is read (ours's settling with no wait), a look
 * for its XMP sidecar under ours's four names, ours's `CheckBatcher` for the duplicate check, a hard link into the archive checked to be the version
 * uploaded, one folder fsync shared by the links made in the same turn, the unlink of the
 * original and a log line per file, with its file calls synchronous on the main thread. That is the best any
 * uploader with ours's guarantees can do here: the distance from it to ours is ours's own
 * machinery, and from it to the target is the price of the guarantees on this machine.
 *
 * It runs in a process of its own (this file is also its program), so that its code starts as
 * cold as any tool's. That process runs through tsx, whose start-up is not an uploader's, so the
 * program times its own work, from the folder walk to the last answer, and `runBareUploader`
 * adds the start and exit of an empty Node process, measured once per run.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { basename, dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { BulkCheckItem, BulkCheckResult } from '../../src/immich/client.js';
import { filesInFlight } from '../../src/daemon.js';
import { buildMultipart } from '../../src/immich/multipart.js';
import { Journal, type FileVersionRef } from '../../src/journal/journal.js';
import { syncFolderNow } from '../../src/pipeline/archive-temporaries.js';
import { CheckBatcher } from '../../src/pipeline/check.js';
import { sidecarNames } from '../../src/pipeline/sidecar.js';
import { systemClock } from '../../src/support/clock.js';
import { createLogger, type Logger } from '../../src/support/logger.js';
import { REPO_ROOT } from '../lib/paths.js';
import { runChecked } from '../lib/proc.js';

export interface BareRun {
  /** Its work, plus an empty Node process's start and exit. */
  ms: number;
  /** Its work alone. */
  workMs: number;
  /** CPU time (user + system) during its work. */
  cpuMs: number;
  uploaded: number;
}

/** Where the safe steps keep the journal and put the originals. */
export interface SafeSteps {
  archive: string;
  state: string;
}

const DATE = '2024-05-01T12:00:00.000Z';
const THIS_FILE = fileURLToPath(import.meta.url);
/** The start of the one line of standard output that is the report (the safe steps log there too). */
const REPORT = '{"report":';

/** Runs the bare uploader with `node` over `dir` against the server; `startMs` from nodeStartMs. */
export async function runBareUploader(
  node: string,
  dir: string,
  server: { apiUrl: string; key: string },
  concurrency: number,
  startMs: number,
  safe?: SafeSteps,
): Promise<BareRun> {
  let report: Omit<BareRun, 'ms'> | undefined;
  const args = [dir, server.apiUrl, String(concurrency), ...(safe ? [safe.archive, safe.state] : [])];
  await runChecked(node, ['--import', 'tsx', THIS_FILE, ...args], {
    // tsx is found from the project.
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, BARE_UPLOADER_KEY: server.key },
    onStdoutLine: (line) => {
      if (line.startsWith(REPORT)) report = (JSON.parse(line) as { report: Omit<BareRun, 'ms'> }).report;
    },
  });
  if (!report) throw new Error('bare uploader: no report');
  return { ...report, ms: report.workMs + startMs };
}

/** Wall time to start a Node process that does nothing and see it exit: the median of three. */
export function nodeStartMs(node: string): number {
  const times = [1, 2, 3].map(() => {
    const started = performance.now();
    spawnSync(node, ['-e', '0'], { stdio: 'ignore' });
    return performance.now() - started;
  });
  return times.sort((a, b) => a - b)[1] ?? Number.NaN;
}

/** The steps around a file's upload; the bare uploader has none. */
interface Steps {
  /** Before the file is read: its version. */
  found(path: string): FileVersionRef;
  hashed(file: FileVersionRef, checksum: string): Promise<void>;
  /** The server's answer to the upload. */
  uploaded(file: FileVersionRef, answer: string): Promise<void>;
  close(): void;
}

async function uploadAll(dir: string, apiUrl: string, key: string, concurrency: number, safe?: SafeSteps): Promise<Omit<BareRun, 'ms'>> {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const paths = readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const steps = safe ? safeSteps(dir, safe, (path, json) => post(`${apiUrl}/${path}`, agent, jsonHeaders(key, json), [json])) : undefined;
  // With more files in progress than uploads, `concurrency` uploads at a time, as ours.
  const uploads = slots(concurrency);
  let next = 0;
  let uploaded = 0;
  const worker = async (): Promise<void> => {
    for (let path = paths[next++]; path !== undefined; path = paths[next++]) {
      const file = steps?.found(path);
      const bytes = readFileSync(path);
      const checksum = createHash('sha1').update(bytes).digest('hex');
      if (steps && file) await steps.hashed(file, checksum);
      const body = buildMultipart(
        { fileCreatedAt: DATE, fileModifiedAt: DATE },
        { name: 'assetData', filename: basename(path), contentType: 'application/octet-stream', bytes },
      );
      if (!('buffers' in body)) throw new Error('a body built from bytes is made of buffers');
      const headers = {
        'x-api-key': key,
        'x-immich-checksum': checksum,
        'content-type': body.contentType,
        'content-length': String(body.contentLength),
      };
      const answer = await uploads(() => post(`${apiUrl}/assets`, agent, headers, body.buffers));
      if (answer.status !== 201) throw new Error(`the server answered ${answer.status} for ${path}`);
      if (steps && file) await steps.uploaded(file, answer.body);
      uploaded++;
    }
  };
  try {
    // With the safe steps, as many files in progress as ours has, so that checks gather in batches.
    await Promise.all(Array.from({ length: steps ? filesInFlight(concurrency) : concurrency }, worker));
  } finally {
    agent.destroy();
    steps?.close();
  }
  const cpu = process.cpuUsage(cpuBefore);
  return { workMs: performance.now() - started, cpuMs: (cpu.user + cpu.system) / 1000, uploaded };
}

/**
 * The safe steps, each the leanest way (see the top of this file). Every file is new to the
 * server, as in the benchmark: a verdict other than "accept" is an error.
 */
function safeSteps(dir: string, safe: SafeSteps, postJson: (path: string, json: Buffer) => Promise<Answer>): Steps {
  const logger: Logger = createLogger({ level: 'info', format: 'json' });
  const journal = Journal.open({ directory: safe.state, logger });
  const checker = new CheckBatcher({
    clock: systemClock,
    send: async (items: BulkCheckItem[]) => {
      const answer = await postJson('assets/bulk-upload-check', Buffer.from(JSON.stringify({ assets: items })));
      return (JSON.parse(answer.body) as { results: BulkCheckResult[] }).results;
    },
  });
  const folders = new Set<string>();
  const syncs = new Map<string, Array<() => void>>();
  // Links made into one folder in the same turn share its fsync.
  const syncFolder = (folder: string): Promise<void> =>
    new Promise((resolve) => {
      const waiting = syncs.get(folder);
      if (waiting) return void waiting.push(resolve);
      syncs.set(folder, [resolve]);
      setImmediate(() => {
        const waiters = syncs.get(folder) ?? [];
        syncs.delete(folder);
        syncFolderNow(folder);
        for (const wake of waiters) wake();
      });
    });
  return {
    found: (path) => {
      const file = versionOf(path);
      journal.recordLater(file, 'discovered');
      if (!sameVersion(versionOf(path), file)) throw new Error(`${path} changed while the benchmark ran`);
      const { own, shared } = sidecarNames(path);
      if ([...own, ...shared].some((name) => lstatSync(name, { throwIfNoEntry: false }) !== undefined)) {
        throw new Error(`${path} has a sidecar: the benchmark's files have none`);
      }
      journal.recordLater(file, 'settled');
      return file;
    },
    hashed: async (file, checksum) => {
      journal.recordLater(file, 'hashed', { checksum });
      const verdict = await checker.check(checksum);
      if (verdict.kind !== 'accept') throw new Error(`the server already has ${file.path}`);
      journal.recordLater(file, 'uploading');
    },
    uploaded: async (file, answer) => {
      const assetId = (JSON.parse(answer) as { id: string }).id;
      journal.recordLater(file, 'on-server', { assetId, serverStatus: 'created' });
      const target = join(safe.archive, relative(dir, file.path));
      await journal.recordWriteAhead(file, 'archiving', { archivePath: target });
      const folder = dirname(target);
      if (!folders.has(folder)) {
        mkdirSync(folder, { recursive: true });
        folders.add(folder);
      }
      linkSync(file.path, target);
      if (!sameVersion(versionOf(target), file)) throw new Error(`${file.path} changed while the benchmark ran`);
      await syncFolder(folder);
      unlinkSync(file.path);
      journal.recordLater(file, 'archived', { archivePath: target });
      logger.info({ file: relative(dir, file.path), bytes: file.size, assetId }, `uploaded ${relative(dir, file.path)}, archived`);
    },
    close: () => journal.close(),
  };
}

function versionOf(path: string): FileVersionRef {
  const { size, mtimeMs } = lstatSync(path);
  return { path, size, mtimeMs };
}

function sameVersion(a: FileVersionRef, b: FileVersionRef): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/**
 * Runs at most `count` of the given works at once, in the order they come. Not p-queue, which ours
 * uses: this program leaves ours's machinery out on purpose.
 */
function slots(count: number): <T>(work: () => Promise<T>) => Promise<T> {
  let free = count;
  const waiting: Array<() => void> = [];
  return async (work) => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}

function jsonHeaders(key: string, json: Buffer): Record<string, string> {
  return { 'x-api-key': key, 'content-type': 'application/json', 'content-length': String(json.length) };
}

interface Answer {
  status: number;
  body: string;
}

function post(url: string, agent: Agent, headers: Record<string, string>, body: readonly Buffer[]): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const buffer of body) req.write(buffer);
    req.end();
  });
}

if (process.argv[1] === THIS_FILE) {
  const [dir, apiUrl, concurrency, archive, state] = process.argv.slice(2);
  const key = process.env.BARE_UPLOADER_KEY;
  if (dir === undefined || apiUrl === undefined || concurrency === undefined || key === undefined || (archive === undefined) !== (state === undefined)) {
    process.stderr.write('usage: BARE_UPLOADER_KEY=... node --import tsx bench/tools/bare-uploader.ts DIR API_URL CONCURRENCY [ARCHIVE STATE]\n');
    process.exit(2);
  }
  const safe = archive !== undefined && state !== undefined ? { archive, state } : undefined;
  const report = await uploadAll(dir, apiUrl, key, Number(concurrency), safe);
  process.stdout.write(`${REPORT}${JSON.stringify(report)}}\n`);
}
