import ipaddr from 'ipaddr.js';
import { parseCidr } from '../kernel/ip.js';
import { KernelError } from '../kernel/index.js';
import { FirewallError, type IpFamily } from './types.js';

export interface ContainerAddr {
  family: IpFamily;
  /** Canonical address text, no prefix: "10.244.1.5". */
  ip: string;
  /** The subnet it sits in: "10.244.1.0". */
  network: string;
  prefixLen: number;
}

/** "10.244.1.5/24" → address and subnet; a bad value is an error naming the container. */
export function parseContainerAddr(value: string, containerId: string): ContainerAddr {
  let p;
  try {
    p = parseCidr(value, { op: 'parse', subject: 'address' });
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
    const why = e.message.replace(/^parse address: /, '').replace(/ \(EINVAL\)$/, '');
    throw new FirewallError(`masquerade of container ${JSON.stringify(containerId)}: bad address ${JSON.stringify(value)}: ${why}`);
  }
  const bytes = [...p.bytes];
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, p.prefixLen - i * 8));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return { family: p.family, ip: p.text, network: ipaddr.fromByteArray(bytes).toString(), prefixLen: p.prefixLen };
}

export const fullLen = (family: IpFamily): number => (family === 4 ? 32 : 128);
