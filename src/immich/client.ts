
/** The oldest Immich the uploader speaks to: 1.x took other upload fields, and its keys had no permissions to read. */
export const MIN_SERVER_MAJOR = 2;

/** `GET /api/server/version`. */
export interface ServerVersion {
  major: number;
  minor: number;
  patch: number;
}

/** `GET /api/api-keys/me`: who the key is and what it may do. */
export interface ApiKeyInfo {
  id: string;
  name: string;
  permissions: string[];
}

export interface BulkCheckItem {
  /** Any string of ours; the server echoes it back. */
  id: string;
  /** SHA-1 of the file, hex. */
  checksum: string;
}

export type BulkCheckResult =
  | { id: string; action: 'accept' }
  | {
      id: string;
      action: 'reject';
      reason: 'duplicate' | 'unsupported-format';
      assetId?: string;
      isTrashed?: boolean;
    };

/** One `POST /api/assets`: the fields are already the set the server's major version wants. */
export interface UploadRequest {
  /** Text fields, e.g. fileCreatedAt, fileModifiedAt (and deviceAssetId, deviceId on v2). */
  fields: Record<string, string>;
  /**
   * SHA-1 hex, sent as `x-immich-checksum` so a known file is answered at once, and asked about
   * when an answer is lost. A large file's upload starts while it is being hashed: its checksum
   * is known only from the attempts after the hash (a function, asked at each attempt); the
   * first attempt's server dedupes by the bytes it received.
   */
  checksum?: string | (() => string | undefined);
  file: UploadFile;
  /** The photo's XMP sidecar, sent as `sidecarData` after the file: the server reads its metadata. */
  sidecar?: InMemoryUploadFile;
}

/** The file part: its bytes either streamed from disk or already in memory. */
export type UploadFile = StreamedUploadFile | InMemoryUploadFile;

interface UploadFileBase {
  /** The part's filename: the file's own name, plain UTF-8. */
  filename: string;
  contentType: string;
}

/** A file read from disk as it is sent, into the client's own buffers: constant memory whatever its size. */
export interface StreamedUploadFile extends UploadFileBase {
  /** The byte count announced (Content-Length): a file with more or fewer bytes fails the upload. */
  size: number;
  /** Opens the file's bytes. Called once per attempt; the client closes what it opened. */
  open: () => Promise<ByteSource>;
}

/** Bytes read in order from their start (a file opened for the upload). */
export interface ByteSource {
  /** Reads up to `length` bytes into `buffer` from its start; resolves how many, 0 at the end. */
  read(buffer: Buffer, length: number): Promise<number>;
  close(): Promise<void>;
}

/** A file whose whole content is in memory (a small file read once for its hash). */
export interface InMemoryUploadFile extends UploadFileBase {
  /** The content, sent as it is by every attempt; its length is the Content-Length. */
  bytes: Buffer;
}

export interface UploadResult {
  id: string;
  status: 'created' | 'duplicate';
}

/**
 * The narrow Immich API the uploader needs. One attempt per call: retry is the caller's policy.
 * Every method rejects with an ImmichError on failure, and with the signal's reason on abort.
 */
export interface ImmichClient {
  ping(signal?: AbortSignal): Promise<void>;
  serverVersion(signal?: AbortSignal): Promise<ServerVersion>;
  apiKeyInfo(signal?: AbortSignal): Promise<ApiKeyInfo>;
  bulkUploadCheck(items: BulkCheckItem[], signal?: AbortSignal): Promise<BulkCheckResult[]>;
  uploadAsset(request: UploadRequest, signal?: AbortSignal): Promise<UploadResult>;
  /** Frees keep-alive sockets. */
  close(): void;
}
