// What the agent keeps on the node between runs, in --data-dir (default
// /var/lib/twill): a lock, so that only one agent runs per node, and the
// VtepMAC of each VXLAN device, chosen once and reused (flannel#1795: a
// device recreated with a new MAC makes every peer's FDB entry stale).
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, ftruncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { netnsAddon } from '../kernel/native.js';

export class DataDirError extends Error {}

interface State {
  vtepMac?: { ipv4?: string; ipv6?: string };
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

/** A random locally administered unicast MAC (as the kernel would pick, but ours to keep). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export class DataDir {
  private lockFd: number | null = null;

  constructor(readonly path: string) {}

  private get lockPath(): string {
    return join(this.path, 'agent.lock');
  }

  private get statePath(): string {
    return join(this.path, 'agent.json');
  }

  /** Takes the node's agent lock, or says which process holds it. */
  lock(): void {
    try {
      mkdirSync(this.path, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw new DataDirError(`cannot create the data directory ${this.path}: ${(e as Error).message} (--data-dir)`);
    }
    const fd = openSync(this.lockPath, 'a+', 0o644);
    if (!netnsAddon().tryLock(fd, true)) {
      closeSync(fd);
      let holder = '';
      try {
        holder = readFileSync(this.lockPath, 'utf8').trim();
      } catch {
        // unreadable: say less
      }
      throw new DataDirError(
        `another twill agent is running with data directory ${this.path}${holder ? ` (pid ${holder})` : ''}: ` +
          'one agent per node. Stop it first, or give this one its own --data-dir (only for a lab on one machine).',
      );
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    this.lockFd = fd;
  }

  unlock(): void {
    if (this.lockFd === null) return;
    netnsAddon().unlock(this.lockFd);
    closeSync(this.lockFd);
    this.lockFd = null;
  }

  private readState(): State {
    try {
      const parsed = JSON.parse(readFileSync(this.statePath, 'utf8')) as unknown;
      return typeof parsed === 'object' && parsed !== null ? (parsed as State) : {};
    } catch {
      return {};
    }
  }

  private writeState(s: State): void {
    const tmp = `${this.statePath}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o644 });
    renameSync(tmp, this.statePath);
  }

  /**
   * The VtepMAC for a family's VXLAN device: the one kept here, else the
   * existing device's (an agent upgraded from flanneld keeps the peers' FDB
   * entries valid), else a new random one. Saved before the device is created.
   */
  vtepMac(family: 4 | 6, existingDeviceMac: string | null): string {
    const key = family === 4 ? 'ipv4' : 'ipv6';
    const state = this.readState();
    const kept = state.vtepMac?.[key];
    if (kept && MAC.test(kept)) return kept;
    const mac = existingDeviceMac && MAC.test(existingDeviceMac) ? existingDeviceMac : randomMac();
    this.writeState({ ...state, vtepMac: { ...state.vtepMac, [key]: mac } });
    return mac;
  }
}
