// portmap, twill vs the reference v1.10.0: the same chain of calls (bridge +
// host-local ADD, portmap ADD with the bridge's result as prevResult, CHECK,
// portmap DEL, bridge DEL) through each, in twin namespaces, leaves the same
// iptables-save / nft ruleset at every step; and each one's DEL removes what
// the other's ADD made.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SUPPORTED_VERSIONS, atLeast } from '../../src/cni/version.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { REFERENCE_V1_10, requireReference, runPlugin, twillPluginDir, type CniEnv, type PluginRun } from '../support/cni.js';

const hosts = new TestHosts();
let twill: ReturnType<typeof twillPluginDir>;
const dataDirs: string[] = [];

/** The reference plugins, portmap among them (fails, never skips, when missing). */
function referenceDir(): string {
  const dir = requireReference(REFERENCE_V1_10);
  if (!existsSync(join(dir, 'portmap'))) throw new Error(`reference plugin ${join(dir, 'portmap')} is missing: run "npm run peers -- cni" (.ci/run does)`);
  return dir;
}

before(() => {
  twill = twillPluginDir();
});
after(async () => {
  twill?.remove();
  for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
  await hosts.cleanup();
});

const BUILTIN_CHAIN = /^:(PREROUTING|INPUT|OUTPUT|POSTROUTING|FORWARD) ACCEPT/;
const XTABLES = /^table (ip|ip6|inet|arp|bridge) (nat|filter|mangle|raw|security) \{/;

/**
 * The node's firewall as the tools print it. iptables through iptables-save (nft
 * renders xtables' MASQUERADE natively or blank depending on load order), without
 * counters; nft's own tables as text, sorted (listing order is creation order). The
 * bridge's masquerade table lacks the reference's two cosmetic comments in twill
 * (nft 1.0.6 ignores them in JSON): those lines are left out there only.
 */
async function firewallState(h: TestHost) {
  // Empty tables (built-in chains, policy ACCEPT, no rule) are left out: the reference
  // bridge's teardown creates an empty nat table when it has nothing to remove.
  const save = async (cmd: string) =>
    (await h.exec(cmd, []))
      .split(/^(?=\*)/m)
      .map((block) => block.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/g, '[]')))
      .filter((lines) => lines.some((l) => l.startsWith('-') || (l.startsWith(':') && !BUILTIN_CHAIN.test(l))))
      .flat();
  const nft = (await h.exec('nft', ['list', 'ruleset']))
    .split(/^(?=table )/m)
    .map((t) => t.trim())
    .filter((t) => t && !XTABLES.test(t))
    .map((t) => (t.startsWith('table inet cni_plugins_masquerade') ? t.split('\n').filter((l) => !/^\s*comment ".*"$/.test(l)).join('\n') : t))
    .sort();
  let routeLocalnet: string;
  try {
    routeLocalnet = h.handle.readSysctl('net/ipv4/conf/cni0/route_localnet').trim();
  } catch {
    routeLocalnet = '(no cni0)';
  }
  return {
    iptables: await save('iptables-nft-save'),
    ip6tables: await save('ip6tables-nft-save'),
    legacy: [...(await save('iptables-legacy-save')), ...(await save('ip6tables-legacy-save'))],
    nft,
    routeLocalnet,
  };
}

/** MACs, the random veth name and the namespace path differ between any two runs. */
function normalise(result: Record<string, unknown> | null): unknown {
  return JSON.parse(JSON.stringify(result).replace(/"\/run\/netns\/[^"]+"/g, '"NETNS"').replace(/"([0-9a-f]{2}:){5}[0-9a-f]{2}"/g, '"MAC"').replace(/"veth[0-9a-f]{8}"/g, '"VETH"'));
}

interface Scenario {
  version: string;
  /** Keys of the portmap config. */
  portmap: Record<string, unknown>;
  mappings: object[];
  /** CNI_CONTAINERID (default pm-diff-ctr-1). */
  containerId?: string;
  /** Shell run in the node before anything (chains someone else owns). */
  prepare?: string[][];
}

interface Twin {
  node: TestHost;
  pod: TestHost;
  env: (command: string) => CniEnv;
  bridgeConf: Record<string, unknown>;
  portmapConf: (prev: unknown) => Record<string, unknown>;
}

async function twin(label: string, s: Scenario): Promise<Twin> {
  const node = await hosts.host(`${label}-n`, { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1', 'net.ipv6.conf.all.accept_dad': '0', 'net.ipv6.conf.default.accept_dad': '0' });
  const pod = await hosts.host(`${label}-p`, {});
  for (const cmd of s.prepare ?? []) await node.exec(cmd[0]!, cmd.slice(1));
  const data = mkdtempSync(join(tmpdir(), 'twill-pmdiff-'));
  dataDirs.push(data);
  const bridgeConf = {
    cniVersion: s.version,
    name: 'pmnet',
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: true,
    hairpinMode: true,
    ...(s.portmap.backend === 'nftables' ? { ipMasqBackend: 'nftables' } : {}),
    ipam: { type: 'host-local', dataDir: data, ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:244:1::/64' }]] },
  };
  const portmapConf = (prev: unknown) => ({
    cniVersion: s.version,
    name: 'pmnet',
    type: 'portmap',
    capabilities: { portMappings: true },
    ...s.portmap,
    runtimeConfig: { portMappings: s.mappings },
    prevResult: prev,
  });
  const env = (command: string): CniEnv => ({ command, containerId: s.containerId ?? 'pm-diff-ctr-1', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: '', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web' });
  return { node, pod, env, bridgeConf, portmapConf };
}

const call = (t: Twin, dir: string, plugin: string, command: string, conf: object): Promise<PluginRun> =>
  runPlugin(t.node.name, join(dir, plugin), { ...t.env(command), path: dir }, conf);

interface Outcome {
  add: PluginRun;
  bridgeResult: Record<string, unknown> | null;
  afterAdd: unknown;
  check: number | null;
  afterPortmapDel: unknown;
  checkAfterDel: number | null;
  afterDel: unknown;
}

async function chain(impl: string, dir: string, label: string, s: Scenario): Promise<Outcome> {
  const t = await twin(`${label}-${impl}`, s);
  const br = await call(t, dir, 'bridge', 'ADD', t.bridgeConf);
  assert.equal(br.code, 0, `${impl} bridge ADD: ${br.stdout}`);
  const add = await call(t, dir, 'portmap', 'ADD', t.portmapConf(br.json));
  const afterAdd = await firewallState(t.node);
  const canCheck = atLeast(s.version, '0.4.0');
  const check = canCheck ? (await call(t, dir, 'portmap', 'CHECK', t.portmapConf(br.json))).code : null;
  const del = await call(t, dir, 'portmap', 'DEL', t.portmapConf(br.json));
  assert.equal(del.code, 0, `${impl} portmap DEL: ${del.stdout}`);
  const afterPortmapDel = await firewallState(t.node);
  const checkAfterDel = canCheck ? (await call(t, dir, 'portmap', 'CHECK', t.portmapConf(br.json))).code : null;
  const bdel = await call(t, dir, 'bridge', 'DEL', t.bridgeConf);
  assert.equal(bdel.code, 0, `${impl} bridge DEL: ${bdel.stdout}`);
  return { add, bridgeResult: br.json, afterAdd, check, afterPortmapDel, checkAfterDel, afterDel: await firewallState(t.node) };
}

/** ADD through one implementation, DEL through the other: the state after DEL. */
async function crossed(addDir: string, delDir: string, label: string, s: Scenario): Promise<{ afterAdd: unknown; afterDel: unknown }> {
  const t = await twin(label, s);
  const br = await call(t, addDir, 'bridge', 'ADD', t.bridgeConf);
  assert.equal(br.code, 0, br.stdout);
  const add = await call(t, addDir, 'portmap', 'ADD', t.portmapConf(br.json));
  assert.equal(add.code, 0, add.stdout);
  const afterAdd = await firewallState(t.node);
  // What a runtime sends on DEL: the same config, prevResult from its cache.
  const del = await call(t, delDir, 'portmap', 'DEL', t.portmapConf(br.json));
  assert.equal(del.code, 0, `DEL: ${del.stdout}`);
  return { afterAdd, afterDel: await firewallState(t.node) };
}

const MAPPINGS = [
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 8081, containerPort: 81, protocol: 'tcp', hostIP: '198.18.0.1' },
  { hostPort: 8082, containerPort: 82, protocol: 'tcp', hostIP: 'fd98::1' },
  { hostPort: 8083, containerPort: 83, protocol: 'tcp', hostIP: '0.0.0.0' },
  { hostPort: 5353, containerPort: 53, protocol: 'udp' },
  { hostPort: 8080, containerPort: 8080, protocol: 'udp' },
  { hostPort: 9000, containerPort: 9000, protocol: 'sctp' },
];
/** More than multiport's 15 ports of one protocol: the entry rule is split. */
const MANY = Array.from({ length: 17 }, (_, i) => ({ hostPort: 30000 + i, containerPort: 80, protocol: 'tcp' }));

const SCENARIOS: Record<string, Omit<Scenario, 'version'>> = {
  'iptables (default backend): tcp, udp, sctp, hostIP of both families, dual stack': { portmap: {}, mappings: MAPPINGS },
  'nftables backend': { portmap: { backend: 'nftables' }, mappings: MAPPINGS },
  'iptables, snat off': { portmap: { snat: false }, mappings: MAPPINGS },
  'iptables, masqAll and markMasqBit 0': { portmap: { masqAll: true, markMasqBit: 0 }, mappings: MAPPINGS },
  'iptables, 17 ports (multiport split)': { portmap: { backend: 'iptables', markMasqBit: 31 }, mappings: MANY },
  'iptables, externalSetMarkChain': {
    portmap: { externalSetMarkChain: 'KUBE-MARK-MASQ' },
    mappings: MAPPINGS,
    prepare: [
      ['iptables-nft', '-w', '-t', 'nat', '-N', 'KUBE-MARK-MASQ'],
      ['iptables-nft', '-w', '-t', 'nat', '-A', 'KUBE-MARK-MASQ', '-j', 'MARK', '--set-xmark', '0x4000/0x4000'],
      ['ip6tables-nft', '-w', '-t', 'nat', '-N', 'KUBE-MARK-MASQ'],
      ['ip6tables-nft', '-w', '-t', 'nat', '-A', 'KUBE-MARK-MASQ', '-j', 'MARK', '--set-xmark', '0x4000/0x4000'],
    ],
  },
  'iptables, conditionsV4/V6': { portmap: { conditionsV4: ['-s', '198.18.0.0/24', '!', '-i', 'cni0'], conditionsV6: ['!', '-s', 'fd99::/64'] }, mappings: MAPPINGS },
  'nftables, conditions and masqAll': {
    portmap: { backend: 'nftables', masqAll: true, conditionsV4: ['ip saddr != 10.99.0.0/16'], conditionsV6: ['ip6', 'saddr', '!=', 'fd99::/64'] },
    mappings: MAPPINGS,
  },
  'no port mappings': { portmap: {}, mappings: [] },
  'a container ID of 250 characters (comments cut as the reference cuts them)': { portmap: {}, mappings: MAPPINGS.slice(0, 2), containerId: `c${'0123456789abcdef'.repeat(16).slice(0, 249)}` },
};

describe('portmap: twill vs reference v1.10.0, chained after bridge + host-local', () => {
  const cases: [string, Scenario][] = [];
  for (const version of SUPPORTED_VERSIONS) cases.push([`${version}: default`, { version, ...SCENARIOS['iptables (default backend): tcp, udp, sctp, hostIP of both families, dual stack']! }]);
  for (const [name, s] of Object.entries(SCENARIOS)) cases.push([`1.0.0: ${name}`, { version: '1.0.0', ...s }]);

  for (const [index, [name, s]] of cases.entries()) {
    it(name, async () => {
      const label = `pd${index}`;
      const ref = await chain('ref', referenceDir(), label, s);
      const mine = await chain('tw', twill.dir, label, s);
      assert.equal(mine.add.code, ref.add.code, `ADD exit status: twill ${mine.add.stdout} vs reference ${ref.add.stdout}`);
      assert.deepEqual(normalise(mine.add.json), normalise(ref.add.json), 'ADD result');
      assert.deepEqual(normalise(mine.add.json), normalise(mine.bridgeResult), 'the bridge result passes through');
      assert.deepEqual(mine.afterAdd, ref.afterAdd, 'firewall after ADD');
      assert.equal(mine.check, ref.check, 'CHECK exit status');
      assert.deepEqual(mine.afterPortmapDel, ref.afterPortmapDel, 'firewall after portmap DEL');
      assert.equal(mine.checkAfterDel, ref.checkAfterDel, 'CHECK exit status after DEL');
      assert.deepEqual(mine.afterDel, ref.afterDel, 'firewall after bridge DEL');
    });
  }
});

describe('portmap: each removes what the other made', () => {
  const crossedScenarios = ['iptables (default backend): tcp, udp, sctp, hostIP of both families, dual stack', 'nftables backend', 'iptables, conditionsV4/V6', 'iptables, masqAll and markMasqBit 0'];
  for (const [index, name] of crossedScenarios.entries()) {
    it(name, async () => {
      const s: Scenario = { version: '1.0.0', ...SCENARIOS[name]! };
      const ref = referenceDir();
      const both = await crossed(ref, ref, `px${index}r`, s);
      const refThenTwill = await crossed(ref, twill.dir, `px${index}a`, s);
      const twillThenRef = await crossed(twill.dir, ref, `px${index}b`, s);
      assert.notDeepEqual(both.afterAdd, both.afterDel, 'the ADD made something');
      assert.deepEqual(refThenTwill.afterAdd, both.afterAdd);
      assert.deepEqual(refThenTwill.afterDel, both.afterDel, 'twill\'s DEL removes what the reference\'s ADD made');
      assert.deepEqual(twillThenRef.afterAdd, both.afterAdd);
      assert.deepEqual(twillThenRef.afterDel, both.afterDel, 'the reference\'s DEL removes what twill\'s ADD made');
    });
  }
});

describe('portmap: error codes of the protocol, twill vs reference v1.10.0', () => {
  const base = { cniVersion: '1.0.0', name: 'errnet', type: 'portmap', runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] }, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.1.2.3/24' }] } };
  const cases: [string, Partial<CniEnv>, unknown][] = [
    ['unknown version', {}, { ...base, cniVersion: '9.9.9' }],
    ['malformed JSON', {}, '{"cniVersion": "1.0.0", "name": '],
    ['invalid network name', {}, { ...base, name: 'bad/name' }],
    ['missing CNI_CONTAINERID', { containerId: undefined }, base],
    ['missing CNI_NETNS on ADD', { netns: undefined }, base],
    ['missing CNI_PATH', { path: undefined }, base],
    ['hostile container ID', { containerId: '../../etc' }, base],
    ['CHECK on 0.3.1', { command: 'CHECK' }, { ...base, cniVersion: '0.3.1' }],
  ];
  let host: TestHost;
  before(async () => {
    host = await hosts.host('pmerrs');
  });
  for (const [name, envOverride, stdin] of cases) {
    it(name, async () => {
      const codes: (number | undefined)[] = [];
      for (const dir of [referenceDir(), twill.dir]) {
        const env: CniEnv = { command: 'ADD', containerId: 'err-1', netns: `/run/netns/${host.name}`, ifname: 'eth0', path: dir };
        for (const [k, v] of Object.entries(envOverride)) (env as unknown as Record<string, unknown>)[k] = v;
        const r = await runPlugin(host.name, join(dir, 'portmap'), env, stdin as object);
        assert.equal(r.code, 1, `${dir}: exit status 1 expected, stdout ${r.stdout}`);
        codes.push(r.json?.code as number | undefined);
      }
      assert.equal(codes[1], codes[0], `twill code ${codes[1]} vs reference ${codes[0]}`);
    });
  }
});
