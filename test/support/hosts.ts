// Test hosts: network namespaces standing in for machines, with a unique
// per-run prefix, deleted by name when a test ends, fails or is interrupted.
import { randomBytes } from 'node:crypto';
import { Handle, createNetns, deleteNetns, netnsExists, type Netns } from '../../src/kernel/index.js';
import { run } from './exec.js';

/** Every namespace of this run starts with this (run.ts passes one down to all test files). */
export const RUN_PREFIX = process.env.TWILL_TEST_PREFIX ?? `twt${randomBytes(3).toString('hex')}`;

const live = new Set<string>();
let exitHookInstalled = false;

function removeLive(): void {
  for (const name of live) {
    try {
      if (netnsExists(name)) deleteNetns(name);
    } catch {
      // Reported by the leak check at the end of the run.
    }
    live.delete(name);
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous, so it also runs on process.exit(); signals are turned into an exit.
  process.on('exit', removeLive);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      removeLive();
      process.exit(130);
    });
  }
}

/** Sysctls every test host gets, so that no test depends on what the machine has. */
export const HOST_SYSCTLS: Record<string, string> = {
  'net.ipv4.ip_forward': '1',
  'net.ipv6.conf.all.forwarding': '1',
  'net.ipv4.conf.all.rp_filter': '0',
  'net.ipv4.conf.default.rp_filter': '0',
  // No DAD: an IPv6 address is usable at once (tests would otherwise wait ~1 s).
  'net.ipv6.conf.all.accept_dad': '0',
  'net.ipv6.conf.default.accept_dad': '0',
};

export class TestHost {
  constructor(readonly name: string, readonly netns: Netns, readonly handle: Handle) {}

  /** Runs a command inside this host (for oracles like ping; never for product logic). */
  exec(cmd: string, args: string[]): Promise<string> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }
}

let counter = 0;

/** A group of test hosts (one per test file or suite): `await hosts.cleanup()` in `after`. */
export class TestHosts {
  readonly prefix: string;
  private readonly hosts: TestHost[] = [];

  constructor() {
    this.prefix = `${RUN_PREFIX}-${process.pid}-${counter++}`;
    installExitHook();
  }

  /** A new namespace `<prefix>-<name>`, loopback up, host sysctls set. */
  async host(name: string, sysctls: Record<string, string> = HOST_SYSCTLS): Promise<TestHost> {
    const full = `${this.prefix}-${name}`;
    live.add(full);
    const netns = createNetns(full);
    const handle = Handle.open(netns);
    const host = new TestHost(full, netns, handle);
    this.hosts.push(host);
    await handle.setLinkUp('lo');
    for (const [key, value] of Object.entries(sysctls)) handle.writeSysctl(key, value);
    return host;
  }

  /**
   * An underlay: a switch host with bridge `br0`, and each host's `eth0` plugged
   * into it with the address given (e.g. {node1: '198.18.0.1/24'}).
   */
  async underlay(addresses: Record<string, string>, switchName = 'sw'): Promise<{ switch: TestHost; hosts: Record<string, TestHost> }> {
    const sw = await this.host(switchName);
    await sw.handle.addLink({ kind: 'bridge', name: 'br0', up: true });
    const hosts: Record<string, TestHost> = {};
    let port = 0;
    for (const [name, cidr] of Object.entries(addresses)) {
      const h = await this.host(name);
      await sw.handle.addLink({ kind: 'veth', name: `p${port++}`, master: 'br0', up: true, peer: { name: 'eth0', netns: h.netns } });
      await h.handle.setLinkUp('eth0');
      await h.handle.addAddr('eth0', cidr);
      hosts[name] = h;
    }
    return { switch: sw, hosts };
  }

  /** Deletes exactly the namespaces this group made, by name. */
  async cleanup(): Promise<void> {
    for (const h of this.hosts.splice(0)) {
      h.handle.close();
      h.netns.close();
      if (netnsExists(h.name)) deleteNetns(h.name);
      live.delete(h.name);
    }
  }
}
