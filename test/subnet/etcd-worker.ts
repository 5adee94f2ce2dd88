// The etcd store in another process, started inside a test network namespace
// (`ip netns exec`) where an etcd that lives in the test namespaces is
// reachable: a twill node next to flanneld nodes.
//   node etcd-worker.js acquire ENDPOINT PUBLICIP MAC   → {"key","how"}   (config from <prefix>/config)
//   node etcd-worker.js list ENDPOINT                   → {"revision","leases":[{key,publicIp,backendType,backendData,expiresAt}],"malformed"}
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { EtcdStore } from '../../src/subnet/etcd-store.js';
import { LeaseManager } from '../../src/subnet/manager.js';

async function main(): Promise<void> {
  const [cmd, endpoint, ...args] = process.argv.slice(2);
  const store = new EtcdStore({ endpoints: [endpoint!] });
  try {
    if (cmd === 'acquire') {
      const text = await store.readNetworkConfig();
      if (text === null) throw new Error('no network config in etcd');
      const m = new LeaseManager(store);
      const got = await m.acquire(parseNetworkConfig(text), {
        publicIp: args[0]!, publicIpv6: null, previousSubnet: null, previousIpv6Subnet: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: args[1]! },
      });
      await m.close();
      console.log(JSON.stringify({ key: got.key, how: got.how }));
    } else if (cmd === 'list') {
      const l = await store.list();
      console.log(JSON.stringify({
        revision: l.revision,
        leases: l.leases.map((s) => ({ key: s.key, publicIp: s.lease.attrs.publicIp, backendType: s.lease.attrs.backendType, backendData: s.lease.attrs.backendData, expiresAt: s.lease.expiresAt })),
        malformed: l.malformed,
      }));
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await store.close();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
