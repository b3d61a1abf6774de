/**
 * SQLite for the journal and the instance lock: better-sqlite3, in the build this Node can run.
 *
 * No single release of better-sqlite3 runs on every Node we support:
 * - 12.x wraps its objects with Node's own `ObjectWrap`. Since Node 24.19 that wrapper's
 *   destructor aborts the process (`Assertion failed: (env) != nullptr`) when a database or
 *   statement is collected outside a JavaScript context: on Node 24.21 three `once` runs in four
 *   died this way within 0.2 s of starting, and the test suite at exit.
 * - 13.x uses Node-API 10, which Node 20 lacks: loading it there is a segmentation fault.
 *
 * So both are installed, 13.x under its own name and 12.x as `better-sqlite3-node20` (an optional
 * dependency: where it cannot be built, Node 22 and 24 do not need it), and the Node-API version
 * of the running Node picks one. Both have the API of `@types/better-sqlite3`.
 */
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { JournalError } from './states.js';

export type Database = BetterSqlite3.Database;
export type Statement = BetterSqlite3.Statement;
type DatabaseConstructor = typeof BetterSqlite3;

/** The Node-API version better-sqlite3 13 is built for (Node 22.14 and later). */
const CURRENT_BUILD_NODE_API = 10;

/** Which installed package runs on a Node with this Node-API version. */
export function sqlitePackageFor(nodeApiVersion: number): 'better-sqlite3' | 'better-sqlite3-node20' {
  return nodeApiVersion >= CURRENT_BUILD_NODE_API ? 'better-sqlite3' : 'better-sqlite3-node20';
}

/**
 * Loads the package for `nodeApiVersion` with `load` (Node's `require` by default). A package
 * that is missing or does not load is an 'unusable' JournalError saying how to fix it.
 */
export function loadSqlite(
  nodeApiVersion: number,
  load: (name: string) => unknown = createRequire(import.meta.url),
): DatabaseConstructor {
  const name = sqlitePackageFor(nodeApiVersion);
  try {
    return load(name) as DatabaseConstructor;
  } catch (error) {
    const reason = error instanceof Error ? (error.message.split('\n')[0] ?? error.message) : String(error);
    throw new JournalError(
      'unusable',
      `Cannot load SQLite (${name}) on Node ${process.version}: ${reason}. Fix: run \`npm install\` again ` +
        'with the Node that runs the uploader (20, 22 or 24) and look at its output for a failed build of better-sqlite3.',
      { cause: error },
    );
  }
}

let constructor: DatabaseConstructor | undefined;

/** Opens a database file with the SQLite build for this Node; `new Database(file, options)` otherwise. */
export function openDatabase(file: string, options?: BetterSqlite3.Options): Database {
  constructor ??= loadSqlite(Number(process.versions.napi));
  return new constructor(file, options);
}
