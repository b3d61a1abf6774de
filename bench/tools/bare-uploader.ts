/**
 * A bare uploader, for comparison only: it reads each file whole, SHA-1s it and uploads it with
 * one multipart POST (the v3 fields and the checksum header, in the body ours builds), `concurrency`
 * at a time over one keep-alive agent, and does nothing else: no duplicate check, journal,
 * settling, archiving or logging. It shows what Node's HTTP client and the benchmark server allow
 * at this concurrency on this machine: the ceiling for any Node uploader, before the work that
 * keeps the user's files safe. Small files only, since it holds a file whole.
 *
 * It runs in a process of its own (this file is also its program), so that its code starts as
 * cold as any tool's. That process runs through tsx, whose start-up is not an uploader's, so the
 * program times its own work, from the folder walk to the last answer, and `runBareUploader`
 * adds the start and exit of an empty Node process, measured once per run.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { buildMultipart } from '../../src/immich/multipart.js';
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

const DATE = '2024-05-01T12:00:00.000Z';
const THIS_FILE = fileURLToPath(import.meta.url);

/** Runs the bare uploader over `dir` against the server; `startMs` from nodeStartMs. */
export async function runBareUploader(
  dir: string,
  server: { apiUrl: string; key: string },
  concurrency: number,
  startMs: number,
): Promise<BareRun> {
  let report: Omit<BareRun, 'ms'> | undefined;
  await runChecked(process.execPath, ['--import', 'tsx', THIS_FILE, dir, server.apiUrl, String(concurrency)], {
    // tsx is found from the project.
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, BARE_UPLOADER_KEY: server.key },
    onStdoutLine: (line) => {
      report = JSON.parse(line) as Omit<BareRun, 'ms'>;
    },
  });
  if (!report) throw new Error('bare uploader: no report');
  return { ...report, ms: report.workMs + startMs };
}

/** Wall time to start a Node process that does nothing and see it exit: the median of three. */
export function nodeStartMs(): number {
  const times = [1, 2, 3].map(() => {
    const started = performance.now();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    return performance.now() - started;
  });
  return times.sort((a, b) => a - b)[1] ?? Number.NaN;
}

async function uploadAll(dir: string, apiUrl: string, key: string, concurrency: number): Promise<Omit<BareRun, 'ms'>> {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const paths = readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  let uploaded = 0;
  const worker = async (): Promise<void> => {
    for (let path = paths[next++]; path !== undefined; path = paths[next++]) {
      const bytes = readFileSync(path);
      const checksum = createHash('sha1').update(bytes).digest('hex');
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
      const status = await post(`${apiUrl}/assets`, agent, headers, body.buffers);
      if (status !== 201) throw new Error(`the server answered ${status} for ${path}`);
      uploaded++;
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    agent.destroy();
  }
  const cpu = process.cpuUsage(cpuBefore);
  return { workMs: performance.now() - started, cpuMs: (cpu.user + cpu.system) / 1000, uploaded };
}

function post(url: string, agent: Agent, headers: Record<string, string>, body: readonly Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const buffer of body) req.write(buffer);
    req.end();
  });
}

if (process.argv[1] === THIS_FILE) {
  const [dir, apiUrl, concurrency] = process.argv.slice(2);
  const key = process.env.BARE_UPLOADER_KEY;
  if (dir === undefined || apiUrl === undefined || concurrency === undefined || key === undefined) {
    process.stderr.write('usage: BARE_UPLOADER_KEY=... node --import tsx bench/tools/bare-uploader.ts DIR API_URL CONCURRENCY\n');
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify(await uploadAll(dir, apiUrl, key, Number(concurrency)))}\n`);
}
