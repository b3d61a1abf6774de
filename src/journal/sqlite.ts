/**
 * SQLite for the journal and the instance lock: better-sqlite3, in the build this Node can run.
 *
 * No single release of better-sqlite3 runs well on every Node we support:
 * - 12.x wraps its objects with Node's own `ObjectWrap`. Since Node 24.19 that wrapper's
 *   destructor aborts the process (`Assertion failed: (env) != nullptr`) when a database or
 *   statement is collected outside a JavaScript context: on Node 24.21 three `once` runs in four
 *   died this way within 0.2 s of starting, and the test suite at exit.
 * - 13.x uses Node-API 10, which Node 20 lacks: loading it there is a segmentation fault. Where
 *   it runs, its SQLite (3.54.1) re-prepares an `ORDER BY` statement each time a bare parameter
 *   of its WHERE takes a new value: 11-23 µs a lookup, where 12.x takes 2-3 µs. The journal's
 *   lookups are written around it (journal.ts, prepare(); DESIGN.md, "journal").
 *
 * So both are installed, 13.x under its own name and 12.x as `better-sqlite3-12` (an optional
 * dependency: where it cannot be built, Node 24 does not need it), and the running Node picks:
 * 13.x on Node 24 and later, 12.x before, and 13.x after all where 12.x is missing and Node-API
 * 10 exists (Node 22.14+). Both have the API of `@types/better-sqlite3`.
 */
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { JournalError } from './states.js';

export type Database = BetterSqlite3.Database;
export type Statement = BetterSqlite3.Statement;
type DatabaseConstructor = typeof BetterSqlite3;
type SqlitePackage = 'better-sqlite3' | 'better-sqlite3-12';

/** The first Node major whose `ObjectWrap` 12.x cannot live with (24.19 backported the change). */
const FIRST_NODE_WITHOUT_12 = 24;
/** The Node-API version 13.x is built for. */
const NODE_API_OF_13 = 10;

/** The packages that run on this Node, in order of preference. */
export function sqlitePackagesFor(nodeMajor: number, nodeApiVersion: number): SqlitePackage[] {
  if (nodeMajor >= FIRST_NODE_WITHOUT_12) return ['better-sqlite3'];
  return nodeApiVersion >= NODE_API_OF_13 ? ['better-sqlite3-12', 'better-sqlite3'] : ['better-sqlite3-12'];
}

/**
 * Loads the first of `packages` that works, with `load` (Node's `require` by default). When none
 * does, an 'unusable' JournalError names the first and says how to fix it.
 */
export function loadSqlite(
  packages: readonly SqlitePackage[],
  load: (name: string) => unknown = createRequire(import.meta.url),
): DatabaseConstructor {
  let firstError: unknown;
  for (const name of packages) {
    try {
      const Database = load(name) as DatabaseConstructor;
      // The native part loads at the first open: one in memory makes a build for another Node
      // (NODE_MODULE_VERSION) fail here, where the next package can still serve.
      new Database(':memory:').close();
      return Database;
    } catch (error) {
      firstError ??= error;
    }
  }
  const reason = firstError instanceof Error ? (firstError.message.split('\n')[0] ?? firstError.message) : String(firstError);
  throw new JournalError(
    'unusable',
    `Cannot load SQLite (${packages[0] ?? 'better-sqlite3'}) on Node ${process.version}: ${reason}. Fix: run \`npm install\` again ` +
      'with the Node that runs the uploader (20, 22 or 24) and look at its output for a failed build of better-sqlite3.',
    { cause: firstError },
  );
}

let constructor: DatabaseConstructor | undefined;

/** Opens a database file with the SQLite build for this Node; `new Database(file, options)` otherwise. */
export function openDatabase(file: string, options?: BetterSqlite3.Options): Database {
  constructor ??= loadSqlite(sqlitePackagesFor(Number(process.versions.node.split('.')[0]), Number(process.versions.napi)));
  return new constructor(file, options);
}
