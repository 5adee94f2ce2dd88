// The etcd test support itself: members inside test network namespaces (as the
// multi-node agent tests will use them), leader changes, and no etcd process
// outliving a test process, even one killed with SIGKILL.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { EtcdCluster } from './etcd.js';
import { TestHosts } from './hosts.js';

const hosts = new TestHosts();
after(() => hosts.cleanup());

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('etcd test support', () => {
  it('a 3-member cluster, one member per network namespace on its own address: leader, kill, restart, destroy', async () => {
    const { hosts: h } = await hosts.underlay({ e1: '198.18.0.1/24', e2: '198.18.0.2/24', e3: '198.18.0.3/24' });
    const c = await EtcdCluster.start({ placements: ['e1', 'e2', 'e3'].map((n, i) => ({ netns: h[n]!.name, ip: `198.18.0.${i + 1}` })) });
    const pids = c.members.map((m) => m.proc!.pid!);
    try {
      assert.deepEqual(c.endpoints, ['http://198.18.0.1:2379', 'http://198.18.0.2:2379', 'http://198.18.0.3:2379']);
      // A write through one member is read back through another: they form one cluster across the underlay.
      const put = await c.request(c.members[0]!, '/v3/kv/put', JSON.stringify({ key: Buffer.from('k').toString('base64'), value: Buffer.from('v').toString('base64') }));
      assert.equal(put.status, 200, put.text);
      const got = await c.request(c.members[2]!, '/v3/kv/range', JSON.stringify({ key: Buffer.from('k').toString('base64') }));
      assert.equal((JSON.parse(got.text) as { kvs: { value: string }[] }).kvs[0]!.value, Buffer.from('v').toString('base64'));
      const leader = await c.leader();
      await c.kill(leader);
      assert.equal(alive(leader.proc?.pid ?? pids[leader.index]!), false);
      const next = await c.leader();
      assert.notEqual(next, leader, 'the other two elect a new leader');
      await c.start(leader);
      assert.ok((await c.leader()).proc);
    } finally {
      await c.destroy();
    }
    assert.deepEqual(pids.map(alive), [false, false, false]);
    assert.equal(existsSync(c.root), false, 'the data dirs are gone');
  });

  it('etcd dies with the test process, even when that one is killed with SIGKILL', async () => {
    const support = fileURLToPath(new URL('./etcd.js', import.meta.url));
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      const { EtcdCluster } = await import(${JSON.stringify(support)});
      const c = await EtcdCluster.start();
      console.log(JSON.stringify({ pid: c.members[0].proc.pid, root: c.root }));
      setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      child.once('exit', (code) => reject(new Error(`the child exited with ${code} before starting etcd`)));
    });
    const { pid, root } = JSON.parse(line) as { pid: number; root: string };
    try {
      assert.equal(alive(pid), true);
      child.kill('SIGKILL');
      const deadline = Date.now() + 5000;
      while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(alive(pid), false, 'the kernel killed etcd with its parent (pdeathsig)');
    } finally {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
      // Nothing in the killed process could remove its temp dir: this test does.
      rmSync(root, { recursive: true, force: true });
    }
  });
});
