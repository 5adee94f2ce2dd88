import type { RouteSocket } from './nl/socket.js';
import type { Netns } from './netns.js';

/** What every operation needs: a socket bound to one namespace, and which namespace that is. */
export interface NsContext {
  readonly sock: RouteSocket;
  /** Identity of the namespace (see Netns.key); objects read here carry it. */
  readonly nsKey: string;
  /** The namespace, or null for the process's own. */
  readonly netns: Netns | null;
}
