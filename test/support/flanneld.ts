// The reference node agent, flanneld v0.28.9 (built by `npm run peers -- flanneld`),
// as a process inside a test host: for interop tests and benchmarks.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { TestHost } from './hosts.js';

export const FLANNELD = join(process.env.TWILL_PEERS_DIR ?? '/var/cache/twill-peers', 'bin', 'flanneld');

export function requireFlanneld(): string {
  if (!existsSync(FLANNELD)) throw new Error(`${FLANNELD} is missing: run "npm run peers -- flanneld" (.ci/run does)`);
  return FLANNELD;
}

export class FlanneldProcess {
  output = '';
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;

  constructor(readonly host: TestHost, args: string[]) {
    this.child = spawn('ip', ['netns', 'exec', host.name, requireFlanneld(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', (code) => resolve(code)));
    process.on('exit', () => this.child.kill('SIGKILL'));
  }

  get pid(): number {
    return this.child.pid!;
  }

  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!re.test(this.output)) {
      if (this.child.exitCode !== null) throw new Error(`flanneld in ${this.host.name} exited (${this.child.exitCode}):\n${this.output}`);
      if (Date.now() > end) throw new Error(`flanneld in ${this.host.name}: no ${re} within ${timeoutMs} ms:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}
