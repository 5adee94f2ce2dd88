// Another agent, in its own process, on the same store file: what the
// cross-process tests of the local store and the lease manager run.
//   node store-worker.js acquire DB NETCONF PUBLICIP [PUBLICIPV6]   → {"key","how","attempts"}
//   node store-worker.js create DB KEY PUBLICIP START_AT_MS          → {"created": bool}
//   node store-worker.js script DB JSON_STEPS                        → {"revisions": [...]}
// A start time lets many workers begin their write at the same moment.
import { LocalStore } from '../../src/subnet/local-store.js';
import { LeaseManager } from '../../src/subnet/manager.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { parseLeaseKey, type Lease } from '../../src/subnet/lease.js';

type Step = { op: 'create' | 'renew'; key: string; publicIp: string; mac?: string; ttlMs: number | null } | { op: 'remove'; key: string } | { op: 'sleep'; ms: number };

const leaseOf = (key: string, publicIp: string, mac?: string): Lease => ({
  ...parseLeaseKey(key),
  attrs: { publicIp, publicIpv6: null, backendType: 'vxlan', backendData: mac ? { VNI: 1, VtepMAC: mac } : null, backendV6Data: null },
  expiresAt: null,
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const [cmd, db, ...args] = process.argv.slice(2);
  const store = new LocalStore(db!);
  try {
    if (cmd === 'acquire') {
      const config = parseNetworkConfig(args[0]!);
      const m = new LeaseManager(store);
      const got = await m.acquire(config, {
        publicIp: args[1] || null, publicIpv6: args[2] || null, previousSubnet: null, previousIpv6Subnet: null,
        backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' },
      });
      await m.close();
      process.stdout.write(JSON.stringify({ key: got.key, how: got.how, attempts: got.attempts }));
    } else if (cmd === 'create') {
      await sleep(Math.max(0, Number(args[2]) - Date.now()));
      const created = await store.create(leaseOf(args[0]!, args[1]!), 60_000);
      process.stdout.write(JSON.stringify({ created: created !== null }));
    } else if (cmd === 'script') {
      const revisions: number[] = [];
      for (const s of JSON.parse(args[0]!) as Step[]) {
        if (s.op === 'sleep') await sleep(s.ms);
        else if (s.op === 'create') revisions.push((await store.create(leaseOf(s.key, s.publicIp, s.mac), s.ttlMs))!.modRevision);
        else if (s.op === 'renew') revisions.push((await store.renew(leaseOf(s.key, s.publicIp, s.mac), s.ttlMs)).modRevision);
        else await store.remove(s.key);
      }
      process.stdout.write(JSON.stringify({ revisions }));
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await store.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
