/**
 * The machine's limit for a workload, measured on the same files in the same run:
 *  - hashing bound: `openssl dgst -sha1` over every file, split into `concurrency` parallel
 *    processes (balanced by bytes);
 *  - network bound: curl streaming every file's raw bytes (no multipart, no hashing on either side)
 *    to the benchmark server's sink, `concurrency` transfers at a time.
 * The limit is the slower of the two: no uploader that must both hash and send can beat it.
 * For context, curl also uploads every file to the fake Immich itself, as clients do (multipart
 * `POST /api/assets`, which the server parses and SHA-1s) but without hashing anything on the
 * client: what this server process can take at most.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runChecked } from '../lib/proc.js';

export interface LimitFile {
  path: string;
  size: number;
}

/** At most this many paths per openssl invocation (keeps argument lists short). */
const PATHS_PER_CALL = 500;

function balance(files: readonly LimitFile[], groups: number): LimitFile[][] {
  const buckets = Array.from({ length: Math.max(1, Math.min(groups, files.length)) }, () => ({ bytes: 0, files: [] as LimitFile[] }));
  for (const file of [...files].sort((a, b) => b.size - a.size)) {
    const lightest = buckets.reduce((min, bucket) => (bucket.bytes < min.bytes ? bucket : min));
    lightest.files.push(file);
    lightest.bytes += file.size;
  }
  return buckets.map((bucket) => bucket.files);
}

/** Wall time for openssl to SHA-1 every file, `concurrency` processes at a time. */
export async function hashLimitMs(files: readonly LimitFile[], concurrency: number, cwd: string): Promise<number> {
  const started = performance.now();
  let hashed = 0;
  await Promise.all(
    balance(files, concurrency).map(async (group) => {
      for (let i = 0; i < group.length; i += PATHS_PER_CALL) {
        const paths = group.slice(i, i + PATHS_PER_CALL).map((file) => file.path);
        await runChecked('openssl', ['dgst', '-sha1', ...paths], {
          cwd,
          env: { PATH: process.env.PATH },
          tailLines: 1,
          onStdoutLine: () => {
            hashed += 1;
          },
        });
      }
    }),
  );
  const ms = performance.now() - started;
  if (hashed !== files.length) throw new Error(`openssl hashed ${hashed} of ${files.length} files`);
  return ms;
}

/** Wall time for curl to POST every file's raw bytes to the sink, `concurrency` at a time. */
export async function networkLimitMs(files: readonly LimitFile[], sinkUrl: string, concurrency: number, cwd: string): Promise<number> {
  const entries = files.map((file, i) => `url = ${quote(`${sinkUrl}/raw/${i}`)}\nupload-file = ${quote(file.path)}\noutput = "/dev/null"\n`);
  return runCurl(join(cwd, 'curl-raw.conf'), entries.join(''), concurrency, cwd, [
    '--fail',
    '--request',
    'POST',
    '--header',
    'content-type: application/octet-stream',
    // No `Expect: 100-continue` round trip before each body.
    '--header',
    'Expect:',
  ]);
}

/**
 * Wall time for curl to upload every file to the fake Immich as a client does (multipart, the
 * v3 fields), `concurrency` at a time. Each transfer is an operation of its own in curl's config
 * (`next`), since each has its own form.
 */
export async function serverUploadsMs(
  files: readonly LimitFile[],
  server: { apiUrl: string; key: string },
  concurrency: number,
  cwd: string,
): Promise<number> {
  const date = '2024-05-01T12:00:00.000Z';
  const entries = files.map((file) =>
    [
      `url = ${quote(`${server.apiUrl}/assets`)}`,
      'fail',
      `header = ${quote(`x-api-key: ${server.key}`)}`,
      // No `Expect: 100-continue` round trip before each body.
      'header = "Expect:"',
      `form = ${quote(`fileCreatedAt=${date}`)}`,
      `form = ${quote(`fileModifiedAt=${date}`)}`,
      `form = ${quote(`assetData=@${file.path};type=application/octet-stream`)}`,
      'output = "/dev/null"',
      '',
    ].join('\n'),
  );
  return runCurl(join(cwd, 'curl-uploads.conf'), entries.join('next\n'), concurrency, cwd, []);
}

const quote = (value: string): string => `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;

/** Runs curl over a config of transfers, `concurrency` at a time; resolves with its wall time. */
async function runCurl(config: string, text: string, concurrency: number, cwd: string, options: string[]): Promise<number> {
  await writeFile(config, text);
  const args = [
    '--silent',
    '--show-error',
    '--parallel',
    '--parallel-max',
    String(concurrency),
    ...options,
    '--config',
    config,
  ];
  const exit = await runChecked('curl', args, { cwd, env: { PATH: process.env.PATH } });
  return exit.ms;
}
