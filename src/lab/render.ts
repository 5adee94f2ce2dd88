// The lab as a table: one row per pod, its node's subnet and public IP beside it.
import type { LabStatus } from './lab.js';
import type { LabState } from './state.js';
import { renderTable } from './table.js';

export function renderStatus(state: LabState, status: LabStatus): string {
  const rows: string[][] = [];
  for (const n of status.nodes) {
    const pods = state.pods.filter((p) => p.node === n.name);
    const agent = n.agentRunning ? `pid ${n.agentPid}` : 'STOPPED';
    const podCells = (p: (typeof pods)[number] | undefined) => {
      if (!p) return ['-', '-', ''];
      const m = p.portMappings[0];
      return [p.name, p.ip ?? '-', m ? `hostPort ${n.publicIp}:${m.hostPort} → ${m.containerPort}` : ''];
    };
    rows.push([n.name, n.publicIp, n.subnet ?? '-', agent, ...podCells(pods[0])]);
    for (const p of pods.slice(1)) rows.push(['', '', '', '', ...podCells(p)]);
  }
  const head = `lab ${state.name}: ${state.nodes.length} nodes, ${state.pods.length} pods, ${state.backend}, ${state.store} store${state.scenario ? `, scenario ${state.scenario}` : ''}${state.complete ? '' : ' (INCOMPLETE: up did not finish)'}`;
  return `${head}\n${renderTable(['NODE', 'PUBLIC IP', 'SUBNET', 'AGENT', 'POD', 'POD IP', ''], rows)}`;
}
