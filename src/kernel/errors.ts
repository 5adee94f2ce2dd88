import { constants as osConstants } from 'node:os';

/** What went wrong, in the terms a caller branches on. */
export type KernelErrorKind =
  | 'exists'
  | 'not-found'
  | 'invalid'
  | 'busy'
  | 'permission'
  | 'unsupported'
  | 'other';

export interface ErrorContext {
  /** The operation, e.g. "add link". */
  op: string;
  /** The object it was applied to, e.g. `veth "tw0a1b-h"`. */
  subject: string;
  /** The namespace it was done in, when not the current one. */
  netns?: string | null;
}

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

const kindOfErrno = (code: string): KernelErrorKind => {
  switch (code) {
    case 'EEXIST':
    case 'EADDRINUSE':
      return 'exists';
    case 'ENOENT':
    case 'ENODEV':
    case 'ESRCH':
    case 'EADDRNOTAVAIL':
      return 'not-found';
    case 'EINVAL':
    case 'ERANGE':
    case 'ENAMETOOLONG':
    case 'EAFNOSUPPORT':
      return 'invalid';
    case 'EBUSY':
      return 'busy';
    case 'EPERM':
    case 'EACCES':
      return 'permission';
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
    case 'EPROTONOSUPPORT':
      return 'unsupported';
    default:
      return 'other';
  }
};

const explain: Record<KernelErrorKind, string> = {
  exists: 'already exists',
  'not-found': 'does not exist',
  invalid: 'invalid argument',
  busy: 'busy',
  permission: 'permission denied (twill needs root / CAP_NET_ADMIN)',
  unsupported: 'not supported by this kernel',
  other: 'failed',
};

/** An operation the kernel (or twill's own checks, before anything was sent) refused. */
export class KernelError extends Error {
  readonly kind: KernelErrorKind;
  readonly code: string;
  readonly errno: number;
  readonly op: string;
  readonly subject: string;
  readonly netns: string | null;

  constructor(kind: KernelErrorKind, code: string, errno: number, ctx: ErrorContext, detail?: string) {
    const where = ctx.netns ? ` in netns "${ctx.netns}"` : '';
    super(`${ctx.op} ${ctx.subject}${where}: ${detail ?? explain[kind]} (${code})`);
    this.name = 'KernelError';
    this.kind = kind;
    this.code = code;
    this.errno = errno;
    this.op = ctx.op;
    this.subject = ctx.subject;
    this.netns = ctx.netns ?? null;
  }
}

/** Where the kind's generic words would leave a person guessing. */
const CODE_TEXT: Record<string, string> = {
  ENETUNREACH: 'network unreachable: the gateway is not on a network of that device (a route through a vxlan device needs onlink)',
  ENOTCONN: 'not connected (a veth end cannot go up before its peer exists)',
  EADDRNOTAVAIL: 'address not available on that link',
  ENOBUFS: 'no buffer space: the kernel dropped messages (re-list to resynchronise)',
};

export function errnoError(errno: number, ctx: ErrorContext): KernelError {
  const code = errnoNames.get(errno) ?? `errno ${errno}`;
  return new KernelError(kindOfErrno(code), code, errno, ctx, CODE_TEXT[code]);
}

/** Bad input caught before the kernel saw it: nothing was changed. */
export function invalidArgument(ctx: ErrorContext, detail: string): KernelError {
  return new KernelError('invalid', 'EINVAL', osConstants.errno.EINVAL, ctx, detail);
}

export const isExists = (e: unknown): boolean => e instanceof KernelError && e.kind === 'exists';
export const isNotFound = (e: unknown): boolean => e instanceof KernelError && e.kind === 'not-found';
