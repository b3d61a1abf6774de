/**
 * A thread for the small file-system calls every file needs (lstat, link, unlink, reading a
 * small file whole and hashing it). On Node each asynchronous fs call hands one job to the
 * thread pool and wakes a sleeping thread for it: measured on the benchmark machine, 15-50 µs of
 * main-thread time per call, where the call itself takes 4 µs. This thread runs the synchronous
 * calls one after another, and requests and answers cross in batches, so the
 * main thread keeps its time for the uploads. It starts at the first request and does not keep
 * the process alive while idle. Slow calls (fsync, copies, large files) stay on the thread pool.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { abortReason } from './clock.js';

export interface PlainStats {
  size: number;
  mtimeMs: number;
  /** Which file it is: the same inode of the same device is the same file, whatever its names. */
  ino: number;
  dev: number;
  atimeMs: number;
  birthtimeMs: number;
  isFile: boolean;
}

/** What the main thread asks. */
export type FsRequest = { id: number } & (
  | { op: 'lstat'; path: string }
  | { op: 'link'; from: string; to: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'unlink'; path: string }
  /** `into`: memory to read into (at least `size + 1` bytes), transferred there and back. */
  | { op: 'readWhole'; path: string; size: number; into: ArrayBuffer }
  | { op: 'hash'; path: string; size: number }
  | { op: 'readFirst'; paths: string[]; maxBytes: number }
);

/** What the thread answers: a result, the bytes of a whole-file read, or an errno record. */
export type FsAnswer = { id: number } & (
  | { result: PlainStats | null }
  | { checksum: string; filled: number; bytes: ArrayBuffer }
  | { hashed: { checksum: string; size: number } }
  | { first: FirstFile | null }
  | { error: { code?: string; message: string; syscall?: string; path?: string } }
);

/**
 * The first of several names that is a regular file, its version and, when it is at most the
 * size asked for and held still while it was read, its bytes (else null).
 */
export interface FirstFile {
  path: string;
  size: number;
  mtimeMs: number;
  bytes: Uint8Array | null;
}

/** A whole-file read: the bytes read (at most `size + 1`) and their SHA-1. */
export interface WholeFile {
  checksum: string;
  bytes: Buffer;
}

interface Waiter {
  resolve: (answer: FsAnswer) => void;
  reject: (error: Error) => void;
}

/** One running thread with the requests sent to it and those still to be sent. */
interface Thread {
  worker: Worker;
  waiting: Map<number, Waiter>;
  outbox: FsRequest[];
  /** Memory the outbox's requests carry, moved to the thread with them. */
  outboxTransfer: ArrayBuffer[];
}

type RequestBody = FsRequest extends infer R ? (R extends FsRequest ? Omit<R, 'id'> : never) : never;

/** Whole-file read buffers are this many bytes, rounded up: a file reuses any spare of its class. */
const READ_CLASS_BYTES = 64 * 1024;
/** Spare read buffers kept for reuse, at most (beyond it they are left to the garbage collector). */
const MAX_SPARE_BYTES = 8 * 1024 * 1024;

/**
 * Memory for whole-file reads, used again and again. Each read needs memory of its own that
 * crosses to the thread and back (a transfer moves it without copying). Allocated fresh per file,
 * 2,000 small files a few seconds apart made V8 run a full collection every 80 files or so to
 * account for the memory (24 in the benchmark's 2,000 files, 5-10 ms of main thread each).
 * Buffers handed back with `recycle` go to the next reads instead.
 */
class ReadBuffers {
  #spare: ArrayBuffer[] = [];
  #spareBytes = 0;
  /** What readWhole gave out and may come back; a transfer makes a new object, so these are the received ones. */
  readonly #issued = new WeakSet<ArrayBuffer>();

  take(bytes: number): ArrayBuffer {
    const size = Math.ceil(bytes / READ_CLASS_BYTES) * READ_CLASS_BYTES;
    const index = this.#spare.findIndex((buffer) => buffer.byteLength === size);
    if (index === -1) return new ArrayBuffer(size);
    const [buffer] = this.#spare.splice(index, 1) as [ArrayBuffer];
    this.#spareBytes -= buffer.byteLength;
    return buffer;
  }

  issued(buffer: ArrayBuffer): void {
    this.#issued.add(buffer);
  }

  give(buffer: ArrayBufferLike): void {
    // Only memory readWhole gave out, once: anything else may still be someone's.
    if (!(buffer instanceof ArrayBuffer) || !this.#issued.delete(buffer)) return;
    if (this.#spareBytes + buffer.byteLength > MAX_SPARE_BYTES) return;
    this.#spare.push(buffer);
    this.#spareBytes += buffer.byteLength;
  }
}

export class FsWorker {
  #thread: Thread | undefined;
  #nextId = 1;
  readonly #buffers = new ReadBuffers();

  async lstat(path: string): Promise<PlainStats> {
    const answer = await this.#ask({ op: 'lstat', path });
    return (answer as { result: PlainStats }).result;
  }

  async link(from: string, to: string): Promise<void> {
    await this.#ask({ op: 'link', from, to });
  }

  async unlink(path: string): Promise<void> {
    await this.#ask({ op: 'unlink', path });
  }

  async rename(from: string, to: string): Promise<void> {
    await this.#ask({ op: 'rename', from, to });
  }

  /**
   * Reads a file of `size` bytes whole (asking for one byte more) and hashes what it read. Hand
   * the bytes to `recycle` once nothing uses them any more.
   */
  async readWhole(path: string, size: number, signal?: AbortSignal): Promise<WholeFile> {
    const into = this.#buffers.take(size + 1);
    const answer = (await this.#ask({ op: 'readWhole', path, size, into }, signal, [into])) as {
      checksum: string;
      filled: number;
      bytes: ArrayBuffer;
    };
    this.#buffers.issued(answer.bytes);
    return { checksum: answer.checksum, bytes: Buffer.from(answer.bytes, 0, answer.filled) };
  }

  /**
   * Takes back the memory of a readWhole result for the next reads. Every view of it becomes
   * empty when it is reused, so call it only when nothing will read those bytes again (the
   * upload is over, retries included). Anything else, or the same bytes twice, is ignored.
   */
  recycle(bytes: Buffer): void {
    this.#buffers.give(bytes.buffer);
  }

  /**
   * Hashes a file of `size` bytes (a large one) in 1 MiB reads without keeping it; the result's
   * size differs from `size` if the file changed. An abort stops the wait, not the hash.
   */
  async hash(path: string, size: number, signal?: AbortSignal): Promise<{ checksum: string; size: number }> {
    const answer = await this.#ask({ op: 'hash', path, size }, signal);
    return (answer as { hashed: { checksum: string; size: number } }).hashed;
  }

  /**
   * The first of `paths` that is a regular file (symbolic links are passed over), read whole if it
   * has at most `maxBytes`; null when none is. Never fails: a name that cannot be looked at is
   * passed over, and one that cannot be read comes back without its bytes.
   */
  async readFirst(paths: string[], maxBytes: number, signal?: AbortSignal): Promise<FirstFile | null> {
    const answer = await this.#ask({ op: 'readFirst', paths, maxBytes }, signal);
    return (answer as { first: FirstFile | null }).first;
  }

  /** Stops the thread; its requests still waiting fail. The next request starts a new one. */
  async close(): Promise<void> {
    const thread = this.#thread;
    this.#thread = undefined;
    await thread?.worker.terminate();
  }

  #ask(body: RequestBody, signal?: AbortSignal, transfer: ArrayBuffer[] = []): Promise<FsAnswer> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const thread = this.#started();
    const id = this.#nextId++;
    return new Promise<FsAnswer>((resolve, reject) => {
      // An aborted caller stops waiting; the thread finishes the call and its answer is dropped.
      const onAbort = (): void => {
        settle(thread, id);
        reject(abortReason(signal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (): void => signal?.removeEventListener('abort', onAbort);
      thread.waiting.set(id, {
        resolve: (answer) => {
          done();
          if ('error' in answer) reject(toErrnoError(answer.error));
          else resolve(answer);
        },
        reject: (error) => {
          done();
          reject(error);
        },
      });
      if (thread.waiting.size === 1) thread.worker.ref();
      send(thread, { ...body, id }, transfer);
    });
  }

  #started(): Thread {
    if (this.#thread) return this.#thread;
    const thread: Thread = { worker: startThread(), waiting: new Map(), outbox: [], outboxTransfer: [] };
    thread.worker.unref();
    thread.worker.on('message', (answers: FsAnswer[]) => {
      for (const answer of answers) settle(thread, answer.id)?.resolve(answer);
    });
    const fail = (error: Error): void => {
      if (this.#thread === thread) this.#thread = undefined;
      for (const id of [...thread.waiting.keys()]) settle(thread, id)?.reject(error);
    };
    // 'exit' follows 'error'; by then nothing of this thread's is left waiting.
    thread.worker.on('error', fail);
    thread.worker.on('exit', (code) => fail(new Error(`the file-system thread stopped (exit code ${code})`)));
    this.#thread = thread;
    return thread;
  }
}

/** Requests made before the next microtask checkpoint (one callback's worth, say) go in one message. */
function send(thread: Thread, request: FsRequest, transfer: ArrayBuffer[]): void {
  thread.outbox.push(request);
  thread.outboxTransfer.push(...transfer);
  if (thread.outbox.length > 1) return;
  queueMicrotask(() => {
    const batch = thread.outbox;
    const moved = thread.outboxTransfer;
    thread.outbox = [];
    thread.outboxTransfer = [];
    thread.worker.postMessage(batch, moved);
  });
}

/** Takes a request's waiter off the thread's list; an idle thread does not keep the process alive. */
function settle(thread: Thread, id: number): Waiter | undefined {
  const waiter = thread.waiting.get(id);
  thread.waiting.delete(id);
  if (thread.waiting.size === 0) thread.worker.unref();
  return waiter;
}

/**
 * Starts the thread from the compiled module next to this one; under the tests, which run the
 * TypeScript sources, through tsx (a development dependency), which the thread must register itself.
 */
function startThread(): Worker {
  // Its heap only ever holds a few small objects per request.
  const resourceLimits = { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 };
  const compiled = new URL('./fs-thread.js', import.meta.url);
  if (existsSync(fileURLToPath(compiled))) return new Worker(compiled, { resourceLimits });
  const source = JSON.stringify(new URL('./fs-thread.ts', import.meta.url).href);
  const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${source}); });`;
  return new Worker(boot, { eval: true, resourceLimits });
}

/** An Error shaped like Node's own fs errors, so callers can test `code` as they always do. */
function toErrnoError(plain: { code?: string; message: string; syscall?: string; path?: string }): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(plain.message);
  if (plain.code !== undefined) error.code = plain.code;
  if (plain.syscall !== undefined) error.syscall = plain.syscall;
  if (plain.path !== undefined) error.path = plain.path;
  return error;
}
