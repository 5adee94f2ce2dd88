// Netlink attributes (TLV: u16 length, u16 type, payload padded to 4 bytes).

const NLA_ALIGN = 4;
const NLA_HDRLEN = 4;
const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;

const align = (n: number): number => (n + NLA_ALIGN - 1) & ~(NLA_ALIGN - 1);

/** Builds a sequence of attributes; nested attributes are built with `nested`. */
export class AttrWriter {
  private readonly parts: Buffer[] = [];

  raw(type: number, payload: Uint8Array): this {
    const header = Buffer.alloc(NLA_HDRLEN);
    header.writeUInt16LE(NLA_HDRLEN + payload.length, 0);
    header.writeUInt16LE(type, 2);
    const padding = Buffer.alloc(align(payload.length) - payload.length);
    this.parts.push(header, Buffer.from(payload), padding);
    return this;
  }

  u8(type: number, value: number): this {
    return this.raw(type, Buffer.from([value]));
  }

  u16(type: number, value: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(value);
    return this.raw(type, b);
  }

  /** Network byte order (ports). */
  u16be(type: number, value: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(value);
    return this.raw(type, b);
  }

  /** Network byte order (nf_tables' integers). */
  u32be(type: number, value: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(value >>> 0);
    return this.raw(type, b);
  }

  u32(type: number, value: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    return this.raw(type, b);
  }

  s32(type: number, value: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    return this.raw(type, b);
  }

  string(type: number, value: string): this {
    return this.raw(type, Buffer.from(`${value}\0`, 'utf8'));
  }

  flag(type: number): this {
    return this.raw(type, Buffer.alloc(0));
  }

  nested(type: number, build: (w: AttrWriter) => void): this {
    const inner = new AttrWriter();
    build(inner);
    return this.raw(type | NLA_F_NESTED, inner.toBuffer());
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Attributes of one level, by type. A type seen twice keeps its last value. */
export class Attrs {
  private readonly byType = new Map<number, Buffer>();

  constructor(data: Buffer) {
    let offset = 0;
    while (offset + NLA_HDRLEN <= data.length) {
      const len = data.readUInt16LE(offset);
      const type = data.readUInt16LE(offset + 2) & NLA_TYPE_MASK;
      if (len < NLA_HDRLEN || offset + len > data.length) break;
      this.byType.set(type, data.subarray(offset + NLA_HDRLEN, offset + len));
      offset += align(len);
    }
  }

  has(type: number): boolean {
    return this.byType.has(type);
  }

  buffer(type: number): Buffer | undefined {
    return this.byType.get(type);
  }

  string(type: number): string | undefined {
    const b = this.byType.get(type);
    if (!b) return undefined;
    const end = b.indexOf(0);
    return b.toString('utf8', 0, end < 0 ? b.length : end);
  }

  u8(type: number): number | undefined {
    const b = this.byType.get(type);
    return b && b.length >= 1 ? b.readUInt8(0) : undefined;
  }

  u16(type: number): number | undefined {
    const b = this.byType.get(type);
    return b && b.length >= 2 ? b.readUInt16LE(0) : undefined;
  }

  u16be(type: number): number | undefined {
    const b = this.byType.get(type);
    return b && b.length >= 2 ? b.readUInt16BE(0) : undefined;
  }

  u32(type: number): number | undefined {
    const b = this.byType.get(type);
    return b && b.length >= 4 ? b.readUInt32LE(0) : undefined;
  }

  s32(type: number): number | undefined {
    const b = this.byType.get(type);
    return b && b.length >= 4 ? b.readInt32LE(0) : undefined;
  }

  nested(type: number): Attrs | undefined {
    const b = this.byType.get(type);
    return b ? new Attrs(b) : undefined;
  }
}

/** Every attribute of one level, in order (for types that repeat, e.g. IFLA_BRIDGE_VLAN_INFO). */
export function attrList(data: Buffer): { type: number; data: Buffer }[] {
  const out: { type: number; data: Buffer }[] = [];
  let offset = 0;
  while (offset + NLA_HDRLEN <= data.length) {
    const len = data.readUInt16LE(offset);
    if (len < NLA_HDRLEN || offset + len > data.length) break;
    out.push({ type: data.readUInt16LE(offset + 2) & NLA_TYPE_MASK, data: data.subarray(offset + NLA_HDRLEN, offset + len) });
    offset += align(len);
  }
  return out;
}
