// Running `twill agent` in tests: a real process inside a test host's
// namespace (as a node would run it), its JSON log lines collected, killed
// at the latest when the test process exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestHost } from './hosts.js';

export const BIN_TWILL = fileURLToPath(new URL('../../../bin/twill', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

const running = new Set<ChildProcess>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const c of running) c.kill('SIGKILL');
  });
}

export class AgentProcess {
  readonly logs: LogLine[] = [];
  stderr = '';
  private readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  /**
   * `sameMountNamespace`: started from a thread inside the host's namespace
   * instead of through `ip netns exec` (which gives it a mount namespace of its
   * own), as a node's agent shares the runtime's files: for its CNI socket.
   */
  constructor(readonly host: TestHost, readonly args: string[], env: Record<string, string> = {}, opts: { sameMountNamespace?: boolean } = {}) {
    hookExit();
    const options = { stdio: ['ignore', 'ignore', 'pipe'] as ('ignore' | 'pipe')[], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env } };
    this.child = opts.sameMountNamespace
      ? host.netns.run(() => spawn(process.execPath, [BIN_TWILL, 'agent', ...args], options))
      : spawn('ip', ['netns', 'exec', host.name, process.execPath, BIN_TWILL, 'agent', ...args], options);
    running.add(this.child);
    let partial = '';
    this.child.stderr!.on('data', (d: Buffer) => {
      const text = partial + d.toString();
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        this.stderr += `${line}\n`;
        let parsed: LogLine;
        try {
          parsed = JSON.parse(line) as LogLine;
        } catch {
          continue;
        }
        this.logs.push(parsed);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(parsed)) return true;
          w.resolve(parsed);
          return false;
        });
      }
    });
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code) => {
        running.delete(this.child);
        resolve(code);
      });
    });
  }

  /** The first log line (already seen or to come) that matches; fails after timeoutMs with the log so far. */
  waitFor(pred: ((l: LogLine) => boolean) | string, timeoutMs = 15_000): Promise<LogLine> {
    const p = typeof pred === 'string' ? (l: LogLine) => l.msg === pred : pred;
    const seen = this.logs.find(p);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent in ${this.host.name}: no matching log line within ${timeoutMs} ms:\n${this.stderr}`)), timeoutMs);
      const exit = this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`agent in ${this.host.name} exited (${code}) before the expected log line:\n${this.stderr}`));
      });
      void exit;
      this.waiters.push({ pred: p, resolve: (l) => { clearTimeout(timer); resolve(l); } });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  ready(timeoutMs?: number): Promise<LogLine> {
    return this.waitFor('ready', timeoutMs);
  }

  /** SIGTERM, as a supervisor stops it; resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  kill(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    return this.exited;
  }
}

/** A temp directory for a test's store, net-conf and per-node files. */
export function agentTemp(): { dir: string; netConf(json: object, name?: string): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'twill-agent-'));
  return {
    dir,
    netConf: (json, name = 'net-conf.json') => {
      const p = join(dir, name);
      writeFileSync(p, JSON.stringify(json));
      return p;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
