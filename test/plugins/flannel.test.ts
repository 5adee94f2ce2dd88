import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync, writeFileSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson, run } from '../support/exec.js';
import { REFERENCE_V1_10, requireReference, runPlugin, twillPluginDir, type CniEnv } from '../support/cni.js';
import { writeSubnetEnv } from '../../src/subnet/subnet-env.js';

interface IpLink { ifname: string; mtu: number; master?: string; flags: string[]; addr_info?: { family: string; local: string; prefixlen: number; scope: string }[] }
interface IpRoute { dst: string; gateway?: string; dev?: string }

describe('flannel meta-plugin', () => {
  const hosts = new TestHosts();
  let host: TestHost;
  let plugins: ReturnType<typeof twillPluginDir>;
  let tmp: string;
  before(async () => {
    host = await hosts.host('fl');
    plugins = twillPluginDir();
    tmp = mkdtempSync(join(tmpdir(), 'twill-flannel-'));
  });
  after(async () => {
    plugins.remove();
    rmSync(tmp, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const subnetFile = (name: string, ipMasq = true, extra: Partial<Parameters<typeof writeSubnetEnv>[1]> = {}) => {
    const path = join(tmp, `${name}.env`);
    writeSubnetEnv(path, { networks: ['10.244.0.0/16'], subnet: '10.244.1.1/24', ipv6Networks: [], ipv6Subnet: null, mtu: 1450, ipMasq, ...extra });
    return path;
  };
  // kube-flannel's own config (10-flannel.conflist's first plugin), with test paths.
  const conf = (sub: string, extra: Record<string, unknown> = {}) => ({
    cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true },
    subnetFile: sub, dataDir: join(tmp, 'flannel-data'), ipam: { dataDir: join(tmp, 'ipam') }, ...extra,
  });
  const env = (command: string, pod: TestHost | string, id: string, extra: Partial<CniEnv> = {}): CniEnv => ({
    command, containerId: id, netns: typeof pod === 'string' ? pod : `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir, args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web', ...extra,
  });
  const flannel = () => join(plugins.dir, 'flannel');

  it('ADD: the pod gets an IP in FLANNEL_SUBNET, MTU FLANNEL_MTU, routes to FLANNEL_NETWORK; the delegate config is saved 0600', async () => {
    const pod = await hosts.host('f1');
    const c = conf(subnetFile('a'));
    const r = await runPlugin(host.name, flannel(), env('ADD', pod, 'fa'), c);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const res = r.json as { cniVersion: string; ips: { version: string; address: string; gateway: string }[] };
    assert.equal(res.cniVersion, '0.3.1');
    assert.deepEqual(res.ips, [{ version: '4', interface: 2, address: '10.244.1.2/24', gateway: '10.244.1.1' }]);
    const eth0 = (await ipJson<IpLink[]>(pod.name, ['addr', 'show', 'dev', 'eth0']))[0]!;
    assert.equal(eth0.mtu, 1450);
    const routes = await ipJson<IpRoute[]>(pod.name, ['route', 'show']);
    assert.ok(routes.some((x) => x.dst === '10.244.0.0/16' && x.gateway === '10.244.1.1'));
    assert.ok(routes.some((x) => x.dst === 'default' && x.gateway === '10.244.1.1'));
    const cni0 = (await ipJson<IpLink[]>(host.name, ['addr', 'show', 'dev', 'cni0']))[0]!;
    assert.deepEqual(cni0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.244.1.1/24']);
    const saved = join(tmp, 'flannel-data', 'fa');
    assert.equal(statSync(saved).mode & 0o777, 0o600);
    // As flannel writes it: keys sorted, the subnet masked to its network, ipMasq = !FLANNEL_IPMASQ.
    assert.equal(
      readFileSync(saved, 'utf8'),
      JSON.stringify({
        cniVersion: '0.3.1', hairpinMode: true, ipMasq: false,
        ipam: { dataDir: join(tmp, 'ipam'), ranges: [[{ subnet: '10.244.1.0/24' }]], routes: [{ dst: '10.244.0.0/16' }], type: 'host-local' },
        isDefaultGateway: true, isGateway: true, mtu: 1450, name: 'cbr0', type: 'bridge',
      }),
    );
    // CHECK goes to the delegate.
    const chk = await runPlugin(host.name, flannel(), env('CHECK', pod, 'fa'), { ...c, cniVersion: '0.4.0', prevResult: { ...res, cniVersion: '0.4.0' } });
    assert.equal(chk.code, 0, chk.stdout);
    // DEL replays the saved config, then removes it; a second DEL succeeds.
    assert.equal((await runPlugin(host.name, flannel(), env('DEL', pod, 'fa'), c)).code, 0);
    assert.equal(existsSync(saved), false);
    assert.deepEqual(readdirSync(join(tmp, 'ipam', 'cbr0')).filter((f) => f.startsWith('10.')), []);
    assert.equal((await ipJson<IpLink[]>(host.name, ['link', 'show'])).filter((l) => l.master === 'cni0').length, 0);
    assert.equal((await runPlugin(host.name, flannel(), env('DEL', pod, 'fa'), c)).code, 0);
  });

  it('masquerades through the bridge when the agent does not (FLANNEL_IPMASQ=false), dual stack', async () => {
    const pod = await hosts.host('f2');
    const c = { ...conf(subnetFile('b', false, { ipv6Networks: ['fd00:244::/56'], ipv6Subnet: 'fd00:244:1::1/64' })), name: 'masqnet', delegate: { bridge: 'cni1' } };
    const r = await runPlugin(host.name, flannel(), env('ADD', pod, 'fb'), c);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual((r.json as { ips: { address: string }[] }).ips.map((i) => i.address), ['10.244.1.2/24', 'fd00:244:1::2/64']);
    const nat = await run('ip', ['netns', 'exec', host.name, 'iptables-save', '-t', 'nat']);
    assert.match(nat, /-A POSTROUTING -s 10\.244\.1\.2\/32 -m comment --comment "name: \\"masqnet\\" id: \\"fb\\"" -j CNI-/);
    assert.equal((await runPlugin(host.name, flannel(), env('DEL', pod, 'fb'), c)).code, 0);
    assert.doesNotMatch(await run('ip', ['netns', 'exec', host.name, 'iptables-save', '-t', 'nat']), /CNI-/);
  });

  it('a missing subnet.env, or one without all keys, is an error that says what and why, and changes nothing', async () => {
    const pod = await hosts.host('f3');
    const missing = await runPlugin(host.name, flannel(), env('ADD', pod, 'fc'), conf(join(tmp, 'nope.env')));
    assert.equal(missing.code, 1);
    assert.match(String(missing.json?.msg), /failed to load flannel 'subnet.env' file .*nope.env: no such file\. The node agent \(twill agent or flanneld\) writes it once it has a subnet lease/);
    const partial = join(tmp, 'partial.env');
    writeFileSync(partial, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n');
    const incomplete = await runPlugin(host.name, flannel(), env('ADD', pod, 'fc'), conf(partial));
    assert.match(String(incomplete.json?.msg), /partial.env is missing FLANNEL_MTU, FLANNEL_IPMASQ/);
    assert.equal(existsSync(join(tmp, 'flannel-data', 'fc')), false, 'nothing saved');
    assert.deepEqual((await ipJson<IpLink[]>(pod.name, ['link', 'show'])).map((l) => l.ifname), ['lo']);
  });

  it('refuses a delegate that sets name or ipam (code 7)', async () => {
    const pod = await hosts.host('f4');
    for (const key of ['name', 'ipam']) {
      const r = await runPlugin(host.name, flannel(), env('ADD', pod, 'fd'), conf(subnetFile('d'), { delegate: { [key]: 'x' } }));
      assert.equal(r.json?.code, 7);
      assert.match(String(r.json?.msg), new RegExp(`'delegate' dictionary must not have '${key}' field, it'll be set by flannel`));
    }
  });

  it('a failed delegate ADD leaves no saved config (and DEL of it succeeds)', async () => {
    const pod = await hosts.host('f5');
    // The delegate's bridge refuses: a name that is not an interface name.
    const r = await runPlugin(host.name, flannel(), env('ADD', pod, 'fe'), conf(subnetFile('e'), { delegate: { bridge: 'no/such/bridge' } }));
    assert.equal(r.code, 1);
    assert.equal(existsSync(join(tmp, 'flannel-data', 'fe')), false);
    assert.equal((await runPlugin(host.name, flannel(), env('DEL', pod, 'fe'), conf(subnetFile('e')))).code, 0);
  });

  it('same node picture as the reference chain (flannel plugin + bridge + host-local)', async () => {
    const refDir = requireReference(REFERENCE_V1_10);
    if (!existsSync(join(refDir, 'flannel'))) throw new Error(`${join(refDir, 'flannel')} is missing: run "npm run peers -- flannel-cni"`);
    const state = async (h: TestHost, p: TestHost) => ({
      bridge: (await ipJson<IpLink[]>(h.name, ['addr', 'show', 'dev', 'cni0']))[0]?.addr_info?.filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`),
      ports: (await ipJson<IpLink[]>(h.name, ['link', 'show'])).filter((l) => l.master === 'cni0').map((l) => l.mtu),
      pod: (await ipJson<IpLink[]>(p.name, ['addr', 'show'])).map((l) => [l.ifname, l.mtu, l.addr_info?.filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`)]),
      routes: (await ipJson<IpRoute[]>(p.name, ['route', 'show'])).map((x) => `${x.dst} ${x.gateway ?? '-'}`).sort(),
    });
    const out: unknown[] = [];
    for (const [label, dir] of [['ref', refDir], ['tw', plugins.dir]] as const) {
      const h = await hosts.host(`fx-${label}`);
      const p = await hosts.host(`fx-${label}-p`);
      const data = join(tmp, `x-${label}`);
      mkdirSync(data);
      const c = { ...conf(subnetFile(`x-${label}`)), dataDir: join(data, 'flannel'), ipam: { dataDir: join(data, 'ipam') } };
      const e = { ...env('ADD', p, 'fx'), path: dir };
      const r = await runPlugin(h.name, join(dir, 'flannel'), e, c);
      assert.equal(r.code, 0, `${label}: ${r.stdout} ${r.stderr}`);
      out.push({ result: JSON.parse(JSON.stringify(r.json).replace(/"([0-9a-f]{2}:){5}[0-9a-f]{2}"/g, '"MAC"').replace(/"veth[0-9a-f]{8}"/g, '"VETH"').replace(/"\/run\/netns\/[^"]+"/g, '"NETNS"')), state: await state(h, p) });
      assert.equal((await runPlugin(h.name, join(dir, 'flannel'), { ...e, command: 'DEL' }, c)).code, 0);
    }
    assert.deepEqual(out[1], out[0]);
  });

  it('DEL replays a delegate config that flannel saved (a pod created before twill took over)', async () => {
    const pod = await hosts.host('f6');
    const refDir = requireReference(REFERENCE_V1_10);
    const c = conf(subnetFile('g'));
    // ADD through the reference chain, DEL through twill's.
    const refBin = join(tmp, 'refbin');
    mkdirSync(refBin, { recursive: true });
    for (const p of ['flannel', 'bridge', 'host-local']) if (!existsSync(join(refBin, p))) symlinkSync(join(refDir, p), join(refBin, p));
    const add = await runPlugin(host.name, join(refBin, 'flannel'), { ...env('ADD', pod, 'fg'), path: refBin }, c);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const del = await runPlugin(host.name, flannel(), env('DEL', pod, 'fg'), c);
    assert.equal(del.code, 0, del.stdout);
    assert.equal(existsSync(join(tmp, 'flannel-data', 'fg')), false);
    assert.deepEqual((await ipJson<IpLink[]>(pod.name, ['link', 'show'])).map((l) => l.ifname), ['lo']);
    assert.deepEqual(readdirSync(join(tmp, 'ipam', 'cbr0')).filter((f) => f.startsWith('10.')), []);
  });
});
