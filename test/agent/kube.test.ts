// The agent on the Kubernetes store, against a real kube-apiserver (and its
// etcd) running in a host on the underlay: nodes' subnets from their podCIDRs,
// flannel's annotations and node condition, peers from the node watch, pods
// talking across nodes; a node deleted, the API server restarted, a node
// without a pod CIDR.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, eventually, type ClusterNode, type Pod } from './cluster.js';
import { AgentProcess } from '../support/agent.js';
import { KubeApiServer } from '../support/kube.js';
import { ipJson } from '../support/exec.js';
import { pingStream, sourceSeenBy } from '../support/traffic.js';

const A = 'flannel.alpha.coreos.com';
const API_IP = '198.18.0.101';


/** A node as flanneld (or twill) on another machine would have annotated it. */
const peerAnnotations = (ip: string, mac: string) => ({
  [`${A}/kube-subnet-manager`]: 'true',
  [`${A}/backend-type`]: 'vxlan',
  [`${A}/backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: mac }),
  [`${A}/public-ip`]: ip,
});

describe('agent: Kubernetes store (kube-apiserver v1.37 on the underlay)', () => {
  const c = new TestCluster({ nodes: 3, extra: ['k'] });
  let api: KubeApiServer;
  let n1: ClusterNode, n2: ClusterNode, n3: ClusterNode;
  let kubeArgs: string[];
  /** The same as a flanneld command line (kube-flannel's DaemonSet), Go-style flags. */
  let flannelArgs: string[];
  const pods: Pod[] = [];

  before(async () => {
    await c.build();
    [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    api = await KubeApiServer.start(c.extra.k!.name, API_IP);
    console.log(`# kube-apiserver ready in ${api.startTimes[0]} ms`);
    const netConf = c.tmp.netConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    // --ip-masq as kube-flannel runs it (without it the CNI bridge masquerades pod traffic itself).
    kubeArgs = ['--store', 'kube', '--net-conf', netConf, '--kubeconfig-file', api.kubeconfig, '--ip-masq'];
    flannelArgs = ['-kube-subnet-mgr', `-kubeconfig-file=${api.kubeconfig}`, `-net-config-path=${netConf}`, '-ip-masq'];
    await api.createNode({ name: 'n1', podCidrs: ['10.244.1.0/24'] });
    await api.createNode({ name: 'n2', podCidrs: ['10.244.2.0/24'] });
    await api.createNode({ name: 'n3' });
  });
  after(async () => {
    await api?.destroy();
    await c.cleanup();
  });

  it('subnets from the podCIDRs, flannel\'s annotations and NetworkUnavailable=False; each node programs the other; pods reach each other', async () => {
    const t0 = Date.now();
    c.start(n1, kubeArgs);
    // NODE_NAME, as kube-flannel's DaemonSet passes it (no --node-name).
    n2.agent = new AgentProcess(n2.host, [...kubeArgs, '--subnet-file', n2.subnetFile, '--data-dir', n2.dataDir, '--iptables-resync', '1', '--log-level', 'debug'], { NODE_NAME: 'n2' });
    await Promise.all([n1.agent!.ready(30_000), n2.agent.ready(30_000)]);
    console.log(`# two agents ready in ${Date.now() - t0} ms`);
    assert.equal(c.subnetEnv(n1).FLANNEL_SUBNET, '10.244.1.1/24');
    assert.equal(c.subnetEnv(n2).FLANNEL_SUBNET, '10.244.2.1/24');
    assert.equal(c.subnetEnv(n1).FLANNEL_NETWORK, '10.244.0.0/16');
    for (const n of [n1, n2]) {
      const node = await api.getNode(n.name);
      const a = node.metadata.annotations ?? {};
      const [link] = await ipJson<{ address: string }[]>(n.host.name, ['link', 'show', 'flannel.1']);
      assert.equal(a[`${A}/kube-subnet-manager`], 'true');
      assert.equal(a[`${A}/backend-type`], 'vxlan');
      // Byte for byte what flanneld writes (Go's json.Marshal of its vxlan lease data).
      assert.equal(a[`${A}/backend-data`], `{"VNI":1,"VtepMAC":"${link!.address}"}`);
      assert.equal(a[`${A}/public-ip`], n.ip);
      assert.equal(a[`${A}/backend-v6-data`], undefined, 'IPv4-only cluster: no IPv6 annotations');
      assert.equal(a[`${A}/public-ipv6`], undefined);
      const cond = node.status?.conditions?.find((x) => x.type === 'NetworkUnavailable');
      assert.deepEqual([cond?.status, cond?.reason], ['False', 'FlannelIsUp']);
    }
    await eventually(async () => assert.deepEqual(await c.routesVia(n1, 'flannel.1'), ['10.244.2.0/24']));
    await eventually(async () => assert.deepEqual(await c.routesVia(n2, 'flannel.1'), ['10.244.1.0/24']));
    pods.push(await c.addPod(n1), await c.addPod(n2));
    assert.match(pods[0]!.ip!, /^10\.244\.1\./);
    assert.equal(await sourceSeenBy(pods[1]!.host, pods[1]!.ip!, pods[0]!.host), pods[0]!.ip, 'pod n1 → pod n2, no NAT');
    assert.equal(await sourceSeenBy(pods[0]!.host, pods[0]!.ip!, pods[1]!.host), pods[1]!.ip, 'pod n2 → pod n1, no NAT');
  });

  it('a node without a pod CIDR: the agent exits with flannel\'s error', async () => {
    const agent = c.start(n3, kubeArgs);
    const code = await agent.exited;
    assert.equal(code, 1);
    assert.match(agent.stderr, /node "n3" pod cidr not assigned/);
  });

  it('its pod CIDR assigned later, the node joins; public-ip-overwrite replaces its public IP for the peers', async () => {
    // As kube-controller-manager does (spec.podCIDR can be set once), and a user's overwrite annotation.
    await api.ok('PATCH', '/api/v1/nodes/n3', { spec: { podCIDR: '10.244.3.0/24', podCIDRs: ['10.244.3.0/24'] }, metadata: { annotations: { [`${A}/public-ip-overwrite`]: '198.18.0.133' } } }, 'application/merge-patch+json');
    // The overwritten address must reach n3 too: a second address on its underlay interface.
    await n3.host.handle.addAddr('eth0', '198.18.0.133/24');
    await c.start(n3, flannelArgs).ready(30_000);
    assert.equal(c.subnetEnv(n3).FLANNEL_SUBNET, '10.244.3.1/24');
    const a = (await api.getNode('n3')).metadata.annotations ?? {};
    assert.equal(a[`${A}/public-ip`], '198.18.0.133');
    const [link] = await ipJson<{ address: string }[]>(n3.host.name, ['link', 'show', 'flannel.1']);
    for (const n of [n1, n2]) {
      await eventually(async () => {
        assert.ok((await c.routesVia(n, 'flannel.1')).includes('10.244.3.0/24'));
        assert.ok((await c.fdb(n)).some((f) => f.mac === link!.address && f.dst === '198.18.0.133'), JSON.stringify(await c.fdb(n)));
      }, 10_000);
    }
    pods.push(await c.addPod(n3));
    assert.equal(await sourceSeenBy(pods[2]!.host, pods[2]!.ip!, pods[0]!.host), pods[0]!.ip, 'pod n1 → pod n3 through the overwritten public IP');
  });

  it('peers are the annotated nodes only; a node added is programmed, a node deleted is removed', async () => {
    await api.createNode({ name: 'x8', podCidrs: ['10.244.8.0/24'] });
    await api.createNode({ name: 'x9', podCidrs: ['10.244.9.0/24'], annotations: peerAnnotations('198.18.0.99', '0a:99:00:00:00:01') });
    for (const n of [n1, n2]) {
      await eventually(async () => assert.ok((await c.routesVia(n, 'flannel.1')).includes('10.244.9.0/24')), 10_000);
      assert.ok(!(await c.routesVia(n, 'flannel.1')).includes('10.244.8.0/24'), 'a node without the kube-subnet-manager annotation is no peer');
      assert.ok((await c.fdb(n)).some((f) => f.mac === '0a:99:00:00:00:01' && f.dst === '198.18.0.99'));
    }
    await api.deleteNode('x9');
    for (const n of [n1, n2]) {
      await eventually(async () => {
        assert.ok(!(await c.routesVia(n, 'flannel.1')).includes('10.244.9.0/24'));
        assert.ok(!(await c.fdb(n)).some((f) => f.mac === '0a:99:00:00:00:01'));
      }, 10_000);
    }
    await api.deleteNode('x8');
  });

  it('the API server stops: pods keep talking; back up, the agents catch up on a node added since', async () => {
    const tStop = Date.now();
    const how = await api.stop();
    console.log(`# kube-apiserver stopped in ${Date.now() - tStop} ms (${how === 'SIGKILL' ? 'SIGTERM did not end it: SIGKILL' : 'SIGTERM'})`);
    const { sent, received } = await pingStream(pods[0]!.host, pods[1]!.ip!, 40);
    assert.equal(received, sent, 'pods keep talking while the API server is down');
    for (const n of [n1, n2]) await n.agent!.waitFor((l) => l.msg.startsWith('store watch failed'), 20_000);
    const t0 = Date.now();
    await api.restart();
    console.log(`# kube-apiserver restarted in ${Date.now() - t0} ms`);
    await api.createNode({ name: 'x7', podCidrs: ['10.244.7.0/24'], annotations: peerAnnotations('198.18.0.77', '0a:77:00:00:00:01') });
    const t1 = Date.now();
    for (const n of [n1, n2]) {
      await eventually(async () => {
        const routes = await c.routesVia(n, 'flannel.1');
        assert.ok(routes.includes('10.244.7.0/24'), `${routes.join(' ')}\n${n.agent!.stderr.split('\n').slice(-8).join('\n')}`);
      }, 30_000, 100);
    }
    console.log(`# the new node programmed on both agents ${Date.now() - t1} ms after it was created`);
    for (const n of [n1, n2]) assert.equal(n.agent!.logs.some((l) => l.level >= 50), false, `no error on ${n.name}:\n${n.agent!.stderr}`);
    await pingStream(pods[0]!.host, pods[1]!.ip!, 5, 0.2).then((r) => assert.equal(r.received, r.sent));
  });
});

describe('agent: Kubernetes store, dual stack, host-gw', () => {
  const c = new TestCluster({ nodes: 2, ipv6: true, extra: ['k'] });
  let api: KubeApiServer;
  before(async () => {
    await c.build();
    api = await KubeApiServer.start(c.extra.k!.name, API_IP);
    for (const [i, n] of c.nodes.entries()) await api.createNode({ name: n.name, podCidrs: [`10.246.${i + 1}.0/24`, `fd46:0:0:${i + 1}::/64`] });
  });
  after(async () => {
    await api?.destroy();
    await c.cleanup();
  });

  it('both pod CIDRs as one lease; IPv6 annotations as flannel writes them; routes via the peers\' public IPs; pods reach each other on both families', async () => {
    const netConf = c.tmp.netConf({ Network: '10.246.0.0/16', EnableIPv6: true, IPv6Network: 'fd46::/56', Backend: { Type: 'host-gw' } }, 'dual.json');
    await Promise.all(c.nodes.map((n) => c.start(n, ['--store', 'kube', '--net-conf', netConf, '--kubeconfig-file', api.kubeconfig, '--ip-masq']).ready(30_000)));
    const [a, b] = c.nodes as [ClusterNode, ClusterNode];
    assert.equal(c.subnetEnv(a).FLANNEL_SUBNET, '10.246.1.1/24');
    assert.equal(c.subnetEnv(a).FLANNEL_IPV6_SUBNET, 'fd46:0:0:1::1/64');
    const ann = (await api.getNode('n2')).metadata.annotations ?? {};
    assert.deepEqual(
      [ann[`${A}/backend-type`], ann[`${A}/backend-data`], ann[`${A}/backend-v6-data`], ann[`${A}/public-ip`], ann[`${A}/public-ipv6`]],
      ['host-gw', 'null', 'null', '198.18.0.2', 'fd18::2'],
    );
    await eventually(async () => {
      const [r6] = await ipJson<{ gateway: string; dev: string }[]>(a.host.name, ['-6', 'route', 'show', 'fd46:0:0:2::/64', 'proto', '87']);
      assert.deepEqual([r6?.gateway, r6?.dev], [b.ip6, 'eth0']);
    });
    const pa = await c.addPod(a);
    const pb = await c.addPod(b);
    assert.equal(await sourceSeenBy(pb.host, pb.ip!, pa.host), pa.ip);
    assert.equal(await sourceSeenBy(pb.host, pb.ip6!, pa.host), pa.ip6);
  });
});
