/**
 * A multipart/form-data body: text fields, one file part, then optionally a small part from
 * memory (a sidecar). The exact length is known before the first byte is sent (so the request
 * carries a Content-Length, which proxies such as Cloudflare and nginx handle better than
 * chunked uploads). A file on disk is sent as head, the file's bytes read chunk by chunk (never
 * held in memory: STACK.md, Trap 1), and tail; a file already in memory (a small file read once
 * for its hash) becomes three buffers — head, bytes, tail — that the request writes at once.
 */
import { randomBytes } from 'node:crypto';
import type { ByteSource } from './client.js';

export type MultipartFile = {
  /** The form field name, e.g. `assetData`. */
  name: string;
  /** The part's filename, written as plain UTF-8 (never RFC 5987 `filename*`). */
  filename: string;
  contentType: string;
} & (
  | {
      /** The byte count announced; a file with more or fewer fails the body. */
      size: number;
      /** Opens the file's bytes; called once per body sent. */
      open: () => Promise<ByteSource>;
    }
  | {
      /** The whole content. */
      bytes: Buffer;
    }
);

/** A part that follows the file part, from memory: an XMP sidecar, a few KB. */
export interface MultipartAttachment {
  name: string;
  filename: string;
  contentType: string;
  bytes: Buffer;
}

export type MultipartBody = {
  /** `multipart/form-data; boundary=...` */
  contentType: string;
  /** Exact byte length of the whole body. */
  contentLength: number;
} & (
  | {
      /** The body around the file: written before and after the file's bytes. */
      head: Buffer;
      tail: Buffer;
      /** The file part's bytes, read from disk as they are sent. */
      file: { filename: string; size: number; open: () => Promise<ByteSource> };
    }
  | {
      /**
       * The whole body as head, file bytes and tail: the file's bytes are not copied, and the
       * buffers can be written again for another attempt.
       */
      buffers: readonly Buffer[];
    }
);

/**
 * The file delivered a different number of bytes than announced. The body would no longer match
 * its Content-Length, so the request must fail now rather than wait for bytes that never come.
 */
export class FileSizeMismatchError extends Error {
  override readonly name = 'FileSizeMismatchError';
  readonly code = 'EFILESIZE';
  constructor(
    readonly filename: string,
    readonly expected: number,
    readonly actual: number,
  ) {
    super(
      actual > expected
        ? `${filename} grew while being uploaded: more than the ${expected} bytes announced`
        : `${filename} shrank while being uploaded: ${actual} of the ${expected} bytes announced`,
    );
  }
}

const CRLF = '\r\n';

/**
 * Quoted-string escaping for a Content-Disposition parameter. Backslash escapes are what multipart
 * parsers (busboy, which Immich uses through multer) decode, so `"` and `\` arrive intact; CR and LF
 * cannot appear in a header at all and are percent-encoded as browsers do.
 */
export function quoteParam(value: string): string {
  const escaped = value
    .replace(/[\\"]/g, (c) => `\\${c}`)
    .replace(/\r/g, '%0D')
    .replace(/\n/g, '%0A');
  return `"${escaped}"`;
}

/** 24 random bytes per process: asking the system for fresh ones cost 25 µs per upload. */
const BOUNDARY_PREFIX = `----immich-auto-uploader-${randomBytes(24).toString('hex')}-`;
let boundaryCount = 0;

/** A boundary that cannot plausibly occur in the fields or the file: random, and new per body. */
export function randomBoundary(): string {
  boundaryCount += 1;
  return BOUNDARY_PREFIX + boundaryCount.toString(36);
}

/**
 * `after`, if given, follows the file part (the order the official CLI sends assetData and
 * sidecarData in); it goes into the tail, so the file part's bytes are framed as without it.
 */
export function buildMultipart(
  fields: Record<string, string>,
  file: MultipartFile,
  after?: MultipartAttachment,
  boundary: string = randomBoundary(),
): MultipartBody {
  let head = '';
  for (const [name, value] of Object.entries(fields)) {
    head += `--${boundary}${CRLF}Content-Disposition: form-data; name=${quoteParam(name)}${CRLF}${CRLF}`;
    head += `${value}${CRLF}`;
  }
  head += filePartHead(boundary, file);
  const headBytes = Buffer.from(head, 'utf8');
  const end = Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'utf8');
  const tailBytes = after
    ? Buffer.concat([Buffer.from(CRLF + filePartHead(boundary, after), 'utf8'), after.bytes, end])
    : end;
  const contentType = `multipart/form-data; boundary=${boundary}`;

  if ('bytes' in file) {
    const buffers = [headBytes, file.bytes, tailBytes];
    return { contentType, contentLength: headBytes.length + file.bytes.length + tailBytes.length, buffers };
  }
  return {
    contentType,
    contentLength: headBytes.length + file.size + tailBytes.length,
    head: headBytes,
    tail: tailBytes,
    file: { filename: file.filename, size: file.size, open: file.open },
  };
}

/** A file part's boundary line and headers, up to where its bytes begin. */
function filePartHead(boundary: string, part: { name: string; filename: string; contentType: string }): string {
  return (
    `--${boundary}${CRLF}` +
    `Content-Disposition: form-data; name=${quoteParam(part.name)}; filename=${quoteParam(part.filename)}${CRLF}` +
    `Content-Type: ${part.contentType.replace(/[\r\n]/g, '')}${CRLF}${CRLF}`
  );
}
