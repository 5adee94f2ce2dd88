// The local store on real SQLite files: several stores on one file are several
// agents (in this process, each with its own connection, or in other processes).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { writeFileSync } from 'node:fs';
import { LocalStore } from '../../src/subnet/local-store.js';
import { CompactedError, LeaseGoneError, StoreError, type WatchEvent } from '../../src/subnet/store.js';
import { FakeClock, brief, leaseOf, tempDir, until, worker } from './store-support.js';

const tmp = tempDir();
after(() => tmp.cleanup());

describe('local store: one SQLite file', () => {
  it('stores keys and values in flannel\'s format, with a revision per change', async () => {
    const path = tmp.db();
    const s = new LocalStore(path);
    try {
      assert.deepEqual(await s.list(), { leases: [], revision: 0, malformed: [] });
      const created = await s.create(leaseOf('10.244.1.0-24', '192.168.0.1', 'aa:bb:cc:dd:ee:01'), 60_000);
      assert.equal(created?.key, '10.244.1.0-24');
      assert.equal(created?.modRevision, 1);
      const raw = new Database(path, { readonly: true });
      try {
        assert.deepEqual(raw.prepare('SELECT key, value FROM leases').all(), [
          { key: '10.244.1.0-24', value: '{"PublicIP":"192.168.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}' },
        ]);
        assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
      } finally {
        raw.close();
      }
      const l = await s.list();
      assert.equal(l.revision, 1);
      assert.equal(l.leases.length, 1);
      assert.equal(l.leases[0]!.lease.attrs.publicIp, '192.168.0.1');
      assert.ok(l.leases[0]!.lease.expiresAt! > Date.now() + 50_000);
    } finally {
      await s.close();
    }
  });

  it('create is a compare-and-swap: two stores on one file, one key, one winner', async () => {
    const path = tmp.db();
    const a = new LocalStore(path);
    const b = new LocalStore(path);
    try {
      const [ra, rb] = await Promise.all([a.create(leaseOf('10.244.3.0-24', '192.168.0.1'), 60_000), b.create(leaseOf('10.244.3.0-24', '192.168.0.2'), 60_000)]);
      assert.equal([ra, rb].filter((r) => r !== null).length, 1);
      assert.equal(await b.create(leaseOf('10.244.3.0-24', '192.168.0.2'), 60_000), null, 'taken stays taken');
      const { leases } = await b.list();
      assert.deepEqual(leases.map((l) => [l.key, l.lease.attrs.publicIp]), [['10.244.3.0-24', '192.168.0.1']]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('dual stack: a key sharing one subnet with a live key is taken too', async () => {
    const s = new LocalStore(tmp.db());
    try {
      assert.ok(await s.create(leaseOf('10.244.5.0-24&fd00:10:244:5::-64', '192.168.0.5'), 60_000));
      assert.equal(await s.create(leaseOf('10.244.5.0-24&fd00:10:244:6::-64', '192.168.0.6'), 60_000), null, 'same IPv4 subnet');
      assert.equal(await s.create(leaseOf('10.244.6.0-24&fd00:10:244:5::-64', '192.168.0.6'), 60_000), null, 'same IPv6 subnet');
      assert.equal(await s.create(leaseOf('10.244.5.0-24', '192.168.0.6'), 60_000), null, 'single stack, same subnet');
      assert.equal(await s.create(leaseOf('fd00:10:244:5::-64', '192.168.0.6'), 60_000), null, 'IPv6 only, same subnet');
      assert.ok(await s.create(leaseOf('10.244.6.0-24&fd00:10:244:6::-64', '192.168.0.6'), 60_000));
      assert.ok(await s.create(leaseOf('10.244.50.0-24', '192.168.0.7'), 60_000));
      assert.equal(await s.create(leaseOf('10.244.50.0-24&fd00:10:244:50::-64', '192.168.0.8'), 60_000), null, 'dual stack over a single-stack lease');
      assert.deepEqual((await s.list()).leases.map((l) => l.key), ['10.244.5.0-24&fd00:10:244:5::-64', '10.244.50.0-24', '10.244.6.0-24&fd00:10:244:6::-64']);
    } finally {
      await s.close();
    }
  });

  it('create across processes: ten agents start the same create at the same moment, exactly one wins', async () => {
    const path = tmp.db();
    void new LocalStore(path).close(); // the schema exists; the race is on the key alone
    const at = String(Date.now() + 700);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => worker<{ created: boolean }>('create', path, '10.244.7.0-24', `192.168.0.${i + 1}`, at)));
    assert.equal(results.filter((r) => r.created).length, 1, JSON.stringify(results));
    const s = new LocalStore(path);
    try {
      const l = await s.list();
      assert.equal(l.leases.length, 1);
      assert.equal(l.revision, 1, 'the losers wrote nothing');
    } finally {
      await s.close();
    }
  });

  it('expiry: an expired lease is absent, its deletion is an event, and its subnet is free again', async () => {
    const clock = new FakeClock();
    const path = tmp.db();
    const a = new LocalStore(path, { now: clock.now });
    const b = new LocalStore(path, { now: clock.now });
    const events: WatchEvent[] = [];
    const w = b.watch(1, (e) => events.push(e), (e) => assert.fail(e));
    try {
      await a.create(leaseOf('10.244.4.0-24', '192.168.0.4'), 1000);
      await a.create(leaseOf('10.244.5.0-24', '192.168.0.5'), null); // a reservation
      clock.t += 999;
      assert.equal((await b.list()).leases.length, 2);
      clock.t += 1;
      const l = await b.list();
      assert.deepEqual(l.leases.map((x) => x.key), ['10.244.5.0-24'], 'expired at its expiry time; the reservation stays');
      assert.equal(l.revision, 3, 'list swept it: the deletion has a revision');
      await until(events, (e) => e.length === 3);
      assert.deepEqual(events.map(brief), [
        { type: 'put', key: '10.244.4.0-24', ip: '192.168.0.4', mac: '02:00:00:00:00:01' },
        { type: 'put', key: '10.244.5.0-24', ip: '192.168.0.5', mac: '02:00:00:00:00:01' },
        { type: 'delete', key: '10.244.4.0-24', ip: '192.168.0.4', mac: '02:00:00:00:00:01' },
      ]);
      assert.equal((await b.create(leaseOf('10.244.4.0-24', '192.168.0.9'), 1000))?.modRevision, 4, 'the subnet is free again');
      clock.t += 365 * 24 * 3600_000;
      assert.deepEqual((await a.list()).leases.map((x) => x.key), ['10.244.5.0-24'], 'a reservation never expires');
    } finally {
      w.close();
      await a.close();
      await b.close();
    }
  });

  it('expiry is swept by a watching store even when nobody writes, and create treats an expired key as free', async () => {
    const path = tmp.db();
    const a = new LocalStore(path);
    const b = new LocalStore(path, { pollIntervalMs: 20 });
    const events: WatchEvent[] = [];
    try {
      await a.create(leaseOf('10.244.6.0-24', '192.168.0.6'), 150);
      const w = b.watch(2, (e) => events.push(e), (e) => assert.fail(e));
      await until(events, (e) => e.length === 1, 3000);
      w.close();
      assert.deepEqual(events.map(brief), [{ type: 'delete', key: '10.244.6.0-24', ip: '192.168.0.6', mac: '02:00:00:00:00:01' }]);
      assert.equal(events[0]!.revision, 2);
      await a.create(leaseOf('10.244.8.0-24', '192.168.0.8'), 1);
      await new Promise((r) => setTimeout(r, 5));
      assert.ok(await b.create(leaseOf('10.244.8.0-24', '192.168.0.18'), 60_000), 'the expired holder does not block create');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('renew: new attrs and expiry on a live key; compare-and-swap on the revision; gone when expired or deleted', async () => {
    const clock = new FakeClock();
    const path = tmp.db();
    const a = new LocalStore(path, { now: clock.now });
    const b = new LocalStore(path, { now: clock.now });
    try {
      const c = (await a.create(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000))!;
      clock.t += 500;
      const r = await a.renew(leaseOf('10.244.9.0-24', '192.168.0.9', 'aa:aa:aa:aa:aa:aa'), 1000, c.modRevision);
      assert.equal(r.lease.expiresAt, clock.t + 1000, 'renewal extends the expiry');
      assert.equal(r.modRevision, 2);
      const seen = (await b.list()).leases[0]!;
      assert.equal(seen.lease.expiresAt, clock.t + 1000);
      assert.deepEqual(seen.lease.attrs.backendData, { VNI: 1, VtepMAC: 'aa:aa:aa:aa:aa:aa' });
      await assert.rejects(a.renew(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000, c.modRevision), (e: unknown) => e instanceof LeaseGoneError && e.reason === 'changed');
      clock.t += 1000;
      await assert.rejects(a.renew(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000), (e: unknown) =>
        e instanceof LeaseGoneError && e.reason === 'absent' && e.message === `local:${path}: renew 10.244.9.0-24: the lease no longer exists (expired or deleted)`);
      const again = (await b.create(leaseOf('10.244.9.0-24', '192.168.0.19'), 1000))!;
      assert.equal(await a.remove('10.244.9.0-24', r.modRevision), false, 'remove with an old revision deletes nothing');
      assert.equal(await a.remove('10.244.9.0-24', again.modRevision), true);
      assert.equal(await a.remove('10.244.9.0-24'), false, 'nothing left to delete');
      await assert.rejects(a.renew(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000), LeaseGoneError);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('malformed rows are reported by list and watch, never fatal', async () => {
    const path = tmp.db();
    const s = new LocalStore(path);
    const events: WatchEvent[] = [];
    const w = s.watch(1, (e) => events.push(e), (e) => assert.fail(e));
    try {
      await s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 60_000);
      // What a hand edit with the sqlite3 shell could leave: a key that is no subnet, a value that is no JSON.
      const raw = new Database(path);
      raw.transaction(() => {
        for (const [key, value] of [['garbage', '{}'], ['10.244.2.0-24', '{"PublicIP":']]) {
          const rev = raw.prepare("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value").pluck().get() as number;
          raw.prepare('INSERT INTO leases (key, value, expires_at, mod_revision) VALUES (?, ?, NULL, ?)').run(key, value, rev);
          raw.prepare("INSERT INTO events (revision, key, type, value) VALUES (?, ?, 'put', ?)").run(rev, key, value);
        }
      }).immediate();
      raw.close();
      const l = await s.list();
      assert.deepEqual(l.leases.map((x) => x.key), ['10.244.1.0-24']);
      assert.equal(l.revision, 3);
      assert.deepEqual(l.malformed.map((m) => m.key), ['10.244.2.0-24', 'garbage']);
      assert.match(l.malformed[0]!.error, /lease 10.244.2.0-24: its value is not JSON/);
      assert.match(l.malformed[1]!.error, /lease key "garbage" does not name a subnet/);
      await until(events, (e) => e.length === 3);
      assert.equal(events[0]!.type === 'put' && events[0]!.lease !== undefined, true);
      assert.deepEqual(events.slice(1).map((e) => [e.key, e.lease === undefined, e.type === 'put' && typeof e.error === 'string']), [['garbage', true, true], ['10.244.2.0-24', true, true]]);
    } finally {
      w.close();
      await s.close();
    }
  });

  it('watch across processes: every change from another agent, in order, with no gap', async () => {
    const path = tmp.db();
    const s = new LocalStore(path, { pollIntervalMs: 25 });
    const events: WatchEvent[] = [];
    const w = s.watch(1, (e) => events.push(e), (e) => assert.fail(e));
    try {
      const steps = [
        { op: 'create', key: '10.244.1.0-24', publicIp: '192.168.0.1', mac: '02:00:00:00:01:01', ttlMs: 60_000 },
        { op: 'sleep', ms: 60 },
        { op: 'create', key: '10.244.2.0-24', publicIp: '192.168.0.2', mac: '02:00:00:00:02:01', ttlMs: 60_000 },
        { op: 'renew', key: '10.244.1.0-24', publicIp: '192.168.0.1', mac: '02:00:00:00:01:02', ttlMs: 60_000 },
        { op: 'sleep', ms: 60 },
        { op: 'remove', key: '10.244.2.0-24' },
        { op: 'create', key: '10.244.2.0-24', publicIp: '192.168.0.3', mac: '02:00:00:00:03:01', ttlMs: null },
      ];
      const second = [
        { op: 'create', key: '10.244.10.0-24', publicIp: '192.168.0.10', ttlMs: 60_000 },
        { op: 'sleep', ms: 30 },
        { op: 'renew', key: '10.244.10.0-24', publicIp: '192.168.0.10', mac: '02:00:00:00:10:02', ttlMs: 60_000 },
        { op: 'remove', key: '10.244.10.0-24' },
      ];
      await Promise.all([worker('script', path, JSON.stringify(steps)), worker('script', path, JSON.stringify(second))]);
      await until(events, (e) => e.length === 8);
      assert.deepEqual(events.map((e) => e.revision), [1, 2, 3, 4, 5, 6, 7, 8], 'every revision once, in order');
      const mine = events.filter((e) => !e.key.startsWith('10.244.10.')).map(brief);
      assert.deepEqual(mine, [
        { type: 'put', key: '10.244.1.0-24', ip: '192.168.0.1', mac: '02:00:00:00:01:01' },
        { type: 'put', key: '10.244.2.0-24', ip: '192.168.0.2', mac: '02:00:00:00:02:01' },
        { type: 'put', key: '10.244.1.0-24', ip: '192.168.0.1', mac: '02:00:00:00:01:02' },
        { type: 'delete', key: '10.244.2.0-24', ip: '192.168.0.2', mac: '02:00:00:00:02:01' },
        { type: 'put', key: '10.244.2.0-24', ip: '192.168.0.3', mac: '02:00:00:00:03:01' },
      ]);
      assert.deepEqual(events.filter((e) => e.key.startsWith('10.244.10.')).map((e) => e.type), ['put', 'put', 'delete']);
      const reservation = events.filter((e) => e.key === '10.244.2.0-24').at(-1)!;
      assert.equal(reservation.lease?.expiresAt, null, 'the reservation arrives without expiry');
      assert.equal(events[7]!.revision, (await s.list()).revision);
    } finally {
      w.close();
      await s.close();
    }
  });

  it('a watch behind the kept history fails with CompactedError; a new list has the right state', async () => {
    const path = tmp.db();
    const writer = new LocalStore(path, { historyLimit: 5 });
    const reader = new LocalStore(path, { historyLimit: 5 });
    try {
      await writer.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 60_000);
      const before = await reader.list();
      for (let i = 2; i <= 8; i++) await writer.create(leaseOf(`10.244.${i}.0-24`, `192.168.0.${i}`), 60_000);
      await writer.remove('10.244.1.0-24');
      await writer.remove('10.244.5.0-24');
      const failure = await new Promise<Error>((resolve) => {
        reader.watch(before.revision + 1, () => assert.fail('no event from a compacted history'), resolve);
      });
      assert.ok(failure instanceof CompactedError);
      assert.ok(failure instanceof StoreError);
      assert.equal(failure.requested, 2);
      assert.equal(failure.compactedThrough, 10 - 5);
      assert.match(failure.message, /^local:.*: watch: revision 2 is no longer in the history \(compacted through 5\): list again/);
      const now = await reader.list();
      assert.equal(now.revision, 10);
      assert.deepEqual(now.leases.map((l) => l.key), ['10.244.2.0-24', '10.244.3.0-24', '10.244.4.0-24', '10.244.6.0-24', '10.244.7.0-24', '10.244.8.0-24']);
      const events: WatchEvent[] = [];
      const w = reader.watch(now.revision - 4, (e) => events.push(e), (e) => assert.fail(e));
      await until(events, (e) => e.length === 5);
      w.close();
      assert.deepEqual(events.map((e) => e.revision), [6, 7, 8, 9, 10], 'the kept history is still served');
    } finally {
      await writer.close();
      await reader.close();
    }
  });

  it('errors say what failed and where', async () => {
    const path = tmp.db();
    const s = new LocalStore(path);
    await s.close();
    await assert.rejects(s.list(), (e: unknown) => e instanceof StoreError && e.op === 'list' && e.where === `local:${path}` && /the store is closed/.test(e.message));
    await assert.rejects(s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 1000), (e: unknown) => e instanceof StoreError && e.message === `local:${path}: create 10.244.1.0-24: the store is closed`);
    const notDb = tmp.db('not-a-db');
    writeFileSync(notDb, 'this is not an SQLite file, but long enough to have a header of sorts............................');
    assert.throws(() => new LocalStore(notDb), (e: unknown) => e instanceof StoreError && e.op === 'open' && /not-a-db: open: file is not a database/.test(e.message));
    const t = new LocalStore(tmp.db());
    try {
      await assert.rejects(t.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 0), /create 10.244.1.0-24: the TTL must be a positive number/);
      assert.throws(() => t.watch(0, () => undefined, () => undefined), /watch: the first revision must be a positive integer/);
    } finally {
      await t.close();
    }
    // Another agent holds the write lock longer than the busy timeout: the write fails, naming the lock.
    const lockedPath = tmp.db();
    const u = new LocalStore(lockedPath, { busyTimeoutMs: 50 });
    const holder = new Database(lockedPath);
    holder.prepare('BEGIN IMMEDIATE').run();
    try {
      await assert.rejects(u.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 1000), (e: unknown) =>
        e instanceof StoreError && /create 10.244.1.0-24: database is locked/.test(e.message) && (e.cause as { code?: string }).code === 'SQLITE_BUSY');
    } finally {
      holder.prepare('ROLLBACK').run();
      holder.close();
    }
    assert.ok(await u.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 1000), 'works again once the lock is released');
    await u.close();
  });

  it('refuses a file written by a newer schema', () => {
    const path = tmp.db();
    const raw = new Database(path);
    raw.pragma('user_version = 99');
    raw.close();
    assert.throws(() => new LocalStore(path), /schema version 99, written by a newer twill/);
  });
});
