import { describe, expect, it } from 'vitest';
import { loadSqlite, openDatabase, sqlitePackagesFor } from '../../src/journal/sqlite.js';
import { JournalError } from '../../src/journal/states.js';
import { thrownBy } from '../helpers/expect-error.js';

describe('the SQLite build for the running Node', () => {
  it('is better-sqlite3 13 alone from Node 24 on, 12 before it, and 13 in reserve where Node-API 10 exists', () => {
    expect(sqlitePackagesFor(20, 9)).toEqual(['better-sqlite3-12']);
    expect(sqlitePackagesFor(22, 9)).toEqual(['better-sqlite3-12']);
    expect(sqlitePackagesFor(22, 10)).toEqual(['better-sqlite3-12', 'better-sqlite3']);
    expect(sqlitePackagesFor(24, 10)).toEqual(['better-sqlite3']);
    expect(sqlitePackagesFor(26, 11)).toEqual(['better-sqlite3']);
  });

  /** A package whose database opens and closes, as a working build does. */
  class Working {
    close(): void {}
  }

  it('loads the first package that loads, in order', () => {
    const asked: string[] = [];
    const loaded = loadSqlite(['better-sqlite3-12', 'better-sqlite3'], (name) => {
      asked.push(name);
      if (name === 'better-sqlite3-12') throw new Error("Cannot find module 'better-sqlite3-12'");
      return Working;
    });
    expect(loaded).toBe(Working);
    expect(asked).toEqual(['better-sqlite3-12', 'better-sqlite3']);
  });

  it('passes over a package whose native build is for another Node, which fails only when a database opens', () => {
    const otherNode = class {
      constructor() {
        throw new Error('The module better_sqlite3.node was compiled against a different Node.js version using NODE_MODULE_VERSION 115.');
      }
    };
    const loaded = loadSqlite(['better-sqlite3-12', 'better-sqlite3'], (name) => (name === 'better-sqlite3-12' ? otherNode : Working));
    expect(loaded).toBe(Working);
    const error = thrownBy(JournalError, () => loadSqlite(['better-sqlite3-12'], () => otherNode));
    expect(error.message).toContain('Cannot load SQLite (better-sqlite3-12) on Node');
    expect(error.message).toContain('NODE_MODULE_VERSION 115');
  });

  it('turns packages that will not load into a one-line unusable JournalError about the first, saying how to fix it', () => {
    const error = thrownBy(JournalError, () =>
      loadSqlite(['better-sqlite3-12', 'better-sqlite3'], (name) => {
        throw new Error(`Cannot find module '${name}'\nRequire stack:\n- /somewhere/sqlite.js`);
      }),
    );
    expect(error.kind).toBe('unusable');
    expect(error.message).toContain('Cannot load SQLite (better-sqlite3-12) on Node');
    expect(error.message).toContain("Cannot find module 'better-sqlite3-12'");
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
