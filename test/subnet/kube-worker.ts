// The Kubernetes store in a process inside a test namespace (`ip netns exec`),
// where the test's kube-apiserver is reachable (the test process is not):
//   node kube-worker.js KUBECONFIG NODE
// runs one scenario against node NODE (a pod CIDR, not yet annotated) and
// prints what each step saw, as one JSON object, for the test to check.
import { resolveConnection, KubeClient } from '../../src/subnet/kube-client.js';
import { KubeStore } from '../../src/subnet/kube-store.js';
import { CompactedError, LeaseGoneError, type WatchEvent } from '../../src/subnet/store.js';
import type { Lease } from '../../src/subnet/lease.js';

const errorOf = async (p: Promise<unknown>): Promise<string> => p.then(() => 'no error', (e: Error) => `${e.constructor.name}: ${e.message}`);

async function main(): Promise<void> {
  const [kubeconfigFile, node] = process.argv.slice(2) as [string, string];
  const store = new KubeStore({ apiUrl: null, kubeconfigFile, nodeName: node, timeoutMs: 5000 });
  const admin = new KubeClient(resolveConnection({ apiUrl: null, kubeconfigFile }), 5000);
  const out: Record<string, unknown> = {};
  try {
    const assigned = await store.assignedSubnets({ ipv4: true, ipv6: false });
    const attrs = { publicIp: '198.18.0.1', publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:01' }, backendV6Data: null };
    const lease: Lease = { ...assigned, attrs, expiresAt: null };
    out.wrongSubnet = await errorOf(store.create({ ...lease, subnet: { ...assigned.subnet!, prefix: 25 } }, null));
    out.withTtl = await errorOf(store.create(lease, 60_000));
    const created = await store.create(lease, null);
    out.created = { key: created?.key, publicIp: created?.lease.attrs.publicIp, expiresAt: created?.lease.expiresAt };
    const listed = await store.list();
    out.listed = listed.leases.map((l) => l.key).sort();
    out.revisionIsNumber = Number.isSafeInteger(listed.revision) && listed.revision > 0;

    // A watch from the list's revision + 1 sees a peer node deleted, and nothing before.
    const events: WatchEvent[] = [];
    const deleted = new Promise<void>((resolve, reject) => {
      const w = store.watch(listed.revision + 1, (e) => {
        events.push(e);
        if (e.type === 'delete') {
          w.close();
          resolve();
        }
      }, reject);
    });
    await admin.call('DELETE', '/api/v1/nodes/peer');
    await deleted;
    out.events = events.map((e) => ({ type: e.type, key: e.key, after: e.revision > listed.revision }));

    // A watch from a revision the API server no longer has: 410 Gone → CompactedError.
    out.ancient = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('no error within 5 s'), 5000);
      store.watch(2, () => undefined, (e) => {
        clearTimeout(timer);
        resolve(e instanceof CompactedError ? 'CompactedError' : `${e.constructor.name}: ${e.message}`);
      });
    });

    out.othersKey = await errorOf(store.remove('10.99.0.0-24'));
    out.removed = await store.remove(created!.key);
    out.afterRemove = (await store.list()).leases.map((l) => l.key);
    out.renewGone = await store.renew(lease, null).then(() => 'renewed', (e: Error) => (e instanceof LeaseGoneError ? 'LeaseGoneError' : e.message));
  } finally {
    await store.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exit(1);
});
