import { describe, expect, it } from 'vitest';
import { loadSqlite, openDatabase, sqlitePackageFor } from '../../src/journal/sqlite.js';
import { JournalError } from '../../src/journal/states.js';
import { thrownBy } from '../helpers/expect-error.js';

describe('the SQLite build for the running Node', () => {
  it('is better-sqlite3 13 from Node-API 10 on (Node 22.14+, 24) and 12 before it (Node 20)', () => {
    expect(sqlitePackageFor(9)).toBe('better-sqlite3-node20');
    expect(sqlitePackageFor(10)).toBe('better-sqlite3');
    expect(sqlitePackageFor(11)).toBe('better-sqlite3');
  });

  it('loads the package chosen for the Node-API version and nothing else', () => {
    const asked: string[] = [];
    const fake = class {};
    const loaded = loadSqlite(9, (name) => {
      asked.push(name);
      return fake;
    });
    expect(loaded).toBe(fake);
    expect(asked).toEqual(['better-sqlite3-node20']);
  });

  it('turns a package that will not load into a one-line unusable JournalError that says how to fix it', () => {
    const error = thrownBy(JournalError, () =>
      loadSqlite(10, () => {
        throw new Error("Cannot find module 'better-sqlite3'\nRequire stack:\n- /somewhere/sqlite.js");
      }),
    );
    expect(error.kind).toBe('unusable');
    expect(error.message).toContain("Cannot load SQLite (better-sqlite3) on Node");
    expect(error.message).toContain("Cannot find module 'better-sqlite3'");
    expect(error.message).toContain('Fix: run `npm install` again');
    expect(error.message).not.toContain('\n');
  });

  it('opens a working database on this Node', () => {
    const db = openDatabase(':memory:');
    try {
      expect(db.prepare('SELECT sqlite_version() AS v').get()).toEqual({ v: expect.stringMatching(/^3\./) as unknown });
    } finally {
      db.close();
    }
  });
});
