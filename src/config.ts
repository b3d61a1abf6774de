// SKELETON: the interface below is the contract; loadConfig is being written.
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export type LogFormat = 'auto' | 'pretty' | 'json';

/** One watched folder and where its files go in the archive. */
export interface WatchRoot {
  /** Absolute, resolved path of the watched folder. */
  path: string;
  /**
   * Absolute folder inside the archive that mirrors this watch folder: the archive itself when
   * there is one watch folder, `<archive>/<folder name>` when there are several (names made
   * unique when two watch folders share a name).
   */
  archivePath: string;
}

/** The validated, fully defaulted, frozen configuration. */
export interface Config {
  /** Base URL of the API, always ending in `/api`, no trailing slash. */
  apiUrl: string;
  apiKey: string;
  watchRoots: readonly WatchRoot[];
  archiveDirectory: string;
  watchRecursive: boolean;
  /** Lower-case, with a leading dot: `.jpg`. */
  supportedExtensions: ReadonlySet<string>;
  /** Files larger than this are skipped. */
  maxFileSizeBytes: number;
  fileStabilityWaitMs: number;
  fileStabilityCheckIntervalMs: number;
  rescanIntervalMs: number;
  watchPolling: boolean;
  watchPollIntervalMs: number;
  uploadConcurrency: number;
  shutdownGraceMs: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** Folders never scanned or watched (the archive when it lies inside a watch folder). */
  excludedPaths: readonly string[];
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}
