/**
 * XMP sidecars: the `.xmp` file a photo tool writes beside a photo (ratings, keywords, edits).
 * One goes to the server with its photo as `sidecarData`, and delete mode removes only the
 * version that went.
 */
import { basename, dirname, extname, join } from 'node:path';
import type { FsWorker } from '../support/fs-worker.js';
import type { InMemoryUploadFile } from '../immich/client.js';
import type { FileVersion } from './types.js';

/** The spellings of a sidecar's extension looked for: what photo tools write. */
const SIDECAR_EXTENSIONS = ['.xmp', '.XMP'];

/**
 * A sidecar larger than this is not sent (nor deleted): XMP files are a few KB, a long edit
 * history up to a few hundred KB, and each file in flight (up to 32 by default) holds its
 * sidecar in memory until its upload is over.
 */
export const SIDECAR_MAX_BYTES = 4 * 1024 * 1024;

/** The version of a sidecar that went to the server with its photo. */
export interface SentSidecar extends FileVersion {
  path: string;
}

/** A photo's sidecar as found when the photo was read: sent only if `upload` is there. */
export interface FoundSidecar extends SentSidecar {
  /** The part to send; absent when the sidecar is too large or was being written. */
  upload?: InMemoryUploadFile;
  /** Why there is no `upload`, in words for the log. */
  notSent?: string;
}

/**
 * A photo's sidecar names, most specific first: `photo.jpg.xmp` belongs to that photo alone;
 * `photo.xmp` (what Lightroom and darktable's other mode write) may serve several files of the
 * stem, such as the photo and the video of a live photo.
 */
export function sidecarNames(path: string): { own: string[]; shared: string[] } {
  const stem = withoutExtension(path);
  return {
    own: SIDECAR_EXTENSIONS.map((ext) => `${path}${ext}`),
    shared: SIDECAR_EXTENSIONS.map((ext) => `${stem}${ext}`),
  };
}

/**
 * Where a sidecar of `photo` goes when the photo goes to `movedTo`: named after it as before
 * (`photo.jpg.xmp` after `photo (1).jpg` is `photo (1).jpg.xmp`, `photo.xmp` is `photo (1).xmp`).
 */
export function sidecarFollowing(sidecar: string, photo: string, movedTo: string): string {
  return sidecarNames(photo).own.includes(sidecar) ? movedTo + sidecar.slice(photo.length) : withoutExtension(movedTo) + extname(sidecar);
}

/** A file name without its extension, lower-case: `img_1` for `IMG_1.JPG`. */
export function stemOf(name: string): string {
  return name.slice(0, name.length - extname(name).length).toLowerCase();
}

/**
 * Whether the file `name` is not a sidecar (`.xmp` in any case) and its stem is `stem`
 * (lower-case): a file a sidecar of that stem may serve, on a file system that ignores case too.
 */
export function sharesStem(name: string, stem: string): boolean {
  return extname(name).toLowerCase() !== '.xmp' && stemOf(name) === stem;
}

/** Whether a file's name is a sidecar's (`.xmp` or `.XMP`; hidden names are never looked at). */
export function isSidecarName(name: string): boolean {
  return SIDECAR_EXTENSIONS.includes(extname(name));
}

/**
 * Whether `sidecar` is a sidecar of `photo` ({@link sidecarNames}). Its photos' paths are all
 * `withoutExtension(sidecar)` itself or that followed by `.` and more.
 */
export function isSidecarOf(sidecar: string, photo: string): boolean {
  const { own, shared } = sidecarNames(photo);
  return own.includes(sidecar) || shared.includes(sidecar);
}

/** A path without its file's extension, case kept: `/in/IMG_1` for `/in/IMG_1.JPG`. */
export function withoutExtension(path: string): string {
  const name = basename(path);
  return join(dirname(path), name.slice(0, name.length - extname(name).length));
}

/** The photo's sidecar (the first of {@link sidecarNames} that is a file), read whole. */
export async function findSidecar(files: FsWorker, path: string, signal?: AbortSignal): Promise<FoundSidecar | undefined> {
  const { own, shared } = sidecarNames(path);
  const found = await files.readFirst([...own, ...shared], SIDECAR_MAX_BYTES, signal);
  if (!found) return undefined;
  const version: SentSidecar = { path: found.path, size: found.size, mtimeMs: found.mtimeMs };
  if (!found.bytes) {
    const why = found.size > SIDECAR_MAX_BYTES ? `it is over ${SIDECAR_MAX_BYTES / 1024 / 1024} MB` : 'it could not be read whole (it was being written, or is unreadable)';
    return { ...version, notSent: `${basename(found.path)} was not sent with it: ${why}` };
  }
  const bytes = Buffer.from(found.bytes.buffer, found.bytes.byteOffset, found.bytes.byteLength);
  return { ...version, upload: { filename: basename(found.path), contentType: 'application/xml', bytes } };
}

/** Whether `sidecar` is a stem sidecar (`photo.xmp`) that other files of the stem may share. */
export function isShared(photo: string, sidecar: string): boolean {
  return sidecarNames(photo).shared.includes(sidecar);
}

/**
 * The sidecar recorded with a file version's last `on-server` transition (see RecordDetails), if
 * it is well formed: what recovery may delete with an interrupted deletion's photo.
 */
export function sentSidecarOf(transitions: readonly { state: string; detail: Record<string, unknown> }[]): SentSidecar | undefined {
  return wellFormed(transitions.findLast((entry) => entry.state === 'on-server'));
}

/**
 * The sidecar an earlier upload of a file version sent with it, to the asset `assetId` it
 * created: the server has that asset still (it answered that it has the photo, as that asset), and
 * so what the sidecar held. After a run in keep mode, or an upload whose archive failed.
 */
export function sidecarSentTo(assetId: string, transitions: readonly { state: string; detail: Record<string, unknown> }[]): SentSidecar | undefined {
  return wellFormed(transitions.findLast((entry) => entry.state === 'on-server' && entry.detail.assetId === assetId && entry.detail.serverStatus === 'created'));
}

function wellFormed(onServer: { detail: Record<string, unknown> } | undefined): SentSidecar | undefined {
  const value = onServer?.detail.sidecar as Partial<SentSidecar> | undefined;
  if (typeof value?.path !== 'string' || typeof value.size !== 'number' || typeof value.mtimeMs !== 'number') return undefined;
  return { path: value.path, size: value.size, mtimeMs: value.mtimeMs };
}
