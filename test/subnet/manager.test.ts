// The lease manager over the real local store (SQLite files in a temp dir):
// several managers on one file are several agents.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { formatCidr, parseCidr } from '../../src/ipam/addr.js';
import { OutOfSubnetsError } from '../../src/subnet/allocate.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import { AcquireError, LeaseManager, type AcquirePreferences, type OwnLeaseLost, type PeerEvent } from '../../src/subnet/manager.js';
import type { Lease } from '../../src/subnet/lease.js';
import type { StoredLease, SubnetStore } from '../../src/subnet/store.js';
import { FakeClock, leaseOf, settle, tempDir, until, worker } from './store-support.js';

const tmp = tempDir();
// Every manager is closed at the end, also when a test fails: a manager holding a lease keeps its renewal timer.
const managers: LeaseManager[] = [];
const manager = (...args: ConstructorParameters<typeof LeaseManager>) => {
  const m = new LeaseManager(...args);
  managers.push(m);
  return m;
};
after(async () => {
  for (const m of managers) await m.close();
  tmp.cleanup();
});

const NET = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
const v4 = parseNetworkConfig(NET);
const prefs = (publicIp: string | null, mac = '02:00:00:00:00:01', more: Partial<AcquirePreferences> = {}): AcquirePreferences => ({
  publicIp, publicIpv6: null, previousSubnet: null, previousIpv6Subnet: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac }, ...more,
});
const cidr = (l: Lease) => [l.subnet, l.ipv6Subnet].filter((c) => c !== null).map((c) => formatCidr(c!)).join(' + ');
const macOf = (l: Lease) => (l.attrs.backendData as { VtepMAC: string }).VtepMAC;

/** Peer events as short strings: "added 10.244.3.0/24 192.168.0.3". */
const show = (e: PeerEvent): string => {
  switch (e.type) {
    case 'snapshot': return `snapshot ${e.leases.map((l) => `${cidr(l)} ${l.attrs.publicIp}`).sort().join(', ')}`;
    case 'added': case 'removed': return `${e.type} ${cidr(e.lease)} ${e.lease.attrs.publicIp}`;
    case 'updated': return `updated ${cidr(e.lease)} ${macOf(e.previous)} -> ${macOf(e.lease)}`;
    case 'malformed': return `malformed ${e.key}`;
    case 'own-lease-lost': return `own-lease-lost ${e.key} ${e.reason}`;
  }
};

describe('lease manager: acquire', () => {
  it('takes a free subnet with a 24 h TTL, in flannel\'s key and value', async () => {
    const store = new LocalStore(tmp.db());
    const m = manager(store);
    try {
      const t0 = Date.now();
      const got = await m.acquire(v4, prefs('192.168.0.1'));
      assert.equal(got.how, 'random');
      assert.equal(got.attempts, 1);
      assert.match(got.key, /^10\.244\.([1-9]|[1-9]\d|100)\.0-24$/, 'among the first 100 subnets, never the first');
      const exp = got.lease.expiresAt!;
      assert.ok(exp >= t0 + 24 * 3600_000 && exp <= Date.now() + 24 * 3600_000);
      const { leases } = await store.list();
      assert.deepEqual(leases.map((l) => [l.key, l.lease.attrs]), [[got.key, { publicIp: '192.168.0.1', publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' }, backendV6Data: null }]]);
    } finally {
      await m.close();
      await store.close();
    }
  });

  it('twenty agents in their own processes, all at once on a new file: twenty distinct subnets', async () => {
    const path = tmp.db();
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => worker<{ key: string; attempts: number }>('acquire', path, NET, `192.168.1.${i + 1}`)));
    assert.equal(new Set(results.map((r) => r.key)).size, 20, JSON.stringify(results));
    const store = new LocalStore(path);
    try {
      const { leases } = await store.list();
      assert.equal(leases.length, 20);
      assert.equal(new Set(leases.map((l) => l.lease.attrs.publicIp)).size, 20);
    } finally {
      await store.close();
    }
  });

  it('twenty managers with their own connections, racing for a small network: distinct subnets, lost races retried', async () => {
    // 10.10.0.0/24 in /29s: 31 subnets for 20 agents, so choices collide.
    const small = parseNetworkConfig('{"Network":"10.10.0.0/24","SubnetLen":29}');
    const path = tmp.db();
    const stores = Array.from({ length: 20 }, () => new LocalStore(path));
    const managers = stores.map((s) => manager(s));
    try {
      const got = await Promise.all(managers.map((m, i) => m.acquire(small, prefs(`192.168.2.${i + 1}`))));
      assert.equal(new Set(got.map((g) => g.key)).size, 20);
      assert.ok(got.some((g) => g.attempts > 1), `some lost a race: ${got.map((g) => g.attempts).join(',')}`);
      assert.equal((await stores[0]!.list()).leases.length, 20);
    } finally {
      for (const m of managers) await m.close();
      for (const s of stores) await s.close();
    }
  });

  it('a lost compare-and-swap lists again and retries, up to 10 times', async () => {
    const path = tmp.db();
    const rival = new LocalStore(path);
    const store = new LocalStore(path);
    // A real race, made to happen every time: another agent creates the very
    // subnet this one chose, between its list and its create.
    let steals = 0;
    let limit = 3;
    const racing: SubnetStore = {
      description: store.description,
      readNetworkConfig: () => store.readNetworkConfig(),
      list: () => store.list(),
      create: async (lease: Lease, ttl: number | null): Promise<StoredLease | null> => {
        if (steals < limit) {
          steals++;
          assert.ok(await rival.create({ ...lease, attrs: { ...lease.attrs, publicIp: `192.168.3.${steals}` } }, ttl));
        }
        return store.create(lease, ttl);
      },
      renew: (lease, ttl, rev) => store.renew(lease, ttl, rev),
      remove: (key, rev) => store.remove(key, rev),
      watch: (from, onEvent, onError) => store.watch(from, onEvent, onError),
      close: () => store.close(),
    };
    const logs: string[] = [];
    try {
      const m = manager(racing, { log: (l) => logs.push(l) });
      const got = await m.acquire(v4, prefs('192.168.0.1'));
      assert.equal(got.attempts, 4);
      assert.equal(logs.filter((l) => /lost a race/.test(l)).length, 3);
      const { leases } = await store.list();
      assert.equal(leases.length, 4);
      assert.equal(new Set(leases.map((l) => l.key)).size, 4);
      await m.close();
      steals = 0;
      limit = 100;
      const loser = manager(racing);
      await assert.rejects(loser.acquire(v4, prefs('192.168.0.2')), (e: unknown) => e instanceof AcquireError && /no subnet lease after 10 tries in local:/.test(e.message));
      assert.equal(steals, 10);
      await loser.close();
    } finally {
      await rival.close();
      await store.close();
    }
  });

  it('says "out of subnets" when every subnet is leased (reservations count)', async () => {
    const tiny = parseNetworkConfig('{"Network":"10.0.0.0/28"}'); // /30s: 10.0.0.4, .8, .12
    const path = tmp.db();
    const admin = new LocalStore(path);
    const store = new LocalStore(path);
    try {
      await admin.create(leaseOf('10.0.0.8-30', '192.168.9.9'), null); // reserved for a node not up yet
      const a = manager(store);
      const b = manager(store);
      const keys = [(await a.acquire(tiny, prefs('192.168.0.1'))).key, (await b.acquire(tiny, prefs('192.168.0.2'))).key].sort();
      assert.deepEqual(keys, ['10.0.0.12-30', '10.0.0.4-30'], 'never the reserved one');
      const c = manager(store);
      await assert.rejects(c.acquire(tiny, prefs('192.168.0.3')), (e: unknown) => e instanceof OutOfSubnetsError && /out of subnets: every \/30 of 10.0.0.0\/28 between 10.0.0.4 and 10.0.0.12 is leased \(3 leases\)/.test(e.message));
      // The node the reservation is for gets it, and it stays a reservation.
      const owner = manager(store);
      const got = await owner.acquire(tiny, prefs('192.168.9.9', 'aa:aa:aa:aa:aa:aa'));
      assert.deepEqual([got.key, got.how, got.lease.expiresAt], ['10.0.0.8-30', 'own-lease', null]);
      const listed = (await store.list()).leases.find((l) => l.key === '10.0.0.8-30')!;
      assert.equal(listed.lease.expiresAt, null);
      assert.equal(macOf(listed.lease), 'aa:aa:aa:aa:aa:aa', 'its attrs are this node\'s now');
      for (const m of [a, b, c, owner]) await m.close();
    } finally {
      await admin.close();
      await store.close();
    }
  });

  it('after a restart, the same public IP gets its own lease again, with the new attrs', async () => {
    const path = tmp.db();
    const first = new LocalStore(path);
    const m1 = manager(first);
    const got1 = await m1.acquire(v4, prefs('192.168.0.7', '02:00:00:00:07:01'));
    await m1.close();
    await first.close();
    const other = new LocalStore(path);
    await manager(other).acquire(v4, prefs('192.168.0.8'));
    const second = new LocalStore(path);
    const m2 = manager(second);
    try {
      const got2 = await m2.acquire(v4, prefs('192.168.0.7', '02:00:00:00:07:02', { previousSubnet: parseCidr('10.244.200.0/24') }));
      assert.equal(got2.how, 'own-lease', 'own lease before the previous subnet.env');
      assert.equal(got2.key, got1.key);
      assert.ok(got2.lease.expiresAt! >= got1.lease.expiresAt!);
      const { leases } = await other.list();
      assert.equal(leases.length, 2);
      assert.equal(macOf(leases.find((l) => l.key === got1.key)!.lease), '02:00:00:00:07:02');
    } finally {
      await m2.close();
      await second.close();
      await other.close();
    }
  });

  it('an own lease that no longer fits the config is deleted, and a new one taken', async () => {
    const path = tmp.db();
    const store = new LocalStore(path);
    try {
      const old = await manager(store).acquire(v4, prefs('192.168.0.7'));
      const narrower = parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetLen":25}');
      const got = await manager(store).acquire(narrower, prefs('192.168.0.7'));
      assert.equal(got.how, 'random');
      assert.match(got.key, /-25$/);
      assert.deepEqual((await store.list()).leases.map((l) => l.key), [got.key], `${old.key} is gone`);
    } finally {
      await store.close();
    }
  });

  it('reuses the subnet of the previous subnet.env when free, not when taken or out of range', async () => {
    const path = tmp.db();
    const store = new LocalStore(path);
    try {
      const prev = parseCidr('10.244.42.0/24')!;
      const a = await manager(store).acquire(v4, prefs('192.168.0.1', undefined, { previousSubnet: prev }));
      assert.deepEqual([a.how, a.key], ['previous', '10.244.42.0-24']);
      const b = await manager(store).acquire(v4, prefs('192.168.0.2', undefined, { previousSubnet: prev }));
      assert.equal(b.how, 'random');
      assert.notEqual(b.key, '10.244.42.0-24');
      const c = await manager(store).acquire(v4, prefs('192.168.0.3', undefined, { previousSubnet: parseCidr('10.99.1.0/24') }));
      assert.equal(c.how, 'random');
    } finally {
      await store.close();
    }
  });

  it('dual stack: one lease with both subnets under flannel\'s "A&B" key; IPv6-only: the IPv6 key', async () => {
    const dual = parseNetworkConfig('{"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","EnableIPv6":true}');
    const v6only = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:20::/56"}');
    const path = tmp.db();
    const store = new LocalStore(path);
    // Random picks take the first free subnet, so none of them can land on the ".77" the "previous" step expects free.
    const first = () => manager(store, { random: () => 0 });
    try {
      const d = await first().acquire(dual, prefs('192.168.0.1', undefined, { publicIpv6: 'fd00::1' }));
      assert.match(d.key, /^10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f]+::-64$/);
      assert.ok(d.lease.subnet && d.lease.ipv6Subnet);
      const again = await manager(store).acquire(dual, prefs('192.168.0.1', 'aa:aa:aa:aa:aa:aa', { publicIpv6: 'fd00::1' }));
      assert.deepEqual([again.how, again.key], ['own-lease', d.key]);
      const prev = await manager(store).acquire(dual, prefs('192.168.0.2', undefined, {
        publicIpv6: 'fd00::2', previousSubnet: parseCidr('10.244.77.0/24'), previousIpv6Subnet: parseCidr('fd00:10:244:77::/64'),
      }));
      assert.deepEqual([prev.how, prev.key], ['previous', '10.244.77.0-24&fd00:10:244:77::-64']);
      const o = await first().acquire(v6only, prefs(null, undefined, { publicIpv6: 'fd00::3' }));
      assert.match(o.key, /^fd00:20:0:[0-9a-f]+::-64$/);
      assert.equal(o.lease.subnet, null);
      const o2 = await manager(store).acquire(v6only, prefs(null, 'bb:bb:bb:bb:bb:bb', { publicIpv6: 'fd00::3' }));
      assert.deepEqual([o2.how, o2.key], ['own-lease', o.key]);
      await assert.rejects(manager(store).acquire(v6only, prefs('192.168.0.4')), /needs this node's public IPv6 address/);
      const stored = (await store.list()).leases.find((l) => l.key === d.key)!;
      assert.equal(stored.lease.attrs.publicIpv6, 'fd00::1');
    } finally {
      await store.close();
    }
  });
});

describe('lease manager: renewal', () => {
  const day = 24 * 3600_000;

  it('renews at expiry minus the margin; retries every minute on error; a reservation is never renewed', async () => {
    const clock = new FakeClock();
    const path = tmp.db();
    const store = new LocalStore(path, { now: clock.now, busyTimeoutMs: 20 });
    const logs: string[] = [];
    const m = manager(store, { clock, log: (l) => logs.push(l) });
    try {
      const got = await m.acquire(v4, prefs('192.168.0.1'));
      assert.equal(got.lease.expiresAt, clock.t + day);
      assert.equal(clock.nextAt, clock.t + day - 3600_000, 'renewal due 60 min before expiry');
      await clock.advance(day - 3600_000 - 1);
      assert.equal(m.lease!.lease.expiresAt, got.lease.expiresAt, 'not yet');
      // Another agent holds the write lock: the renewal fails and is retried a minute later.
      const holder = new Database(path);
      holder.prepare('BEGIN IMMEDIATE').run();
      await clock.advance(1);
      await m.settled();
      assert.ok(logs.some((l) => /renewing lease .* failed \(trying again in 60 s\): .*database is locked/.test(l)), logs.join('\n'));
      assert.equal(clock.nextAt, clock.t + 60_000);
      holder.prepare('ROLLBACK').run();
      holder.close();
      await clock.advance(60_000);
      await m.settled();
      assert.equal(m.lease!.lease.expiresAt, clock.t + day, 'renewal extends the expiry by the TTL');
      assert.equal((await store.list()).leases[0]!.lease.expiresAt, clock.t + day);
      assert.equal(clock.nextAt, clock.t + day - 3600_000);
      // A day later (still renewed), and again.
      await clock.advance(day);
      await m.settled();
      assert.equal((await store.list()).leases[0]!.lease.expiresAt, clock.t + day - 3600_000, 'renewed 60 min before the expiry');
      await m.close();
      assert.equal(clock.nextAt, null, 'close stops the renewal');

      const admin = new LocalStore(path, { now: clock.now });
      await admin.create(leaseOf('10.244.250.0-24', '192.168.0.250'), null);
      const r = manager(store, { clock });
      assert.equal((await r.acquire(v4, prefs('192.168.0.250'))).lease.expiresAt, null);
      assert.equal(clock.nextAt, null, 'nothing to renew');
      await r.close();
      await admin.close();
    } finally {
      await store.close();
    }
  });

  it('a lease deleted by someone else is reported lost at the next renewal; one taken after expiry too', async () => {
    const clock = new FakeClock();
    const path = tmp.db();
    const store = new LocalStore(path, { now: clock.now });
    const other = new LocalStore(path, { now: clock.now });
    const lost: OwnLeaseLost[] = [];
    const m = manager(store, { clock, ttlMs: 10_000, renewMarginMs: 2_000, onOwnLeaseLost: (e) => lost.push(e) });
    try {
      const got = await m.acquire(v4, prefs('192.168.0.1'));
      assert.equal(await other.remove(got.key), true);
      await clock.advance(8_000);
      await m.settled();
      assert.deepEqual(lost.map((e) => [e.key, e.reason]), [[got.key, 'deleted']]);
      assert.equal(clock.nextAt, null, 'no more renewals');

      await m.close();
      // The store is unreachable past the expiry (the write lock held), then another node has the subnet.
      const holder = new Database(path);
      holder.prepare('BEGIN IMMEDIATE').run();
      const slow = new LocalStore(path, { now: clock.now, busyTimeoutMs: 10 });
      const m2 = manager(slow, { clock, ttlMs: 10_000, renewMarginMs: 2_000, retryMs: 5_000, onOwnLeaseLost: (e) => lost.push(e) });
      holder.prepare('ROLLBACK').run();
      const got3 = await m2.acquire(v4, prefs('192.168.0.3'));
      holder.prepare('BEGIN IMMEDIATE').run();
      await clock.advance(8_000); // m2's renewal fails, retried at 13 s: past its expiry at 10 s
      await m2.settled();
      holder.prepare('ROLLBACK').run();
      holder.close();
      assert.ok((await other.create(leaseOf(got3.key, '192.168.0.99'), 10_000)) === null, 'still held until it expires');
      clock.t = got3.lease.expiresAt!;
      assert.ok(await other.create(leaseOf(got3.key, '192.168.0.99'), 10_000), 'expired: another node takes it');
      await clock.advance(5_000);
      await m2.settled();
      assert.deepEqual(lost.map((e) => [e.key, e.reason]).slice(1), [[got3.key, 'taken']]);
      await m2.close();
      await slow.close();
    } finally {
      await store.close();
      await other.close();
    }
  });
});

describe('lease manager: watch', () => {
  it('a snapshot of the other leases, then added/updated/removed from another process; own lease skipped', async () => {
    const path = tmp.db();
    const store = new LocalStore(path, { pollIntervalMs: 20 });
    const seed = new LocalStore(path);
    await seed.create(leaseOf('10.244.201.0-24', '192.168.0.201', '02:00:00:00:c9:01'), 60_000);
    await seed.create(leaseOf('10.244.202.0-24', '192.168.0.202'), null);
    await seed.close();
    const m = manager(store);
    const events: PeerEvent[] = [];
    const got = await m.acquire(v4, prefs('192.168.0.1', undefined, { previousSubnet: parseCidr('10.244.1.0/24') }));
    assert.equal(got.key, '10.244.1.0-24');
    const w = m.watch((e) => events.push(e), (e) => assert.fail(e));
    try {
      await until(events, (e) => e.length === 1);
      await worker('script', path, JSON.stringify([
        { op: 'create', key: '10.244.203.0-24', publicIp: '192.168.0.203', mac: '02:00:00:00:cb:01', ttlMs: 60_000 },
        { op: 'renew', key: '10.244.203.0-24', publicIp: '192.168.0.203', mac: '02:00:00:00:cb:01', ttlMs: 60_000 },
        { op: 'renew', key: '10.244.201.0-24', publicIp: '192.168.0.201', mac: '02:00:00:00:c9:02', ttlMs: 60_000 },
        { op: 'remove', key: '10.244.202.0-24' },
      ]));
      await m.renew(); // this node's own renewal: not a peer event
      await until(events, (e) => e.length === 4);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(events.map(show), [
        'snapshot 10.244.201.0/24 192.168.0.201, 10.244.202.0/24 192.168.0.202',
        'added 10.244.203.0/24 192.168.0.203',
        'updated 10.244.201.0/24 02:00:00:00:c9:01 -> 02:00:00:00:c9:02',
        'removed 10.244.202.0/24 192.168.0.202',
      ]);
      // This node's lease deleted by someone else: reported, once.
      const other = new LocalStore(path);
      await other.remove(got.key);
      await other.close();
      await until(events, (e) => e.length === 5);
      await m.renew();
      await settle();
      assert.equal(show(events[4]!), 'own-lease-lost 10.244.1.0-24 deleted');
      assert.equal(events.length, 5);
    } finally {
      w.close();
      await m.close();
      await store.close();
    }
  });

  it('after falling behind the history, lists again and turns the difference into events', async () => {
    const path = tmp.db();
    const store = new LocalStore(path, { historyLimit: 4, pollIntervalMs: 50 });
    const other = new LocalStore(path, { historyLimit: 4 });
    const logs: string[] = [];
    const m = manager(store, { log: (l) => logs.push(l) });
    await other.create(leaseOf('10.244.211.0-24', '192.168.0.211', '02:00:00:00:d3:01'), 60_000);
    await other.create(leaseOf('10.244.212.0-24', '192.168.0.212'), 60_000);
    await other.create(leaseOf('10.244.213.0-24', '192.168.0.213'), 60_000);
    await m.acquire(v4, prefs('192.168.0.1'));
    const events: PeerEvent[] = [];
    const w = m.watch((e) => events.push(e), (e) => assert.fail(e));
    try {
      await until(events, (e) => e.length === 1);
      // A burst from another connection between two polls: more changes than the history keeps.
      void other.remove('10.244.211.0-24');
      void other.create(leaseOf('10.244.211.0-24', '192.168.0.221', '02:00:00:00:dd:01'), 60_000); // same key, another node
      void other.renew(leaseOf('10.244.212.0-24', '192.168.0.212', '02:00:00:00:d4:02'), 60_000);
      void other.remove('10.244.213.0-24');
      void other.create(leaseOf('10.244.214.0-24', '192.168.0.214'), 60_000);
      void other.create(leaseOf('10.244.215.0-24', '192.168.0.215'), 60_000);
      await until(events, (e) => e.length >= 5, 5000);
      await new Promise((r) => setTimeout(r, 150));
      assert.ok(logs.some((l) => /fell behind its history: listing again/.test(l)), logs.join('\n'));
      const state = new Map<string, string>();
      for (const e of events) {
        if (e.type === 'snapshot') for (const l of e.leases) state.set(cidr(l), `${l.attrs.publicIp} ${macOf(l)}`);
        else if (e.type === 'added' || e.type === 'updated') state.set(cidr(e.lease), `${e.lease.attrs.publicIp} ${macOf(e.lease)}`);
        else if (e.type === 'removed') state.delete(cidr(e.lease));
      }
      const truth = new Map((await other.list()).leases.filter((l) => l.lease.attrs.publicIp !== '192.168.0.1').map((l) => [cidr(l.lease), `${l.lease.attrs.publicIp} ${macOf(l.lease)}`]));
      assert.deepEqual(state, truth);
      assert.deepEqual(events.slice(1).map(show).sort(), [
        'added 10.244.214.0/24 192.168.0.214',
        'added 10.244.215.0/24 192.168.0.215',
        'removed 10.244.213.0/24 192.168.0.213',
        'updated 10.244.211.0/24 02:00:00:00:d3:01 -> 02:00:00:00:dd:01',
        'updated 10.244.212.0/24 02:00:00:00:00:01 -> 02:00:00:00:d4:02',
      ]);
    } finally {
      w.close();
      await m.close();
      await store.close();
      await other.close();
    }
  });

  it('an expired peer lease is removed; malformed leases are reported and skipped', async () => {
    const clock = new FakeClock();
    const path = tmp.db();
    const store = new LocalStore(path, { now: clock.now, pollIntervalMs: 20 });
    const other = new LocalStore(path, { now: clock.now });
    const m = manager(store, { clock });
    await m.acquire(v4, prefs('192.168.0.1'));
    await other.create(leaseOf('10.244.221.0-24', '192.168.0.221'), 1000);
    const raw = new Database(path);
    raw.prepare("INSERT INTO leases (key, value, expires_at, mod_revision) VALUES ('10.244.222.0-24', 'not json', NULL, 0)").run();
    raw.close();
    const events: PeerEvent[] = [];
    const w = m.watch((e) => events.push(e), (e) => assert.fail(e));
    try {
      await until(events, (e) => e.length === 2);
      assert.deepEqual(events.map(show), ['malformed 10.244.222.0-24', 'snapshot 10.244.221.0/24 192.168.0.221']);
      clock.t += 1000;
      await until(events, (e) => e.length === 3);
      assert.equal(show(events[2]!), 'removed 10.244.221.0/24 192.168.0.221');
    } finally {
      w.close();
      await m.close();
      await store.close();
      await other.close();
    }
  });

  it('needs a lease first', () => {
    const store = new LocalStore(tmp.db());
    assert.throws(() => manager(store).watch(() => undefined), /watch needs this node's lease first/);
    void store.close();
  });
});
