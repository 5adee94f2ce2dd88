// host-local's on-disk store, byte-compatible with the reference:
// <dataDir>/<network>/<ip> holds "<containerID>\r\n<ifname>" (no trailing
// newline), last_reserved_ip.<rangeSetIndex> holds the last IP handed out, and
// <dataDir>/<network>/lock is the flock both implementations take.
import { mkdirSync, openSync, readFileSync, readdirSync, statSync, unlinkSync, writeFileSync, closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FileLock } from './lock.js';
import { formatAddr, parseAddr, type IpNum } from './addr.js';

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';
const LAST_RESERVED_PREFIX = 'last_reserved_ip.';
const LINE_BREAK = '\r\n';

/** A container's attachment: who holds an address. */
export interface Owner {
  containerId: string;
  ifname: string;
}

export interface Allocation extends Owner {
  ip: IpNum;
  /** File name: the IP as text. */
  file: string;
}

const ownerText = (o: Owner) => `${o.containerId.trim()}${LINE_BREAK}${o.ifname}`;

export class DiskStore {
  readonly dir: string;
  readonly lock: FileLock;

  constructor(dataDir: string, network: string) {
    this.dir = join(dataDir, network);
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    this.lock = new FileLock(join(this.dir, 'lock'));
  }

  /** Takes ip for owner; false when someone holds it. Call under the lock. */
  reserve(owner: Owner, ip: IpNum, rangeSetIndex: number): boolean {
    const file = join(this.dir, formatAddr(ip));
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
    try {
      writeSync(fd, ownerText(owner));
    } catch (e) {
      closeSync(fd);
      unlinkSync(file);
      throw e;
    }
    closeSync(fd);
    writeFileSync(join(this.dir, `${LAST_RESERVED_PREFIX}${rangeSetIndex}`), formatAddr(ip), { mode: 0o600 });
    return true;
  }

  lastReserved(rangeSetIndex: number): IpNum | null {
    try {
      return parseAddr(readFileSync(join(this.dir, `${LAST_RESERVED_PREFIX}${rangeSetIndex}`), 'utf8').trim());
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** Every allocation file (an IP-named file); others (lock, last_reserved_ip.*) are skipped. */
  list(): Allocation[] {
    const out: Allocation[] = [];
    // The entry's type from readdir: no stat per allocation (a symlink is followed, as before).
    for (const entry of readdirSync(this.dir, { withFileTypes: true })) {
      const name = entry.name;
      const ip = parseAddr(name);
      if (!ip) continue;
      let text: string;
      try {
        const path = join(this.dir, name);
        if (!(entry.isFile() || (entry.isSymbolicLink() && statSync(path).isFile()))) continue;
        text = readFileSync(path, 'utf8');
      } catch {
        continue; // released meanwhile
      }
      const [containerId = '', ifname = ''] = text.trim().split(LINE_BREAK);
      out.push({ ip, file: name, containerId: containerId.trim(), ifname });
    }
    return out;
  }

  findByOwner(owner: Owner): Allocation[] {
    return this.list().filter((a) => a.containerId === owner.containerId.trim() && a.ifname === owner.ifname);
  }

  /**
   * Releases owner's addresses; like the reference, files written by old
   * versions (container ID only, no ifname) match when nothing else did.
   */
  releaseByOwner(owner: Owner): Allocation[] {
    const all = this.list();
    let mine = all.filter((a) => a.containerId === owner.containerId.trim() && a.ifname === owner.ifname);
    if (mine.length === 0) mine = all.filter((a) => a.containerId === owner.containerId.trim() && a.ifname === '');
    for (const a of mine) this.removeFile(a.file);
    return mine;
  }

  removeFile(name: string): void {
    try {
      unlinkSync(join(this.dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}
