/** How many kernel requests a sync keeps in flight on one netlink socket. */
const WINDOW = 128;

/**
 * Runs independent kernel requests with up to WINDOW in flight at once (the
 * socket matches replies by sequence number), failing with the first error
 * after the requests already sent have settled.
 */
export async function pipelined(ops: (() => Promise<void>)[]): Promise<void> {
  for (let i = 0; i < ops.length; i += WINDOW) {
    const results = await Promise.allSettled(ops.slice(i, i + WINDOW).map((op) => op()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
