// A typed view of one BPF map: keys and values go through their layouts (layouts.ts), so a caller
// cannot write a key or value of the wrong shape (a compile error), and the map's sizes are checked
// once, when the view is made, against the shape the addon read when it opened the map (cilium/ebpf
// style). A TypedMap owns its map handle: close() or `using` closes the fd.
import type * as native from '../native/addon.js';
import { MAPS, type MapDef, type MapName } from './layouts.js';
import type { StructLayout } from './struct.js';
import { MapUpdate } from './uapi.js';

/** The value type a layout encodes and decodes. */
export type LayoutValue<L> = L extends StructLayout<infer T> ? T : never;
/** The key and value types of map `N`, from its layouts in MAPS. */
export type KeyOf<N extends MapName> = LayoutValue<(typeof MAPS)[N]['key']>;
export type ValueOf<N extends MapName> = LayoutValue<(typeof MAPS)[N]['value']>;

export class TypedMap<K, V> implements Disposable {
  /**
   * Takes ownership of `handle` when the sizes match; throws (and leaves `handle` to the caller) when
   * the map's key or value size is not the layout's.
   */
  constructor(
    readonly def: MapDef & { key: StructLayout<K>; value: StructLayout<V> },
    readonly handle: native.MapFd,
  ) {
    const info = handle.info;
    if (info.keySize !== def.key.size || info.valueSize !== def.value.size) {
      throw new Error(`map ${def.name}: key/value ${info.keySize}/${info.valueSize} bytes, layouts.ts says ${def.key.size}/${def.value.size}`);
    }
  }

  get(key: K): V | null {
    const raw = this.handle.lookup(this.def.key.encode(key));
    return raw === null ? null : this.decodeValue(raw);
  }

  set(key: K, value: V, flags: number = MapUpdate.ANY): void {
    if (this.def.percpu) throw new TypeError(`${this.def.name}: per-CPU maps are read-only here`);
    this.handle.update(this.def.key.encode(key), this.def.value.encode(value), flags);
  }

  delete(key: K): boolean {
    return this.handle.delete(this.def.key.encode(key));
  }

  entries(): Array<[K, V]> {
    return this.handle.entries().map(([k, v]) => [this.def.key.decode(k), this.decodeValue(v)]);
  }

  close(): void {
    this.handle.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Per-CPU maps: the sum over CPUs (counters). */
  private decodeValue(raw: Buffer): V {
    if (!this.def.percpu) return this.def.value.decode(raw);
    const stride = Math.ceil(this.def.value.size / 8) * 8;
    let sum = 0n;
    for (let o = 0; o + stride <= raw.length; o += stride) sum += raw.readBigUInt64LE(o);
    return sum as V;
  }
}

/** The typed view of map `name` over `handle` (see the constructor for ownership). */
export function typedMap<N extends MapName>(name: N, handle: native.MapFd): TypedMap<KeyOf<N>, ValueOf<N>> {
  // MAPS[N] has the layouts KeyOf<N> and ValueOf<N> are read from, for every N; through a generic
  // index TypeScript sees only the union of all of them. This is the one place that says so.
  const def = MAPS[name] as MapDef & { key: StructLayout<KeyOf<N>>; value: StructLayout<ValueOf<N>> };
  return new TypedMap(def, handle);
}
