import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ipJson, run } from '../support/exec.js';
import { eventually } from '../agent/cluster.js';
import { check, labState, leftovers, mustLab, status, twillLab, uniqueLabName } from './support.js';

const byCheck = (rows: { check: string; ok: boolean }[], prefix: string) => rows.filter((r) => r.check.startsWith(prefix));

/** What every healthy 3 × 2 lab must pass, row kind by row kind (a kind with no rows would pass silently). */
function assertHealthy(report: Awaited<ReturnType<typeof check>>, backend: 'vxlan' | 'host-gw'): void {
  const failed = report.report.rows.filter((r) => !r.ok);
  assert.deepEqual(failed, [], 'no failed row');
  assert.equal(report.code, 0);
  const rows = report.report.rows;
  assert.equal(byCheck(rows, 'pod→pod (same node)').length, 6);
  assert.equal(byCheck(rows, 'pod→pod (across nodes)').length, 24);
  assert.equal(byCheck(rows, 'node→pod').length, 18);
  assert.equal(byCheck(rows, 'pod→node').length, 18);
  assert.equal(byCheck(rows, 'pod→outside').length, 3);
  assert.equal(byCheck(rows, 'outside sees node IP').length, 3);
  assert.equal(byCheck(rows, 'pod sees pod\'s own IP').length, 1);
  assert.equal(byCheck(rows, 'hostPort').length, 1);
  assert.equal(byCheck(rows, 'MTU').length, 2);
  assert.equal(byCheck(rows, 'overlay counters').length, backend === 'vxlan' ? 3 : 0);
}

describe('lab: 3 nodes × 2 pods, vxlan, local store', () => {
  const lab = uniqueLabName('vx');
  after(async () => {
    await twillLab(['down', '--name', lab]);
    assert.deepEqual(leftovers(lab), []);
  });

  it('up: three nodes with distinct subnets, two pods each with an IP of their node\'s subnet; a table on stdout', async () => {
    const out = await mustLab(['up', '--name', lab, '--nodes', '3', '--pods-per-node', '2', '--backend', 'vxlan', '-q']);
    assert.match(out, /NODE\s+PUBLIC IP\s+SUBNET/);
    const s = await status(lab);
    assert.deepEqual(s.nodes.map((n) => n.name), ['n1', 'n2', 'n3']);
    assert.equal(new Set(s.nodes.map((n) => n.subnet)).size, 3);
    assert.deepEqual(s.pods.map((p) => p.name), ['n1-p1', 'n1-p2', 'n2-p1', 'n2-p2', 'n3-p1', 'n3-p2']);
    for (const p of s.pods) {
      const node = s.nodes.find((n) => n.name === p.node)!;
      assert.equal(p.ip.split('.').slice(0, 3).join('.'), node.subnet.split('.').slice(0, 3).join('.'), `${p.name} ${p.ip} in ${node.subnet}`);
      const [eth0] = await ipJson<{ addr_info: { local: string }[] }[]>(p.netns, ['addr', 'show', 'eth0']);
      assert.ok(eth0!.addr_info.some((a) => a.local === p.ip), `${p.name} holds ${p.ip}`);
      assert.match(out, new RegExp(`${p.name}\\s+${p.ip.replace(/\./g, '\\.')}`));
    }
    // Each node's own paths, none of the machine's.
    for (const n of s.nodes) assert.ok(existsSync(join(labState(lab).dir, 'nodes', n.name, 'run/flannel/subnet.env')));
  });

  it('up refuses to clobber the lab of the same name', async () => {
    const pids = labState(lab).nodes.map((n) => n.agentPid);
    const r = await twillLab(['up', '--name', lab, '-q']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already exists/);
    assert.deepEqual(labState(lab).nodes.map((n) => n.agentPid), pids);
    assert.equal((await status(lab)).pods.length, 6);
  });

  it('check: every pod reaches every pod, node and outside; hostPort, MTU and overlay counters', async () => {
    assertHealthy(await check(lab), 'vxlan');
  });

  it('check fails, naming the pod, when a pod loses its network', async () => {
    const pod = (await status(lab)).pods.find((p) => p.name === 'n2-p2')!;
    // Dropped by the pod's own firewall: undone exactly (a link down would also take the pod's routes).
    for (const chain of ['INPUT', 'OUTPUT']) await run('ip', ['netns', 'exec', pod.netns, 'iptables', '-I', chain, '-j', 'DROP']);
    try {
      const r = await check(lab);
      assert.equal(r.code, 1);
      const failed = r.report.rows.filter((x) => !x.ok);
      assert.ok(failed.length > 0);
      assert.ok(failed.every((x) => x.from === 'n2-p2' || x.to.startsWith('n2-p2')), `only rows of n2-p2 fail: ${JSON.stringify(failed.slice(0, 3))}`);
      const text = await twillLab(['check', '--name', lab, '-q']);
      assert.equal(text.code, 1);
      assert.match(text.stdout, /checks FAILED/);
    } finally {
      for (const chain of ['INPUT', 'OUTPUT']) await run('ip', ['netns', 'exec', pod.netns, 'iptables', '-D', chain, '-j', 'DROP']);
    }
  });

  it('restart-agent: the node keeps its subnet, pods keep talking across it', async () => {
    const before = await status(lab);
    const oldPid = labState(lab).nodes.find((n) => n.name === 'n2')!.agentPid!;
    const out = await mustLab(['restart-agent', '--name', lab, 'n2']);
    const newPid = labState(lab).nodes.find((n) => n.name === 'n2')!.agentPid!;
    assert.notEqual(newPid, oldPid);
    assert.ok(!leftovers(lab).some((l) => l.startsWith(`process ${oldPid}:`)), 'the old agent is gone');
    assert.match(out, /n2: agent pid \d+, subnet 10\.244\.\d+\.0\/24/);
    const view = (x: typeof before) => x.nodes.map((n) => ({ name: n.name, subnet: n.subnet, publicIp: n.publicIp }));
    assert.deepEqual(view(await status(lab)), view(before));
    const from = before.pods.find((p) => p.name === 'n1-p1')!;
    const to = before.pods.find((p) => p.name === 'n2-p1')!;
    await run('ip', ['netns', 'exec', from.netns, 'ping', '-c', '1', '-W', '2', to.ip]);
  });

  it('add-pod and remove-pod: a new pod is reachable across nodes; a removed one leaves no namespace and no IP allocation', async () => {
    const out = await mustLab(['add-pod', '--name', lab, 'n3']);
    const [name, ip] = out.trim().split(' ');
    assert.equal(name, 'n3-p3');
    const s = await status(lab);
    const added = s.pods.find((p) => p.name === 'n3-p3')!;
    assert.equal(added.ip, ip);
    const from = s.pods.find((p) => p.name === 'n1-p1')!;
    await run('ip', ['netns', 'exec', from.netns, 'ping', '-c', '1', '-W', '2', added.ip]);
    const ipamDir = join(labState(lab).dir, 'nodes/n3/var/lib/cni/networks/cbr0');
    assert.ok(readdirSync(ipamDir).includes(added.ip));
    await mustLab(['remove-pod', '--name', lab, 'n3-p3']);
    assert.ok(!(await status(lab)).pods.some((p) => p.name === 'n3-p3'));
    assert.ok(!readdirSync(ipamDir).includes(added.ip), 'host-local released the IP');
    assert.ok(!existsSync(`/run/netns/${added.netns}`));
    const r = await twillLab(['remove-pod', '--name', lab, 'n3-p3']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has no pod "n3-p3"/);
  });

  it('exec runs a command in a pod and in a node', async () => {
    const s = await status(lab);
    const inPod = await mustLab(['exec', '--name', lab, 'n1-p2', '--', 'ip', '-j', 'addr', 'show', 'eth0']);
    assert.ok(inPod.includes(s.pods.find((p) => p.name === 'n1-p2')!.ip));
    const inNode = await mustLab(['exec', '--name', lab, 'n1', '--', 'ip', '-j', 'link', 'show', 'flannel.1']);
    assert.match(inNode, /"ifname":"flannel.1"/);
    // Inside a node, the default paths are the node's own, as on a real node (the host has none of them).
    const n1 = s.nodes.find((n) => n.name === 'n1')!;
    const env = await mustLab(['exec', '--name', lab, 'n1', '--', 'cat', '/run/flannel/subnet.env']);
    assert.match(env, new RegExp(`^FLANNEL_SUBNET=${n1.subnet.replace(/\.0\/24$/, '.1/24').replace(/\./g, '\\.')}$`, 'm'));
    const ipam = await mustLab(['exec', '--name', lab, 'n1', '--', 'ls', '/var/lib/cni/networks/cbr0']);
    for (const p of s.pods.filter((x) => x.node === 'n1')) assert.ok(ipam.split('\n').includes(p.ip), `${p.ip} allocated in n1's /var/lib/cni`);
    // /etc/cni is the node's only where the host has one to mount over (podman's package makes it;
    // covering all of /etc is not an option): then it holds the node's conflist, not the host's files.
    if (existsSync('/etc/cni')) assert.match(await mustLab(['exec', '--name', lab, 'n1', '--', 'ls', '/etc/cni/net.d']), /^10-flannel\.conflist\n$/);
  });

  it('explain on a lab node: every pod veth tied to its pod, the other nodes\' leases programmed, no warning or error', async () => {
    const r = await twillLab(['explain', '--name', lab, 'n1', '--format', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout) as { links: { kind: string; master: string | null; peer: { netns: string; name: string } | null }[]; findings: { id: string; severity: string }[] };
    const podVeths = e.links.filter((l) => l.kind === 'veth' && l.master === 'cni0');
    assert.ok(podVeths.length >= 2, `n1's pod veths: ${podVeths.length}`);
    for (const v of podVeths) assert.deepEqual([v.peer?.name, v.peer?.netns.startsWith('twl-')], ['eth0', true]);
    assert.deepEqual(e.findings.filter((f) => f.severity !== 'info'), []);
  });

  it('remove-node: its lease goes, the other nodes drop their routes to it; the rest still passes check', async () => {
    const gone = (await status(lab)).nodes.find((n) => n.name === 'n3')!;
    const routesTo = async (node: string) => (await ipJson<{ dst: string }[]>(labState(lab).nodes.find((n) => n.name === node)!.netns, ['route', 'show', 'proto', '87'])).map((r) => r.dst);
    assert.ok((await routesTo('n1')).includes(gone.subnet));
    await mustLab(['remove-node', '--name', lab, 'n3']);
    for (const n of ['n1', 'n2']) await eventually(async () => assert.ok(!(await routesTo(n)).includes(gone.subnet), `${n} still routes ${gone.subnet}`), 5000);
    const s = await status(lab);
    assert.deepEqual(s.nodes.map((n) => n.name), ['n1', 'n2']);
    assert.ok(!existsSync(`/run/netns/${gone.netns}`));
    const r = await check(lab);
    assert.deepEqual(r.report.rows.filter((x) => !x.ok), []);
    assert.equal(r.code, 0);
  });
});

describe('lab: host-gw, with the docker scenario', () => {
  const lab = uniqueLabName('hg');
  after(async () => {
    await twillLab(['down', '--name', lab]);
    assert.deepEqual(leftovers(lab), []);
  });

  it('up and check pass; routes go via the peers\' public IPs; docker containers share 172.17.0.2 and stay apart', async () => {
    await mustLab(['up', '--name', lab, '--backend', 'host-gw', '--scenario', 'docker', '-q']);
    const s = await status(lab);
    const n1 = labState(lab).nodes.find((n) => n.name === 'n1')!;
    const routes = await ipJson<{ dst: string; gateway?: string; dev: string }[]>(n1.netns, ['route', 'show', 'proto', '87']);
    for (const peer of s.nodes.filter((n) => n.name !== 'n1')) {
      assert.ok(routes.some((r) => r.dst === peer.subnet && r.gateway === peer.publicIp && r.dev === 'eth0'), `${peer.subnet} via ${peer.publicIp}`);
    }
    const r = await check(lab);
    assertHealthy(r, 'host-gw');
    const docker = byCheck(r.report.rows, 'docker0');
    assert.equal(docker.length, 1);
    assert.ok(docker[0]!.ok);
    for (const n of labState(lab).nodes) {
      const [eth0] = await ipJson<{ addr_info: { local: string }[] }[]>(n.dockerNetns!, ['addr', 'show', 'eth0']);
      assert.equal(eth0!.addr_info[0]!.local, '172.17.0.2');
    }
  });

  it('down removes everything, and a second down finds nothing', async () => {
    const out = await mustLab(['down', '--name', lab, '-q']);
    assert.match(out, /removed 14 namespaces, 3 processes, its directory/);
    assert.deepEqual(leftovers(lab), []);
    assert.match(await mustLab(['down', '--name', lab, '-q']), /nothing to remove/);
  });
});

describe('lab: down after an up that was killed half-way', () => {
  const lab = uniqueLabName('kill');
  after(async () => {
    await twillLab(['down', '--name', lab]);
  });

  it('leaves nothing: agents, namespaces and files of the killed up are all found', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN_TWILL } = await import('../support/agent.js');
    const up = spawn(process.execPath, [BIN_TWILL, 'lab', 'up', '--name', lab, '--pods-per-node', '3'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let progress = '';
    up.stderr.on('data', (d: Buffer) => (progress += d.toString()));
    // Killed once agents run and some pod is being made: the worst moment (processes, namespaces, CNI state).
    await eventually(async () => assert.match(progress, /pod n\d-p1/), 60_000, 50);
    up.kill('SIGKILL');
    await new Promise((r) => up.on('close', r));
    const state = labState(lab);
    assert.equal(state.complete, false);
    assert.ok(leftovers(lab).some((l) => l.startsWith('process ')), 'agents outlive the killed up');
    const r = await twillLab(['down', '--name', lab]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(leftovers(lab), []);
  });
});

for (const backend of ['vxlan', 'host-gw'] as const) {
  describe(`lab: etcd store, ${backend}`, () => {
    const lab = uniqueLabName(backend === 'vxlan' ? 'etcdvx' : 'etcdgw');
    after(async () => {
      await twillLab(['down', '--name', lab]);
      assert.deepEqual(leftovers(lab), []);
    });

    it('runs on an etcd of its own, in a namespace on the underlay: up, then every check passes', async () => {
      const r = await twillLab(['up', '--name', lab, '--store', 'etcd', '--backend', backend, '-q']);
      assert.equal(r.code, 0, r.stderr);
      assertHealthy(await check(lab), backend);
    });
  });
}
