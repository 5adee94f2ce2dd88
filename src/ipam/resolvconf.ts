import { readFileSync } from 'node:fs';
import type { Dns } from '../cni/types.js';

/** The DNS settings of a resolv.conf file (ipam.resolvConf), as host-local reports them. */
export function readResolvConf(path: string): Dns {
  const dns: Dns = {};
  for (const raw of readFileSync(path, 'utf8').split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, ...rest] = line.split(/\s+/);
    if (!key || rest.length === 0) continue;
    switch (key) {
      case 'nameserver':
        (dns.nameservers ??= []).push(rest[0]!);
        break;
      case 'domain':
        dns.domain = rest[0]!;
        break;
      case 'search':
        (dns.search ??= []).push(...rest);
        break;
      case 'options':
        (dns.options ??= []).push(...rest);
        break;
    }
  }
  return dns;
}
