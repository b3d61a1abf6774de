/**
 * File descriptors through the callback fs API, promisified. On Node 20 a FileHandle's open, read
 * and close cost about twice the main-thread time (the benchmark's profile put FileHandle.close
 * alone at 6% for small files), and the pipeline opens every file it hashes, uploads or fsyncs.
 */
import { close, fsync, open, read } from 'node:fs';
import { promisify } from 'node:util';

export const openFd = promisify(open);
export const readFd = promisify(read);
export const fsyncFd = promisify(fsync);
export const closeFd = promisify(close);
