/**
 * The benchmark server: the project's fake Immich (test/fakes/serve.ts) in its own process on
 * 127.0.0.1, answering like the v3 API and discarding the bytes it receives (it still counts and
 * hashes them), with the raw-bytes sink beside it for the network bound.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { liveChildren } from './proc.js';
import { readCpuMs } from './rss.js';
import { REPO_ROOT } from './paths.js';

export interface ServerStats {
  assets: number;
  uploads: number;
  bytesReceived: number;
  requests: number;
  sinkRequests: number;
  sinkBytes: number;
}

export interface BenchServer {
  /** `http://127.0.0.1:PORT` (no /api) */
  readonly url: string;
  readonly apiUrl: string;
  /** The sink's URL: any path, any method; the body is read, hashed and discarded. */
  readonly sinkUrl: string;
  /** A key with every permission (the official CLI calls users/me). */
  readonly key: string;
  /** The server process's CPU time so far (user + system, ms): the difference over a run tells how busy it was. */
  cpuMs(): number;
  /** Stops the server and returns what it received. */
  stop(): Promise<ServerStats>;
}

export async function startBenchServer(): Promise<BenchServer> {
  const key = randomBytes(16).toString('hex');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO_ROOT, 'test', 'fakes', 'serve.ts'), '--discard', '--major', '3', '--key', key, '--sink'],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (!child.stdout) throw new Error('benchmark server: no stdout');
  const lines = createInterface({ input: child.stdout });
  const iterator = lines[Symbol.asyncIterator]();
  const first = await Promise.race([
    iterator.next(),
    new Promise<never>((_, reject) => {
      child.once('exit', (code) => reject(new Error(`benchmark server exited with ${code} before listening`)));
    }),
  ]);
  if (first.done === true) throw new Error('benchmark server: no address printed');
  const { url, sinkUrl } = JSON.parse(first.value) as { url: string; sinkUrl: string };
  return {
    url,
    apiUrl: `${url}/api`,
    sinkUrl,
    key,
    cpuMs: () => readCpuMs(child.pid ?? -1) ?? Number.NaN,
    async stop() {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const next = await iterator.next();
      await exited;
      lines.close();
      if (next.done === true) throw new Error('benchmark server: no statistics printed');
      return JSON.parse(next.value) as ServerStats;
    },
  };
}
