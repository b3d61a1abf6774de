/**
 * A look inside a running uploader's memory, for the endurance workload: Node flags that load a
 * few lines into ours's main thread before it starts. On SIGUSR2 they run two full garbage
 * collections and append `process.memoryUsage()` as one JSON line to the file named by
 * `IAU_HEAP_PROBE`. What is left after a full collection is what the process holds on to, so
 * its trend over many files shows a leak that RSS, which garbage and the allocator blur, hides.
 * Ours has no SIGUSR2 handler of its own; the file-system thread loads the lines too and ignores
 * them.
 */
import { readFile } from 'node:fs/promises';
import { sleep } from '../lib/context.js';

export const HEAP_PROBE_VARIABLE = 'IAU_HEAP_PROBE';

const SOURCE = `
import { appendFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
if (isMainThread) {
  process.on('SIGUSR2', () => {
    globalThis.gc();
    globalThis.gc();
    const { rss, heapUsed, external } = process.memoryUsage();
    appendFileSync(process.env.${HEAP_PROBE_VARIABLE}, JSON.stringify({ rss, heapUsed, external }) + '\\n');
  });
}
`;

/** The flags that load the probe (and let it collect garbage on demand). */
export const HEAP_PROBE_FLAGS = ['--expose-gc', `--import=data:text/javascript,${encodeURIComponent(SOURCE)}`];

/** Bytes, after two full garbage collections. */
export interface HeapReading {
  rss: number;
  heapUsed: number;
  external: number;
}

/**
 * Signals `pid` and waits for its reading, the `count`-th line of `file` (counting from 1).
 * Rejects after `timeoutMs`.
 */
export async function readHeap(pid: number, file: string, count: number, timeoutMs = 15_000): Promise<HeapReading> {
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = (await readFile(file, 'utf8').catch(() => '')).split('\n').filter((line) => line !== '');
    const line = lines[count - 1];
    if (line !== undefined) return JSON.parse(line) as HeapReading;
    if (Date.now() > deadline) throw new Error(`the heap probe wrote no reading ${count} within ${timeoutMs} ms`);
    await sleep(50);
  }
}
