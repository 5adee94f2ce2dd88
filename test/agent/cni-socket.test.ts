// `twill agent --cni-socket`: the agent serves the plugins' calls once the node
// is set up, counts them in /metrics, and removes its socket when it stops.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { TestCluster, type ClusterNode } from './cluster.js';
import { runPluginIn } from '../support/cni.js';

const NET = { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } };

describe('agent: --cni-socket', () => {
  const c = new TestCluster({ nodes: 1 });
  let n1: ClusterNode;
  let store: string[];
  let socket: string;
  before(async () => {
    await c.build();
    n1 = c.nodes[0]!;
    store = ['--store', `local:${join(c.tmp.dir, 'leases.db')}`, '--net-conf', c.tmp.netConf(NET)];
    socket = join(c.tmp.dir, 'n1', 'run', 'cni.sock');
  });
  after(() => c.cleanup());

  const call = async (command: string, id: string, pod: string) => {
    const r = await runPluginIn(n1.host, join(c.plugins.dir, 'flannel'), {
      command, containerId: id, netns: `/run/netns/${pod}`, ifname: 'eth0', path: c.plugins.dir,
      extra: { TWILL_CNI_SOCKET: socket, TWILL_CNI_TRACE: '1' },
    }, c.podConf(n1));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /twill-trace .*"server:ms"/, `${command} was served by the agent`);
    return r;
  };

  it('serves ADD and DEL once ready, counts them in /metrics, and removes the socket on SIGTERM', async () => {
    const agent = c.start(n1, store, ['--cni-socket', socket, '--healthz-port', '9099'], { sameMountNamespace: true });
    await agent.ready();
    await agent.waitFor((l) => l.msg === 'serving CNI calls' && l.socket === socket);
    const pod = await c.hosts.host('n1cs');
    const add = await call('ADD', 'cs1', pod.name);
    const ip = (add.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    const subnet = c.subnetEnv(n1).FLANNEL_SUBNET!;
    assert.equal(ip.split('.').slice(0, 3).join('.'), subnet.split('.').slice(0, 3).join('.'), `${ip} is in ${subnet}`);
    await n1.host.exec('ping', ['-c', '1', '-W', '2', ip]);
    await agent.waitFor((l) => l.msg === 'CNI call served' && l.command === 'ADD' && l.containerId === 'cs1');
    await call('DEL', 'cs1', pod.name);
    const metrics = await n1.host.exec('curl', ['-s', 'http://127.0.0.1:9099/metrics']);
    assert.match(metrics, /twill_cni_calls_total\{command="ADD",outcome="ok"\} 1\n/);
    assert.match(metrics, /twill_cni_calls_total\{command="DEL",outcome="ok"\} 1\n/);
    assert.match(metrics, /twill_cni_call_seconds_count\{command="ADD"\} 1\n/);
    assert.equal(await agent.stop(), 0);
    assert.equal(existsSync(socket), false);
  });

  it('a socket another server answers on stops the agent with a message that says so', async () => {
    const live = n1.host.netns.run(() => createServer());
    await new Promise<void>((resolve) => live.listen(socket, resolve));
    try {
      const agent = c.start(n1, store, ['--cni-socket', socket], { sameMountNamespace: true });
      assert.equal(await agent.exited, 1);
      assert.match(agent.stderr, /--cni-socket: another server is serving CNI calls at .*cni\.sock/);
    } finally {
      await new Promise((resolve) => live.close(resolve));
    }
  });
});
