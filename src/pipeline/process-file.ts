import type { UploadRequest, UploadResult } from '../immich/client.js';
import { isImmichError, isMissingPermission } from '../immich/errors.js';
import { FileSizeMismatchError } from '../immich/multipart.js';
import type { CallSignals, ResilientImmich } from '../immich/resilient.js';
import { isAbortError, type Clock } from '../support/clock.js';
import type { FsWorker } from '../support/fs-worker.js';
import type { Limit } from '../support/limit.js';
import type { AfterUpload } from '../config.js';
import { messageOf } from '../support/message.js';
import { disposeOriginal, type Disposition } from './after-upload.js';
import { ArchiveError, SourceChangedError, type ArchiveFs } from './archive.js';
import type { CheckBatcher, ServerVerdict } from './check.js';
import type { LateWrites } from './late-writes.js';
import { hashSettledFile, WHOLE_FILE_MAX_BYTES, type FileHash } from './hash.js';
import { findSidecar, type FoundSidecar, type SentSidecar } from './sidecar.js';
import type { Decision, Recorder } from './states.js';
import { sameFile, sameVersion, type SettledFile } from './types.js';
import { buildUploadRequest, EarlyUpload } from './upload.js';

/** The step of the pipeline at which a file failed. */
export type FailedStage = 'hash' | 'check' | 'upload' | 'archive';

/** How one file's trip through the pipeline ended. */
export type FileOutcome =
  /**
   * `sidecarNotSent`: why the photo's sidecar did not go with it. `completes`: the asset of an
   * incomplete version of it uploaded before (LateWrites.incompleteVersionOf).
   */
  | { kind: 'uploaded'; assetId: string; disposition: Disposition; ms: number; sidecarNotSent?: string; completes?: string }
  /**
   * `inTrash`: the server's copy is in the user's trash, which Immich empties after a while.
   * `sidecarNotSent`: a sidecar was beside it, which the server, having the photo already, did not get.
   */
  | { kind: 'already-on-server'; assetId: string | undefined; disposition: Disposition; ms: number; inTrash?: true; sidecarNotSent?: true }
  | { kind: 'skipped'; reason: string }
  /**
   * `retryable`: the same bytes may succeed later (server trouble, archive folder full). `code`:
   * the system's error code of a failed archive (ENOSPC...). `loggedAs`: the id Immich's log has
   * its own failure under (a new one at each try, so not part of `message`).
   */
  | { kind: 'failed'; stage: FailedStage; message: string; retryable: boolean; code?: string; loggedAs?: string }
  /**
   * The file changed on disk while we worked on it: it goes round again. `uploadedAs`: the
   * version before the change was uploaded already, as this new asset (which the server keeps).
   * `replaced`: another file took its name after the upload (a sync tool's new version), rather
   * than a write to it.
   */
  | { kind: 'changed'; uploadedAs?: string; replaced?: true }
  /** Shutdown stopped the work; the file stays where it is. */
  | { kind: 'aborted' };

export interface ProcessDeps {
  immich: ResilientImmich;
  checker: CheckBatcher;
  /** The server's major version now, which decides the upload fields (it may change while the server restarts). */
  serverMajor: () => number;
  clock: Clock;
  /** The thread that reads small files whole (and does the archive's small calls). */
  files: FsWorker;
  /** The thread that hashes large files, while the main thread uploads. */
  hashing: FsWorker;
  /** Runs the hash step within the hashing concurrency. */
  limitHash: Limit;
  /** Runs the upload step within UPLOAD_CONCURRENCY. */
  limitUpload: Limit;
  /** What to do with the original once the server has it. */
  afterUpload: AfterUpload;
  /** The file operations of the move; the real ones unless a test simulates another disk. */
  archiveFs?: ArchiveFs;
  /** Watches the bytes uploaded for a writer that comes back once the original was taken care of. */
  lateWrites?: LateWrites;
  /** Called at each state change, before the step that depends on it. */
  record: Recorder;
  signals: CallSignals;
  /** The sidecar an earlier upload of this version sent to the asset the server has (sidecarSentTo). */
  sidecarSentBefore?: (file: SettledFile, assetId: string) => SentSidecar | undefined;
}

/**
 * Runs one settled file through hash -> check -> upload -> archive. Never throws for a problem
 * of this file: each ends as an outcome. It throws only what must stop the whole run (the
 * server refused the key).
 */
export async function processFile(file: SettledFile, deps: ProcessDeps): Promise<FileOutcome> {
  const started = deps.clock.monotonic();
  let stage: FailedStage = 'hash';
  const small = file.size <= WHOLE_FILE_MAX_BYTES;
  // A large file is uploaded while it is hashed; cancelled if the check finds it on the server.
  const early = small ? undefined : new EarlyUpload();
  // The asset our upload created, once the server confirmed it.
  let uploadedAs: string | undefined;
  // Sent by an early upload's attempts after the hash: a lost answer is then asked about.
  let knownChecksum: string | undefined;
  try {
    deps.record(file, 'settled');
    let sidecar: Promise<FoundSidecar | undefined> = NO_SIDECAR;
    // A small file's bytes travel with its hash to the upload, and are let go as soon as the
    // server has the file: memory is bounded by the files in flight (DESIGN.md).
    let hashed: FileHash | undefined = await deps.limitHash(() => {
      // Looked for with the hash's read (one message to the file-system thread), sent with the upload.
      sidecar = findSidecar(deps.files, file.path, deps.signals.wait);
      // Awaited once the server has the file; this marks a rejection handled if the file ends before.
      void sidecar.catch(() => undefined);
      // Cancelled while it waits for an upload slot, it leaves the queue at once.
      early?.start(
        async (signals, cancelled) =>
          sendUpload(buildUploadRequest(file, { checksum: () => knownChecksum }, deps.serverMajor(), await sidecar), deps, signals, cancelled),
        deps.signals,
      );
      return hashSettledFile(file.path, file.size, small ? deps.files : deps.hashing, deps.signals.wait);
    });
    if (hashed.size !== file.size) return { kind: 'changed' };
    const { checksum, bytes } = hashed;
    knownChecksum = checksum;
    // The bytes' memory serves the next small file once the upload is over or not needed.
    const doneWithBytes = (): void => {
      if (bytes) deps.files.recycle(bytes);
    };
    deps.record(file, 'hashed', { checksum });

    stage = 'check';
    // An early upload that created the asset has the server's answer: no need to ask. One that
    // found it there already does not say whether it is in the trash.
    const verdict: ServerVerdict = early?.succeeded?.status === 'created' ? { kind: 'accept' } : await deps.checker.check(checksum);
    const decision = decide(verdict);
    let assetId: string | undefined;
    let created = false;
    const refused = (message: string): FileOutcome => ({ kind: 'failed', stage, message, retryable: false });
    const inTrash = verdict.kind === 'duplicate' && verdict.trashed;
    if (inTrash && deps.afterUpload === 'delete') {
      // Immich empties its trash after a while: the original would then be gone everywhere.
      doneWithBytes();
      return { kind: 'failed', stage, message: IN_TRASH, retryable: true };
    }
    switch (decision) {
      case 'skip:unsupported':
        doneWithBytes();
        return refused('the server does not accept this file type');
      case 'server-duplicate': {
        doneWithBytes();
        hashed = undefined;
        // An early upload that got through before it could be cancelled made the asset itself.
        const sent = await early?.cancel();
        assetId = sent?.id ?? (verdict.kind === 'duplicate' ? verdict.assetId : undefined);
        created = sent?.status === 'created';
        break;
      }
      case 'upload': {
        stage = 'upload';
        deps.record(file, 'uploading');
        // From here only the request holds the bytes, and nothing holds the request once the
        // upload is over (retries included).
        const upload = early ? early.result() : sendUpload(buildUploadRequest(file, hashed, deps.serverMajor(), await sidecar), deps, deps.signals);
        hashed = undefined;
        let result;
        try {
          result = await upload;
        } finally {
          doneWithBytes();
        }
        assetId = result.id;
        created = result.status === 'created';
        break;
      }
      default: {
        const unhandled: never = decision;
        throw new Error(`unhandled decision ${String(unhandled)}`);
      }
    }
    const found = await sidecar;
    const sent = sidecarOnServer(file, found, created, assetId, deps);
    deps.record(file, 'on-server', { assetId, serverStatus: created ? 'created' : 'duplicate', ...(sent ? { sidecar: sent } : {}) });
    if (created) uploadedAs = assetId;
    // Looked at while the file is still here to read (delete mode removes it next).
    const completes = created ? await deps.lateWrites?.incompleteVersionOf(file) : undefined;

    // Only what the server confirmed is touched, and only if it is still the version we sent:
    // disposeOriginal checks that and throws SourceChangedError otherwise.
    stage = 'archive';
    const confirmed = { ...file, checksum, mayHaveSidecars: found !== undefined, ...(sent ? { sidecar: sent } : {}), ...(assetId === undefined ? {} : { assetId }) };
    const disposition = await disposeOriginal(confirmed, deps.afterUpload, deps.record, deps.archiveFs, deps.lateWrites);
    const ms = Math.round(deps.clock.monotonic() - started);
    const notSent = created && found?.notSent !== undefined ? { sidecarNotSent: found.notSent } : {};
    return created
      ? { kind: 'uploaded', assetId: assetId ?? '', disposition, ms, ...notSent, ...(completes === undefined ? {} : { completes }) }
      : { kind: 'already-on-server', assetId, disposition, ms, ...(inTrash ? { inTrash } : {}), ...(found && !sent ? { sidecarNotSent: true as const } : {}) };
  } catch (error) {
    const outcome = toOutcome(error, stage, deps.signals);
    // Written to again after the upload (not removed): the server keeps what it got.
    const rewritten = outcome.kind === 'changed' && uploadedAs !== undefined && error instanceof SourceChangedError && error.actual !== null;
    if (!rewritten) return outcome;
    const now = file.identity && (await deps.files.lstat(file.path).catch(() => undefined));
    return { kind: 'changed', uploadedAs, ...(file.identity && now && !sameFile(now, file.identity) ? { replaced: true as const } : {}) };
  } finally {
    // Whichever way the file left (changed, refused, failed, done), no upload of it goes on.
    await early?.cancel();
  }
}

const NO_SIDECAR: Promise<FoundSidecar | undefined> = Promise.resolve(undefined);

/** Why delete mode keeps a file the server has only in its trash. */
const IN_TRASH =
  'the server has this file only in its trash, which Immich empties after a while: it stays here. Restore it in Immich (it is then deleted here) or empty the trash (it is then uploaded again)';

/** One upload within UPLOAD_CONCURRENCY, retried as the server needs; `leaveOn` drops it from the queue. */
function sendUpload(request: UploadRequest, deps: ProcessDeps, signals: CallSignals, leaveOn?: AbortSignal): Promise<UploadResult> {
  return deps.limitUpload(() => deps.immich.uploadAsset(request, signals), leaveOn);
}

export function decide(verdict: ServerVerdict): Decision {
  switch (verdict.kind) {
    case 'accept':
      return 'upload';
    case 'duplicate':
      return 'server-duplicate';
    case 'unsupported':
      return 'skip:unsupported';
  }
}

function toOutcome(error: unknown, stage: FailedStage, signals: CallSignals): FileOutcome {
  if (signals.wait?.aborted || signals.request?.aborted || isAbortError(error)) return { kind: 'aborted' };
  if (error instanceof FileSizeMismatchError || error instanceof SourceChangedError) return { kind: 'changed' };
  if (isNodeError(error) && error.code === 'ENOENT' && stage !== 'archive') return { kind: 'changed' };
  if (isImmichError(error)) {
    // A refused key, or one that may no longer upload, stops everything: no point failing
    // every file one by one. A proxy's 403 (no permission named) fails this file only.
    if (error.kind === 'auth' || isMissingPermission(error)) throw error;
    // Immich's own failure: the id its log has it under, for a look there.
    const loggedAs = (error.status ?? 0) >= 500 ? error.details.correlationId : undefined;
    return { kind: 'failed', stage, message: error.message, retryable: error.retryable, ...(loggedAs === undefined ? {} : { loggedAs }) };
  }
  if (error instanceof ArchiveError) return { kind: 'failed', stage, message: error.message, retryable: true, ...(error.code ? { code: error.code } : {}) };
  if (stage === 'hash' && isNodeError(error) && (error.code === 'EACCES' || error.code === 'EPERM')) {
    return { kind: 'failed', stage, message: "this user may not read it (permission denied); fix: let the uploader's user read it", retryable: true };
  }
  const message = messageOf(error);
  return { kind: 'failed', stage, message, retryable: true };
}

function isNodeError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && 'code' in error;
}

/**
 * The sidecar found beside the photo, if the server has that version of it: the server takes a
 * sidecar only with an asset it creates, from this upload or from an earlier one of this version
 * (in keep mode, say) whose asset it still has.
 */
function sidecarOnServer(
  file: SettledFile,
  found: FoundSidecar | undefined,
  created: boolean,
  assetId: string | undefined,
  deps: ProcessDeps,
): SentSidecar | undefined {
  if (found === undefined) return undefined;
  const version = { path: found.path, size: found.size, mtimeMs: found.mtimeMs };
  if (created) return found.upload ? version : undefined;
  const before = assetId === undefined ? undefined : deps.sidecarSentBefore?.(file, assetId);
  return before && before.path === found.path && sameVersion(before, found) ? version : undefined;
}
