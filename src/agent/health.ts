// /healthz (the process answers), /readyz (lease, rules and subnet.env in
// place: what a DaemonSet's readiness probe asks) and /metrics, over plain HTTP
// on 127.0.0.1 by default: nothing here is for the network at large.
import { createServer, type Server } from 'node:http';
import type { AgentMetrics } from './metrics.js';

export interface HealthState {
  ready(): boolean;
  /** Why not ready, for a person reading /readyz. */
  waitingFor(): string;
}

export interface HealthServerOptions {
  host: string;
  port: number;
  /** Which paths this server answers (one server may do all three). */
  paths: ('health' | 'metrics')[];
}

export function startHealthServer(opts: HealthServerOptions, state: HealthState, metrics: AgentMetrics): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (opts.paths.includes('health') && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (opts.paths.includes('health') && path === '/readyz') {
      if (state.ready()) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${state.waitingFor()}\n`);
    } else if (opts.paths.includes('metrics') && path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot listen on ${opts.host}:${opts.port} for ${opts.paths.join(' and ')}: ${e.message}`)));
    server.listen(opts.port, opts.host, () => resolve(server));
  });
}
