// A small typed view of C structs: each field knows its size, alignment and how to read and write
// itself; offsets follow the C ABI (natural alignment), and the layout test checks every offset and
// size against the BTF of the compiled objects. Layout descriptions live in layouts.ts only.
import { createHash } from 'node:crypto';
import { bytesToIp6, ipToBytes } from '../util/ip.js';

export interface Field<V> {
  readonly kind: string;
  readonly size: number;
  readonly align: number;
  read(buf: Buffer, off: number): V;
  write(buf: Buffer, off: number, v: V): void;
}

const int = <V>(kind: string, size: number, read: Field<V>['read'], write: Field<V>['write']): Field<V> => ({
  kind,
  size,
  align: size,
  read,
  write,
});

export const u8 = int<number>(
  'u8',
  1,
  (b, o) => b.readUInt8(o),
  (b, o, v) => void b.writeUInt8(v, o),
);
export const u16 = int<number>(
  'u16',
  2,
  (b, o) => b.readUInt16LE(o),
  (b, o, v) => void b.writeUInt16LE(v, o),
);
export const u32 = int<number>(
  'u32',
  4,
  (b, o) => b.readUInt32LE(o),
  (b, o, v) => void b.writeUInt32LE(v, o),
);
export const u64 = int<bigint>(
  'u64',
  8,
  (b, o) => b.readBigUInt64LE(o),
  (b, o, v) => void b.writeBigUInt64LE(v, o),
);
export const i64 = int<bigint>(
  'i64',
  8,
  (b, o) => b.readBigInt64LE(o),
  (b, o, v) => void b.writeBigInt64LE(v, o),
);
/** a port in network byte order, exposed as a number */
export const be16 = int<number>(
  'be16',
  2,
  (b, o) => b.readUInt16BE(o),
  (b, o, v) => void b.writeUInt16BE(v, o),
);

/** an IPv4 address in network order, exposed as dotted text ('' for 0.0.0.0 is not used: 0.0.0.0) */
export const ip4: Field<string> = {
  kind: 'ip4',
  size: 4,
  align: 4,
  read: (b, o) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`,
  write: (b, o, v) => ipToBytes(v, 4).copy(b, o),
};

/** 16 address bytes, exposed as canonical IPv6 text */
export const ip6: Field<string> = {
  kind: 'ip6',
  size: 16,
  align: 1,
  read: (b, o) => bytesToIp6(b.subarray(o, o + 16)),
  write: (b, o, v) => ipToBytes(v, 6).copy(b, o),
};

export function u32Array(len: number): Field<number[]> {
  return {
    kind: `u32[${len}]`,
    size: 4 * len,
    align: 4,
    read: (b, o) => Array.from({ length: len }, (_, i) => b.readUInt32LE(o + 4 * i)),
    write: (b, o, v) => {
      if (v.length > len) throw new RangeError(`at most ${len} entries, got ${v.length}`);
      v.forEach((x, i) => b.writeUInt32LE(x, o + 4 * i));
    },
  };
}

export function u8Array(len: number): Field<number[]> {
  return {
    kind: `u8[${len}]`,
    size: len,
    align: 1,
    read: (b, o) => Array.from(b.subarray(o, o + len)),
    write: (b, o, v) => {
      if (v.length > len) throw new RangeError(`at most ${len} entries, got ${v.length}`);
      Buffer.from(v).copy(b, o);
    },
  };
}

/** a NUL-padded C string of `len` bytes (the text must leave room for the NUL) */
export function cstr(len: number): Field<string> {
  return {
    kind: `char[${len}]`,
    size: len,
    align: 1,
    read: (b, o) => {
      const s = b.subarray(o, o + len);
      const end = s.indexOf(0);
      return s.subarray(0, end < 0 ? len : end).toString('utf8');
    },
    write: (b, o, v) => {
      const bytes = Buffer.from(v, 'utf8');
      bytes.copy(b, o, 0, Math.min(bytes.length, len - 1));
    },
  };
}

type FieldValue<F> = F extends Field<infer V> ? V : never;
export type StructValue<F extends Record<string, Field<unknown>>> = { [K in keyof F]: FieldValue<F[K]> };

export interface StructLayout<T> extends Field<T> {
  /** the C struct name, as in the BTF ('' for a scalar) */
  readonly cName: string;
  readonly fields: ReadonlyArray<{ name: string; offset: number; field: Field<unknown> }>;
  encode(v: T): Buffer;
  decode(b: Buffer): T;
}

/** Lay out `fields` in order with natural alignment, as the C compiler does. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- fields of any value type; StructValue<F> gives the struct its own
export function struct<F extends Record<string, Field<any>>>(cName: string, fields: F): StructLayout<StructValue<F>> {
  let off = 0;
  let align = 1;
  const laid: Array<{ name: string; offset: number; field: Field<unknown> }> = [];
  for (const [name, field] of Object.entries(fields)) {
    off = Math.ceil(off / field.align) * field.align;
    laid.push({ name, offset: off, field });
    off += field.size;
    align = Math.max(align, field.align);
  }
  const size = Math.ceil(off / align) * align;
  const layout: StructLayout<StructValue<F>> = {
    kind: `struct ${cName}`,
    cName,
    size,
    align,
    fields: laid,
    read: (b, o) => {
      const v: Record<string, unknown> = {};
      for (const f of laid) v[f.name] = f.field.read(b, o + f.offset);
      return v as StructValue<F>;
    },
    write: (b, o, v) => {
      for (const f of laid) f.field.write(b, o + f.offset, (v as Record<string, unknown>)[f.name]);
    },
    encode: (v) => {
      const b = Buffer.alloc(size);
      layout.write(b, 0, v);
      return b;
    },
    decode: (b) => {
      if (b.length !== size) throw new RangeError(`struct ${cName}: ${b.length} bytes, expected ${size}`);
      return layout.read(b, 0);
    },
  };
  return layout;
}

/** A scalar key or value (a map keyed by __u64, valued by __u8...). */
export function scalar<V>(field: Field<V>): StructLayout<V> {
  return {
    ...field,
    cName: '',
    fields: [],
    encode: (v) => {
      const b = Buffer.alloc(field.size);
      field.write(b, 0, v);
      return b;
    },
    decode: (b) => field.read(b, 0),
  };
}

/** What a layout looks like, for the version fingerprint: names, offsets, kinds, size. */
export function fingerprint(...layouts: Array<StructLayout<unknown>>): string {
  const text = layouts.map((l) => `${l.kind}/${l.size}{${l.fields.map((f) => `${f.name}@${f.offset}:${f.field.kind}`).join(',')}}`).join('|');
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}
