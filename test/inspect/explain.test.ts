import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openNetns } from '../../src/kernel/index.js';
import { explain } from '../../src/inspect/explain.js';
import type { Explanation, FindingId } from '../../src/inspect/model.js';
import { ipJson } from '../support/exec.js';
import { buildExplainNode, FLANNEL_MTU, NETWORK, NODE_SUBNET, REMOTE, type ExplainNode } from './fixture.js';

const execFileP = promisify(execFile);
const bin = new URL('../../../bin/twill', import.meta.url).pathname;

interface IpLink { ifindex: number; ifname: string; link_index?: number; link_netnsid?: number; master?: string }

/** The ids of what is not merely informational. */
const problems = (e: Explanation): FindingId[] => e.findings.filter((f) => f.severity !== 'info').map((f) => f.id);

describe('twill explain: the node of the question (cni0, 7 pods, idle docker0, flannel.1)', () => {
  let n: ExplainNode;
  const read = () => explain({ netns: n.node.name, subnetFile: n.subnetFile, cniDataDir: n.dataDir });
  before(async () => {
    n = await buildExplainNode(7);
  });
  after(() => n?.cleanup());

  it('ties every veth to cni0 and to eth0 in its own pod namespace, with the pod address', async () => {
    const e = await read();
    assert.equal(e.node.netns, n.node.name);
    // The oracle: ip's view of the node (ifindex and netnsid of each veth's peer) and of each pod.
    const ipLinks = await ipJson<IpLink[]>(n.node.name, ['link', 'show']);
    for (const pod of n.pods) {
      const veth = e.links.find((l) => l.netns === n.node.name && l.name === pod.veth);
      assert.ok(veth, `veth ${pod.veth} is listed`);
      assert.equal(veth.kind, 'veth');
      assert.equal(veth.master, 'cni0');
      const [podEth0] = await ipJson<IpLink[]>(pod.host.name, ['link', 'show', 'eth0']);
      const oracle = ipLinks.find((l) => l.ifname === pod.veth)!;
      assert.equal(oracle.link_index, podEth0!.ifindex, 'ip says the same peer ifindex (the @ifN)');
      assert.deepEqual(veth.peer, { netns: pod.host.name, name: 'eth0', ifindex: podEth0!.ifindex });
      const eth0 = e.links.find((l) => l.netns === pod.host.name && l.name === 'eth0');
      assert.deepEqual(eth0?.addresses.filter((a) => !a.startsWith('fe80:')), [`${pod.ip}/24`]);
      assert.deepEqual(eth0?.peer, { netns: n.node.name, name: pod.veth, ifindex: veth.ifindex });
    }
    assert.deepEqual(
      e.namespaces.filter((x) => x.role === 'pod').map((x) => x.name).sort(),
      n.pods.map((p) => p.host.name).sort(),
    );
    const text = (await import('../../src/inspect/render.js')).renderText(e);
    for (const pod of n.pods) assert.match(text, new RegExp(`${pod.veth}@if\\d+ .*→ eth0 \\(ifindex \\d+\\) in pod namespace ${pod.host.name} \\(${pod.ip.replace(/\./g, '\\.')}/24\\)`));
  });

  it('explains docker0 (info: Docker\'s bridge, no ports, not the @ifN of any veth), and a healthy node has no warnings or errors', async () => {
    const e = await read();
    const docker = e.findings.filter((f) => f.id === 'docker0-unused');
    assert.equal(docker.length, 1);
    assert.equal(docker[0]!.severity, 'info');
    assert.match(docker[0]!.message, /@ifN/);
    assert.deepEqual(problems(e), [], JSON.stringify(e.findings, null, 2));
    assert.equal(e.subnetEnv.subnet, NODE_SUBNET);
    assert.equal(e.ipam.allocations.length, 7);
    const fl = e.links.find((l) => l.name === 'flannel.1')!;
    assert.deepEqual(fl.vxlan, { vni: 1, port: 8472, local: '198.18.0.1', underlay: 'eth0', learning: false });
    assert.deepEqual(e.neighbours.filter((x) => x.permanent).map((x) => [x.dev, x.ip, x.mac, x.permanent]), [['flannel.1', REMOTE.vtep, REMOTE.mac, true]]);
    assert.ok(e.fdb.some((f) => f.mac === REMOTE.mac && f.dst === REMOTE.publicIp));
  });

  /** Injects one fault, expects exactly that finding (among warnings/errors), repairs it and expects a healthy node again. */
  async function fault(id: FindingId, inject: () => Promise<void> | void, repair: () => Promise<void> | void, subject?: RegExp): Promise<void> {
    await inject();
    try {
      const e = await read();
      const found = e.findings.filter((f) => f.id === id);
      assert.ok(found.length > 0, `${id} expected; found ${JSON.stringify(e.findings, null, 2)}`);
      if (subject) assert.match(found[0]!.subject, subject);
      assert.ok(found[0]!.message.length > 20 && found[0]!.fix.length > 5);
      assert.deepEqual([...new Set(problems(e))], found[0]!.severity === 'info' ? [] : [id], JSON.stringify(e.findings, null, 2));
    } finally {
      await repair();
    }
    assert.deepEqual(problems(await read()), [], `still reported after the repair of ${id}`);
  }

  it('bridge-address-conflict: cni0 holds another subnet than FLANNEL_SUBNET', () =>
    fault(
      'bridge-address-conflict',
      async () => {
        await n.node.handle.deleteAddr('cni0', NODE_SUBNET);
        await n.node.handle.addAddr('cni0', '10.244.9.1/24');
      },
      async () => {
        await n.node.handle.deleteAddr('cni0', '10.244.9.1/24');
        await n.node.handle.addAddr('cni0', NODE_SUBNET);
      },
      /^cni0$/,
    ));

  it('leaked-ip: an allocation file whose address no interface holds', () => {
    const file = join(n.dataDir, NETWORK, '10.244.1.99');
    return fault('leaked-ip', () => writeFileSync(file, 'deadbeef\r\neth0'), () => rmSync(file), /10\.244\.1\.99$/);
  });

  it('ip-forward-off: net.ipv4.ip_forward=0 in the node', () =>
    fault('ip-forward-off', () => n.node.handle.writeSysctl('net.ipv4.ip_forward', '0'), () => n.node.handle.writeSysctl('net.ipv4.ip_forward', '1')));

  it('br-netfilter-missing: bridge-nf-call-iptables=0 in the node', () =>
    fault(
      'br-netfilter-missing',
      () => n.node.handle.writeSysctl('net.bridge.bridge-nf-call-iptables', '0'),
      () => n.node.handle.writeSysctl('net.bridge.bridge-nf-call-iptables', '1'),
    ));

  it('subnet-env-missing: no subnet.env', () => fault('subnet-env-missing', () => renameSync(n.subnetFile, `${n.subnetFile}.away`), () => renameSync(`${n.subnetFile}.away`, n.subnetFile)));

  it('subnet-env-stale: flannel.1 carries another lease\'s subnet than subnet.env', () =>
    fault(
      'subnet-env-stale',
      // Added before the other is deleted: removing a device's last IPv4 address flushes its routes and neighbours.
      async () => {
        await n.node.handle.addAddr('flannel.1', '10.244.5.0/32');
        await n.node.handle.deleteAddr('flannel.1', '10.244.1.0/32');
      },
      async () => {
        await n.node.handle.addAddr('flannel.1', '10.244.1.0/32');
        await n.node.handle.deleteAddr('flannel.1', '10.244.5.0/32');
      },
    ));

  it('mtu-mismatch: a pod eth0 with an MTU above FLANNEL_MTU', () => {
    const pod = n.pods[3]!;
    return fault('mtu-mismatch', () => pod.host.handle.setLink('eth0', { mtu: 1500 }), () => pod.host.handle.setLink('eth0', { mtu: FLANNEL_MTU }), new RegExp(`eth0 in ${pod.host.name}`));
  });

  // The kernel refuses a vxlan MTU above its underlay's at the time; lowering the underlay afterwards is what happens.
  it('mtu-mismatch: an underlay lowered below flannel.1 + the VXLAN header', () =>
    fault('mtu-mismatch', () => n.node.handle.setLink('eth0', { mtu: 1400 }), () => n.node.handle.setLink('eth0', { mtu: 1500 }), /^flannel\.1$/));

  it('missing-fdb: a remote node\'s neighbour without its FDB entry', () =>
    fault('missing-fdb', () => n.node.handle.deleteFdb('flannel.1', REMOTE.mac, REMOTE.publicIp), () => n.node.handle.appendFdb('flannel.1', REMOTE.mac, REMOTE.publicIp)));

  it('missing-neighbour: a route into flannel.1 whose gateway has no neighbour entry', () =>
    fault('missing-neighbour', () => n.node.handle.deleteNeigh('flannel.1', REMOTE.vtep), () => n.node.handle.addNeigh('flannel.1', REMOTE.vtep, REMOTE.mac)));

  it('missing-route: a remote node\'s neighbour and FDB entry without its route', () => {
    const route = { dst: REMOTE.subnet, gateway: REMOTE.vtep, device: 'flannel.1', onlink: true };
    return fault('missing-route', () => n.node.handle.deleteRoute(route), () => n.node.handle.addRoute(route));
  });

  it('stale-route: a route outside the cluster network into the overlay', () => {
    const route = { dst: '10.96.0.0/24', gateway: '10.96.0.0', device: 'flannel.1', onlink: true };
    return fault('stale-route', () => n.node.handle.addRoute(route), () => n.node.handle.deleteRoute(route), /10\.96\.0\.0\/24/);
  });

  it('overlapping-cidr: docker0 given an address inside the cluster network', () =>
    fault('overlapping-cidr', () => n.node.handle.addAddr('docker0', '10.244.200.1/24'), () => n.node.handle.deleteAddr('docker0', '10.244.200.1/24'), /^docker0$/));

  it('forward-drop: FORWARD policy DROP (iptables-nft) without flannel\'s accept rules; FLANNEL-FWD before it makes it fine', async () => {
    await fault(
      'forward-drop',
      () => n.node.exec('iptables-nft', ['-w', '-P', 'FORWARD', 'DROP']).then(() => undefined),
      () => n.node.exec('iptables-nft', ['-w', '-P', 'FORWARD', 'ACCEPT']).then(() => undefined),
      /iptables-nft FORWARD/,
    );
    await n.node.exec('iptables-nft', ['-w', '-P', 'FORWARD', 'DROP']);
    try {
      await n.node.exec('iptables-nft', ['-w', '-N', 'FLANNEL-FWD']);
      await n.node.exec('iptables-nft', ['-w', '-A', 'FLANNEL-FWD', '-s', '10.244.0.0/16', '-j', 'ACCEPT']);
      await n.node.exec('iptables-nft', ['-w', '-A', 'FLANNEL-FWD', '-d', '10.244.0.0/16', '-j', 'ACCEPT']);
      await n.node.exec('iptables-nft', ['-w', '-A', 'FORWARD', '-j', 'FLANNEL-FWD']);
      assert.deepEqual(problems(await read()), []);
    } finally {
      await n.node.exec('iptables-nft', ['-w', '-P', 'FORWARD', 'ACCEPT']);
      await n.node.exec('iptables-nft', ['-w', '-D', 'FORWARD', '-j', 'FLANNEL-FWD']).catch(() => undefined);
      await n.node.exec('iptables-nft', ['-w', '-F', 'FLANNEL-FWD']).catch(() => undefined);
      await n.node.exec('iptables-nft', ['-w', '-X', 'FLANNEL-FWD']).catch(() => undefined);
    }
  });

  it('finds a pod namespace that only a process holds (no name under /run/netns), as pid:<pid>', async () => {
    // A sandbox's namespace is often held by its pause process alone.
    const holder: ChildProcess = spawn('unshare', ['--net', 'sleep', '60'], { stdio: 'ignore' });
    try {
      const pid = holder.pid!;
      const own = openNetns('/proc/self/ns/net');
      const ownKey = own.key;
      own.close();
      let netns = null;
      for (let i = 0; i < 100 && netns === null; i++) {
        try {
          const candidate = openNetns(`/proc/${pid}/ns/net`);
          // Until unshare ran, the child is still in our namespace.
          if (candidate.key !== ownKey) netns = candidate;
          else candidate.close();
        } catch {
          // not started yet
        }
        if (netns === null) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(netns, 'unshare --net started');
      const veth = 'vethproc0001';
      await n.node.handle.addLink({ kind: 'veth', name: veth, mtu: FLANNEL_MTU, master: 'cni0', up: true, peer: { name: 'eth0', netns, mtu: FLANNEL_MTU } });
      netns.close();
      try {
        const e = await read();
        const link = e.links.find((l) => l.netns === n.node.name && l.name === veth)!;
        assert.equal(link.peer?.netns, `pid:${pid}`);
        assert.equal(link.peer?.name, 'eth0');
        assert.ok(e.namespaces.some((x) => x.name === `pid:${pid}` && x.role === 'pod' && x.pids.includes(pid)));
      } finally {
        await n.node.handle.deleteLink(veth);
      }
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('the CLI: twill explain --netns NAME --format json|text|svg|html', async () => {
    const args = ['explain', '--netns', n.node.name, '--subnet-file', n.subnetFile, '--cni-data-dir', n.dataDir];
    const { stdout } = await execFileP(bin, [...args, '--format', 'json'], { maxBuffer: 64 << 20 });
    const e = JSON.parse(stdout) as Explanation;
    assert.equal(e.schemaVersion, 1);
    for (const pod of n.pods) {
      const veth = e.links.find((l) => l.name === pod.veth)!;
      for (const key of ['netns', 'name', 'ifindex', 'kind', 'state', 'mtu', 'master', 'addresses', 'peer']) assert.ok(key in veth, key);
      assert.equal(veth.peer?.netns, pod.host.name);
    }
    assert.deepEqual(problems(e), []);
    for (const f of e.findings) assert.deepEqual(Object.keys(f).sort(), ['fix', 'id', 'message', 'severity', 'subject']);
    const text = (await execFileP(bin, [...args])).stdout;
    assert.match(text, /bridge docker0 .*\n {2}no ports: Docker's own bridge/);
    assert.match(text, /\[info\] docker0-unused/);
    const out = join(n.dir, 'node.svg');
    await execFileP(bin, [...args, '--format', 'svg', '--out', out]);
    const svg = (await import('node:fs')).readFileSync(out, 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.ok(n.pods.every((p) => svg.includes(p.veth)));
    const html = (await execFileP(bin, [...args, '--format', 'html'])).stdout;
    assert.match(html, /^<!DOCTYPE html>/);
    assert.doesNotMatch(html, /<(script|link|img)\b[^>]*(src|href)=/, 'self-contained');
    await assert.rejects(execFileP(bin, [...args, '--format', 'yaml']), /--format must be one of text, json, svg, html/);
  });
});
