// The lab's state file, written after every step of `up` (temp file + rename),
// so that `down` after a crash or a half-finished `up` knows every process and
// namespace made so far. `down` also finds namespaces and agents by name, for
// what was made between a step and its record.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { LabError, statePath } from './layout.js';

export type Backend = 'vxlan' | 'host-gw';
export type StoreKind = 'local' | 'etcd';

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp';
}

export interface NodeState {
  name: string;
  netns: string;
  publicIp: string;
  /** The switch's port for this node (a veth in the switch namespace). */
  switchPort: string;
  dir: string;
  agentPid: number | null;
  /** From subnet.env once the agent wrote it: "10.244.3.0/24". */
  subnet: string | null;
  mtu: number | null;
  /** --scenario docker: the namespace of this node's docker container. */
  dockerNetns: string | null;
}

export interface PodState {
  name: string;
  node: string;
  netns: string;
  containerId: string;
  ip: string | null;
  portMappings: PortMapping[];
  /** The chain's ADD result: the prevResult the runtime hands to DEL. */
  result: Record<string, unknown> | null;
}

export interface LabState {
  version: 1;
  name: string;
  dir: string;
  backend: Backend;
  store: StoreKind;
  /** What the agents get as --store. */
  storeSpec: string;
  netConfPath: string;
  scenario: 'docker' | null;
  /** How to run twill (node + bin/twill, or the single executable). */
  twill: string[];
  pluginDir: string;
  createdAt: string;
  /** False until `up` finished. */
  complete: boolean;
  etcdPid: number | null;
  namespaces: string[];
  nodes: NodeState[];
  pods: PodState[];
}

export function writeState(state: LabState): void {
  const path = statePath(state.name);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

export function readState(lab: string): LabState | null {
  const path = statePath(lab);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LabState;
  } catch (e) {
    throw new LabError(`lab ${lab}: cannot read its state file ${path} (${(e as Error).message}); "twill lab down --name ${lab}" still removes it by name`);
  }
}

export function requireState(lab: string): LabState {
  const state = readState(lab);
  if (!state) throw new LabError(`no lab named ${JSON.stringify(lab)} (no ${statePath(lab)}): create it with "twill lab up --name ${lab}"`);
  return state;
}

export function findNode(state: LabState, node: string): NodeState {
  const found = state.nodes.find((n) => n.name === node);
  if (!found) throw new LabError(`lab ${state.name} has no node ${JSON.stringify(node)} (nodes: ${state.nodes.map((n) => n.name).join(', ') || 'none'})`);
  return found;
}

export function findPod(state: LabState, pod: string): PodState {
  const found = state.pods.find((p) => p.name === pod);
  if (!found) throw new LabError(`lab ${state.name} has no pod ${JSON.stringify(pod)} (pods: ${state.pods.map((p) => p.name).join(', ') || 'none'})`);
  return found;
}
