// Bad input gets a spec error code and a clear message, and changes nothing:
// not a link, an address, a file or a rule.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson, run } from '../support/exec.js';
import { runPlugin, twillPluginDir, type CniEnv } from '../support/cni.js';

interface Case {
  name: string;
  plugin?: 'bridge' | 'host-local' | 'loopback';
  env?: Partial<CniEnv>;
  /** The config, or a function of the valid one; a string is sent as is. */
  conf?: string | ((c: Record<string, unknown>) => unknown);
  /** Run this first (e.g. fill the range), not checked. */
  setup?: 'fill-range' | 'add-once';
  code: number;
  msg: RegExp;
}

const ipam = (c: Record<string, unknown>) => c.ipam as Record<string, unknown>;
const withIpam = (c: Record<string, unknown>, extra: Record<string, unknown>) => ({ ...c, ipam: { ...ipam(c), ...extra } });
const withoutIpamKey = (c: Record<string, unknown>, key: string) => ({ ...c, ipam: Object.fromEntries(Object.entries(ipam(c)).filter(([k]) => k !== key)) });

const CASES: Case[] = [
  { name: 'malformed JSON', conf: '{"cniVersion":"1.0.0",', code: 6, msg: /error decoding the network config on stdin/ },
  { name: 'JSON that is not an object', conf: '[1,2,3]', code: 6, msg: /must be a JSON object/ },
  { name: 'empty stdin', conf: '', code: 6, msg: /error decoding the network config/ },
  { name: 'cniVersion not a string', conf: (c) => ({ ...c, cniVersion: 1 }), code: 6, msg: /cniVersion must be a string such as "1.0.0", got 1/ },
  { name: 'unknown version', conf: (c) => ({ ...c, cniVersion: '2.0.0' }), code: 1, msg: /incompatible CNI versions: the config has cniVersion "2.0.0", bridge supports 0.1.0, .*1.1.0/ },
  { name: 'version that is not one', conf: (c) => ({ ...c, cniVersion: 'latest' }), code: 1, msg: /cniVersion "latest"/ },
  { name: 'missing name', conf: (c) => ({ ...c, name: undefined }), code: 7, msg: /missing network name/ },
  { name: 'name with a slash', conf: (c) => ({ ...c, name: '../etc' }), code: 7, msg: /invalid characters found in network name "..\/etc"/ },
  { name: 'missing type', conf: (c) => ({ ...c, type: undefined }), code: 7, msg: /missing plugin "type"/ },
  { name: 'missing ipam (host-local)', plugin: 'host-local', conf: (c) => ({ ...c, ipam: undefined }), code: 7, msg: /IPAM config missing "ipam" key/ },
  { name: 'no ranges', conf: (c) => withoutIpamKey(c, 'subnet'), code: 7, msg: /no IP ranges specified/ },
  { name: 'invalid CIDR', conf: (c) => withIpam(c, { subnet: '10.30.0.0/33' }), code: 7, msg: /invalid range set 0: subnet "10.30.0.0\/33" is not a CIDR/ },
  { name: 'subnet not an address', conf: (c) => withIpam(c, { subnet: 'ten.thirty/16' }), code: 7, msg: /subnet "ten.thirty\/16" is not a CIDR/ },
  { name: 'subnet with host bits', conf: (c) => withIpam(c, { subnet: '10.30.0.1/24' }), code: 7, msg: /network 10.30.0.1\/24 has host bits set: for a prefix of length 24 the network address is 10.30.0.0/ },
  { name: 'subnet too small', conf: (c) => withIpam(c, { subnet: '10.30.0.0/31' }), code: 7, msg: /network 10.30.0.0\/31 is too small to allocate from \(at most \/30\)/ },
  { name: 'rangeStart outside the subnet', conf: (c) => withIpam(c, { rangeStart: '10.31.0.5' }), code: 7, msg: /rangeStart 10.31.0.5 not in network 10.30.0.0\/24/ },
  { name: 'rangeEnd outside the subnet', conf: (c) => withIpam(c, { rangeEnd: '10.31.0.5' }), code: 7, msg: /rangeEnd 10.31.0.5 not in network 10.30.0.0\/24/ },
  { name: 'rangeStart after rangeEnd', conf: (c) => withIpam(c, { rangeStart: '10.30.0.9', rangeEnd: '10.30.0.5' }), code: 7, msg: /rangeStart 10.30.0.9 is after rangeEnd 10.30.0.5/ },
  { name: 'gateway not an address', conf: (c) => withIpam(c, { gateway: 'router' }), code: 7, msg: /gateway "router" is not an IP address/ },
  { name: 'rangeStart of the other family', conf: (c) => withIpam(c, { rangeStart: 'fd00::5' }), code: 7, msg: /rangeStart fd00::5 is not of the family of subnet 10.30.0.0\/24/ },
  { name: 'overlapping range sets', conf: (c) => withIpam(withoutIpamKey(c, 'subnet'), { ranges: [[{ subnet: '10.30.0.0/24' }], [{ subnet: '10.30.0.0/25' }]] }), code: 7, msg: /range set 0 overlaps with 1/ },
  { name: 'overlapping ranges in one set', conf: (c) => withIpam(withoutIpamKey(c, 'subnet'), { ranges: [[{ subnet: '10.30.0.0/24' }, { subnet: '10.30.0.128/25' }]] }), code: 7, msg: /subnets 10.30.0.0\/24 and 10.30.0.128\/25 overlap/ },
  { name: 'mixed families in one set', conf: (c) => withIpam(withoutIpamKey(c, 'subnet'), { ranges: [[{ subnet: '10.30.0.0/24' }, { subnet: 'fd30::/64' }]] }), code: 7, msg: /mixed address families/ },
  { name: 'empty range set', conf: (c) => withIpam(withoutIpamKey(c, 'subnet'), { ranges: [[]] }), code: 7, msg: /invalid range set 0: empty range set/ },
  { name: 'two IPv4 sets in a 0.2.0 config', conf: (c) => ({ ...withIpam(withoutIpamKey(c, 'subnet'), { ranges: [[{ subnet: '10.30.0.0/24' }], [{ subnet: '10.32.0.0/24' }]] }), cniVersion: '0.2.0' }), code: 1, msg: /CNI version 0.2.0 does not support more than 1 address per family/ },
  { name: 'route that is not a CIDR', conf: (c) => withIpam(c, { routes: [{ dst: '0.0.0.0' }] }), code: 7, msg: /ipam.routes\[0\].dst "0.0.0.0" is not a CIDR/ },
  { name: 'relative dataDir', conf: (c) => withIpam(c, { dataDir: 'var/lib' }), code: 7, msg: /ipam.dataDir "var\/lib" must be an absolute path/ },
  { name: 'unknown CNI_COMMAND', env: { command: 'ATTACH' }, code: 4, msg: /unknown CNI_COMMAND "ATTACH": one of ADD, DEL, CHECK, GC, STATUS, VERSION/ },
  { name: 'missing CNI_CONTAINERID and CNI_NETNS', env: { containerId: undefined, netns: undefined }, code: 4, msg: /required env variables \[CNI_CONTAINERID,CNI_NETNS\] missing/ },
  { name: 'missing CNI_PATH', env: { path: undefined }, code: 4, msg: /required env variables \[CNI_PATH\] missing/ },
  { name: 'hostile container ID ../../etc', env: { containerId: '../../etc' }, code: 4, msg: /invalid characters in container ID "..\/..\/etc"/ },
  { name: 'container ID with a space', env: { containerId: 'a b' }, code: 4, msg: /invalid characters in container ID "a b"/ },
  { name: 'container ID starting with a dash', env: { containerId: '-rf' }, code: 4, msg: /invalid characters in container ID "-rf"/ },
  { name: 'interface name of 16 characters', env: { ifname: 'eth0123456789012' }, code: 4, msg: /interface name "eth0123456789012" is too long: at most 15 characters/ },
  { name: 'interface name with a slash', env: { ifname: 'eth/0' }, code: 4, msg: /interface name "eth\/0" contains "\/", ":" or white space/ },
  { name: 'interface name ".."', env: { ifname: '..' }, code: 4, msg: /interface name ".." is not allowed/ },
  { name: 'relative netns path', env: { netns: 'run/netns/x' }, code: 8, msg: /CNI_NETNS "run\/netns\/x" is not an absolute path/ },
  { name: 'netns that does not exist', env: { netns: '/run/netns/twill-no-such-netns' }, code: 8, msg: /failed to open netns "\/run\/netns\/twill-no-such-netns": ENOENT/ },
  { name: 'malformed CNI_ARGS', env: { args: 'IP' }, code: 4, msg: /CNI_ARGS: invalid pair "IP": expected KEY=VALUE/ },
  { name: 'unknown CNI_ARGS key', env: { args: 'POD=web' }, code: 4, msg: /CNI_ARGS: unknown key "POD"/ },
  { name: 'requested IP that is not one', env: { args: 'IgnoreUnknown=1;IP=10.30.0.300' }, code: 7, msg: /CNI_ARGS IP: "10.30.0.300" is not an IP address/ },
  { name: 'requested IP outside every range', env: { args: 'IgnoreUnknown=1;IP=10.99.0.5' }, code: 999, msg: /failed to allocate all requested IPs: 10.99.0.5/ },
  { name: 'exhausted range', setup: 'fill-range', conf: (c) => withIpam(c, { rangeStart: '10.30.0.10', rangeEnd: '10.30.0.10' }), code: 999, msg: /no IP addresses available in range set: 10.30.0.10-10.30.0.10/ },
  { name: 'duplicate allocation (host-local)', plugin: 'host-local', setup: 'add-once', code: 999, msg: /10.30.0.\d+ has been allocated to bad-ctr, duplicate allocation is not allowed/ },
  { name: 'bridge name too long', conf: (c) => ({ ...c, bridge: 'a-bridge-name-too-long' }), code: 7, msg: /"bridge" "a-bridge-name-too-long" is not a valid interface name/ },
  { name: 'MTU out of range', conf: (c) => ({ ...c, mtu: 10 }), code: 7, msg: /"mtu" must be an integer from 68 to 65535, got 10/ },
  { name: 'isGateway not a boolean', conf: (c) => ({ ...c, isGateway: 'yes' }), code: 7, msg: /"isGateway" must be true or false, got "yes"/ },
  { name: 'hairpin and promiscuous together', conf: (c) => ({ ...c, hairpinMode: true, promiscMode: true }), code: 7, msg: /cannot set hairpin mode and promiscuous mode at the same time/ },
  { name: 'bad MAC in runtimeConfig', conf: (c) => ({ ...c, runtimeConfig: { mac: '02:00:00' } }), code: 7, msg: /MAC address "02:00:00" is not valid/ },
  // VLAN keys: the reference's messages (v1.10.0 loadNetConf / collectVlanTrunk); its code is 999, twill's 7 (invalid config).
  { name: 'VLAN out of range', conf: (c) => ({ ...c, vlan: 5000 }), code: 7, msg: /^invalid VLAN ID 5000 \(must be between 0 and 4094\)$/ },
  { name: 'negative VLAN', conf: (c) => ({ ...c, vlan: -1 }), code: 7, msg: /^invalid VLAN ID -1 \(must be between 0 and 4094\)$/ },
  { name: 'VLAN not an integer', conf: (c) => ({ ...c, vlan: '100' }), code: 7, msg: /"vlan" must be an integer from 0 to 4094, got "100"/ },
  { name: 'trunk minID 0', conf: (c) => ({ ...c, vlanTrunk: [{ minID: 0, maxID: 5 }] }), code: 7, msg: /^incorrect trunk minID parameter$/ },
  { name: 'trunk maxID above 4094', conf: (c) => ({ ...c, vlanTrunk: [{ minID: 3, maxID: 5000 }] }), code: 7, msg: /^incorrect trunk maxID parameter$/ },
  { name: 'trunk range backwards', conf: (c) => ({ ...c, vlanTrunk: [{ minID: 9, maxID: 5 }] }), code: 7, msg: /^minID is greater than maxID in trunk parameter$/ },
  { name: 'trunk minID without maxID', conf: (c) => ({ ...c, vlanTrunk: [{ minID: 9 }] }), code: 7, msg: /^minID and maxID should be configured simultaneously, maxID is missing$/ },
  { name: 'trunk maxID without minID', conf: (c) => ({ ...c, vlanTrunk: [{ maxID: 9 }] }), code: 7, msg: /^minID and maxID should be configured simultaneously, minID is missing$/ },
  { name: 'trunk id 4095', conf: (c) => ({ ...c, vlanTrunk: [{ id: 4095 }] }), code: 7, msg: /^incorrect trunk id parameter$/ },
  { name: 'trunk bad item after good ones', conf: (c) => ({ ...c, vlanTrunk: [{ id: 7 }, { minID: 10, maxID: 20 }, { id: 0 }] }), code: 7, msg: /^incorrect trunk id parameter$/ },
  { name: 'trunk item null (the reference crashes)', conf: (c) => ({ ...c, vlanTrunk: [null] }), code: 7, msg: /"vlanTrunk" items must be objects .* got null/ },
  { name: 'vlanTrunk not a list', conf: (c) => ({ ...c, vlanTrunk: { id: 5 } }), code: 7, msg: /"vlanTrunk" must be a list/ },
  { name: 'trunk id not an integer', conf: (c) => ({ ...c, vlanTrunk: [{ id: 1.5 }] }), code: 7, msg: /"vlanTrunk" id must be an integer, got 1.5/ },
  { name: 'preserveDefaultVlan not a boolean', conf: (c) => ({ ...c, vlan: 10, preserveDefaultVlan: 'yes' }), code: 7, msg: /"preserveDefaultVlan" must be true or false, got "yes"/ },
  { name: 'macspoofchk not a boolean', conf: (c) => ({ ...c, macspoofchk: 1 }), code: 7, msg: /"macspoofchk" must be true or false, got 1/ },
  { name: 'unknown ipMasqBackend', conf: (c) => ({ ...c, ipMasq: true, ipMasqBackend: 'pf' }), code: 999, msg: /ipMasqBackend "pf"/ },
  { name: 'IPAM plugin not in CNI_PATH', conf: (c) => withIpam(c, { type: 'dhcp-nope' }), code: 999, msg: /failed to find plugin "dhcp-nope" in path/ },
  { name: 'CHECK on a 0.3.1 config', env: { command: 'CHECK' }, conf: (c) => ({ ...c, cniVersion: '0.3.1' }), code: 1, msg: /config version 0.3.1 does not allow CHECK \(0.4.0 or later\)/ },
  { name: 'CHECK without prevResult', env: { command: 'CHECK' }, code: 7, msg: /CHECK needs "prevResult"/ },
  { name: 'prevResult that is not a result', env: { command: 'CHECK' }, conf: (c) => ({ ...c, prevResult: { cniVersion: '1.0.0', ips: [{ address: 'nope' }] } }), code: 6, msg: /prevResult.ips\[0\].address: "nope" is not a CIDR/ },
  { name: 'GC on a 1.0.0 config', env: { command: 'GC' }, code: 1, msg: /config version 1.0.0 does not allow GC \(1.1.0 or later\)/ },
  { name: 'malformed valid-attachments', env: { command: 'GC' }, conf: (c) => ({ ...c, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 1 }] }), code: 7, msg: /"cni.dev\/valid-attachments"\[0\] needs "containerID" and "ifname" strings/ },
];

describe('bad input: the right code, a clear message, nothing changed', () => {
  const hosts = new TestHosts();
  let host: TestHost;
  let pod: TestHost;
  let plugins: ReturnType<typeof twillPluginDir>;
  let data: string;
  before(async () => {
    host = await hosts.host('bad');
    pod = await hosts.host('badpod');
    plugins = twillPluginDir();
    data = mkdtempSync(join(tmpdir(), 'twill-bad-'));
  });
  after(async () => {
    plugins.remove();
    rmSync(data, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const valid = () => ({ cniVersion: '1.0.0', name: 'badnet', type: 'bridge', bridge: 'bad0', isGateway: true, ipam: { type: 'host-local', subnet: '10.30.0.0/24', dataDir: data } });
  const files = (): string[] => {
    try {
      return readdirSync(join(data, 'badnet')).filter((f) => f !== 'lock' && !f.startsWith('last_reserved'));
    } catch {
      return [];
    }
  };
  // Configuration, not carrier state: a bridge's operstate settles on its own after an earlier case's DEL.
  const config = (links: Record<string, unknown>[]) =>
    links.map(({ operstate: _o, flags, ...rest }) => ({ ...rest, flags: (flags as string[]).filter((f) => f !== 'NO-CARRIER' && f !== 'LOWER_UP') }));
  const snapshot = async () =>
    JSON.stringify({
      host: config(await ipJson(host.name, ['addr', 'show'])),
      pod: config(await ipJson(pod.name, ['addr', 'show'])),
      routes: await ipJson(pod.name, ['route', 'show']),
      files: files(),
      iptables: (await run('ip', ['netns', 'exec', host.name, 'iptables-save'])).replace(/^#.*$/gm, ''),
      nft: await run('ip', ['netns', 'exec', host.name, 'nft', 'list', 'ruleset']),
    });

  it(`has at least 40 cases (${CASES.length})`, () => assert.ok(CASES.length >= 40));

  it('without CNI_COMMAND, says what it is on stderr and exits 0, as the reference does', async () => {
    const r = await runPlugin(host.name, join(plugins.dir, 'bridge'), { command: '' }, valid());
    assert.equal(r.code, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^CNI plugin bridge \(twill [\d.]+\)\nCNI protocol versions supported: 0\.1\.0, .*1\.1\.0\n$/);
  });

  for (const c of CASES) {
    it(c.name, async () => {
      const plugin = join(plugins.dir, c.plugin ?? 'bridge');
      const base = valid();
      const confOf = c.conf ?? ((x: Record<string, unknown>) => x);
      const conf = typeof confOf === 'string' ? confOf : confOf(c.plugin === 'host-local' ? { ...base, type: 'host-local' } : base);
      const env: CniEnv = { command: 'ADD', containerId: 'bad-ctr', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir };
      for (const [k, v] of Object.entries(c.env ?? {})) (env as unknown as Record<string, unknown>)[k] = v;
      const cleanups: (() => Promise<unknown>)[] = [];
      if (c.setup === 'fill-range') {
        const filler = { command: 'ADD', containerId: 'filler', netns: `/run/netns/${pod.name}`, ifname: 'fill0', path: plugins.dir };
        assert.equal((await runPlugin(host.name, plugin, filler, conf as object)).code, 0);
        cleanups.push(() => runPlugin(host.name, plugin, { ...filler, command: 'DEL' }, conf as object));
      }
      if (c.setup === 'add-once') {
        assert.equal((await runPlugin(host.name, plugin, env, conf as object)).code, 0);
        cleanups.push(() => runPlugin(host.name, plugin, { ...env, command: 'DEL' }, conf as object));
      }
      try {
        const before = await snapshot();
        const r = await runPlugin(host.name, plugin, env, conf as object);
        assert.equal(r.code, 1, `exit status 1 expected; stdout: ${r.stdout} stderr: ${r.stderr}`);
        assert.equal(r.json?.code, c.code, `code: ${r.stdout}`);
        assert.match(String(r.json?.msg), c.msg);
        assert.equal(await snapshot(), before, 'nothing changed');
      } finally {
        for (const undo of cleanups) await undo();
      }
    });
  }
});
