// Structured logs (pino: one JSON object a line on stderr), so that a fight with
// another daemon or a store outage can be counted and searched, not only read.
import { pino, type Logger } from 'pino';

export type { Logger };

import type { LogLevel } from './options.js';

export function createLogger(level: LogLevel, node: string): Logger {
  return pino({ level, base: { node }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}
