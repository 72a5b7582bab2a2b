// A small reader of raw BTF (the kernel's /sys/kernel/btf/vmlinux, see Documentation/bpf/btf.rst):
// enough to ask whether a struct has a member path and whether a function exists, so that a kernel
// that lacks what a program reads gets a message that names it instead of a CO-RE relocation log.
// One pass over the type section, no names decoded but the ones asked for.
import { readFileSync } from 'node:fs';

export const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';

const MAGIC = 0xeb9f;
const TYPE_HEADER = 12; // struct btf_type: name_off, info, size/type

/** BTF_KIND_* */
export const BtfKind = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

/** Bytes that follow struct btf_type for a kind with `vlen` entries. */
function extra(kind: number, vlen: number): number {
  switch (kind) {
    case BtfKind.INT:
    case BtfKind.VAR:
    case BtfKind.DECL_TAG:
      return 4;
    case BtfKind.ARRAY:
      return 12;
    case BtfKind.STRUCT:
    case BtfKind.UNION:
    case BtfKind.DATASEC:
    case BtfKind.ENUM64:
      return 12 * vlen;
    case BtfKind.ENUM:
    case BtfKind.FUNC_PROTO:
      return 8 * vlen;
    default:
      return 0;
  }
}

/** Kinds that only qualify or rename another type (followed when resolving a member's type). */
const ALIASES: ReadonlySet<number> = new Set([BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG]);

export class Btf {
  private readonly types: Buffer;
  private readonly strings: Buffer;
  /** byte offset in `types` of each type id (id 0 is void) */
  private readonly at: number[] = [0];

  constructor(buf: Buffer) {
    if (buf.length < 24 || buf.readUInt16LE(0) !== MAGIC) throw new Error('not BTF (bad magic)');
    const hdrLen = buf.readUInt32LE(4);
    const typeOff = buf.readUInt32LE(8);
    const typeLen = buf.readUInt32LE(12);
    const strOff = buf.readUInt32LE(16);
    const strLen = buf.readUInt32LE(20);
    if (hdrLen + strOff + strLen > buf.length || hdrLen + typeOff + typeLen > buf.length) throw new Error('BTF sections out of bounds');
    this.types = buf.subarray(hdrLen + typeOff, hdrLen + typeOff + typeLen);
    this.strings = buf.subarray(hdrLen + strOff, hdrLen + strOff + strLen);
    for (let o = 0; o + TYPE_HEADER <= this.types.length;) {
      this.at.push(o);
      const info = this.types.readUInt32LE(o + 4);
      o += TYPE_HEADER + extra((info >>> 24) & 0x1f, info & 0xffff);
    }
  }

  /** The kernel's own BTF. */
  static vmlinux(path = VMLINUX_BTF): Btf {
    return new Btf(readFileSync(path));
  }

  /** The offset of `name` in the string section, or -1. */
  private stringOffset(name: string): number {
    const i = this.strings.indexOf(Buffer.from(`\0${name}\0`));
    return i < 0 ? -1 : i + 1;
  }

  private kind(id: number): number {
    return (this.types.readUInt32LE(this.at[id]! + 4) >>> 24) & 0x1f;
  }

  private vlen(id: number): number {
    return this.types.readUInt32LE(this.at[id]! + 4) & 0xffff;
  }

  private nameOff(id: number): number {
    return this.types.readUInt32LE(this.at[id]!);
  }

  /** size, or the referenced type (a union in struct btf_type) */
  private ref(id: number): number {
    return this.types.readUInt32LE(this.at[id]! + 8);
  }

  /** The ids of every type of `kind` named `name`. */
  find(kind: number, name: string): number[] {
    const off = this.stringOffset(name);
    if (off < 0) return [];
    const out: number[] = [];
    for (let id = 1; id < this.at.length; id++) if (this.nameOff(id) === off && this.kind(id) === kind) out.push(id);
    return out;
  }

  hasFunc(name: string): boolean {
    return this.find(BtfKind.FUNC, name).length > 0;
  }

  private resolve(id: number): number {
    for (let n = 0; n < 32 && id !== 0 && ALIASES.has(this.kind(id)); n++) id = this.ref(id);
    return id;
  }

  /** The type of member `name` of struct or union `id`, looking into anonymous members too; undefined if none. */
  private member(id: number, nameOff: number, depth = 0): number | undefined {
    const k = this.kind(id);
    if ((k !== BtfKind.STRUCT && k !== BtfKind.UNION) || depth > 8) return undefined;
    const base = this.at[id]! + TYPE_HEADER;
    for (let i = 0; i < this.vlen(id); i++) {
      const m = base + 12 * i;
      const mName = this.types.readUInt32LE(m);
      const mType = this.types.readUInt32LE(m + 4);
      if (mName === nameOff) return mType;
      if (mName === 0) {
        const inner = this.member(this.resolve(mType), nameOff, depth + 1);
        if (inner !== undefined) return inner;
      }
    }
    return undefined;
  }

  /** Does struct `struct` have the member path `path` (e.g. sock, ['sk_backlog', 'rmem_alloc'])? */
  hasMember(struct: string, path: string[]): boolean {
    const offs = path.map((p) => this.stringOffset(p));
    if (offs.some((o) => o < 0)) return false;
    return this.find(BtfKind.STRUCT, struct).some((start) => {
      let id: number | undefined = start;
      for (const off of offs) {
        if (id === undefined) return false;
        const t: number | undefined = this.member(this.resolve(id), off);
        id = t === undefined ? undefined : this.resolve(t);
      }
      return id !== undefined;
    });
  }
}
