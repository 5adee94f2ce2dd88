// The cluster rules with real traffic: two nodes on an underlay, a pod behind each
// (host-gw style routes), and an outside host. A FORWARD policy DROP set by "someone
// else" (Docker, firewalld, ufw) with iptables-nft or iptables-legacy must not stop pod
// traffic once twill's rules are in, on either backend; masquerade must hide pods from
// the outside and only from the outside.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openClusterRules, type ClusterRulesSpec, type FirewallBackendName } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { pings, tableLines, udpSource } from './cluster_oracle.js';

const CLUSTER = { ipv4: '10.244.0.0/16', ipv6: 'fd10::/56' };
const spec = (n: 1 | 2, ipMasq = true): ClusterRulesSpec => ({ clusterCidrs: CLUSTER, podSubnets: { ipv4: `10.244.${n}.0/24`, ipv6: `fd10:0:0:${n}::/64` }, ipMasq });
const POD1 = { v4: '10.244.1.2', v6: 'fd10:0:0:1::2' };
const POD2 = { v4: '10.244.2.2', v6: 'fd10:0:0:2::2' };
const NODE1 = { v4: '198.18.0.1', v6: 'fd18::1' };
const EXT = { v4: '198.18.0.9', v6: 'fd18::9' };

async function attachPod(node: TestHost, pod: TestHost, n: number): Promise<void> {
  await node.handle.addLink({ kind: 'veth', name: 'vpod', up: true, peer: { name: 'eth0', netns: pod.netns } });
  await node.handle.addAddr('vpod', `10.244.${n}.1/24`);
  await node.handle.addAddr('vpod', `fd10:0:0:${n}::1/64`);
  await pod.handle.setLinkUp('eth0');
  await pod.handle.addAddr('eth0', `10.244.${n}.2/24`);
  await pod.handle.addAddr('eth0', `fd10:0:0:${n}::2/64`);
  await pod.handle.addRoute({ dst: 'default', gateway: `10.244.${n}.1` });
  await pod.handle.addRoute({ dst: 'default6', gateway: `fd10:0:0:${n}::1` });
}

/** Back to a node with no firewall at all: every variant, both families. */
async function resetFirewall(node: TestHost): Promise<void> {
  await node.exec('nft', ['flush', 'ruleset']);
  for (const tool of ['iptables-legacy', 'ip6tables-legacy']) {
    for (const table of ['filter', 'nat']) {
      await node.exec(tool, ['-w', '-t', table, '-F']);
      await node.exec(tool, ['-w', '-t', table, '-X']);
    }
    await node.exec(tool, ['-w', '-P', 'FORWARD', 'ACCEPT']);
  }
}

describe('cluster rules with real traffic', () => {
  const hosts = new TestHosts();
  let node1: TestHost;
  let node2: TestHost;
  let ext: TestHost;
  let pod1: TestHost;
  let pod2: TestHost;

  before(async () => {
    const { hosts: n } = await hosts.underlay({ node1: '198.18.0.1/24', node2: '198.18.0.2/24', ext: '198.18.0.9/24' });
    [node1, node2, ext] = [n.node1!, n.node2!, n.ext!];
    await node1.handle.addAddr('eth0', 'fd18::1/64');
    await node2.handle.addAddr('eth0', 'fd18::2/64');
    await ext.handle.addAddr('eth0', 'fd18::9/64');
    pod1 = await hosts.host('pod1');
    pod2 = await hosts.host('pod2');
    await attachPod(node1, pod1, 1);
    await attachPod(node2, pod2, 2);
    await node1.handle.addRoute({ dst: '10.244.2.0/24', gateway: '198.18.0.2' });
    await node1.handle.addRoute({ dst: 'fd10:0:0:2::/64', gateway: 'fd18::2' });
    await node2.handle.addRoute({ dst: '10.244.1.0/24', gateway: '198.18.0.1' });
    await node2.handle.addRoute({ dst: 'fd10:0:0:1::/64', gateway: 'fd18::1' });
    // The outside host reaches the cluster only through node1 (to see what node1 does with it).
    await ext.handle.addRoute({ dst: '10.244.0.0/16', gateway: '198.18.0.1' });
    await ext.handle.addRoute({ dst: 'fd10::/56', gateway: 'fd18::1' });
    assert.ok(await pings(pod1, POD2.v4), 'the test network works without any firewall');
    assert.ok(await pings(pod1, POD2.v6));
  });
  after(() => hosts.cleanup());

  for (const setter of ['nft', 'legacy'] as const) {
    for (const backend of ['iptables', 'nftables'] as FirewallBackendName[]) {
      it(`FORWARD policy DROP set with iptables-${setter}: no pod traffic before, pod traffic after ensure (${backend} backend)`, async () => {
        for (const node of [node1, node2]) {
          await resetFirewall(node);
          await node.exec(`iptables-${setter}`, ['-w', '-P', 'FORWARD', 'DROP']);
          await node.exec(`ip6tables-${setter}`, ['-w', '-P', 'FORWARD', 'DROP']);
        }
        assert.equal(await pings(pod1, POD2.v4), false, 'the DROP policy drops pod traffic (IPv4)');
        assert.equal(await pings(pod1, POD2.v6), false, 'the DROP policy drops pod traffic (IPv6)');

        const rules1 = openClusterRules(backend, node1.netns);
        const rules2 = openClusterRules(backend, node2.netns);
        const corrections = await rules1.ensure(spec(1));
        await rules2.ensure(spec(2));
        assert.ok(await pings(pod1, POD2.v4), 'IPv4 pod traffic flows');
        assert.ok(await pings(pod1, POD2.v6), 'IPv6 pod traffic flows');
        assert.ok(await pings(pod2, POD1.v4), 'and back');

        // Which accept rules mattered: the ones in the iptables that holds the DROP.
        const whereDrop = corrections.filter((c) => c.drop !== undefined).map((c) => `${c.firewall} ${c.family} ${c.object}`);
        if (backend === 'nftables' || setter === 'legacy') {
          assert.deepEqual(whereDrop, [`iptables-${setter} 4 filter FORWARD`, `iptables-${setter} 4 filter FLANNEL-FWD`, `iptables-${setter} 6 filter FORWARD`, `iptables-${setter} 6 filter FLANNEL-FWD`]);
          // Without that jump (what an nftables-only or one-variant-only agent would leave), traffic is dropped again.
          await node1.exec(`iptables-${setter}`, ['-w', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
          assert.equal(await pings(pod1, POD2.v4), false, `the ${backend === 'nftables' ? 'nftables accept' : 'iptables-nft ACCEPT'} alone does not get past the DROP`);
          const again = await rules1.ensure(spec(1));
          assert.deepEqual(again.map((c) => [c.kind, c.object, c.drop]), [['missing', 'filter FORWARD', 'FORWARD has policy DROP']]);
          assert.ok(await pings(pod1, POD2.v4));
        } else {
          assert.deepEqual(whereDrop, [], 'iptables backend, DROP in the variant in use: the rules are there anyway');
        }

        await rules1.remove();
        await rules2.remove();
        assert.equal(await pings(pod1, POD2.v4), false, 'after remove the DROP (not ours) is back in charge');
        assert.deepEqual((await tableLines(node1, 4, setter, 'filter')).filter((l) => l.startsWith(':FORWARD')), [':FORWARD DROP']);
      });
    }
  }

  it('a firewalld-like REJECT rule in iptables-legacy FORWARD, nftables backend: accepted before it', async () => {
    for (const node of [node1, node2]) {
      await resetFirewall(node);
      await node.exec('iptables-legacy', ['-w', '-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT']);
      await node.exec('iptables-legacy', ['-w', '-A', 'FORWARD', '-j', 'REJECT', '--reject-with', 'icmp-host-prohibited']);
    }
    assert.equal(await pings(pod1, POD2.v4), false);
    await openClusterRules('nftables', node1.netns).ensure(spec(1));
    await openClusterRules('nftables', node2.netns).ensure(spec(2));
    assert.ok(await pings(pod1, POD2.v4));
    assert.ok(await pings(pod1, POD2.v6), 'IPv6 had no REJECT');
  });

  for (const backend of ['iptables', 'nftables'] as FirewallBackendName[]) {
    it(`masquerade (${backend} backend): outside sees the node, pods see pods, and outsiders forwarded into the cluster are masqueraded only toward other nodes' pods`, async () => {
      for (const node of [node1, node2]) await resetFirewall(node);
      await openClusterRules(backend, node1.netns).ensure(spec(1));
      await openClusterRules(backend, node2.netns).ensure(spec(2));
      for (const fam of ['v4', 'v6'] as const) {
        // Rule 5: cluster → outside (not multicast): masqueraded to the node's address.
        assert.equal(await udpSource(pod1, ext, EXT[fam]), NODE1[fam], `${fam}: a pod reaching an outside host is seen with its node's IP`);
        assert.ok(await pings(pod1, EXT[fam]), `${fam}: and the replies find their way back`);
        // Rules 2, 3: pod subnet ↔ cluster: never masqueraded.
        assert.equal(await udpSource(pod1, pod2, POD2[fam]), POD1[fam], `${fam}: pod to pod across nodes keeps its address`);
        assert.equal(await udpSource(pod2, pod1, POD1[fam]), POD2[fam]);
        // Rule 4: outside → this node's pods: not masqueraded.
        assert.equal(await udpSource(ext, pod1, POD1[fam]), EXT[fam], `${fam}: an outsider reaching a local pod keeps its address`);
        // Rule 6: outside → another node's pods, through this node: masqueraded.
        assert.equal(await udpSource(ext, pod2, POD2[fam]), NODE1[fam], `${fam}: an outsider forwarded to another node's pod is masqueraded`);
      }
    });

    it(`ipMasq false (${backend} backend): nothing is masqueraded`, async () => {
      for (const node of [node1, node2]) await resetFirewall(node);
      await openClusterRules(backend, node1.netns).ensure(spec(1, false));
      await openClusterRules(backend, node2.netns).ensure(spec(2, false));
      assert.equal(await udpSource(pod1, ext, EXT.v4), POD1.v4);
      assert.equal(await udpSource(pod1, ext, EXT.v6), POD1.v6);
      assert.equal(await udpSource(ext, pod2, POD2.v4), EXT.v4);
    });
  }
});
