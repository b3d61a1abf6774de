import { basename, extname } from 'node:path';
import type { ByteSource, UploadFile, UploadRequest } from '../immich/client.js';
import { closeFd, openFd, readFd } from '../support/fd.js';
import type { FileHash } from './hash.js';
import type { SettledFile } from './types.js';

/** The device name v2 servers store with each asset. */
export const DEVICE_ID = 'immich-auto-uploader';

/**
 * Builds `POST /api/assets` for one file, with the field set the server's major version wants:
 * v2 requires deviceAssetId and deviceId, v3 dropped them. Dates are ISO 8601 in UTC with a `Z`
 * (v3 refuses dates without an offset).
 *
 * A small file the hash read whole is sent from those bytes (what the server gets is exactly what
 * was hashed, and the file is not opened again); a larger one is streamed from disk.
 */
export function buildUploadRequest(
  file: SettledFile,
  hashed: Pick<FileHash, 'checksum' | 'bytes'>,
  serverMajor: number,
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
  return { fields, checksum: hashed.checksum, file: upload };
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
