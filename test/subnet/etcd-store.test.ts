// The etcd store against real etcd (Debian's etcd-server 3.4, started by the
// test on 127.0.0.1): the same contract as the local store, flannel's exact
// layout (checked with a plain etcd client, as flanneld would see it), an etcd
// that is down or silent, and a 3-member cluster losing its leader.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { EtcdStore, type EtcdStoreOptions } from '../../src/subnet/etcd-store.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { LeaseManager, type AcquirePreferences, type PeerEvent } from '../../src/subnet/manager.js';
import { CompactedError, LeaseGoneError, StoreError, type WatchEvent } from '../../src/subnet/store.js';
import { EtcdCluster, freePort } from '../support/etcd.js';
import { ipJson } from '../support/exec.js';
import { RUN_PREFIX, TestHosts } from '../support/hosts.js';
import { brief, leaseOf, until } from './store-support.js';

let etcd: EtcdCluster;
let raw: Etcd3;
const stores: EtcdStore[] = [];
let prefixes = 0;

/** A store on the shared etcd under a prefix of its own (default: a new one per call). */
const store = (opts: Partial<EtcdStoreOptions> = {}) => {
  const s = new EtcdStore({ endpoints: etcd.endpoints, prefix: `/twill-test/${++prefixes}`, ...opts });
  stores.push(s);
  return s;
};

const rawGet = async (key: string) => (await raw.kv.range({ key: Buffer.from(key) })).kvs[0];
const leaseCount = async () => (await raw.leaseClient.leaseLeases()).leases.length;

before(async () => {
  etcd = await EtcdCluster.start();
  raw = new Etcd3({ hosts: etcd.endpoints });
});

after(async () => {
  for (const s of stores) await s.close();
  raw?.close();
  await etcd?.destroy();
});

describe('etcd store: one member', () => {
  it('writes flannel\'s key, value and TTL, and lists them with the revision', async () => {
    const s = new EtcdStore({ endpoints: etcd.endpoints, timeoutMs: 3000 });
    stores.push(s);
    assert.equal(s.description, `etcd:${etcd.endpoints[0]}`);
    const empty = await s.list();
    assert.deepEqual(empty.leases, []);
    const created = await s.create(leaseOf('10.244.1.0-24', '192.168.0.1', 'aa:bb:cc:dd:ee:01'), 60_000);
    assert.ok(created);
    assert.equal(created.key, '10.244.1.0-24');
    const kv = await rawGet('/coreos.com/network/subnets/10.244.1.0-24');
    assert.ok(kv, 'the key is where flanneld looks');
    assert.equal(kv.value.toString(), '{"PublicIP":"192.168.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}');
    assert.equal(Number(kv.mod_revision), created.modRevision);
    assert.equal(created.modRevision, empty.revision + 1);
    const ttl = await raw.leaseClient.leaseTimeToLive({ ID: kv.lease });
    assert.equal(ttl.grantedTTL, '60', 'an etcd lease of the TTL in seconds');
    const l = await s.list();
    assert.equal(l.revision, created.modRevision);
    assert.deepEqual(l.leases.map((x) => [x.key, x.modRevision, x.lease.attrs.publicIp]), [['10.244.1.0-24', created.modRevision, '192.168.0.1']]);
    const exp = l.leases[0]!.lease.expiresAt!;
    assert.ok(exp > Date.now() + 55_000 && exp <= Date.now() + 60_000, `expiry ${exp - Date.now()} ms from now`);
    assert.equal(await s.remove('10.244.1.0-24'), true);
  });

  it('reads leases flanneld wrote, and flanneld can read ours (its JSON, its lease TTL)', async () => {
    const s = store();
    const g = await raw.leaseClient.leaseGrant({ TTL: 86400 });
    // Byte for byte what flanneld v0.28 puts (Go's json.Marshal of LeaseAttrs).
    const flannelValue = '{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:02"}}';
    await raw.kv.put({ key: Buffer.from(`${s.prefix}/subnets/10.244.2.0-24`), value: Buffer.from(flannelValue), lease: g.ID });
    const dual = '{"PublicIP":"198.18.0.3","PublicIPv6":"fc00::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:03"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:00:01:03"}}';
    await raw.kv.put({ key: Buffer.from(`${s.prefix}/subnets/10.244.3.0-24&fc00:0:0:3::-64`), value: Buffer.from(dual) });
    const l = await s.list();
    assert.deepEqual(l.malformed, []);
    const [a, b] = l.leases;
    assert.equal(a!.key, '10.244.2.0-24');
    assert.deepEqual(a!.lease.attrs, { publicIp: '198.18.0.2', publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:bb:cc:00:00:02' }, backendV6Data: null });
    assert.ok(a!.lease.expiresAt! > Date.now() + 86_000_000, 'expiry from the etcd lease\'s remaining TTL');
    assert.equal(b!.key, '10.244.3.0-24&fc00:0:0:3::-64');
    assert.equal(b!.lease.expiresAt, null, 'no etcd lease: a reservation');
    assert.equal(b!.lease.attrs.publicIpv6, 'fc00::3');
    assert.deepEqual(b!.lease.attrs.backendV6Data, { VNI: 1, VtepMAC: 'aa:bb:cc:00:01:03' });
    // Ours, read the way flanneld reads it: JSON with these field names, a key that parses as its subnet.
    await s.create(leaseOf('10.244.4.0-24&fc00:0:0:4::-64', '198.18.0.4', 'aa:bb:cc:00:00:04', 'fc00::4'), 60_000);
    const ours = await rawGet(`${s.prefix}/subnets/10.244.4.0-24&fc00:0:0:4::-64`);
    assert.deepEqual(JSON.parse(ours!.value.toString()), { PublicIP: '198.18.0.4', PublicIPv6: 'fc00::4', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'aa:bb:cc:00:00:04' } });
    assert.notEqual(ours!.lease, '0');
  });

  it('create is flannel\'s compare-and-swap: two stores, one key, one winner; the loser leaves no etcd lease', async () => {
    const a = store();
    const b = new EtcdStore({ endpoints: etcd.endpoints, prefix: a.prefix });
    stores.push(b);
    const leasesBefore = await leaseCount();
    for (let i = 0; i < 5; i++) {
      const key = `10.244.${10 + i}.0-24`;
      const [ra, rb] = await Promise.all([a.create(leaseOf(key, '192.168.0.1'), 60_000), b.create(leaseOf(key, '192.168.0.2'), 60_000)]);
      assert.equal([ra, rb].filter((r) => r !== null).length, 1, `exactly one winner for ${key}`);
      assert.equal(await b.create(leaseOf(key, '192.168.0.3'), 60_000), null, 'taken stays taken');
      assert.equal(await a.create(leaseOf(key, '192.168.0.3'), null), null, 'a reservation too');
    }
    assert.equal(await leaseCount(), leasesBefore + 5, 'one etcd lease per key; the losers\' were revoked');
    assert.equal((await a.list()).leases.length, 5);
  });

  it('dual stack: one key holds both subnets; etcd compares that one key, as flannel does', async () => {
    const s = store();
    assert.ok(await s.create(leaseOf('10.244.5.0-24&fd00:10:244:5::-64', '192.168.0.5'), 60_000));
    assert.equal(await s.create(leaseOf('10.244.5.0-24&fd00:10:244:5::-64', '192.168.0.6'), 60_000), null);
    assert.deepEqual((await s.list()).leases.map((l) => [l.key, l.lease.subnet !== null, l.lease.ipv6Subnet !== null]), [['10.244.5.0-24&fd00:10:244:5::-64', true, true]]);
  });

  it('expiry: the etcd lease runs out, the key is gone, its deletion is a watch event, and the subnet is free again', async () => {
    const s = store();
    const start = (await s.list()).revision + 1;
    const events: WatchEvent[] = [];
    const w = s.watch(start, (e) => events.push(e), (e) => assert.fail(e));
    try {
      const c = await s.create(leaseOf('10.244.4.0-24', '192.168.0.4'), 1000);
      assert.ok(c);
      assert.ok(c.lease.expiresAt! <= Date.now() + 2000, 'etcd\'s shortest lease (2 s here) bounds the expiry');
      await s.create(leaseOf('10.244.5.0-24', '192.168.0.5'), null);
      assert.equal((await s.list()).leases.length, 2);
      await until(events, (e) => e.length === 3, 10_000);
      assert.deepEqual(events.map(brief), [
        { type: 'put', key: '10.244.4.0-24', ip: '192.168.0.4', mac: '02:00:00:00:00:01' },
        { type: 'put', key: '10.244.5.0-24', ip: '192.168.0.5', mac: '02:00:00:00:00:01' },
        { type: 'delete', key: '10.244.4.0-24', ip: '192.168.0.4', mac: '02:00:00:00:00:01' },
      ]);
      assert.equal(events[1]!.lease?.expiresAt, null, 'the reservation arrives without expiry');
      assert.ok(Date.now() >= c.lease.expiresAt!, 'not deleted before its expiry');
      const l = await s.list();
      assert.deepEqual(l.leases.map((x) => x.key), ['10.244.5.0-24'], 'the reservation stays');
      assert.equal(l.revision, events[2]!.revision);
      assert.ok(await s.create(leaseOf('10.244.4.0-24', '192.168.0.9'), 60_000), 'the subnet is free again');
    } finally {
      w.close();
    }
  });

  it('renew: new attrs and a new etcd lease on a live key; compare-and-swap on the revision; gone when deleted', async () => {
    const s = store();
    const other = new EtcdStore({ endpoints: etcd.endpoints, prefix: s.prefix });
    stores.push(other);
    const c = (await s.create(leaseOf('10.244.9.0-24', '192.168.0.9'), 10_000))!;
    const firstLease = (await rawGet(`${s.prefix}/subnets/10.244.9.0-24`))!.lease;
    const r = await s.renew(leaseOf('10.244.9.0-24', '192.168.0.9', 'aa:aa:aa:aa:aa:aa'), 60_000, c.modRevision);
    assert.ok(r.modRevision > c.modRevision);
    assert.ok(r.lease.expiresAt! > Date.now() + 55_000, 'renewal extends the expiry');
    const kv = (await rawGet(`${s.prefix}/subnets/10.244.9.0-24`))!;
    assert.notEqual(kv.lease, firstLease, 'a new etcd lease, as flanneld renews');
    assert.equal((await raw.leaseClient.leaseTimeToLive({ ID: firstLease })).TTL, '-1', 'the old etcd lease is revoked');
    const seen = (await other.list()).leases[0]!;
    assert.deepEqual(seen.lease.attrs.backendData, { VNI: 1, VtepMAC: 'aa:aa:aa:aa:aa:aa' });
    assert.equal(seen.modRevision, r.modRevision);
    await assert.rejects(s.renew(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000, c.modRevision), (e: unknown) => e instanceof LeaseGoneError && e.reason === 'changed');
    const unconditional = await other.renew(leaseOf('10.244.9.0-24', '192.168.0.19'), null);
    assert.equal(unconditional.lease.expiresAt, null, 'renewed into a reservation');
    assert.equal((await rawGet(`${s.prefix}/subnets/10.244.9.0-24`))!.lease, '0');
    assert.equal(await s.remove('10.244.9.0-24', r.modRevision), false, 'remove with an old revision deletes nothing');
    assert.equal(await s.remove('10.244.9.0-24', unconditional.modRevision), true);
    assert.equal(await s.remove('10.244.9.0-24'), false, 'nothing left to delete');
    await assert.rejects(s.renew(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000), (e: unknown) =>
      e instanceof LeaseGoneError && e.reason === 'absent' && e.message === `${s.description}: renew 10.244.9.0-24: the lease no longer exists (expired or deleted)`);
    await assert.rejects(s.renew(leaseOf('10.244.9.0-24', '192.168.0.9'), 1000, unconditional.modRevision), (e: unknown) => e instanceof LeaseGoneError && e.reason === 'absent');
    const again = (await other.create(leaseOf('10.244.9.0-24', '192.168.0.29'), 5000))!;
    assert.equal(await s.remove('10.244.9.0-24'), true, 'remove without a revision');
    assert.ok(again);
  });

  it('malformed keys and values are reported by list and watch, never fatal', async () => {
    const s = store();
    const start = (await s.list()).revision + 1;
    const events: WatchEvent[] = [];
    const w = s.watch(start, (e) => events.push(e), (e) => assert.fail(e));
    try {
      await s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 60_000);
      // What a hand edit with etcdctl could leave: a key that is no subnet, a value that is no JSON.
      await raw.kv.put({ key: Buffer.from(`${s.prefix}/subnets/garbage`), value: Buffer.from('{}') });
      await raw.kv.put({ key: Buffer.from(`${s.prefix}/subnets/10.244.2.0-24`), value: Buffer.from('{"PublicIP":') });
      await raw.kv.deleteRange({ key: Buffer.from(`${s.prefix}/subnets/garbage`) });
      const l = await s.list();
      assert.deepEqual(l.leases.map((x) => x.key), ['10.244.1.0-24']);
      assert.deepEqual(l.malformed.map((m) => m.key), ['10.244.2.0-24']);
      assert.match(l.malformed[0]!.error, /lease 10.244.2.0-24: its value is not JSON/);
      await until(events, (e) => e.length === 4);
      assert.equal(events[0]!.type === 'put' && events[0]!.lease !== undefined, true);
      assert.deepEqual(events.slice(1).map((e) => [e.type, e.key, e.lease === undefined, e.type === 'put' ? e.error?.replace(/ \(.*/, '') : null]), [
        ['put', 'garbage', true, 'lease key "garbage" does not name a subnet'],
        ['put', '10.244.2.0-24', true, 'lease 10.244.2.0-24: its value is not JSON'],
        ['delete', 'garbage', true, null],
      ]);
    } finally {
      w.close();
    }
  });

  it('watch: every change of two writers from a revision on, in order, once; from the middle, exactly the rest', async () => {
    const a = store();
    const b = new EtcdStore({ endpoints: etcd.endpoints, prefix: a.prefix });
    stores.push(b);
    const from = (await a.list()).revision + 1;
    const events: WatchEvent[] = [];
    const w = a.watch(from, (e) => events.push(e), (e) => assert.fail(e));
    const revisions: number[] = [];
    try {
      const one = async () => {
        const c = (await a.create(leaseOf('10.244.1.0-24', '192.168.0.1', '02:00:00:00:01:01'), 60_000))!;
        revisions.push(c.modRevision);
        const r = await a.renew(leaseOf('10.244.1.0-24', '192.168.0.1', '02:00:00:00:01:02'), 60_000, c.modRevision);
        revisions.push(r.modRevision);
      };
      const two = async () => {
        for (let i = 0; i < 3; i++) {
          const c = (await b.create(leaseOf(`10.244.${20 + i}.0-24`, `192.168.1.${i}`), null))!;
          revisions.push(c.modRevision);
        }
        await b.remove('10.244.21.0-24');
      };
      await Promise.all([one(), two()]);
      // Written around the watch, by a plain client: not a subnet, so not an event.
      await raw.put(`${a.prefix}/config`).value('{}');
      const last = (await a.list()).revision;
      await until(events, (e) => e.length === 6);
      assert.deepEqual(events.map((e) => e.revision), [...events.map((e) => e.revision)].sort((x, y) => x - y), 'in revision order');
      assert.equal(new Set(events.map((e) => e.revision)).size, 6, 'each once');
      for (const r of revisions) assert.ok(events.some((e) => e.revision === r), `revision ${r} delivered`);
      assert.deepEqual(events.filter((e) => e.key === '10.244.1.0-24').map(brief), [
        { type: 'put', key: '10.244.1.0-24', ip: '192.168.0.1', mac: '02:00:00:00:01:01' },
        { type: 'put', key: '10.244.1.0-24', ip: '192.168.0.1', mac: '02:00:00:00:01:02' },
      ]);
      assert.deepEqual(events.filter((e) => e.key === '10.244.21.0-24').map(brief), [
        { type: 'put', key: '10.244.21.0-24', ip: '192.168.1.1', mac: '02:00:00:00:00:01' },
        { type: 'delete', key: '10.244.21.0-24', ip: '192.168.1.1', mac: '02:00:00:00:00:01' },
      ]);
      assert.equal(last, events.at(-1)!.revision + 1, 'the config write is the only later change');
      // A second watcher from the middle (a list's revision + 1): the tail, nothing before it.
      const mid = events[2]!.revision;
      const tail: WatchEvent[] = [];
      const w2 = b.watch(mid, (e) => tail.push(e), (e) => assert.fail(e));
      await until(tail, (t) => t.length === 4);
      await new Promise((r) => setTimeout(r, 200));
      w2.close();
      assert.deepEqual(tail.map((e) => e.revision), events.slice(2).map((e) => e.revision));
    } finally {
      w.close();
    }
  });

  it('a watch behind etcd\'s compaction fails with CompactedError; a new list and watch carry on', async () => {
    const s = store();
    const before = await s.list();
    for (let i = 1; i <= 4; i++) await s.create(leaseOf(`10.244.${i}.0-24`, `192.168.0.${i}`), null);
    await s.remove('10.244.1.0-24');
    const now = await s.list();
    await raw.kv.compact({ revision: now.revision - 1 });
    const failure = await new Promise<Error>((resolve) => {
      s.watch(before.revision + 1, () => assert.fail('no event from a compacted history'), resolve);
    });
    assert.ok(failure instanceof CompactedError, String(failure));
    assert.equal(failure.requested, before.revision + 1);
    assert.equal(failure.compactedThrough, now.revision - 2);
    assert.equal(failure.message, `${s.description}: watch: revision ${before.revision + 1} is no longer in the history (compacted through ${now.revision - 2}): list again and watch from there`);
    assert.deepEqual(now.leases.map((l) => l.key), ['10.244.2.0-24', '10.244.3.0-24', '10.244.4.0-24']);
    const events: WatchEvent[] = [];
    const w = s.watch(now.revision - 1, (e) => events.push(e), (e) => assert.fail(e));
    await until(events, (e) => e.length === 2);
    w.close();
    assert.deepEqual(events.map((e) => [e.type, e.revision]), [['put', now.revision - 1], ['delete', now.revision]], 'the kept history is still served');
  });

  it('reads the network config from <prefix>/config', async () => {
    const s = store();
    assert.equal(await s.readNetworkConfig(), null);
    const conf = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
    await raw.put(`${s.prefix}/config`).value(conf);
    assert.equal(await s.readNetworkConfig(), conf);
    assert.equal(parseNetworkConfig((await s.readNetworkConfig())!).backend.type, "vxlan");
    assert.equal(s.description, `etcd:${etcd.endpoints[0]} (prefix ${s.prefix})`);
  });

  it('errors say what failed and where; bad options are refused at once', async () => {
    const s = store();
    await assert.rejects(s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 0), /create 10.244.1.0-24: the TTL must be a positive number/);
    assert.throws(() => s.watch(0, () => undefined, () => undefined), /watch: the first revision must be a positive integer/);
    await s.close();
    await s.close();
    await assert.rejects(s.list(), (e: unknown) => e instanceof StoreError && e.op === 'list' && e.where === s.description && /the store is closed/.test(e.message));
    assert.throws(() => new EtcdStore({ endpoints: [] }), /no endpoints given \(--etcd-endpoints\)/);
    assert.throws(() => new EtcdStore({ endpoints: ['ftp://x'] }), /an etcd endpoint is http:\/\/ or https:\/\//);
    assert.throws(() => new EtcdStore({ endpoints: ['https://127.0.0.1:1'], caFile: '/nonexistent/ca.pem' }), (e: unknown) =>
      e instanceof StoreError && e.op === 'open' && /cannot read the CA certificate \/nonexistent\/ca.pem \(--etcd-cafile\): ENOENT/.test(e.message));
    assert.throws(() => new EtcdStore({ endpoints: ['127.0.0.1:1'], username: 'root' }), /a username needs a password/);
    const bare = new EtcdStore({ endpoints: ['127.0.0.1:2379'] });
    stores.push(bare);
    assert.equal(bare.description, 'etcd:http://127.0.0.1:2379', 'a bare host:port is http');
  });
});

describe('etcd store: etcd down or silent', () => {
  it('a stopped etcd: calls fail within the timeout with a StoreError naming the endpoint; a watch reports it within the timeout', async () => {
    const c = await EtcdCluster.start();
    try {
      const s = new EtcdStore({ endpoints: c.endpoints, timeoutMs: 1500 });
      stores.push(s);
      await s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 60_000);
      const watchError = new Promise<Error>((resolve) => s.watch(1, () => undefined, resolve));
      await c.stopAll();
      for (const op of [() => s.list(), () => s.create(leaseOf('10.244.2.0-24', '192.168.0.2'), 60_000), () => s.readNetworkConfig()]) {
        const t0 = Date.now();
        await assert.rejects(op(), (e: unknown) =>
          e instanceof StoreError && e.where === `etcd:${c.endpoints[0]}` &&
          e.message.includes(`cannot reach etcd at ${c.endpoints[0]}: `) && e.message.endsWith('— is etcd running? (--etcd-endpoints)'));
        assert.ok(Date.now() - t0 < 2500, `failed after ${Date.now() - t0} ms (timeout 1500 ms)`);
      }
      const t0 = Date.now();
      const e = await watchError;
      assert.ok(e instanceof StoreError && !(e instanceof CompactedError), String(e));
      assert.match(e.message, /: watch: cannot reach etcd at /);
      assert.ok(Date.now() - t0 < 3000, `the watch gave up after ${Date.now() - t0} ms`);
      const fresh = new EtcdStore({ endpoints: c.endpoints, timeoutMs: 1500 });
      stores.push(fresh);
      await assert.rejects(fresh.list(), /list: cannot reach etcd at http:\/\/127\.0\.0\.1:\d+: connect ECONNREFUSED — is etcd running\? \(--etcd-endpoints\)/);
    } finally {
      await c.destroy();
    }
  });

  it('an endpoint that accepts connections but never answers: a StoreError when the timeout runs out, not a hang', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((sock) => sockets.add(sock));
    const port = await freePort();
    await new Promise<void>((r) => silent.listen(port, '127.0.0.1', r));
    try {
      const s = new EtcdStore({ endpoints: [`http://127.0.0.1:${port}`], timeoutMs: 800 });
      stores.push(s);
      const t0 = Date.now();
      await assert.rejects(s.list(), (e: unknown) => e instanceof StoreError && /list: (no answer from etcd at http:\/\/127.0.0.1:\d+ within 800 ms|cannot reach etcd at)/.test(e.message));
      const took = Date.now() - t0;
      assert.ok(took >= 700 && took < 2500, `failed after ${took} ms`);
      const t1 = Date.now();
      const e = await new Promise<Error>((resolve) => s.watch(1, () => assert.fail('no events'), resolve));
      assert.ok(e instanceof StoreError, String(e));
      assert.ok(Date.now() - t1 < 3000, `the watch gave up after ${Date.now() - t1} ms`);
      await s.close();
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

describe('etcd store: TLS and passwords', () => {
  it('TLS with a client certificate (--etcd-cafile/-certfile/-keyfile); without the client certificate etcd refuses, and the error says so', async () => {
    const c = await EtcdCluster.start({ tls: true });
    try {
      const tls = c.tls!;
      assert.match(c.endpoints[0]!, /^https:\/\//);
      const s = new EtcdStore({ endpoints: c.endpoints, ...tls });
      stores.push(s);
      const created = await s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 60_000);
      assert.ok(created);
      assert.deepEqual((await s.list()).leases.map((l) => l.key), ['10.244.1.0-24']);
      const events: WatchEvent[] = [];
      const w = s.watch(created.modRevision, (e) => events.push(e), (e) => assert.fail(e));
      await until(events, (e) => e.length === 1);
      w.close();
      // The server's CA but no client certificate: the handshake fails, within the timeout.
      const noCert = new EtcdStore({ endpoints: c.endpoints, caFile: tls.caFile, timeoutMs: 1500 });
      stores.push(noCert);
      await assert.rejects(noCert.list(), (e: unknown) => e instanceof StoreError && e.op === 'list' &&
        e.message === `${noCert.description}: list: TLS with etcd at ${c.endpoints[0]} failed: etcd refused this client (a client certificate it trusts is needed: --etcd-certfile, --etcd-keyfile)`);
      // No CA: the public CAs do not know the test CA.
      const noCa = new EtcdStore({ endpoints: c.endpoints, certFile: tls.certFile, keyFile: tls.keyFile, timeoutMs: 1500 });
      stores.push(noCa);
      await assert.rejects(noCa.list(), (e: unknown) => e instanceof StoreError && /TLS with etcd at .* failed: etcd's certificate is not signed by a CA this client trusts \(.*; --etcd-cafile\)$/.test(e.message));
      assert.throws(() => new EtcdStore({ endpoints: ['http://127.0.0.1:2379'], ...tls }), /TLS files are given but the endpoints are http:\/\/: use https:\/\/ URLs/);
    } finally {
      await c.destroy();
    }
  });

  it('a username and password (--etcd-username/--etcd-password); a wrong password is an error that names the flags', async () => {
    const c = await EtcdCluster.start();
    const admin = new Etcd3({ hosts: c.endpoints });
    try {
      await admin.user('root').create('root-pw');
      await admin.role('root').create();
      await admin.user('root').addRole('root');
      await admin.user('twill').create('twill-pw');
      await admin.role('twill').create();
      await admin.role('twill').grant({ permission: 'Readwrite', range: admin.range({ prefix: '/coreos.com/network/' }) });
      await admin.user('twill').addRole('twill');
      await admin.auth.authEnable();
      const s = new EtcdStore({ endpoints: c.endpoints, username: 'twill', password: 'twill-pw' });
      stores.push(s);
      assert.ok(await s.create(leaseOf('10.244.1.0-24', '192.168.0.1'), 60_000));
      assert.equal((await s.list()).leases.length, 1);
      const wrong = new EtcdStore({ endpoints: c.endpoints, username: 'twill', password: 'nope', timeoutMs: 2000 });
      stores.push(wrong);
      await assert.rejects(wrong.list(), (e: unknown) => e instanceof StoreError && /refused the credentials: authentication failed, invalid user ID or password \(--etcd-username, --etcd-password\)$/.test(e.message));
      const anonymous = new EtcdStore({ endpoints: c.endpoints, timeoutMs: 2000 });
      stores.push(anonymous);
      await assert.rejects(anonymous.list(), (e: unknown) => e instanceof StoreError && /list: etcd at .* refused the credentials: user name is empty \(--etcd-username, --etcd-password\)$/.test(e.message));
      const elsewhere = new EtcdStore({ endpoints: c.endpoints, prefix: '/elsewhere', username: 'twill', password: 'twill-pw', timeoutMs: 2000 });
      stores.push(elsewhere);
      await assert.rejects(elsewhere.list(), (e: unknown) => e instanceof StoreError && /denied access under \/elsewhere/.test(e.message));
    } finally {
      admin.close();
      await c.destroy();
    }
  });
});

describe('etcd store: a 3-member cluster', () => {
  it('the leader is killed: writes, reads and a watch carry on against the other members, with no gap', async () => {
    const c = await EtcdCluster.start({ members: 3 });
    try {
      const s = new EtcdStore({ endpoints: c.endpoints, timeoutMs: 8000 });
      stores.push(s);
      const events: WatchEvent[] = [];
      const errors: Error[] = [];
      const first = (await s.list()).revision + 1;
      const w = s.watch(first, (e) => events.push(e), (e) => errors.push(e));
      const written: number[] = [];
      let n = 0;
      let live = 0;
      const writeSome = async () => {
        for (let i = 0; i < 3; i++) {
          n++;
          const created = await s.create(leaseOf(`10.244.${n}.0-24`, `192.168.0.${n}`), 60_000);
          assert.ok(created, `create ${n}`);
          written.push(created.modRevision);
          live++;
          written.push((await s.renew(leaseOf(`10.244.${n}.0-24`, `192.168.0.${n}`, '02:00:00:00:00:02'), 60_000, created.modRevision)).modRevision);
        }
      };
      await writeSome();
      // Each member down once in turn (the leader first): whichever one serves the watch, it loses it once.
      const leader = await c.leader();
      const order = [leader, ...c.members.filter((m) => m !== leader)];
      for (const m of order) {
        await c.kill(m);
        await writeSome();
        assert.equal((await s.list()).leases.length, live, `list with ${m.name} down`);
        assert.equal(await s.remove(`10.244.${n}.0-24`), true);
        live--;
        written.push((await s.list()).revision);
        n++;
        const reservation = await s.create(leaseOf(`10.244.${n}.0-24`, `192.168.0.${n}`), null);
        assert.ok(reservation);
        written.push(reservation.modRevision);
        live++;
        await c.start(m);
      }
      await until(events, (e) => e.length === written.length, 20_000);
      w.close();
      assert.deepEqual(errors, []);
      assert.deepEqual(events.map((e) => e.revision), written, 'every change once, in order, across the failovers');
    } finally {
      await c.destroy();
    }
  });

  it('the lease manager on the etcd store: two nodes acquire, each sees the other come and go', async () => {
    const c = await EtcdCluster.start({ members: 3 });
    const managers: LeaseManager[] = [];
    try {
      const a = new EtcdStore({ endpoints: c.endpoints });
      const b = new EtcdStore({ endpoints: [...c.endpoints].reverse() });
      stores.push(a, b);
      const net = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
      const prefs = (ip: string): AcquirePreferences => ({ publicIp: ip, publicIpv6: null, previousSubnet: null, previousIpv6Subnet: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } });
      const ma = new LeaseManager(a);
      const mb = new LeaseManager(b);
      managers.push(ma, mb);
      const gotA = await ma.acquire(net, prefs('192.168.0.1'));
      const events: PeerEvent[] = [];
      const w = ma.watch((e) => events.push(e), (e) => assert.fail(e));
      try {
        await until(events, (e) => e.length === 1);
        assert.deepEqual(events[0], { type: 'snapshot', leases: [] });
        const gotB = await mb.acquire(net, prefs('192.168.0.2'));
        assert.notEqual(gotB.key, gotA.key);
        assert.ok(gotB.lease.expiresAt! > Date.now() + 23 * 3600_000, 'a 24 h etcd lease');
        await until(events, (e) => e.length === 2);
        assert.equal(events[1]!.type === 'added' && events[1].lease.attrs.publicIp, '192.168.0.2');
        // A restart finds its lease again by public IP.
        const restarted = new LeaseManager(b);
        managers.push(restarted);
        const again = await restarted.acquire(net, prefs('192.168.0.2'));
        assert.equal(again.how, 'own-lease');
        assert.equal(again.key, gotB.key);
        assert.equal(await mb.release(), false, 'the restarted manager holds it now');
        await b.remove(gotB.key);
        await until(events, (e) => e.length === 3);
        assert.equal(events[2]!.type === 'removed' && events[2].lease.attrs.publicIp, '192.168.0.2');
      } finally {
        w.close();
      }
    } finally {
      for (const m of managers) await m.close();
      await c.destroy();
    }
  });
});

const FLANNELD = join(process.env.TWILL_PEERS_DIR ?? '/var/cache/twill-peers', 'bin', 'flanneld');
const WORKER = fileURLToPath(new URL('./etcd-worker.js', import.meta.url));

describe('etcd store: one etcd shared with flanneld v0.28.9', () => {
  const hosts = new TestHosts();
  let c: EtcdCluster | null = null;
  let flanneld: ChildProcess | null = null;
  let dir: string | null = null;
  after(async () => {
    if (flanneld && flanneld.exitCode === null && flanneld.signalCode === null) {
      const gone = new Promise((r) => flanneld!.once('exit', r));
      flanneld.kill('SIGKILL');
      await gone;
    }
    await c?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await hosts.cleanup();
  });

  /** The etcd worker inside a test host: a twill node's process. */
  const inHost = <T>(host: string, ...args: string[]) => new Promise<T>((resolve, reject) => {
    execFile('ip', ['netns', 'exec', host, process.execPath, WORKER, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`etcd-worker ${args[0]} in ${host}: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as T);
    });
  });

  it('a twill node and a flanneld node lease from one etcd: flanneld programs twill\'s lease as a VXLAN peer, twill reads flanneld\'s', async () => {
    if (!existsSync(FLANNELD)) throw new Error(`${FLANNELD} is missing: run "npm run peers -- flanneld" (.ci/run does)`);
    const { hosts: h } = await hosts.underlay({ fl: '198.18.0.1/24', tw: '198.18.0.2/24' });
    const fl = h.fl!.name;
    const tw = h.tw!.name;
    c = await EtcdCluster.start({ placements: [{ netns: fl, ip: '198.18.0.1' }] });
    const endpoint = c.endpoints[0]!;
    const put = await c.request(c.members[0]!, '/v3/kv/put', JSON.stringify({
      key: Buffer.from('/coreos.com/network/config').toString('base64'),
      value: Buffer.from('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}').toString('base64'),
    }));
    assert.equal(put.status, 200, put.text);

    // twill first: its lease is in etcd before flanneld starts, so flanneld's snapshot has it.
    const twMac = '02:74:77:00:00:02';
    const ours = await inHost<{ key: string; how: string }>(tw, 'acquire', endpoint, '198.18.0.2', twMac);
    assert.match(ours.key, /^10\.244\.\d+\.0-24$/);

    dir = mkdtempSync(join(tmpdir(), `${RUN_PREFIX}-flanneld-`));
    const subnetFile = join(dir, 'subnet.env');
    let said = '';
    flanneld = spawn('ip', ['netns', 'exec', fl, 'setpriv', '--pdeathsig', 'KILL', FLANNELD, '--etcd-endpoints', endpoint, '--iface', 'eth0', '--subnet-file', subnetFile, '--ip-masq=false'], { stdio: ['ignore', 'pipe', 'pipe'] });
    flanneld.stdout!.on('data', (d: Buffer) => (said += d.toString()));
    flanneld.stderr!.on('data', (d: Buffer) => (said += d.toString()));
    const ourSubnet = ours.key.replace('-', '/');
    const deadline = Date.now() + 60_000;
    // flanneld decoded our lease: the route to our subnet over its VXLAN device, and our VtepMAC as the neighbour.
    for (;;) {
      const routes = await ipJson<{ dst: string; gateway?: string; flags: string[] }[]>(fl, ['route', 'show', 'dev', 'flannel.1']).catch(() => []);
      if (existsSync(subnetFile) && routes.some((r) => r.dst === ourSubnet)) break;
      if (Date.now() > deadline || flanneld.exitCode !== null) assert.fail(`flanneld did not program twill's lease ${ours.key}; it said:\n${said.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const neigh = await ipJson<{ dst: string; lladdr: string }[]>(fl, ['neigh', 'show', 'dev', 'flannel.1']);
    assert.deepEqual(neigh.filter((n) => n.dst === ourSubnet.replace(/\/24$/, '')).map((n) => n.lladdr), [twMac]);

    // And twill reads flanneld's lease: its subnet from subnet.env, its public IP, its VTEP's MAC, a 24 h TTL.
    const env = readFileSync(subnetFile, 'utf8');
    const flSubnet = /^FLANNEL_SUBNET=(\S+)\.1\/24$/m.exec(env)![1]! + '.0-24';
    const flMac = (await ipJson<{ address: string }[]>(fl, ['link', 'show', 'flannel.1']))[0]!.address;
    const listed = await inHost<{ leases: { key: string; publicIp: string; backendType: string; backendData: unknown; expiresAt: number | null }[]; malformed: unknown[] }>(tw, 'list', endpoint);
    assert.deepEqual(listed.malformed, []);
    const theirs = listed.leases.find((l) => l.key === flSubnet);
    assert.ok(theirs, `flanneld's lease ${flSubnet} in ${JSON.stringify(listed.leases)}`);
    assert.equal(theirs.publicIp, '198.18.0.1');
    assert.equal(theirs.backendType, 'vxlan');
    assert.deepEqual(theirs.backendData, { VNI: 1, VtepMAC: flMac });
    assert.ok(theirs.expiresAt! > Date.now() + 23 * 3600_000, 'flanneld\'s 24 h etcd lease, read as an expiry');
    assert.deepEqual(listed.leases.map((l) => l.key).sort(), [ours.key, flSubnet].sort());
  });
});
