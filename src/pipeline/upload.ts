import { basename, extname } from 'node:path';
import type { ByteSource, UploadFile, UploadRequest, UploadResult } from '../immich/client.js';
import type { CallSignals } from '../immich/resilient.js';
import { eitherSignal } from '../support/clock.js';
import { closeFd, openFd, readFd } from '../support/fd.js';
import type { FileHash } from './hash.js';
import type { FoundSidecar } from './sidecar.js';
import type { SettledFile } from './types.js';

/** The device name v2 servers store with each asset. */
export const DEVICE_ID = 'immich-auto-uploader';

/**
 * Builds `POST /api/assets` for one file, with the field set the server's major version wants:
 * v2 requires deviceAssetId and deviceId, v3 dropped them. Dates are ISO 8601 in UTC with a `Z`
 * (v3 refuses dates without an offset).
 *
 * A small file the hash read whole is sent from those bytes (what the server gets is exactly what
 * was hashed, and the file is not opened again); a larger one is streamed from disk. Without a
 * checksum (an {@link EarlyUpload}, started before the hash is known) the request carries none.
 * The photo's sidecar, when it could be read, goes with it as `sidecarData`.
 */
export function buildUploadRequest(
  file: SettledFile,
  hashed: { checksum?: UploadRequest['checksum']; bytes?: FileHash['bytes'] },
  serverMajor: number,
  sidecar?: FoundSidecar,
): UploadRequest {
  const filename = basename(file.path);
  const fields: Record<string, string> = {
    fileCreatedAt: new Date(Math.min(file.birthtimeMs, file.mtimeMs)).toISOString(),
    fileModifiedAt: new Date(file.mtimeMs).toISOString(),
    filename,
  };
  if (serverMajor < 3) {
    // Stable for the same file, like the official CLI's: name and size, no white space.
    fields.deviceAssetId = `${filename}-${file.size}`.replace(/\s+/g, '');
    fields.deviceId = DEVICE_ID;
  }
  const contentType = contentTypeOf(filename);
  const { bytes } = hashed;
  const upload: UploadFile = bytes
    ? { filename, contentType, bytes }
    : { filename, contentType, size: file.size, open: () => openSettledBytes(file.path) };
  return {
    fields,
    ...(hashed.checksum === undefined ? {} : { checksum: hashed.checksum }),
    file: upload,
    ...(sidecar?.upload ? { sidecar: sidecar.upload } : {}),
  };
}

/** Why an early upload stopped: the check found the file on the server, or the file is done with. */
const CANCELLED = new Error('the upload was cancelled: the file does not need it');

/**
 * A large file's upload, started when its hash starts rather than after the duplicate check, so
 * that the file takes about the longer of the two instead of both in turn. When the check then
 * finds the file on the server (or the file changed, or failed), the upload is cancelled: what
 * was sent of it by then is the price, at most what the network carries while the file is
 * hashed. Small files do not need it: one is read and hashed in well under a millisecond.
 */
export class EarlyUpload {
  readonly #cancel = new AbortController();
  #running: Promise<UploadResult> | undefined;
  #result: UploadResult | undefined;

  /**
   * Starts `send` with `signals`, each of which now also stops at {@link cancel}, and the signal
   * of the cancel alone (for what the daemon's own signals already cover, such as a queue).
   */
  start(send: (signals: CallSignals, cancelled: AbortSignal) => Promise<UploadResult>, signals: CallSignals): void {
    const cancelled = this.#cancel.signal;
    const wait = eitherSignal(signals.wait, cancelled);
    const request = eitherSignal(signals.request, cancelled);
    const running = send({ wait: wait.signal, request: request.signal }, cancelled);
    const release = (): void => {
      wait.release();
      request.release();
    };
    // Also marks the promise handled: a cancelled upload's rejection is expected.
    running.then((result) => {
      this.#result = result;
      release();
    }, release);
    this.#running = running;
  }

  /** The upload's result, if it has already succeeded. */
  get succeeded(): UploadResult | undefined {
    return this.#result;
  }

  /** Waits for the upload to finish; its failure is the file's upload failure. */
  result(): Promise<UploadResult> {
    return this.#running ?? Promise.reject(new Error('the early upload was never started'));
  }

  /**
   * Stops the upload unless it already succeeded, and waits until it has stopped, so that no
   * request outlives its file. Resolves to the result if it succeeded all the same.
   */
  async cancel(): Promise<UploadResult | undefined> {
    if (!this.#running) return undefined;
    if (this.#result === undefined) this.#cancel.abort(CANCELLED);
    await this.#running.catch(() => undefined);
    return this.#result;
  }
}

/**
 * The file's bytes for the upload, read in order from the start. The client reads exactly the
 * settled size and then checks that the file ends there: a file that grew or shrank since it
 * settled fails the body (FileSizeMismatchError), so the server never gets a complete wrong file.
 */
async function openSettledBytes(path: string): Promise<ByteSource> {
  const fd = await openFd(path, 'r');
  let position = 0;
  return {
    read: async (buffer, length) => {
      const { bytesRead } = await readFd(fd, buffer, 0, length, position);
      position += bytesRead;
      return bytesRead;
    },
    close: () => closeFd(fd),
  };
}

const CONTENT_TYPES: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.jpe': 'image/jpeg',
  '.png': 'image/png',
  '.gif': 'image/gif',
  '.bmp': 'image/bmp',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.webp': 'image/webp',
  '.heic': 'image/heic',
  '.heif': 'image/heif',
  '.avif': 'image/avif',
  '.jxl': 'image/jxl',
  '.dng': 'image/x-adobe-dng',
  '.mp4': 'video/mp4',
  '.m4v': 'video/x-m4v',
  '.mov': 'video/quicktime',
  '.avi': 'video/x-msvideo',
  '.mkv': 'video/x-matroska',
  '.wmv': 'video/x-ms-wmv',
  '.flv': 'video/x-flv',
  '.3gp': 'video/3gpp',
  '.webm': 'video/webm',
  '.mts': 'video/mp2t',
  '.m2ts': 'video/mp2t',
  '.xmp': 'application/xml',
};

/** The server decides by extension; the part's type is informative, so unknown ones are generic. */
export function contentTypeOf(filename: string): string {
  return CONTENT_TYPES[extname(filename).toLowerCase()] ?? 'application/octet-stream';
}
