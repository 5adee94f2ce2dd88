// Where a lab keeps everything, and what its objects are called. Every
// namespace a lab makes is `twl-<lab>-<role>`, with a role from a closed set, so
// that `down` can find them by name alone (after a crash, without the state file),
// and no lab's names can ever be another lab's.
import { join } from 'node:path';

/** Under /run: a lab's namespaces do not survive a reboot, and neither should its state. */
export const LAB_ROOT = process.env.TWILL_LAB_ROOT ?? '/run/twill/lab';

export const NETNS_PREFIX = 'twl-';

export class LabError extends Error {}

const NAME_RE = /^[a-z0-9][a-z0-9-]{0,39}$/;

export function checkLabName(name: string): string {
  if (!NAME_RE.test(name)) throw new LabError(`lab name ${JSON.stringify(name)}: use 1 to 40 lowercase letters, digits and "-", starting with a letter or digit`);
  return name;
}

/** The underlay: 198.18.0.0/24 (RFC 2544 benchmarking space, never routed on a real network). */
export const UNDERLAY = {
  prefixLen: 24,
  nodeIp: (index: number) => `198.18.0.${10 + index}`,
  outsideIp: '198.18.0.254',
  etcdIp: '198.18.0.253',
  /** An address beyond the underlay, held by the outside namespace: what "the internet" is to a pod. */
  internetIp: '203.0.113.1',
} as const;

export const CLUSTER_NETWORK = '10.244.0.0/16';
export const MAX_NODES = 200;

export const DOCKER = { bridge: 'docker0', gateway: '172.17.0.1', container: '172.17.0.2', prefixLen: 16 } as const;

/** The pod that gets a hostPort mapping at `up` (the first pod of the first node). */
export const HOST_PORT = { pod: 'n1-p1', hostPort: 8080, containerPort: 80 } as const;

export const labDir = (lab: string) => join(LAB_ROOT, lab);
export const statePath = (lab: string) => join(labDir(lab), 'state.json');
export const nodeDir = (lab: string, node: string) => join(labDir(lab), 'nodes', node);

export const netnsName = (lab: string, role: string) => `${NETNS_PREFIX}${lab}-${role}`;

/** Roles: sw (the switch), out (outside), etcd, nK (a node), nK-pJ (a pod), nK-docker (a docker container). */
const ROLE_RE = /^(sw|out|etcd|n\d+|n\d+-p\d+|n\d+-docker)$/;

/** True when `netns` is one of this lab's namespaces (by name only). */
export function isLabNetns(lab: string, netns: string): boolean {
  const prefix = `${NETNS_PREFIX}${lab}-`;
  return netns.startsWith(prefix) && ROLE_RE.test(netns.slice(prefix.length));
}

export const podName = (node: string, index: number) => `${node}-p${index}`;
