import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Journal, JournalError } from '../../src/journal/journal.js';
import { acquireLock, isLocked, OWNER_FILE, type InstanceLock } from '../../src/journal/lock.js';
import { captureOutput } from '../helpers/cli.js';
import { thrownBy } from '../helpers/expect-error.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const CHILD = fileURLToPath(new URL('../fixtures/journal-lock-child.ts', import.meta.url));

interface ChildAnswer {
  ok: boolean;
  pid?: number;
  kind?: string;
  message?: string;
}

interface Child {
  process: ChildProcess;
  /** The child's one JSON line. */
  answer: Promise<ChildAnswer>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let dir: Awaited<ReturnType<typeof makeTempDir>>;
const children: ChildProcess[] = [];
const locks: InstanceLock[] = [];

beforeEach(async () => {
  dir = await makeTempDir('iau-journal-lock-');
});
afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  for (const lock of locks.splice(0)) lock.release();
  await dir.remove();
});

function startChild(mode: 'hold' | 'write' | 'try', directory: string): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, mode, directory], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const { stdout, stderr, exited } = captureOutput(child);
  const answer = waitFor(
    () => {
      const out = stdout();
      if (child.exitCode !== null && !out.includes('\n')) throw new Error(`child exited ${child.exitCode}: ${stderr()}`);
      const line = out.split('\n')[0];
      return out.includes('\n') && line ? (JSON.parse(line) as ChildAnswer) : undefined;
    },
    { timeoutMs: 20_000, message: () => `the child's answer (stderr: ${stderr()})` },
  );
  return { process: child, answer, exited };
}

function take(directory: string): InstanceLock {
  const lock = acquireLock(directory);
  locks.push(lock);
  return lock;
}


describe('acquireLock', () => {
  it('refuses a second process while this one holds the lock', async () => {
    take(dir.path);
    const answer = await startChild('try', dir.path).answer;
    expect(answer.ok).toBe(false);
    expect(answer.kind).toBe('locked');
    expect(answer.message).toContain(`pid ${process.pid}`);
    expect(answer.message).toContain(`STATE_DIRECTORY ${dir.path}`);
    expect(answer.message).toContain('stop it first, or give this one its own STATE_DIRECTORY');
  });

  it('refuses this process while a child holds it, naming the child', async () => {
    const child = startChild('hold', dir.path);
    const { pid } = await child.answer;
    expect(isLocked(dir.path)).toBe(true);
    const error = thrownBy(JournalError, () => take(dir.path));
    expect(error.kind).toBe('locked');
    expect(error.message).toMatch(new RegExp(`another immich-auto-uploader \\(pid ${pid}, started \\d{4}-\\d\\d-\\d\\dT`));
  });

  it('is freed by the kernel when the holder is killed with SIGKILL', async () => {
    const child = startChild('hold', dir.path);
    await child.answer;
    expect(isLocked(dir.path)).toBe(true);
    child.process.kill('SIGKILL');
    expect((await child.exited).signal).toBe('SIGKILL');
    expect(isLocked(dir.path)).toBe(false);
    const lock = take(dir.path);
    expect(isLocked(dir.path)).toBe(true);
    lock.release();
  });

  it('is not blocked by a dead holder that had our own pid (Docker restarts as pid 1)', async () => {
    // What a killed pid-1 container leaves: the lock file and a note naming "our" pid.
    const first = acquireLock(dir.path);
    first.release();
    await writeFile(join(dir.path, OWNER_FILE), JSON.stringify({ pid: process.pid, startedAt: new Date(0).toISOString(), hostname: 'x' }));
    const lock = take(dir.path);
    expect(isLocked(dir.path)).toBe(true);
    lock.release();
  });

  it('refuses a second acquire within the same process', () => {
    take(dir.path);
    expect(thrownBy(JournalError, () => acquireLock(dir.path)).kind).toBe('locked');
  });

  it('release() frees it, for this process and for others, and is idempotent', async () => {
    const lock = take(dir.path);
    lock.release();
    lock.release();
    expect(isLocked(dir.path)).toBe(false);
    const answer = await startChild('try', dir.path).answer;
    expect(answer).toMatchObject({ ok: true });
    take(dir.path).release();
  });

  it('a clean exit of the holder frees it', async () => {
    const child = startChild('hold', dir.path);
    await child.answer;
    child.process.stdin?.end();
    expect((await child.exited).code).toBe(0);
    expect(isLocked(dir.path)).toBe(false);
  });
});

describe('isLocked', () => {
  it('is false for a directory that never had a lock, and creates nothing there', async () => {
    expect(isLocked(join(dir.path, 'missing'))).toBe(false);
    expect(isLocked(dir.path)).toBe(false);
    expect(await readdir(dir.path)).toEqual([]);
  });
});

describe('readers beside the writer', () => {
  it('openReadOnly reads while another process holds the lock and writes the journal', async () => {
    const child = startChild('write', dir.path);
    await child.answer;
    expect(isLocked(dir.path)).toBe(true);
    const reader = Journal.openReadOnly(dir.path);
    expect(reader).toBeDefined();
    try {
      expect(reader?.current('/watch/b.jpg')?.state).toBe('settled');
      expect(reader?.counts()).toMatchObject({ discovered: 1, settled: 1 });
      expect(reader?.history('a.jpg')[0]?.transitions.map((t) => t.state)).toEqual(['discovered']);
      expect(() => reader?.record({ path: '/x', size: 1, mtimeMs: 1 }, 'discovered')).toThrow(JournalError);
    } finally {
      reader?.close();
    }
  });

  it('openReadOnly reads while this process writes', () => {
    take(dir.path);
    const writer = Journal.open({ directory: dir.path, logger: pino({ level: 'silent' }) });
    try {
      writer.record({ path: '/watch/c.jpg', size: 3, mtimeMs: 3000 }, 'discovered');
      const reader = Journal.openReadOnly(dir.path);
      try {
        expect(reader?.current('/watch/c.jpg')?.state).toBe('discovered');
        writer.record({ path: '/watch/c.jpg', size: 3, mtimeMs: 3000 }, 'settled');
        expect(reader?.current('/watch/c.jpg')?.state).toBe('settled');
      } finally {
        reader?.close();
      }
    } finally {
      writer.close();
    }
  });
});

describe('a writer killed with SIGKILL', () => {
  it('leaves a journal the next start opens, with its unfinished rows, and no lock in the way', async () => {
    const child = startChild('write', dir.path);
    await child.answer;
    child.process.kill('SIGKILL');
    await child.exited;
    const lock = take(dir.path);
    const journal = Journal.open({ directory: dir.path, logger: pino({ level: 'silent' }) });
    try {
      expect(journal.unfinished().map((row) => [row.path, row.state])).toEqual([
        ['/watch/a.jpg', 'discovered'],
        ['/watch/b.jpg', 'settled'],
      ]);
    } finally {
      journal.close();
      lock.release();
    }
  });
});
