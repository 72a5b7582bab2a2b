// A typed view of one BPF map: keys and values go through their layouts, sizes are checked on every
// call (cilium/ebpf style), so a caller cannot write a value of the wrong shape.
import * as native from '../native/addon.js';
import type { MapDef } from './layouts.js';
import { MapUpdate } from './uapi.js';
import { possibleCpus } from '../util/cpus.js';

export class TypedMap<K, V> {
  constructor(
    readonly def: MapDef,
    readonly fd: number,
  ) {}

  private valueBytes(): number {
    return this.def.percpu ? Math.ceil(this.def.value.size / 8) * 8 * possibleCpus() : this.def.value.size;
  }

  get(key: K): V | null {
    const raw = native.mapLookup(this.fd, this.def.key.encode(key), this.valueBytes());
    return raw === null ? null : this.decodeValue(raw);
  }

  set(key: K, value: V, flags: number = MapUpdate.ANY): void {
    if (this.def.percpu) throw new TypeError(`${this.def.name}: per-CPU maps are read-only here`);
    native.mapUpdate(this.fd, this.def.key.encode(key), this.def.value.encode(value), flags);
  }

  delete(key: K): boolean {
    return native.mapDelete(this.fd, this.def.key.encode(key));
  }

  entries(): Array<[K, V]> {
    return native
      .mapEntries(this.fd, this.def.key.size, this.valueBytes())
      .map(([k, v]) => [this.def.key.decode(k) as K, this.decodeValue(v)]);
  }

  /** Per-CPU maps: the sum over CPUs (counters). */
  private decodeValue(raw: Buffer): V {
    if (!this.def.percpu) return this.def.value.decode(raw) as V;
    const stride = Math.ceil(this.def.value.size / 8) * 8;
    let sum = 0n;
    for (let o = 0; o + stride <= raw.length; o += stride) sum += raw.readBigUInt64LE(o);
    return sum as V;
  }
}
