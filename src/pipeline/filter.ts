import { extname } from 'node:path';

/** What detection thinks of a file's name, before it looks at the file itself. */
export type FileNameVerdict = 'ok' | 'hidden' | 'partial' | 'system' | 'unsupported';

/** What detection thinks of a folder's name: only `'ok'` folders are scanned and watched. */
export type FolderNameVerdict = 'ok' | 'hidden' | 'system';

/**
 * Suffixes browsers, download managers and sync tools give a file while it is still arriving;
 * the finished file is renamed to its real name, and that rename is what we pick up.
 */
const PARTIAL_EXTENSIONS: ReadonlySet<string> = new Set(['.part', '.crdownload', '.tmp', '.download', '.partial']);

/**
 * Names that NAS boxes, Windows and file systems create for themselves (Synology thumbnails in
 * `@eaDir`, recycle bins, fsck's `lost+found`, Explorer's caches). Compared lower-case, because
 * they come from case-insensitive systems and users copy them around in any case.
 */
const SYSTEM_NAMES: ReadonlySet<string> = new Set([
  '@eadir',
  '#recycle',
  '#snapshot',
  '$recycle.bin',
  'system volume information',
  'lost+found',
  'thumbs.db',
  'ehthumbs.db',
  'desktop.ini',
]);

/**
 * Decides from its name alone whether a file could be media we upload.
 *
 * The checks run from the most specific reason to the least, so a log line can say why a file
 * was passed over: a leading dot (`.DS_Store`, AppleDouble `._IMG_1.jpg`, Syncthing's
 * `.syncthing.x.jpg.tmp`) is `'hidden'` even when its extension is supported.
 *
 * @param supportedExtensions lower-case extensions with their dot (`.jpg`); the file's extension
 *   is compared case-insensitively, so `IMG_1.JPG` matches `.jpg`.
 */
export function fileNameVerdict(name: string, supportedExtensions: ReadonlySet<string>): FileNameVerdict {
  if (name.startsWith('.')) return 'hidden';
  const lower = name.toLowerCase();
  if (SYSTEM_NAMES.has(lower)) return 'system';
  // `~$name` is the lock/owner file Office and some Windows tools keep next to an open file.
  if (name.startsWith('~$')) return 'partial';
  const extension = extname(lower);
  if (PARTIAL_EXTENSIONS.has(extension)) return 'partial';
  if (extension === '' || !supportedExtensions.has(extension)) return 'unsupported';
  return 'ok';
}

/**
 * The photo and video extensions Immich takes (`GET /api/server/media-types`, v2.7.5), with their
 * dot. A file of one of these that SUPPORTED_EXTENSIONS leaves out (an iPhone's HEIC, a camera's
 * raw files: the default list has none) is worth a warning: it is a picture that stays behind.
 */
const IMMICH_MEDIA_EXTENSIONS: ReadonlySet<string> = new Set(
  (
    'avif bmp gif jpeg jpg png webp 3fr ari arw cap cin cr2 cr3 crw dcr dng erf fff iiq k25 kdc mrw nef nrw orf ori pef psd raf ' +
    'raw rw2 rwl sr2 srf srw x3f heic heif hif insp jp2 jpe jxl svg tif tiff ' +
    '3gp 3gpp avi flv insv m2t m2ts m4v mkv mov mp4 mpe mpeg mpg mts mxf ts vob webm wmv'
  )
    .split(' ')
    .map((extension) => `.${extension}`),
);

/** Whether Immich would take a file of this name as a photo or video. */
export function isImmichMedia(name: string): boolean {
  return IMMICH_MEDIA_EXTENSIONS.has(extname(name).toLowerCase());
}

/** Decides from its name alone whether a folder is scanned and watched. */
export function folderNameVerdict(name: string): FolderNameVerdict {
  // Hidden folders cover `.Trashes`, `.Spotlight-V100`, `.stversions`, `.stfolder` and the like.
  if (name.startsWith('.')) return 'hidden';
  if (SYSTEM_NAMES.has(name.toLowerCase())) return 'system';
  return 'ok';
}
