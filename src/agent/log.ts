// Structured logs (pino: one JSON object a line on stderr), so that a fight with
// another daemon or a store outage can be counted and searched, not only read.
import { pino, type Logger } from 'pino';

export type { Logger };

import type { LogLevel } from './options.js';
import type { CniCallEvent } from '../cni/server.js';

export function createLogger(level: LogLevel, node: string): Logger {
  return pino({ level, base: { node }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}

/** One log line a CNI call served over the socket: failures and refusals where an operator looks, the rest at debug. */
export function logCniCall(log: Logger, e: CniCallEvent): void {
  const fields = { plugin: e.plugin, command: e.command, containerId: e.containerId, ms: Math.round(e.ms * 10) / 10, ...(e.code !== undefined ? { code: e.code } : {}), ...(e.reason ? { reason: e.reason } : {}) };
  if (e.outcome === 'served' && e.code === 0) log.debug(fields, 'CNI call served');
  else if (e.outcome === 'served') log.info(fields, 'CNI call failed');
  else log.warn(fields, e.outcome === 'refused' ? 'CNI call refused: the plugin runs it itself' : 'bad CNI request');
}
