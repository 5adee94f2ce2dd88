// An etcd client inside a test namespace (where the test process cannot
// connect: etcd listens on the underlay), driven over stdin/stdout with one
// JSON request and one JSON answer per line. Timestamps are wall-clock ms with
// a fraction, comparable with the test process's performance.timeOrigin + now().
//   {"op":"put","key":K,"value":V,"ttlSec":N?}      → {"at":T}
//   {"op":"delete","key":K}                          → {"deleted":N,"at":T}
//   {"op":"get","prefix":P}                          → {"kvs":[{"key","value"}]}
//   {"op":"putMany","items":[{"key","value"}],"ttlSec":N?}  → {"at":T}   (one etcd lease for all)
import { createInterface } from 'node:readline';
import { Etcd3 } from 'etcd3';

type Request =
  | { op: 'put'; key: string; value: string; ttlSec?: number }
  | { op: 'putMany'; items: { key: string; value: string }[]; ttlSec?: number }
  | { op: 'delete'; key: string }
  | { op: 'get'; prefix: string };

const now = () => performance.timeOrigin + performance.now();
const client = new Etcd3({ hosts: process.argv.slice(2) });

async function handle(r: Request): Promise<unknown> {
  switch (r.op) {
    case 'put': {
      if (r.ttlSec) {
        const lease = client.lease(r.ttlSec, { autoKeepAlive: false });
        await lease.put(r.key).value(r.value);
      } else {
        await client.put(r.key).value(r.value);
      }
      return { at: now() };
    }
    case 'putMany': {
      const lease = r.ttlSec ? client.lease(r.ttlSec, { autoKeepAlive: false }) : null;
      for (let i = 0; i < r.items.length; i += 100) {
        await Promise.all(r.items.slice(i, i + 100).map((it) => (lease ? lease.put(it.key).value(it.value) : client.put(it.key).value(it.value))));
      }
      return { at: now() };
    }
    case 'delete': {
      const res = await client.delete().key(r.key);
      return { deleted: Number(res.deleted), at: now() };
    }
    case 'get': {
      const kvs = await client.getAll().prefix(r.prefix).strings();
      return { kvs: Object.entries(kvs).map(([key, value]) => ({ key, value })) };
    }
  }
}

const lines = createInterface({ input: process.stdin });
let chain: Promise<void> = Promise.resolve();
lines.on('line', (line) => {
  chain = chain.then(async () => {
    try {
      process.stdout.write(`${JSON.stringify({ ok: true, result: await handle(JSON.parse(line) as Request) })}\n`);
    } catch (e) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: (e as Error).message })}\n`);
    }
  });
});
lines.on('close', () => {
  void chain.then(() => client.close());
});
