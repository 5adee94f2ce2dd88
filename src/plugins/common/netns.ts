import { Handle, KernelError, openNetns, type Netns } from '../../kernel/index.js';
import { CniError, ErrorCode } from '../../cni/errors.js';

/** Opens the container's namespace (CNI_NETNS), or says clearly why it cannot. */
export function openContainerNetns(path: string): Netns {
  try {
    return openNetns(path);
  } catch (e) {
    const why = e instanceof KernelError ? e.code : (e as Error).message;
    throw new CniError(ErrorCode.InvalidNetns, `failed to open netns ${JSON.stringify(path)}: ${why}`, path);
  }
}

/** A handle on the container's namespace for the duration of fn. */
export async function withContainerNetns<T>(path: string, fn: (h: Handle, netns: Netns) => Promise<T>): Promise<T> {
  const netns = openContainerNetns(path);
  const h = Handle.open(netns);
  try {
    return await fn(h, netns);
  } finally {
    h.close();
    netns.close();
  }
}
