/**
 * `node --import tsx bench/journal.ts [--files 2000] [--in-flight 24] [--runs 5]`
 *
 * The journal alone, against a real SQLite file in a temporary folder: `--files` files each go
 * through the seven transitions of a move (discovered, settled, hashed, uploading, on-server,
 * archiving, archived) with `--in-flight` of them under way at once, as the pipeline interleaves
 * them: short random waits stand in for hashing, the upload and the link, and `archiving` is
 * recorded write-ahead (awaited) before the "link". Reports the main thread's busy time (event
 * loop utilisation, which counts SQLite's synchronous work and nothing idle), the process's CPU
 * time (steadier than busy time when other processes compete for the cores), the wall time and
 * how long write-ahead records waited for their commit. Median of `--runs`. `--no-journal` runs the
 * same interleaving with no journal, to show what the harness itself costs.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Journal, type FileVersionRef } from '../src/journal/journal.js';

const { values } = parseArgs({
  options: {
    files: { type: 'string', default: '2000' },
    'in-flight': { type: 'string', default: '24' },
    runs: { type: 'string', default: '5' },
    'no-journal': { type: 'boolean', default: false },
  },
});
const FILES = Number(values.files);
const IN_FLIGHT = Number(values['in-flight']);
const RUNS = Number(values.runs);
const NO_JOURNAL = values['no-journal'];

/** The part of the journal this benchmark uses. */
interface Recording {
  recordLater: Journal['recordLater'];
  writeAhead: (file: FileVersionRef, state: 'archiving', details: { archivePath: string }) => unknown;
  close(): void;
}

function openJournal(dir: string): Recording {
  if (NO_JOURNAL) return { recordLater: () => undefined, writeAhead: () => undefined, close: () => undefined };
  const journal = Journal.open({ directory: dir, logger: pino({ level: 'silent' }) });
  // Before group commit, write-ahead states went through the synchronous record().
  const writeAhead = (journal as Partial<Pick<Journal, 'recordWriteAhead'>>).recordWriteAhead?.bind(journal);
  return {
    recordLater: (file, state, details) => journal.recordLater(file, state, details),
    writeAhead: writeAhead ?? ((file, state, details) => journal.record(file, state, details)),
    close: () => journal.close(),
  };
}

interface RunResult {
  busyMs: number;
  cpuMs: number;
  wallMs: number;
  aheadWaitMs: number[];
}

/** A small deterministic generator, so every run sees the same interleaving. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

async function runOnce(): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), 'iau-bench-journal-'));
  const journal = openJournal(dir);
  const next = random(42);
  const aheadWaitMs: number[] = [];
  const one = async (i: number): Promise<void> => {
    const file = { path: `/watch/2024/${String(i % 50)}/IMG_${i}.jpg`, size: 200_000 + i, mtimeMs: 1_700_000_000_000 + i * 1.25 };
    journal.recordLater(file, 'discovered');
    await sleep(next() * 2); // settling
    journal.recordLater(file, 'settled');
    await sleep(next() * 3); // hashing
    journal.recordLater(file, 'hashed', { checksum: i.toString(16).padStart(40, '0') });
    journal.recordLater(file, 'uploading');
    await sleep(2 + next() * 6); // the upload
    journal.recordLater(file, 'on-server', { assetId: `asset-${i}`, serverStatus: 'created' });
    const asked = performance.now();
    await journal.writeAhead(file, 'archiving', { archivePath: `/archive/2024/${String(i % 50)}/IMG_${i}.jpg` });
    aheadWaitMs.push(performance.now() - asked);
    await sleep(next()); // the link and unlink
    journal.recordLater(file, 'archived', { archivePath: `/archive/2024/${String(i % 50)}/IMG_${i}.jpg` });
  };

  const started = performance.now();
  const elu = performance.eventLoopUtilization();
  const cpu = process.cpuUsage();
  let nextFile = 0;
  const worker = async (): Promise<void> => {
    while (nextFile < FILES) await one(nextFile++);
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  journal.close();
  const used = performance.eventLoopUtilization(elu);
  const cpuUsed = process.cpuUsage(cpu);
  const wallMs = performance.now() - started;
  const done = Journal.openReadOnly(dir);
  const archived = done?.counts().archived;
  done?.close();
  await rm(dir, { recursive: true, force: true });
  if (!NO_JOURNAL && archived !== FILES) throw new Error(`expected ${FILES} archived files, found ${String(archived)}`);
  return { busyMs: used.active, cpuMs: (cpuUsed.user + cpuUsed.system) / 1000, wallMs, aheadWaitMs };
}

const median = (numbers: number[]): number => [...numbers].sort((a, b) => a - b)[Math.floor(numbers.length / 2)] ?? Number.NaN;
const percentile = (numbers: number[], p: number): number =>
  [...numbers].sort((a, b) => a - b)[Math.min(numbers.length - 1, Math.floor(numbers.length * p))] ?? Number.NaN;

const results: RunResult[] = [];
await runOnce(); // warm-up: JIT, the page cache
for (let run = 0; run < RUNS; run++) results.push(await runOnce());
const line = (result: RunResult): string =>
  `busy ${result.busyMs.toFixed(0)} ms, cpu ${result.cpuMs.toFixed(0)} ms, wall ${result.wallMs.toFixed(0)} ms, ` +
  `write-ahead wait p50 ${median(result.aheadWaitMs).toFixed(2)} ms p99 ${percentile(result.aheadWaitMs, 0.99).toFixed(2)} ms`;
for (const result of results) console.log(line(result));
const busy = median(results.map((result) => result.busyMs));
const cpuMs = median(results.map((result) => result.cpuMs));
console.log(
  `${FILES} files x 7 transitions, ${IN_FLIGHT} in flight, median of ${RUNS}: main thread busy ${busy.toFixed(0)} ms ` +
    `(${((busy * 1000) / FILES).toFixed(0)} µs per file), process CPU ${cpuMs.toFixed(0)} ms`,
);
