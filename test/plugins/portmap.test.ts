// portmap with real traffic: a node namespace with pods attached through twill's
// bridge + host-local, chained with portmap as a runtime chains them (bridge ADD,
// then portmap ADD with the bridge's result as prevResult); servers in the pods,
// a client on the node's underlay. On iptables (nft and legacy) and nftables.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { runPlugin, twillPluginDir, type CniEnv, type PluginRun } from '../support/cni.js';
import { dnatChainName } from '../../src/firewall/portmap_names.js';

// A TCP server that answers "<name> <peer address>" and closes, and a UDP server
// that answers "<name> <peer address> <datagram>"; both dual-stack.
const SERVER = `
const [name, tcpPort, udpPort] = process.argv.slice(1);
const net = require('net'), dgram = require('dgram');
const bare = (a) => a.replace(/^::ffff:/, '');
const tcp = net.createServer((s) => s.end(name + ' ' + bare(s.remoteAddress) + '\\n'));
const udp = dgram.createSocket({ type: 'udp6' });
udp.on('message', (m, r) => udp.send(name + ' ' + bare(r.address) + ' ' + m, r.port, r.address));
let ready = 0;
const up = () => { if (++ready === 2) console.log('ready'); };
tcp.listen({ port: +tcpPort, host: '::' }, up);
udp.bind(+udpPort, '::', up);
`;
const TCP_CLIENT = `
const [host, port] = process.argv.slice(1);
const s = require('net').connect({ host, port: +port });
let data = '';
s.setTimeout(3000, () => { console.error('timeout'); process.exit(2); });
s.on('data', (d) => (data += d));
s.on('end', () => { process.stdout.write(data.trim()); process.exit(0); });
s.on('error', (e) => { console.error(e.code); process.exit(1); });
`;
const UDP_CLIENT = `
const [host, port, src] = process.argv.slice(1);
const s = require('dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
s.on('message', (m) => { process.stdout.write(String(m)); process.exit(0); });
s.bind(+src || 0, () => s.send('ping', +port, host));
setTimeout(() => { console.error('timeout'); process.exit(2); }, 1500);
`;

interface Reply {
  ok: boolean;
  out: string;
  err: string;
}

function client(ns: string, script: string, args: string[]): Promise<Reply> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ...args], { timeout: 10_000 }, (e, stdout, stderr) => {
      resolve({ ok: !e, out: stdout.trim(), err: stderr.trim() });
    });
  });
}
const tcp = (h: TestHost, host: string, port: number) => client(h.name, TCP_CLIENT, [host, String(port)]);
const udp = (h: TestHost, host: string, port: number, srcPort = 0) => client(h.name, UDP_CLIENT, [host, String(port), String(srcPort)]);

async function reaches(h: TestHost, host: string, port: number, want: string): Promise<void> {
  const r = await tcp(h, host, port);
  assert.ok(r.ok, `${h.name} → ${host}:${port}: ${r.err}`);
  assert.equal(r.out, want);
}

async function refused(h: TestHost, host: string, port: number): Promise<void> {
  const r = await tcp(h, host, port);
  assert.ok(!r.ok, `${h.name} → ${host}:${port} should not reach a pod, got ${JSON.stringify(r.out)}`);
}

interface Variant {
  label: string;
  backend: 'iptables' | 'nftables';
  /** Which iptables holds the rules: the namespace is made to prefer it. */
  iptables?: 'nft' | 'legacy';
}

const VARIANTS: Variant[] = [
  { label: 'iptables (nft)', backend: 'iptables', iptables: 'nft' },
  { label: 'iptables (legacy)', backend: 'iptables', iptables: 'legacy' },
  { label: 'nftables', backend: 'nftables' },
];

const NODE4 = '198.18.0.1';
const NODE4_OTHER = '198.18.0.100';
const NODE6 = 'fd98::1';
const CLIENT4 = '198.18.0.2';
const CLIENT6 = 'fd98::2';

for (const v of VARIANTS) {
  describe(`portmap, ${v.label}: real traffic through bridge + host-local + portmap`, () => {
    const hosts = new TestHosts();
    const servers: ChildProcess[] = [];
    let plugins: ReturnType<typeof twillPluginDir>;
    let data: string;
    let node: TestHost;
    let cl: TestHost;
    const pods: Record<string, { host: TestHost; result: Record<string, unknown> }> = {};

    const bridgeConf = () => ({
      cniVersion: '1.0.0',
      name: 'pmnet',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      // As flannel's delegate sets it: with br_netfilter (loaded here), the DNAT of a pod's
      // packet to its own host port happens at the bridge, which sends it back out the port
      // it came in by.
      hairpinMode: true,
      ipMasq: true,
      ...(v.backend === 'nftables' ? { ipMasqBackend: 'nftables' } : {}),
      ipam: { type: 'host-local', dataDir: data, ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:244:1::/64' }]] },
    });
    const MAPPINGS: Record<string, object[]> = {
      pod1: [
        { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
        { hostPort: 8081, containerPort: 80, protocol: 'tcp', hostIP: NODE4 },
        { hostPort: 5353, containerPort: 5300, protocol: 'udp' },
      ],
      pod2: [
        { hostPort: 8090, containerPort: 80, protocol: 'tcp' },
        { hostPort: 5354, containerPort: 5300, protocol: 'udp' },
      ],
    };
    const portmapConf = (pod: string, extra: Record<string, unknown> = {}) => ({
      cniVersion: '1.0.0',
      name: 'pmnet',
      type: 'portmap',
      capabilities: { portMappings: true },
      backend: v.backend,
      runtimeConfig: { portMappings: MAPPINGS[pod] },
      prevResult: pods[pod]!.result,
      ...extra,
    });
    const env = (pod: string, command: string): CniEnv => ({
      command,
      containerId: `ctr-${pod}`,
      netns: `/run/netns/${pods[pod]?.host.name ?? ''}`,
      ifname: 'eth0',
      path: plugins.dir,
      args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default',
    });
    const portmap = (pod: string, command: string, conf: object = portmapConf(pod)): Promise<PluginRun> =>
      runPlugin(node.name, join(plugins.dir, 'portmap'), env(pod, command), conf);

    /** The node's port-mapping state, as the tools print it. */
    const rules = async (): Promise<string> => {
      if (v.backend === 'nftables') {
        const out = await node.exec('nft', ['list', 'ruleset']);
        return out.split(/^(?=table )/m).filter((t) => t.startsWith('table ip cni_hostport') || t.startsWith('table ip6 cni_hostport')).join('');
      }
      const save = async (cmd: string) => (await node.exec(cmd, [])).replace(/^#.*\n/gm, '').replace(/\[\d+:\d+\]/g, '[]');
      return (await save(`iptables-${v.iptables}-save`)) + (await save(`ip6tables-${v.iptables}-save`));
    };
    const mentions = (state: string, pod: string) => (v.backend === 'nftables' ? state.includes(`comment "ctr-${pod}"`) : state.includes(dnatChainName('pmnet', `ctr-${pod}`)));

    async function attach(pod: string): Promise<void> {
      const host = await hosts.host(pod, {});
      const r = await runPlugin(node.name, join(plugins.dir, 'bridge'), { ...env(pod, 'ADD'), netns: `/run/netns/${host.name}` }, bridgeConf());
      assert.equal(r.code, 0, `bridge ADD: ${r.stdout}`);
      pods[pod] = { host, result: r.json! };
      const server = spawn('ip', ['netns', 'exec', host.name, process.execPath, '-e', SERVER, pod, '80', '5300'], { stdio: ['ignore', 'pipe', 'inherit'] });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.stdout!.on('data', (d: Buffer) => {
          if (d.toString().includes('ready')) resolve();
        });
        server.on('exit', (code) => reject(new Error(`server in ${pod} exited with ${code}`)));
      });
    }

    before(async () => {
      plugins = twillPluginDir();
      data = mkdtempSync(join(tmpdir(), 'twill-pm-'));
      const u = await hosts.underlay({ node: `${NODE4}/24`, client: `${CLIENT4}/24` });
      node = u.hosts.node!;
      cl = u.hosts.client!;
      await node.handle.addAddr('eth0', `${NODE4_OTHER}/24`);
      await node.handle.addAddr('eth0', `${NODE6}/64`);
      await cl.handle.addAddr('eth0', `${CLIENT6}/64`);
      // The legacy variant is chosen where legacy already holds rules (as kube-proxy's wrappers choose).
      if (v.iptables === 'legacy') await node.exec('iptables-legacy', ['-w', '-t', 'filter', '-A', 'INPUT', '-s', '192.0.2.1', '-j', 'ACCEPT']);
      await attach('pod1');
      await attach('pod2');
      const r = await portmap('pod1', 'ADD');
      assert.equal(r.code, 0, `portmap ADD: ${r.stdout} ${r.stderr}`);
    });

    after(async () => {
      for (const s of servers) s.kill();
      plugins?.remove();
      if (data) rmSync(data, { recursive: true, force: true });
      await hosts.cleanup();
    });

    it('passes the bridge result through', async () => {
      const r = await portmap('pod1', 'ADD');
      assert.equal(r.code, 0, r.stdout);
      assert.deepEqual(r.json, pods.pod1!.result);
    });

    it(`writes its rules where the ${v.label} backend keeps them`, async () => {
      const state = await rules();
      assert.ok(mentions(state, 'pod1'), state);
      if (v.iptables) {
        const other = v.iptables === 'nft' ? 'legacy' : 'nft';
        assert.doesNotMatch(await node.exec(`iptables-${other}-save`, []), /CNI-HOSTPORT/, `nothing in iptables-${other}`);
      } else {
        for (const variant of ['nft', 'legacy']) assert.doesNotMatch(await node.exec(`iptables-${variant}-save`, []), /CNI-HOSTPORT/);
      }
    });

    it('reaches the pod from another host at the node address (IPv4 and IPv6), without SNAT', async () => {
      await reaches(cl, NODE4, 8080, `pod1 ${CLIENT4}`);
      await reaches(cl, NODE6, 8080, `pod1 ${CLIENT6}`);
    });

    it('reaches the pod from the node itself, at its address and at 127.0.0.1', async () => {
      await reaches(node, NODE4, 8080, `pod1 ${NODE4}`);
      // Localhost is masqueraded to the bridge's address; route_localnet lets 127.0.0.1 leave through cni0.
      await reaches(node, '127.0.0.1', 8080, 'pod1 10.244.1.1');
      assert.equal(node.handle.readSysctl('net/ipv4/conf/cni0/route_localnet').trim(), '1');
    });

    it('hairpin: the pod reaches its own host port at the node address (masqueraded)', async () => {
      await reaches(pods.pod1!.host, NODE4, 8080, 'pod1 10.244.1.1');
      await reaches(pods.pod1!.host, NODE6, 8080, 'pod1 fd00:244:1::1');
      // Another pod reaches it too: iptables marks the whole pod subnet for masquerade,
      // the reference's nftables layout only the pod's own address.
      await reaches(pods.pod2!.host, NODE4, 8080, `pod1 ${v.backend === 'nftables' ? '10.244.1.3' : '10.244.1.1'}`);
    });

    it('maps UDP', async () => {
      const r = await udp(cl, NODE4, 5353);
      assert.ok(r.ok, r.err);
      assert.equal(r.out, `pod1 ${CLIENT4} ping`);
      const r6 = await udp(cl, NODE6, 5353);
      assert.ok(r6.ok, r6.err);
      assert.equal(r6.out, `pod1 ${CLIENT6} ping`);
    });

    it('hostIP restricts the mapping to that address', async () => {
      await reaches(cl, NODE4, 8081, `pod1 ${CLIENT4}`);
      await refused(cl, NODE4_OTHER, 8081);
      await refused(node, '127.0.0.1', 8081);
      await refused(cl, NODE6, 8081);
      // The unrestricted mapping answers on every local address.
      await reaches(cl, NODE4_OTHER, 8080, `pod1 ${CLIENT4}`);
    });

    it('ADD deletes stale UDP conntrack entries of the mapped ports', async () => {
      // A flow to 5354 before the mapping exists: conntrack remembers it un-NATed.
      const before = await udp(cl, NODE4, 5354, 40054);
      assert.ok(!before.ok, 'no pod answers before the mapping');
      const ct = await node.exec('conntrack', ['-L', '-p', 'udp', '--orig-port-dst', '5354']);
      assert.match(ct, /dport=5354/, 'the unanswered flow is tracked');
      const r = await portmap('pod2', 'ADD');
      assert.equal(r.code, 0, r.stdout);
      // Same 5-tuple: without the flush it would keep missing the DNAT until the entry times out.
      const after = await udp(cl, NODE4, 5354, 40054);
      assert.ok(after.ok, after.err);
      assert.equal(after.out, `pod2 ${CLIENT4} ping`);
      await reaches(cl, NODE4, 8090, `pod2 ${CLIENT4}`);
    });

    it('CHECK passes, and a repeated ADD changes nothing', async () => {
      const state = await rules();
      assert.equal((await portmap('pod1', 'ADD')).code, 0);
      assert.equal(await rules(), state, 'idempotent');
      const c = await portmap('pod1', 'CHECK');
      assert.equal(c.code, 0, c.stdout);
    });

    it('DEL removes exactly this container\'s rules, and again when they are gone', async () => {
      const withoutPrev = { ...portmapConf('pod1'), prevResult: undefined };
      const r = await portmap('pod1', 'DEL', withoutPrev);
      assert.equal(r.code, 0, r.stdout);
      const state = await rules();
      assert.ok(!mentions(state, 'pod1'), state);
      assert.ok(mentions(state, 'pod2'), state);
      await refused(cl, NODE4, 8080);
      await refused(node, '127.0.0.1', 8080);
      await reaches(cl, NODE4, 8090, `pod2 ${CLIENT4}`);
      await reaches(cl, NODE6, 8090, `pod2 ${CLIENT6}`);
      const again = await portmap('pod1', 'DEL');
      assert.equal(again.code, 0, again.stdout);
      assert.equal(await rules(), state, 'a second DEL changes nothing');
      const c = await portmap('pod1', 'CHECK');
      assert.equal(c.code, 1, 'CHECK fails once the rules are gone');
      assert.match(String(c.json?.msg), /portmap CHECK/);
    });

    it('DEL of the last container leaves only the shared chains', async () => {
      assert.equal((await portmap('pod2', 'DEL')).code, 0);
      const state = await rules();
      assert.ok(!mentions(state, 'pod2'), state);
      if (v.backend === 'nftables') assert.doesNotMatch(state, /comment "ctr-/);
      else assert.doesNotMatch(state, /CNI-DN-/);
    });
  });
}

describe('portmap: bad input gets the right code, a clear message, and changes nothing', () => {
  const hosts = new TestHosts();
  let plugins: ReturnType<typeof twillPluginDir>;
  let data: string;
  let node: TestHost;
  let pod: TestHost;
  let prev: Record<string, unknown>;

  before(async () => {
    plugins = twillPluginDir();
    data = mkdtempSync(join(tmpdir(), 'twill-pmbad-'));
    node = await hosts.host('pmbad');
    pod = await hosts.host('pmbadpod', {});
    const conf = { cniVersion: '1.0.0', name: 'badnet', type: 'bridge', bridge: 'cni0', isGateway: true, ipam: { type: 'host-local', subnet: '10.31.0.0/24', dataDir: data } };
    const r = await runPlugin(node.name, join(plugins.dir, 'bridge'), { command: 'ADD', containerId: 'bad-ctr', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir }, conf);
    assert.equal(r.code, 0, r.stdout);
    prev = r.json!;
  });
  after(async () => {
    plugins?.remove();
    if (data) rmSync(data, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const valid = (): Record<string, unknown> => ({
    cniVersion: '1.0.0',
    name: 'badnet',
    type: 'portmap',
    capabilities: { portMappings: true },
    runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
    prevResult: prev,
  });
  const withMapping = (m: Record<string, unknown>) => (c: Record<string, unknown>) => ({ ...c, runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', ...m }] } });
  const snapshot = async () =>
    JSON.stringify({
      iptables: (await node.exec('iptables-save', [])).replace(/^#.*$/gm, ''),
      ip6tables: (await node.exec('ip6tables-save', [])).replace(/^#.*$/gm, ''),
      legacy: (await node.exec('iptables-legacy-save', [])).replace(/^#.*$/gm, ''),
      nft: await node.exec('nft', ['list', 'ruleset']),
      routeLocalnet: node.handle.readSysctl('net/ipv4/conf/cni0/route_localnet'),
    });

  const CASES: { name: string; command?: string; conf: (c: Record<string, unknown>) => unknown; code: number; msg: RegExp }[] = [
    { name: 'ADD without prevResult', conf: ({ prevResult: _p, ...c }) => c, code: 7, msg: /portmap must be called as a chained plugin: ADD needs "prevResult"/ },
    { name: 'CHECK without prevResult', command: 'CHECK', conf: ({ prevResult: _p, ...c }) => c, code: 7, msg: /CHECK needs "prevResult"/ },
    { name: 'hostPort 70000', conf: withMapping({ hostPort: 70000 }), code: 7, msg: /runtimeConfig.portMappings\[0\].hostPort 70000 is not a port number \(an integer from 1 to 65535\)/ },
    { name: 'hostPort 0', conf: withMapping({ hostPort: 0 }), code: 7, msg: /hostPort 0 is not a port number/ },
    { name: 'hostPort as a string', conf: withMapping({ hostPort: '8080' }), code: 7, msg: /hostPort "8080" is not a port number/ },
    { name: 'hostPort 80.5', conf: withMapping({ hostPort: 80.5 }), code: 7, msg: /hostPort 80.5 is not a port number/ },
    { name: 'containerPort -1', conf: withMapping({ containerPort: -1 }), code: 7, msg: /containerPort -1 is not a port number/ },
    { name: 'containerPort missing', conf: withMapping({ containerPort: undefined }), code: 7, msg: /runtimeConfig.portMappings\[0\].containerPort is missing/ },
    { name: 'protocol icmp', conf: withMapping({ protocol: 'icmp' }), code: 7, msg: /protocol "icmp" is not one of "tcp", "udp", "sctp"/ },
    { name: 'protocol missing', conf: withMapping({ protocol: undefined }), code: 7, msg: /protocol \(missing\) is not one of/ },
    { name: 'hostIP that is not an address', conf: withMapping({ hostIP: '198.18.0.300' }), code: 7, msg: /hostIP "198.18.0.300" is not an IP address/ },
    { name: 'a mapping that is not an object', conf: (c) => ({ ...c, runtimeConfig: { portMappings: [8080] } }), code: 7, msg: /runtimeConfig.portMappings\[0\] must be an object/ },
    { name: 'portMappings that is not a list', conf: (c) => ({ ...c, runtimeConfig: { portMappings: { hostPort: 1 } } }), code: 7, msg: /runtimeConfig.portMappings must be a list/ },
    { name: 'snat not a boolean', conf: (c) => ({ ...c, snat: 'yes' }), code: 7, msg: /"snat" must be true or false, got "yes"/ },
    { name: 'markMasqBit 32', conf: (c) => ({ ...c, markMasqBit: 32 }), code: 7, msg: /"markMasqBit" must be an integer from 0 to 31, got 32/ },
    { name: 'markMasqBit and externalSetMarkChain', conf: (c) => ({ ...c, markMasqBit: 14, externalSetMarkChain: 'KUBE-MARK-MASQ' }), code: 7, msg: /cannot specify both "externalSetMarkChain" and "markMasqBit"/ },
    { name: 'externalSetMarkChain with a space', conf: (c) => ({ ...c, externalSetMarkChain: 'KUBE MARK' }), code: 7, msg: /"externalSetMarkChain" "KUBE MARK" is not an iptables chain name/ },
    { name: 'unknown backend', conf: (c) => ({ ...c, backend: 'pf' }), code: 7, msg: /unrecognized backend "pf"/ },
    { name: 'nftables with iptables conditions', conf: (c) => ({ ...c, backend: 'nftables', conditionsV4: ['-s', '10.0.0.0/8'] }), code: 7, msg: /nftables backend was requested but configuration contains iptables-specific options \[conditionsV4\]/ },
    { name: 'iptables with nft conditions', conf: (c) => ({ ...c, backend: 'iptables', conditionsV6: ['ip6 saddr ::1'] }), code: 7, msg: /iptables backend was requested but configuration contains nftables-specific options \[conditionsV6\]/ },
    { name: 'conditions that are not strings', conf: (c) => ({ ...c, conditionsV4: [1] }), code: 7, msg: /"conditionsV4" must be a list of strings/ },
    { name: 'invalid iptables conditions', conf: (c) => ({ ...c, conditionsV4: ['--no-such-option'] }), code: 999, msg: /--no-such-option|unknown option/ },
    { name: 'invalid nft conditions', conf: (c) => ({ ...c, backend: 'nftables', conditionsV4: ['ip nosuchfield 1'] }), code: 999, msg: /nosuchfield|syntax error/ },
    { name: 'prevResult that is not a result', conf: (c) => ({ ...c, prevResult: { cniVersion: '1.0.0', ips: [{ address: 'nope' }] } }), code: 6, msg: /prevResult.ips\[0\].address: "nope" is not a CIDR/ },
  ];

  for (const c of CASES) {
    it(c.name, async () => {
      const conf = c.conf(valid());
      const before = await snapshot();
      const r = await runPlugin(node.name, join(plugins.dir, 'portmap'), { command: c.command ?? 'ADD', containerId: 'bad-ctr', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir }, conf as object);
      assert.equal(r.code, 1, `exit status 1 expected; stdout: ${r.stdout} stderr: ${r.stderr}`);
      assert.equal(r.json?.code, c.code, `code: ${r.stdout}`);
      assert.match(String(r.json?.msg), c.msg);
      assert.equal(await snapshot(), before, 'nothing changed');
    });
  }

  it('ADD without port mappings passes prevResult through and changes nothing', async () => {
    const before = await snapshot();
    const r = await runPlugin(node.name, join(plugins.dir, 'portmap'), { command: 'ADD', containerId: 'bad-ctr', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir }, { ...valid(), runtimeConfig: {} });
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json, prev);
    assert.equal(await snapshot(), before);
  });

  it('DEL succeeds with an invalid config, without prevResult, and with nothing to remove', async () => {
    const before = await snapshot();
    for (const conf of [{ ...valid(), prevResult: undefined }, withMapping({ hostPort: 70000 })(valid()), { ...valid(), backend: 'pf' }]) {
      const r = await runPlugin(node.name, join(plugins.dir, 'portmap'), { command: 'DEL', containerId: 'bad-ctr', ifname: 'eth0', path: plugins.dir }, conf);
      assert.equal(r.code, 0, r.stdout);
    }
    assert.equal(await snapshot(), before);
  });

  it('a failed ADD leaves none of its own rules behind', async () => {
    // The iptables rules are valid up to the external mark chain, which does not exist.
    const r = await runPlugin(node.name, join(plugins.dir, 'portmap'), { command: 'ADD', containerId: 'bad-ctr', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir }, { ...valid(), externalSetMarkChain: 'NO-SUCH-CHAIN' });
    assert.equal(r.code, 1, r.stdout);
    assert.doesNotMatch(await node.exec('iptables-save', []), new RegExp(dnatChainName('badnet', 'bad-ctr')));
  });
});
