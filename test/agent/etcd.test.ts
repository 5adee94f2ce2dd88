// The agent on etcd, beside the reference: two twill nodes and one flanneld
// node share a 3-member etcd cluster (each member a host on the underlay) and
// one VXLAN overlay. Then etcd loses its leader, then goes away entirely,
// while pods keep talking.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, eventually, type ClusterNode, type Pod } from './cluster.js';
import { EtcdCluster } from '../support/etcd.js';
import { EtcdClientProcess } from '../support/etcd-client.js';
import { FlanneldProcess, requireFlanneld } from '../support/flanneld.js';
import { ipJson } from '../support/exec.js';
import { pingStream, sourceSeenBy } from '../support/traffic.js';

const PREFIX = '/coreos.com/network';
// Nodes lease from 10.249.100.0 up: the leases this test writes by hand (10.249.77.0/24,
// 10.249.78.0/24) can never be a node's own (a random pick once was, and that node stopped).
const CONFIG = { Network: '10.249.0.0/16', SubnetMin: '10.249.100.0', Backend: { Type: 'vxlan' } };


describe('agent: etcd (3 members), two twill nodes and one flanneld node', () => {
  const c = new TestCluster({ nodes: 3, extra: ['e1', 'e2', 'e3'] });
  let etcd: EtcdCluster;
  let client: EtcdClientProcess;
  let endpoints: string;
  let n1: ClusterNode, n2: ClusterNode, n3: ClusterNode;
  let flanneld: FlanneldProcess;
  const pods: Pod[] = [];

  before(async () => {
    requireFlanneld();
    await c.build();
    [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    etcd = await EtcdCluster.start({ placements: ['e1', 'e2', 'e3'].map((e, i) => ({ netns: c.extra[e]!.name, ip: `198.18.0.${101 + i}` })) });
    endpoints = etcd.endpoints.join(',');
    client = new EtcdClientProcess(c.extra.e1!.name, etcd.endpoints);
    await client.put(`${PREFIX}/config`, JSON.stringify(CONFIG));
  });
  after(async () => {
    await flanneld?.stop('SIGKILL');
    await client?.close();
    await etcd?.destroy();
    await c.cleanup();
  });

  it('leases for all three in flannel\'s layout; each node programs the other two; pods reach each other across twill and flanneld', async () => {
    await Promise.all([n1, n2].map((n) => c.start(n, ['--store', `etcd:${endpoints}`, '--ip-masq']).ready(30_000)));
    flanneld = new FlanneldProcess(n3.host, [`--etcd-endpoints=${endpoints}`, '--iface=eth0', `--subnet-file=${n3.subnetFile}`, '--ip-masq']);
    await flanneld.waitFor(/Running backend/);
    const { kvs } = await client.get(`${PREFIX}/subnets/`);
    assert.equal(kvs.length, 3);
    for (const kv of kvs) {
      const v = JSON.parse(kv.value) as { PublicIP: string; BackendType: string; BackendData: { VNI: number; VtepMAC: string } };
      assert.equal(v.BackendType, 'vxlan');
      assert.equal(v.BackendData.VNI, 1);
      assert.match(v.BackendData.VtepMAC, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      assert.ok(['198.18.0.1', '198.18.0.2', '198.18.0.3'].includes(v.PublicIP));
    }
    const subnets = c.nodes.map((n) => c.subnetEnv(n).FLANNEL_SUBNET);
    assert.equal(new Set(subnets).size, 3);
    // The twill nodes program flanneld's lease (it arrived after they were ready: a watch event).
    const flannelSubnet = c.subnetEnv(n3).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0/24');
    for (const n of [n1, n2]) await eventually(async () => assert.ok((await c.routesVia(n, 'flannel.1')).includes(flannelSubnet)), 5000);
    // flanneld programs the twill nodes' leases.
    for (const n of [n1, n2]) {
      const s = c.subnetEnv(n).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0/24');
      await eventually(async () => assert.equal((await ipJson(n3.host.name, ['route', 'show', s, 'dev', 'flannel.1'])).length, 1), 10_000);
    }
    for (const n of c.nodes) pods.push(await c.addPod(n));
    assert.equal(await sourceSeenBy(pods[2]!.host, pods[2]!.ip!, pods[0]!.host), pods[0]!.ip, 'twill pod → flanneld pod, no NAT');
    assert.equal(await sourceSeenBy(pods[1]!.host, pods[1]!.ip!, pods[2]!.host), pods[2]!.ip, 'flanneld pod → twill pod, no NAT');
  });

  it('the etcd leader stops while a pod-to-pod stream runs: not one packet lost, and new leases still arrive', async () => {
    const stream = pingStream(pods[0]!.host, pods[1]!.ip!, 100);
    await new Promise((r) => setTimeout(r, 1000));
    const leader = await etcd.leader();
    await etcd.stop(leader);
    const { sent, received } = await stream;
    assert.equal(received, sent, `${sent - received} of ${sent} packets lost`);
    // A new node's lease, written to the remaining members, is programmed on the twill nodes.
    const fake = { PublicIP: '198.18.0.77', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:77:00:00:00:01' } };
    await client.put(`${PREFIX}/subnets/10.249.77.0-24`, JSON.stringify(fake), 600);
    for (const n of [n1, n2]) await eventually(async () => assert.ok((await c.routesVia(n, 'flannel.1')).includes('10.249.77.0/24')), 15_000);
    await etcd.start(leader);
  });

  it('etcd entirely down: the data plane keeps working; back up, the agents catch up on what changed', async () => {
    for (const m of etcd.members) await etcd.stop(m);
    const { sent, received } = await pingStream(pods[0]!.host, pods[2]!.ip!, 40);
    assert.equal(received, sent, 'pods keep talking while the store is down');
    for (const n of [n1, n2]) await n.agent!.waitFor((l) => l.msg.startsWith('store watch failed'), 20_000);
    await Promise.all(etcd.members.map((m) => etcd.start(m)));
    await client.delete(`${PREFIX}/subnets/10.249.77.0-24`);
    const fake = { PublicIP: '198.18.0.78', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:78:00:00:00:01' } };
    await client.put(`${PREFIX}/subnets/10.249.78.0-24`, JSON.stringify(fake), 600);
    for (const n of [n1, n2]) {
      await eventually(async () => {
        const routes = await c.routesVia(n, 'flannel.1');
        assert.ok(routes.includes('10.249.78.0/24') && !routes.includes('10.249.77.0/24'), `${routes.join(' ')}\n${n.agent!.stderr.split('\n').slice(-12).join('\n')}`);
      }, 30_000, 200);
    }
    await pingStream(pods[0]!.host, pods[1]!.ip!, 5, 0.2).then((r) => assert.equal(r.received, r.sent));
  });
});

describe('agent: etcd, host-gw, dual stack', () => {
  const c = new TestCluster({ nodes: 2, ipv6: true, extra: ['e1'] });
  let etcd: EtcdCluster;
  let client: EtcdClientProcess;
  before(async () => {
    await c.build();
    etcd = await EtcdCluster.start({ placements: [{ netns: c.extra.e1!.name, ip: '198.18.0.101' }] });
    client = new EtcdClientProcess(c.extra.e1!.name, etcd.endpoints);
    await client.put(`${PREFIX}/config`, JSON.stringify({ Network: '10.250.0.0/16', EnableIPv6: true, IPv6Network: 'fd50::/56', Backend: { Type: 'host-gw' } }));
  });
  after(async () => {
    await client?.close();
    await etcd?.destroy();
    await c.cleanup();
  });

  it('one dual-stack lease per node in flannel\'s key format; routes via the peers\' public IPs; pods reach each other on both families', async () => {
    await Promise.all(c.nodes.map((n) => c.start(n, ['--store', `etcd:${etcd.endpoints.join(',')}`, '--ip-masq']).ready(30_000)));
    const { kvs } = await client.get(`${PREFIX}/subnets/`);
    assert.equal(kvs.length, 2);
    for (const kv of kvs) {
      assert.match(kv.key, /\/subnets\/10\.250\.\d+\.0-24&fd50:0:0:[0-9a-f]+::-64$/);
      const v = JSON.parse(kv.value) as { PublicIP: string; PublicIPv6: string; BackendType: string };
      assert.equal(v.BackendType, 'host-gw');
      assert.match(v.PublicIPv6, /^fd18::[12]$/);
    }
    const [a, b] = c.nodes as [ClusterNode, ClusterNode];
    const peer6 = c.subnetEnv(b).FLANNEL_IPV6_SUBNET!.replace(/::1\/64$/, '::/64');
    await eventually(async () => {
      const [r6] = await ipJson<{ gateway: string; dev: string }[]>(a.host.name, ['-6', 'route', 'show', peer6, 'proto', '87']);
      assert.deepEqual([r6?.gateway, r6?.dev], [b.ip6, 'eth0']);
    });
    const pa = await c.addPod(a);
    const pb = await c.addPod(b);
    assert.equal(await sourceSeenBy(pb.host, pb.ip!, pa.host), pa.ip);
    assert.equal(await sourceSeenBy(pb.host, pb.ip6!, pa.host), pa.ip6);
  });
});
