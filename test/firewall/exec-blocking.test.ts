// The blocking exec a CNI plugin process uses (spawnSync): the same results and
// errors as the event-loop path. Its own file: useBlockingExec is per process.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execChecked, execIn, useBlockingExec } from '../../src/firewall/exec.js';
import { FirewallError } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

useBlockingExec();

describe('firewall commands, waited for synchronously (plugin processes)', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('fwexecsync');
  });
  after(() => hosts.cleanup());

  it('runs inside the namespace, with stdout, stderr and the exit status', async () => {
    const r = await execIn('stat', ['-L', '-c', '%d:%i', '/proc/self/ns/net'], { netns: h.netns });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), h.netns.key);
    const bad = await execIn('sh', ['-c', 'echo oops >&2; exit 3'], { netns: null });
    assert.deepEqual([bad.code, bad.stderr, bad.timedOut], [3, 'oops\n', false]);
  });

  it('stdin reaches the command; one that exits without reading all of it still gives its status', async () => {
    await execChecked('test restore', 'iptables-nft-restore', ['-w', '--noflush'], { netns: h.netns, input: '*filter\n:TWSYNC - [0:0]\nCOMMIT\n' });
    assert.match(await h.exec('iptables-nft-save', ['-t', 'filter']), /^:TWSYNC - /m);
    const r = await execIn('sh', ['-c', 'echo early >&2; exit 4'], { netns: null, input: 'x'.repeat(4 << 20) });
    assert.deepEqual([r.code, r.stderr], [4, 'early\n']);
  });

  it('a missing program and a timeout are reported as on the event-loop path', async () => {
    await assert.rejects(execIn('twill-no-such-tool', [], { netns: null }), (e: unknown) => e instanceof FirewallError && /twill-no-such-tool is not installed \(not found in PATH\)/.test(e.message));
    const slow = await execIn('sleep', ['5'], { netns: null, timeoutMs: 200 });
    assert.equal(slow.timedOut, true);
    assert.equal(slow.code, null);
    assert.equal(slow.signal, 'SIGTERM');
    await assert.rejects(execChecked('wait', 'sleep', ['5'], { netns: null, timeoutMs: 200 }), /did not finish in 0.2 s/);
  });
});
