// The package index also loads generated nl80211/wireguard/rtnetlink codecs
// (~40 ms at start, measured); twill needs only the socket layer.
import { NetlinkSocket } from 'netlink/dist/netlink.js';
import type { NetlinkMessage } from 'netlink/dist/structs.js';
import { RawNetlinkSocket } from 'netlink/dist/raw.js';
import { errnoError, type ErrorContext } from '../errors.js';
import { NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR } from './constants.js';

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
// nfnetlink's batch delimiters (linux/netfilter/nfnetlink.h).
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;

export interface Message {
  type: number;
  flags: number;
  data: Buffer;
}

/** Largest datagram of coalesced requests (the kernel takes any size; this bounds one burst of replies). */
const MAX_COALESCED_BYTES = 32 << 10;
const NLMSG_HDRLEN = 16;

type ReplyCallback = (err: Error | null, msgs?: NetlinkMessage[]) => void;

/** One netlink message: header (length, type, flags, sequence; port 0) and body, padded to 4 bytes. */
function encodeMessage(type: number, flags: number, seq: number, body: Buffer): Buffer {
  const len = NLMSG_HDRLEN + body.length;
  const msg = Buffer.alloc((len + 3) & ~3);
  msg.writeUInt32LE(len, 0);
  msg.writeUInt16LE(type, 4);
  msg.writeUInt16LE(flags, 6);
  msg.writeUInt32LE(seq, 8);
  body.copy(msg, NLMSG_HDRLEN);
  return msg;
}

/**
 * The package's socket, plus requests that are queued and sent together: the
 * kernel handles every message of a datagram in turn and answers each one, so
 * requests issued in the same tick (a sync programming thousands of peers) cost
 * one send instead of one event-loop round trip each.
 */
class CoalescingSocket extends NetlinkSocket {
  private queued: { msg: Buffer; done: ReplyCallback }[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;

  requestCoalesced(type: number, flags: number, body: Buffer): Promise<NetlinkMessage[]> {
    const seq = this.generateSeq();
    const msg = encodeMessage(type, flags, seq, body);
    return new Promise<NetlinkMessage[]>((resolve, reject) => {
      const done: ReplyCallback = (err, msgs) => {
        this.dropRef(seq);
        if (err) reject(err);
        else resolve(msgs ?? []);
      };
      this.makeRef(seq, done);
      if (this.queuedBytes + msg.length > MAX_COALESCED_BYTES) this.flush();
      this.queued.push({ msg, done });
      this.queuedBytes += msg.length;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  /**
   * Sends `parts` as one datagram, in order, and resolves once every part
   * marked `ack` is answered: an nfnetlink batch, whose begin and end messages
   * the kernel does not acknowledge (it answers the begin message only with an
   * error, which then fails the whole batch).
   */
  requestBatch(parts: { type: number; flags: number; body: Buffer; ack: boolean }[]): Promise<NetlinkMessage[][]> {
    const msgs: Buffer[] = [];
    const waits: Promise<NetlinkMessage[]>[] = [];
    const seqs: number[] = [];
    let failBatch: (e: Error) => void = () => undefined;
    const batchFailed = new Promise<never>((_, reject) => (failBatch = reject));
    for (const part of parts) {
      const seq = this.generateSeq();
      seqs.push(seq);
      msgs.push(encodeMessage(part.type, part.flags, seq, part.body));
      if (part.ack) {
        waits.push(new Promise<NetlinkMessage[]>((resolve, reject) => this.makeRef(seq, (err, replies) => (err ? reject(err) : resolve(replies ?? [])))));
      } else {
        this.makeRef(seq, (err, replies) => {
          if (err) failBatch(err);
          else if (replies?.some((m) => m.type === NLMSG_ERROR && m.data.readInt32LE(0) !== 0)) failBatch(Object.assign(new Error('batch refused'), { replies }));
        });
      }
    }
    this.socket.send(Buffer.concat(msgs), {}, (error) => {
      if (error) failBatch(error);
    });
    return Promise.race([Promise.all(waits), batchFailed]).finally(() => {
      for (const seq of seqs) this.dropRef(seq);
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queued;
    if (batch.length === 0) return;
    this.queued = [];
    this.queuedBytes = 0;
    this.socket.send(Buffer.concat(batch.map((b) => b.msg)), {}, (error) => {
      if (error) for (const b of batch) b.done(error);
    });
  }
}

/**
 * One rtnetlink socket, bound to the namespace that was current on the thread
 * when it was opened. Requests are matched to replies by sequence number.
 */
export class RouteSocket {
  private readonly sock: CoalescingSocket;
  private closed = false;
  // Requests may be in flight together, but a socket runs one dump at a time
  // (the kernel answers a second one with EBUSY), and a dump's parts must not
  // interleave with other replies: a dump waits for the socket to be idle, and
  // holds it.
  private inFlight = 0;
  private exclusive: Promise<void> | null = null;
  private idleWaiters: (() => void)[] = [];

  private readonly protocol: number;

  /** Opens a socket (rtnetlink unless `protocol` says otherwise) in the calling thread's current namespace. */
  constructor(private readonly netnsLabel: string | null, options: { listen?: boolean; protocol?: number } = {}) {
    this.protocol = options.protocol ?? NETLINK_ROUTE;
    const opts = {
      ref: options.listen ?? false,
      // Event bursts (a whole node's routes at start) must not overflow the queue.
      recvBufferSize: options.listen ? 8 << 20 : 1 << 20,
      sendBufferSize: 1 << 20,
    };
    this.sock = new CoalescingSocket(new RawNetlinkSocket(this.protocol, opts), opts);
    // Without a listener an asynchronous socket error would crash the process.
    this.sock.on('error', () => undefined);
  }

  get netns(): string | null {
    return this.netnsLabel;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`netlink socket${this.netnsLabel ? ` for netns "${this.netnsLabel}"` : ''} is closed`);
  }

  /** A request or batch has its answer: a dump waiting for the socket to be idle may go. */
  private done(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  /**
   * Sends one request and waits for its reply. Resolves with the reply's data
   * messages (none for a plain ACK); rejects with a KernelError naming ctx.
   */
  async request(type: number, flags: number, body: Buffer, ctx: ErrorContext): Promise<Message[]> {
    this.assertOpen();
    // NLM_F_DUMP's bits mean REPLACE|EXCL on a NEW request: rtnetlink's GETs are the types ≡ 2 (mod 4);
    // on other families twill sends only GETs.
    const isDump = (flags & NLM_F_DUMP) === NLM_F_DUMP && (this.protocol !== NETLINK_ROUTE || (type & 3) === 2);
    while (this.exclusive) await this.exclusive;
    let release: () => void = () => undefined;
    if (isDump) {
      this.exclusive = new Promise<void>((resolve) => (release = resolve));
      while (this.inFlight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    this.inFlight++;
    let msgs;
    try {
      msgs = isDump
        ? (await this.sock.request(type, body, { flags: flags | NLM_F_REQUEST | NLM_F_ACK, checkError: false }))[0]
        : await this.sock.requestCoalesced(type, flags | NLM_F_REQUEST | NLM_F_ACK, body);
    } finally {
      this.done();
      if (isDump) {
        this.exclusive = null;
        release();
      }
    }
    const out: Message[] = [];
    for (const m of msgs) {
      if (m.type === NLMSG_ERROR) {
        const errno = -m.data.readInt32LE(0);
        if (errno !== 0) throw errnoError(errno, { ...ctx, netns: ctx.netns ?? this.netnsLabel });
        continue;
      }
      if (m.type === NLMSG_DONE) continue;
      out.push({ type: m.type, flags: m.flags, data: m.data });
    }
    return out;
  }

  /**
   * An nfnetlink batch: `msgs` between a begin and an end message of
   * subsystem `subsys`, applied by the kernel as one transaction (all or none).
   * Rejects with the first message's error, as a KernelError naming ctx.
   */
  async batch(subsys: number, msgs: { type: number; flags: number; body: Buffer }[], ctx: ErrorContext): Promise<void> {
    this.assertOpen();
    while (this.exclusive) await this.exclusive;
    // struct nfgenmsg: AF_UNSPEC, version 0, the subsystem as res_id (big-endian).
    const marker = Buffer.from([0, 0, subsys >> 8, subsys & 0xff]);
    const fail = (errno: number) => errnoError(errno, { ...ctx, netns: ctx.netns ?? this.netnsLabel });
    this.inFlight++;
    try {
      const replies = await this.sock.requestBatch([
        { type: NFNL_MSG_BATCH_BEGIN, flags: NLM_F_REQUEST, body: marker, ack: false },
        ...msgs.map((m) => ({ ...m, flags: m.flags | NLM_F_REQUEST | NLM_F_ACK, ack: true })),
        { type: NFNL_MSG_BATCH_END, flags: NLM_F_REQUEST, body: marker, ack: false },
      ]);
      for (const m of replies.flat()) {
        if (m.type === NLMSG_ERROR && m.data.readInt32LE(0) !== 0) throw fail(-m.data.readInt32LE(0));
      }
    } catch (e) {
      const refused = (e as { replies?: NetlinkMessage[] }).replies?.find((m) => m.type === NLMSG_ERROR);
      if (refused) throw fail(-refused.data.readInt32LE(0));
      throw e;
    } finally {
      this.done();
    }
  }

  /** Joins multicast groups; notifications then arrive through onMessage. */
  subscribe(groups: number[], onMessage: (msg: Message) => void, onError: (err: Error) => void): void {
    this.sock.on('message', (msgs) => {
      for (const m of msgs) onMessage({ type: m.type, flags: m.flags, data: m.data });
    });
    this.sock.on('error', onError);
    for (const g of groups) this.sock.addMembership(g);
    this.sock.ref(true);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }
}
