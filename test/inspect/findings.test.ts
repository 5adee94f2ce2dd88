// The findings as pure functions of a hand-made model: also those this machine's
// kernel cannot show (an unfixed VXLAN checksum kernel, native nftables drop chains).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { diagnose } from '../../src/inspect/findings.js';
import { kernelHasVxlanChecksumFix, markOwnLease } from '../../src/inspect/read.js';
import type { FindingId, LeaseView, LinkView, NodeModel } from '../../src/inspect/model.js';

const link = (over: Partial<LinkView> & Pick<LinkView, 'name' | 'ifindex' | 'kind'>): LinkView => ({
  netns: 'node', state: 'up', up: true, carrier: true, mtu: 1500, mac: null, master: null, addresses: [], peer: null, vxlan: null, ...over,
});

/** A healthy node: cni0 with one pod, flannel.1 with one remote node, docker0 idle. */
function healthy(): NodeModel {
  return {
    schemaVersion: 1,
    node: { netns: 'node', readAt: '2024-01-01T00:00:00.000Z' },
    namespaces: [{ name: 'node', role: 'node', path: null, pids: [] }, { name: 'pod1', role: 'pod', path: '/run/netns/pod1', pids: [] }],
    links: [
      link({ name: 'eth0', ifindex: 2, kind: 'device', addresses: ['198.18.0.1/24'] }),
      link({ name: 'cni0', ifindex: 3, kind: 'bridge', mtu: 1450, addresses: ['10.244.1.1/24'] }),
      link({ name: 'docker0', ifindex: 4, kind: 'bridge', carrier: false, state: 'down', addresses: ['172.17.0.1/16'] }),
      link({ name: 'flannel.1', ifindex: 5, kind: 'vxlan', mtu: 1450, addresses: ['10.244.1.0/32'], vxlan: { vni: 1, port: 8472, local: '198.18.0.1', underlay: 'eth0', learning: false } }),
      link({ name: 'veth0a0b0c0d', ifindex: 6, kind: 'veth', mtu: 1450, master: 'cni0', peer: { netns: 'pod1', name: 'eth0', ifindex: 2 } }),
      link({ netns: 'pod1', name: 'eth0', ifindex: 2, kind: 'veth', mtu: 1450, addresses: ['10.244.1.2/24'], peer: { netns: 'node', name: 'veth0a0b0c0d', ifindex: 6 } }),
    ],
    routes: [
      { family: 4, dst: '10.244.1.0/24', gateway: null, dev: 'cni0', onlink: false, scope: 253, protocol: 2 },
      { family: 4, dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', onlink: true, scope: 0, protocol: 87 },
    ],
    neighbours: [{ dev: 'flannel.1', ip: '10.244.2.0', mac: '0a:58:0a:f4:02:00', permanent: true }],
    fdb: [{ dev: 'flannel.1', mac: '0a:58:0a:f4:02:00', dst: '198.18.0.2', permanent: true }],
    subnetEnv: { path: '/run/flannel/subnet.env', found: true, error: null, network: ['10.244.0.0/16'], subnet: '10.244.1.1/24', ipv6Network: [], ipv6Subnet: null, mtu: 1450, ipMasq: true, missingKeys: [] },
    ipam: { dataDir: '/var/lib/cni/networks', found: true, error: null, allocations: [{ network: 'cbr0', ip: '10.244.1.2', containerId: 'c1', ifname: 'eth0' }] },
    firewall: { iptables: [{ variant: 'nft', family: 4, available: true, forwardPolicy: 'ACCEPT', forwardRules: [], flannelFwdRules: null }], nftForwardChains: [], errors: [] },
    sysctls: { ipForward: '1', bridgeNfCallIptables: '1', rpFilter: { all: '0', default: '0' } },
    offload: { kernel: '6.1.0', kernelFixed: true, devices: [] },
    store: null,
  };
}

const ids = (m: NodeModel): FindingId[] => diagnose(m).filter((f) => f.severity !== 'info').map((f) => f.id);

describe('findings (pure)', () => {
  it('a healthy node: only the docker0 explanation, as info', () => {
    const f = diagnose(healthy());
    assert.deepEqual(f.map((x) => [x.id, x.severity]), [['docker0-unused', 'info']]);
  });

  it('docker0 with a port is not reported as unused', () => {
    const m = healthy();
    m.links.push(link({ name: 'vethd0', ifindex: 9, kind: 'veth', master: 'docker0' }));
    assert.ok(!diagnose(m).some((f) => f.id === 'docker0-unused'));
  });

  it('vxlan-checksum-offload: only on a kernel without the fix, with tx checksumming on', () => {
    const m = healthy();
    m.offload = { kernel: '5.4.30', kernelFixed: false, devices: [{ name: 'flannel.1', txChecksumming: true }] };
    assert.deepEqual(ids(m), ['vxlan-checksum-offload']);
    assert.match(diagnose(m).find((f) => f.id === 'vxlan-checksum-offload')!.fix, /ethtool -K flannel\.1 tx-checksum-ip-generic off/);
    m.offload.devices[0]!.txChecksumming = false;
    assert.deepEqual(ids(m), []);
  });

  it('which kernels have the VXLAN checksum fix (5.7+, 5.4.41+, 4.19.123+)', () => {
    for (const k of ['5.7.0', '6.18.44-fc', '5.4.41', '5.4.100-generic', '4.19.123', '5.10.0-28-amd64']) assert.equal(kernelHasVxlanChecksumFix(k), true, k);
    for (const k of ['5.4.40', '5.6.19', '4.19.122', '4.14.300', '3.10.0-1160.el7.x86_64', '5.3.0']) assert.equal(kernelHasVxlanChecksumFix(k), false, k);
  });

  it('forward-drop: a native nftables forward chain with policy drop, which no accept elsewhere overrides', () => {
    const m = healthy();
    m.firewall.nftForwardChains = [{ family: 'inet', table: 'firewalld', chain: 'filter_FORWARD', policy: 'drop' }];
    assert.deepEqual(ids(m), ['forward-drop']);
    m.firewall.nftForwardChains[0]!.policy = 'accept';
    assert.deepEqual(ids(m), []);
  });

  it('forward-drop: a DROP rule in FORWARD that may match cluster traffic, unless FLANNEL-FWD comes before it', () => {
    const m = healthy();
    const t = m.firewall.iptables[0]!;
    t.forwardRules = [['-o', 'docker0', '-j', 'DOCKER'], ['-j', 'DROP']];
    assert.deepEqual(ids(m), ['forward-drop']);
    t.forwardRules = [['-s', '192.168.0.0/16', '-d', '192.168.0.0/16', '-j', 'DROP']];
    assert.deepEqual(ids(m), [], 'a DROP limited to addresses outside the cluster is not ours to worry about');
    t.forwardRules = [['-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD'], ['-j', 'DROP']];
    t.flannelFwdRules = [['-s', '10.244.0.0/16', '-j', 'ACCEPT'], ['-d', '10.244.0.0/16', '-j', 'ACCEPT']];
    assert.deepEqual(ids(m), []);
    t.forwardRules = [['-j', 'DROP'], ['-j', 'FLANNEL-FWD']];
    assert.deepEqual(ids(m), ['forward-drop'], 'the jump after the DROP comes too late');
  });

  it('forward-drop: an IPv6 FORWARD policy DROP matters only when the cluster has an IPv6 network', () => {
    const m = healthy();
    m.firewall.iptables.push({ variant: 'nft', family: 6, available: true, forwardPolicy: 'DROP', forwardRules: [], flannelFwdRules: null });
    assert.deepEqual(ids(m), []);
    m.subnetEnv.ipv6Network = ['fd00:10:244::/56'];
    m.subnetEnv.ipv6Subnet = 'fd00:10:244:1::1/64';
    assert.deepEqual(ids(m), ['forward-drop']);
    assert.match(diagnose(m).find((f) => f.id === 'forward-drop')!.subject, /ip6tables-nft FORWARD/);
  });

  it('subnet-env-missing: an incomplete file; subnet-env-stale: FLANNEL_SUBNET outside FLANNEL_NETWORK', () => {
    const m = healthy();
    m.subnetEnv.missingKeys = ['FLANNEL_MTU'];
    assert.deepEqual(ids(m), ['subnet-env-missing']);
    const n = healthy();
    n.subnetEnv.network = ['10.100.0.0/16'];
    assert.ok(ids(n).includes('subnet-env-stale'));
  });

  it('stale-route: the node\'s own subnet routed into the overlay', () => {
    const m = healthy();
    m.routes.push({ family: 4, dst: '10.244.1.0/25', gateway: '10.244.1.0', dev: 'flannel.1', onlink: true, scope: 0, protocol: 87 });
    assert.deepEqual(ids(m), ['stale-route']);
  });

  it('mtu-mismatch: flannel.1 differing from FLANNEL_MTU, and the two ends of a pod veth disagreeing', () => {
    const m = healthy();
    m.subnetEnv.mtu = 1400;
    // cni0, flannel.1 and the pod are all above 1400 now: each is named.
    assert.deepEqual([...new Set(ids(m))], ['mtu-mismatch']);
    assert.deepEqual(diagnose(m).filter((f) => f.id === 'mtu-mismatch').map((f) => f.subject).sort(), ['cni0', 'eth0 in pod1', 'flannel.1']);
    const n = healthy();
    n.links.find((l) => l.name === 'veth0a0b0c0d')!.mtu = 1400;
    assert.deepEqual(diagnose(n).filter((f) => f.severity !== 'info').map((f) => [f.id, f.subject]), [['mtu-mismatch', 'veth0a0b0c0d']]);
  });

  it('leaked-ip compares addresses by value (IPv6 spelled differently is the same address)', () => {
    const m = healthy();
    m.links.find((l) => l.netns === 'pod1')!.addresses.push('fd00:0:0::2/64');
    m.ipam.allocations.push({ network: 'cbr0', ip: 'fd00::2', containerId: 'c1', ifname: 'eth0' });
    assert.deepEqual(ids(m), []);
  });

  it('orders errors before warnings before info, and every finding has a subject, message and fix', () => {
    const m = healthy();
    m.sysctls.ipForward = '0';
    m.sysctls.bridgeNfCallIptables = null;
    const f = diagnose(m);
    assert.deepEqual(f.map((x) => x.severity), ['error', 'warning', 'info']);
    for (const x of f) assert.ok(x.subject && x.message.length > 20 && x.fix.length > 5);
  });

  describe('with the store\'s leases as the truth', () => {
    const lease = (over: Partial<LeaseView> & Pick<LeaseView, 'key' | 'subnet'>): LeaseView => ({
      node: null, ipv6Subnet: null, publicIp: null, publicIpv6: null, backendType: 'vxlan', vtepMac: null, vtepMacV6: null, vni: 1, expiresAt: null, own: false, ...over,
    });
    /** The healthy node with its store: its own lease and the remote node's, which it has programmed. */
    function withStore(): NodeModel {
      const m = healthy();
      m.store = {
        description: 'local:/var/lib/twill/leases.db', error: null, revision: 7, malformed: [],
        leases: [
          lease({ key: '10.244.1.0-24', subnet: '10.244.1.0/24', publicIp: '198.18.0.1', vtepMac: '0a:58:0a:f4:01:00', own: true }),
          lease({ key: '10.244.2.0-24', subnet: '10.244.2.0/24', publicIp: '198.18.0.2', vtepMac: '0a:58:0a:f4:02:00' }),
        ],
      };
      return m;
    }

    it('healthy with its leases; the own lease needs nothing', () => {
      assert.deepEqual(ids(withStore()), []);
    });

    it('a neighbour with the wrong MAC (the peer came back with a new VtepMAC): missing-neighbour and missing-fdb, the old FDB entry stale', () => {
      const m = withStore();
      m.store!.leases[1]!.vtepMac = '0a:58:0a:f4:02:99';
      const f = diagnose(m);
      assert.deepEqual(ids(m).sort(), ['missing-fdb', 'missing-neighbour', 'stale-fdb']);
      assert.match(f.find((x) => x.id === 'missing-neighbour')!.message, /knows 10\.244\.2\.0 as 0a:58:0a:f4:02:00/);
    });

    it('DirectRouting: a vxlan peer routed via its public IP needs no neighbour or FDB entry', () => {
      const m = withStore();
      m.routes[1] = { family: 4, dst: '10.244.2.0/24', gateway: '198.18.0.2', dev: 'eth0', onlink: false, scope: 0, protocol: 87 };
      m.neighbours = [];
      m.fdb = [];
      assert.deepEqual(ids(m), []);
    });

    it('host-gw: the route via the public IP is what a lease needs; another gateway is missing-route', () => {
      const m = withStore();
      m.store!.leases[1]!.backendType = 'host-gw';
      m.routes[1] = { family: 4, dst: '10.244.2.0/24', gateway: '198.18.0.2', dev: 'eth0', onlink: false, scope: 0, protocol: 87 };
      m.neighbours = [];
      m.fdb = [];
      assert.deepEqual(ids(m), []);
      m.routes[1]!.gateway = '198.18.0.3';
      assert.deepEqual(ids(m), ['missing-route']);
      m.routes.splice(1, 1);
      assert.deepEqual(ids(m), ['missing-route']);
    });

    it('stale-route: flanneld\'s host-gw route (protocol boot, a gateway) to a cluster subnet no lease owns; an administrator\'s route outside the cluster is left alone', () => {
      const m = withStore();
      m.routes.push({ family: 4, dst: '10.244.7.0/24', gateway: '198.18.0.7', dev: 'eth0', onlink: false, scope: 0, protocol: 3 });
      m.routes.push({ family: 4, dst: '192.168.50.0/24', gateway: '198.18.0.254', dev: 'eth0', onlink: false, scope: 0, protocol: 3 });
      assert.deepEqual(ids(m), ['stale-route']);
      assert.match(diagnose(m).find((x) => x.id === 'stale-route')!.subject, /^route 10\.244\.7\.0\/24 via 198\.18\.0\.7/);
    });

    it('a store that could not be read: store-unreadable (error), and the kernel-only checks instead', () => {
      const m = withStore();
      m.store!.error = 'local:/x.db: list: database is locked';
      m.neighbours = [];
      assert.deepEqual(ids(m).sort(), ['missing-neighbour', 'store-unreadable']);
    });

    it('the own lease: by subnet.env, else by the node\'s public IP, else by the .0 on the vxlan device', () => {
      const m = withStore();
      const fresh = () => m.store!.leases.map((l) => ({ ...l, own: false }));
      let leases = fresh();
      markOwnLease(leases, m.subnetEnv, m.links);
      assert.deepEqual(leases.map((l) => l.own), [true, false]);
      const noEnv = { ...m.subnetEnv, found: false, subnet: null };
      leases = fresh();
      markOwnLease(leases, noEnv, m.links);
      assert.deepEqual(leases.map((l) => l.own), [true, false]);
      leases = fresh().map((l) => ({ ...l, publicIp: null }));
      markOwnLease(leases, noEnv, m.links);
      assert.deepEqual(leases.map((l) => l.own), [true, false]);
    });

    it('the own lease by this node\'s name in the store first (Kubernetes): a subnet.env naming another node\'s subnet does not hide that node', () => {
      const m = withStore();
      const named = () => m.store!.leases.map((l, i) => ({ ...l, own: false, node: `n${i + 1}` }));
      let leases = named();
      markOwnLease(leases, m.subnetEnv, m.links, 'n2');
      assert.deepEqual(leases.map((l) => l.own), [false, true]);
      leases = named();
      markOwnLease(leases, m.subnetEnv, m.links, 'not-a-node');
      assert.deepEqual(leases.map((l) => l.own), [true, false], 'a name no lease has: subnet.env decides');
    });
  });
});
