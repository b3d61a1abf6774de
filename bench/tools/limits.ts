/**
 * The machine's limit for a workload, measured on the same files in the same run:
 *  - hashing bound: `openssl dgst -sha1` over every file, split into `concurrency` parallel
 *    processes (balanced by bytes);
 *  - network bound: curl streaming every file's raw bytes (no multipart, no hashing on either side)
 *    to the benchmark server's sink, `concurrency` transfers at a time.
 * The limit is the slower of the two: no uploader that must both hash and send can beat it.
 * For context the same transfer is also measured against the sink hashing what it receives (as
 * the fake Immich does with every upload): what this server process can take at most.
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

/**
 * Wall time for curl to POST every file's raw bytes to the sink, `concurrency` at a time;
 * `hashed`: the sink SHA-1s the bodies.
 */
export async function networkLimitMs(
  files: readonly LimitFile[],
  sinkUrl: string,
  concurrency: number,
  cwd: string,
  hashed = false,
): Promise<number> {
  const config = join(cwd, `curl-uploads-${hashed ? 'hashed' : 'raw'}.conf`);
  const quote = (value: string): string => `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
  const entries = files.map((file, i) => `url = ${quote(`${sinkUrl}/${hashed ? 'hashed' : 'raw'}/${i}`)}\nupload-file = ${quote(file.path)}\noutput = "/dev/null"\n`);
  await writeFile(config, entries.join(''));
  const args = [
    '--silent',
    '--show-error',
    '--fail',
    '--parallel',
    '--parallel-max',
    String(concurrency),
    '--request',
    'POST',
    // No `Expect: 100-continue` round trip before each body.
    '--header',
    'Expect:',
    '--header',
    'content-type: application/octet-stream',
    '--config',
    config,
  ];
  const exit = await runChecked('curl', args, { cwd, env: { PATH: process.env.PATH } });
  return exit.ms;
}
