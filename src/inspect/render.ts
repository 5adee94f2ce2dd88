// The explanation for people (text, an SVG diagram, one self-contained HTML page)
// and for programs (JSON: the model plus findings, see model.ts).
import type { Explanation, Finding, LinkView, NeighView } from './model.js';

export type ExplainFormat = 'text' | 'json' | 'svg' | 'html';
export const EXPLAIN_FORMATS: readonly ExplainFormat[] = ['text', 'json', 'svg', 'html'];

function linkState(l: LinkView): string {
  if (!l.up) return 'DOWN';
  if (!l.carrier) return 'NO-CARRIER';
  return l.state.toUpperCase();
}

/** IPv6 link-local addresses are on every interface and say nothing about pods: the text leaves them out, the JSON has them. */
const isLinkLocal = (cidr: string): boolean => cidr.toLowerCase().startsWith('fe80:');
const shownAddrs = (l: LinkView): string[] => l.addresses.filter((a) => !isLinkLocal(a));
const addrText = (l: LinkView): string => (shownAddrs(l).length ? `  ${shownAddrs(l).join(' ')}` : '');

/** The pod end of a node veth, when it was found. */
function podEnd(e: Explanation, veth: LinkView): LinkView | undefined {
  const p = veth.peer;
  if (!p || p.netns === null) return undefined;
  return e.links.find((l) => l.netns === p.netns && l.ifindex === p.ifindex);
}

/** "vethXXXX@if3": how `ip link` shows a veth, the number being the peer's ifindex in its own namespace. */
const ipLinkName = (l: LinkView): string => (l.peer ? `${l.name}@if${l.peer.ifindex}` : l.name);

function vethLine(e: Explanation, veth: LinkView): string {
  const pod = podEnd(e, veth);
  const head = `${ipLinkName(veth)}  mtu ${veth.mtu}  ${linkState(veth)}`;
  if (!veth.peer) return `${head}  (peer unknown)`;
  if (!pod) return `${head}  → ifindex ${veth.peer.ifindex} in a namespace that was not found (nsid only)`;
  const role = e.namespaces.find((n) => n.name === pod.netns)?.role;
  const where = pod.netns === e.node.netns ? 'this namespace' : `${role === 'pod' ? 'pod ' : ''}namespace ${pod.netns}`;
  const addrs = shownAddrs(pod);
  return `${head}  → ${pod.name} (ifindex ${pod.ifindex}) in ${where}${addrs.length ? ` (${addrs.join(', ')})` : ''}`;
}

function overlayPeers(e: Explanation, dev: string): string[] {
  // Permanent entries are the remote nodes (the kernel adds its own for multicast groups).
  const neighs: NeighView[] = e.neighbours.filter((n) => n.dev === dev && n.mac !== null && n.permanent);
  return neighs.map((n) => {
    const fdb = e.fdb.filter((f) => f.dev === dev && f.mac.toLowerCase() === n.mac!.toLowerCase()).map((f) => f.dst);
    const routes = e.routes.filter((r) => r.dev === dev && r.gateway === n.ip).map((r) => r.dst);
    return `node ${fdb.length ? fdb.join(', ') : '(no FDB entry)'}: VTEP ${n.ip} ${n.mac}, pods ${routes.length ? routes.join(', ') : '(no route)'}`;
  });
}

function findingText(f: Finding): string[] {
  return [`  [${f.severity}] ${f.id}: ${f.subject}`, `      ${f.message}`, `      fix: ${f.fix}`];
}

export function renderText(e: Explanation): string {
  const out: string[] = [];
  const nodeLinks = e.links.filter((l) => l.netns === e.node.netns);
  const pods = e.namespaces.filter((n) => n.role === 'pod');
  out.push(`Node: network namespace ${e.node.netns} (${nodeLinks.length} links, ${pods.length} pod namespaces reached by veths; read ${e.node.readAt})`);
  out.push('');
  const bridges = nodeLinks.filter((l) => l.kind === 'bridge');
  for (const b of bridges) {
    const ports = nodeLinks.filter((l) => l.master === b.name);
    out.push(`bridge ${b.name}  mtu ${b.mtu}  ${linkState(b)}${addrText(b)}  (${ports.length} port${ports.length === 1 ? '' : 's'})`);
    if (ports.length === 0) out.push(`  no ports${b.name === 'docker0' ? ": Docker's own bridge; Kubernetes pods are not on it" : ''}`);
    ports.forEach((p, i) => out.push(`  ${i === ports.length - 1 ? '└─' : '├─'} ${p.kind === 'veth' ? vethLine(e, p) : `${p.name} (${p.kind})  mtu ${p.mtu}  ${linkState(p)}`}`));
    out.push('');
  }
  const loose = nodeLinks.filter((l) => l.kind === 'veth' && l.master === null);
  if (loose.length) {
    out.push('veths on no bridge');
    for (const v of loose) out.push(`  ${vethLine(e, v)}`);
    out.push('');
  }
  for (const v of nodeLinks.filter((l) => l.kind === 'vxlan')) {
    const x = v.vxlan;
    out.push(`overlay ${v.name}  vxlan VNI ${x?.vni ?? '?'} port ${x?.port ?? '?'}${x?.local ? ` local ${x.local}` : ''}${x?.underlay ? ` dev ${x.underlay}` : ''}  mtu ${v.mtu}  ${linkState(v)}${addrText(v)}`);
    const peers = overlayPeers(e, v.name);
    if (peers.length === 0) out.push('  no remote nodes (no neighbour entries)');
    for (const p of peers) out.push(`  ↔ ${p}`);
    out.push('');
  }
  const others = nodeLinks.filter((l) => l.kind !== 'bridge' && l.kind !== 'vxlan' && l.kind !== 'veth' && l.master === null);
  if (others.length) {
    out.push('other links');
    for (const l of others) out.push(`  ${l.ifindex}: ${l.name} (${l.kind})  mtu ${l.mtu}  ${linkState(l)}${addrText(l)}`);
    out.push('');
  }
  out.push('routes (main table)');
  for (const r of e.routes.filter((x) => !isLinkLocal(x.dst))) out.push(`  ${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev ? ` dev ${r.dev}` : ''}${r.onlink ? ' onlink' : ''}`);
  out.push('');
  const env = e.subnetEnv;
  out.push(
    env.found && env.error === null
      ? `subnet.env ${env.path}: network ${env.network.join(',') || '-'}, subnet ${env.subnet ?? '-'}, mtu ${env.mtu ?? '-'}, ipmasq ${env.ipMasq ?? '-'}`
      : `subnet.env ${env.path}: ${env.error ?? 'not found'}`,
  );
  out.push(`host-local ${e.ipam.dataDir}: ${e.ipam.found ? `${e.ipam.allocations.length} allocations` : e.ipam.error ?? 'no data directory'}`);
  if (e.store) {
    const own = e.store.leases.find((l) => l.own);
    out.push(
      e.store.error !== null
        ? `store ${e.store.description}: not read (${e.store.error})`
        : `store ${e.store.description}: ${e.store.leases.length} lease${e.store.leases.length === 1 ? '' : 's'} at revision ${e.store.revision ?? '?'}, this node's ${own ? (own.subnet ?? own.ipv6Subnet) : '(not found)'}${e.store.malformed.length ? `, ${e.store.malformed.length} malformed` : ''}`,
    );
    for (const l of e.store.leases.filter((x) => !x.own)) {
      out.push(`  lease ${l.key}: node ${l.node ? `${l.node} at ` : ''}${l.publicIp ?? l.publicIpv6 ?? '?'} ${l.backendType || '(no backend)'}${l.vtepMac ? ` VtepMAC ${l.vtepMac}` : ''}`);
    }
  }
  const rp = Object.entries(e.sysctls.rpFilter).map(([k, v]) => `${k}=${v ?? '?'}`).join(' ');
  out.push(`sysctls: ip_forward=${e.sysctls.ipForward ?? '?'} bridge-nf-call-iptables=${e.sysctls.bridgeNfCallIptables ?? '(br_netfilter not loaded)'} rp_filter ${rp}`);
  const fw = e.firewall.iptables.filter((t) => t.available && t.forwardPolicy !== null).map((t) => `${t.family === 4 ? 'iptables' : 'ip6tables'}-${t.variant} FORWARD policy ${t.forwardPolicy}${t.flannelFwdRules ? ', FLANNEL-FWD present' : ''}`);
  out.push(`firewall: ${fw.length ? fw.join('; ') : 'no FORWARD chain in iptables'}`);
  out.push('');
  out.push(`findings (${e.findings.length})`);
  if (e.findings.length === 0) out.push('  none: nothing wrong found');
  for (const f of e.findings) out.push(...findingText(f));
  return `${out.join('\n')}\n`;
}

export function renderJson(e: Explanation): string {
  return `${JSON.stringify(e, null, 2)}\n`;
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** About how wide a bold 13px sans-serif label is (an SVG has no layout to ask before it is drawn). */
const textWidth = (text: string): number => Math.ceil(text.length * 8.2);

const SEVERITY_COLOR = { error: '#c62828', warning: '#ef6c00', info: '#1565c0' } as const;

/**
 * Stable attributes on the element drawn for a link (SVG and HTML), so that
 * programs and tests find it without depending on layout: data-link is the
 * name, data-link-netns the namespace it is in, data-kind its rtnetlink kind.
 */
const linkAttrs = (l: LinkView): string => `data-link="${esc(l.name)}" data-link-netns="${esc(l.netns)}" data-kind="${esc(l.kind)}"`;

/**
 * A diagram: the node's bridges as bars with their ports, each port's pod below
 * it, the overlay device with its remote nodes, other links on the side.
 */
export function renderSvg(e: Explanation): string {
  const nodeLinks = e.links.filter((l) => l.netns === e.node.netns);
  const bridges = nodeLinks.filter((l) => l.kind === 'bridge');
  const vxlans = nodeLinks.filter((l) => l.kind === 'vxlan');
  const podW = 150;
  const gap = 12;
  const parts: string[] = [];
  let y = 40;
  let width = 640;
  const flagged = new Set(e.findings.filter((f) => f.severity !== 'info').map((f) => f.subject));
  const stroke = (name: string) => (flagged.has(name) ? SEVERITY_COLOR.error : '#37474f');
  for (const b of bridges) {
    const ports = nodeLinks.filter((l) => l.master === b.name);
    const label = `${b.name}  ${shownAddrs(b).join(' ')}  mtu ${b.mtu}  ${linkState(b)}`;
    const barW = Math.max(300, ports.length * (podW + gap), textWidth(label) + 20);
    width = Math.max(width, barW + 40);
    parts.push(`<g ${linkAttrs(b)}><rect x="20" y="${y}" width="${barW}" height="34" rx="4" fill="#e3f2fd" stroke="${stroke(b.name)}"/>`);
    parts.push(`<text x="30" y="${y + 22}" font-weight="bold">${esc(label)}</text></g>`);
    if (ports.length === 0) parts.push(`<text x="30" y="${y + 52}" fill="#607d8b">${esc(b.name === 'docker0' ? "no ports: Docker's bridge, not used by pods" : 'no ports')}</text>`);
    ports.forEach((p, i) => {
      const x = 20 + i * (podW + gap);
      const pod = podEnd(e, p);
      parts.push(`<g ${linkAttrs(p)}><line x1="${x + podW / 2}" y1="${y + 34}" x2="${x + podW / 2}" y2="${y + 70}" stroke="#37474f"/>`);
      parts.push(`<text x="${x + 4}" y="${y + 50}" font-size="11">${esc(ipLinkName(p))}</text></g>`);
      parts.push(`<g${pod ? ` data-netns="${esc(pod.netns)}" ${linkAttrs(pod)}` : ''}><rect x="${x}" y="${y + 70}" width="${podW}" height="52" rx="4" fill="#f1f8e9" stroke="${pod ? stroke(`${pod.name} in ${pod.netns}`) : '#9e9e9e'}"/>`);
      parts.push(`<text x="${x + 6}" y="${y + 86}" font-size="11">${esc(pod ? `${pod.name} (if${pod.ifindex}) mtu ${pod.mtu}` : 'peer not found')}</text>`);
      parts.push(`<text x="${x + 6}" y="${y + 100}" font-size="11">${esc(pod ? (shownAddrs(pod)[0] ?? '') : '')}</text>`);
      parts.push(`<text x="${x + 6}" y="${y + 114}" font-size="10" fill="#607d8b">${esc(pod?.netns ?? '')}</text></g>`);
    });
    y += ports.length ? 140 : 70;
  }
  // Veths on no bridge (an underlay cable, a lab's link to a switch) lead to other namespaces, not pods.
  for (const v of nodeLinks.filter((l) => l.kind === 'veth' && l.master === null)) {
    const other = podEnd(e, v);
    const where = v.peer?.netns ? `${v.peer.name ?? `ifindex ${v.peer.ifindex}`} in ${v.peer.netns}` : 'a namespace not found';
    parts.push(`<g ${linkAttrs(v)}><text x="20" y="${y + 14}" font-size="12">${esc(`${ipLinkName(v)}  ${shownAddrs(v).join(' ')}  mtu ${v.mtu}  ${linkState(v)}  → ${where}${other ? ` ${shownAddrs(other).join(' ')}` : ''}`)}</text></g>`);
    y += 22;
  }
  if (nodeLinks.some((l) => l.kind === 'veth' && l.master === null)) y += 10;
  for (const v of vxlans) {
    const label = `${v.name}  VNI ${v.vxlan?.vni ?? '?'}  ${shownAddrs(v).join(' ')}  mtu ${v.mtu}  ${linkState(v)}`;
    const barW = Math.max(300, textWidth(label) + 20);
    width = Math.max(width, barW + 40);
    parts.push(`<g ${linkAttrs(v)}><rect x="20" y="${y}" width="${barW}" height="34" rx="4" fill="#fff3e0" stroke="${stroke(v.name)}"/>`);
    parts.push(`<text x="30" y="${y + 22}" font-weight="bold">${esc(label)}</text></g>`);
    y += 50;
    for (const p of overlayPeers(e, v.name)) {
      parts.push(`<text x="40" y="${y}" font-size="11">${esc(`↔ ${p}`)}</text>`);
      y += 16;
    }
    y += 10;
  }
  for (const f of e.findings) {
    parts.push(`<text x="20" y="${y}" font-size="12" fill="${SEVERITY_COLOR[f.severity]}" data-finding="${esc(f.id)}" data-severity="${f.severity}">${esc(`[${f.severity}] ${f.id}: ${f.subject}`)}</text>`);
    y += 18;
  }
  const height = y + 20;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="13">\n` +
    `<title>${esc(`twill explain: ${e.node.netns}`)}</title>\n` +
    `<text x="20" y="24" font-size="15" font-weight="bold">${esc(`node ${e.node.netns}`)}</text>\n` +
    `${parts.join('\n')}\n</svg>\n`
  );
}

/**
 * One page, nothing fetched (no script, no external resource): the diagram
 * inline, the findings, every namespace and link as a table, the text
 * explanation. Elements carry data-netns, data-link (with data-link-netns,
 * data-kind) and data-finding (with data-severity) for programs and tests.
 */
export function renderHtml(e: Explanation): string {
  const rows = e.findings
    .map(
      (f) =>
        `<tr data-finding="${esc(f.id)}" data-severity="${f.severity}"><td style="color:${SEVERITY_COLOR[f.severity]}">${esc(f.severity)}</td><td><code>${esc(f.id)}</code></td>` +
        `<td data-field="subject">${esc(f.subject)}</td><td data-field="message">${esc(f.message)}</td><td data-field="fix">${esc(f.fix)}</td></tr>`,
    )
    .join('\n');
  const namespaces = e.namespaces
    .map((n) => `<li data-netns="${esc(n.name)}" data-role="${n.role}"><code>${esc(n.name)}</code> (${esc(n.role)}, ${e.links.filter((l) => l.netns === n.name).length} links)</li>`)
    .join('\n');
  const linkRows = e.links
    .map((l) => {
      const pod = l.kind === 'veth' && l.netns === e.node.netns ? podEnd(e, l) : undefined;
      const peer = l.peer ? `${l.peer.name ?? `ifindex ${l.peer.ifindex}`} in ${l.peer.netns ?? '(namespace not found)'}` : '';
      return (
        `<tr ${linkAttrs(l)}><td>${esc(l.netns)}</td><td><code>${esc(ipLinkName(l))}</code></td><td>${esc(l.kind)}</td><td>${esc(l.master ?? '')}</td>` +
        `<td>${l.mtu}</td><td>${esc(linkState(l))}</td><td>${esc(shownAddrs(l).join(' '))}</td><td>${esc(pod && shownAddrs(pod).length ? `${peer} (${shownAddrs(pod).join(', ')})` : peer)}</td></tr>`
      );
    })
    .join('\n');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(`twill explain: ${e.node.netns}`)}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}pre{background:#f5f5f5;padding:1em;white-space:pre-wrap}</style>
</head><body>
<h1>${esc(`Node ${e.node.netns}`)}</h1>
${renderSvg(e)}
<h2>Findings (${e.findings.length})</h2>
${e.findings.length ? `<table id="findings"><tr><th>severity</th><th>id</th><th>subject</th><th>what</th><th>fix</th></tr>\n${rows}</table>` : '<p id="findings">Nothing wrong found.</p>'}
<h2>Namespaces (${e.namespaces.length})</h2>
<ul id="namespaces">
${namespaces}
</ul>
<h2>Links (${e.links.length})</h2>
<table id="links"><tr><th>namespace</th><th>link</th><th>kind</th><th>bridge</th><th>mtu</th><th>state</th><th>addresses</th><th>other end</th></tr>
${linkRows}
</table>
<h2>Explanation</h2>
<pre>${esc(renderText(e))}</pre>
</body></html>
`;
}

export function render(e: Explanation, format: ExplainFormat): string {
  switch (format) {
    case 'text':
      return renderText(e);
    case 'json':
      return renderJson(e);
    case 'svg':
      return renderSvg(e);
    case 'html':
      return renderHtml(e);
  }
}
