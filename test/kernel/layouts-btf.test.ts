// The maps of TypeScript (src/dataplane/layouts.ts) against the compiled objects: every struct's size,
// member names and offsets and every map's key and value type against the objects' BTF (bpftool), and
// every map's type, max_entries and map_flags against bpf/maps.h, both as the BTF of the map
// definition records them (flags are only there) and as libbpf reads them (BpfObject.maps()).
// A kernel test: it needs the built objects, bpftool and the addon. That a layout cannot change
// without a new version is test/unit/layouts.test.ts (the lock).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MAPS, type MapDef } from '../../src/dataplane/layouts.js';
import { OBJECTS } from '../../src/dataplane/programs.js';
import { BpfObject } from '../../src/native/addon.js';
import { packageRoot } from '../../src/util/paths.js';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
}

function btf(obj: string): Map<number, BtfType> {
  const out = execFileSync('bpftool', ['btf', 'dump', 'file', obj, 'format', 'raw', '-j'], { encoding: 'utf8' });
  return new Map((JSON.parse(out).types as BtfType[]).map((t) => [t.id, t]));
}

function resolve(types: Map<number, BtfType>, id: number): BtfType {
  let t = types.get(id)!;
  while (['TYPEDEF', 'VOLATILE', 'CONST', 'RESTRICT'].includes(t.kind)) t = types.get(t.type_id!)!;
  return t;
}

function sizeOf(types: Map<number, BtfType>, id: number): number {
  const t = resolve(types, id);
  if (t.kind === 'ARRAY') return t.nr_elems! * sizeOf(types, t.type_id!);
  if (t.kind === 'ENUM') return t.size ?? 4;
  return t.size!;
}

const objects = OBJECTS.map((o) => join(packageRoot(), 'bpf', 'build', o.file));

test('the BPF objects are built', () => {
  for (const o of objects) assert.ok(existsSync(o), `${o} missing: run npm run build`);
});

for (const obj of objects) {
  test(`map layouts match the BTF of ${obj.split('/').pop()}`, () => {
    const types = btf(obj);
    const vars = [...types.values()].filter((t) => t.kind === 'VAR');
    let checked = 0;
    for (const def of Object.values(MAPS) as MapDef[]) {
      const v = vars.find((x) => x.name === def.name);
      assert.ok(v, `map ${def.name} is not in ${obj}`);
      const mapStruct = resolve(types, v.type_id!);
      for (const [part, layout] of [
        ['key', def.key],
        ['value', def.value],
      ] as const) {
        const m = mapStruct.members!.find((x) => x.name === part)!;
        const ptr = types.get(m.type_id)!;
        assert.equal(ptr.kind, 'PTR');
        const target = resolve(types, ptr.type_id!);
        assert.equal(sizeOf(types, ptr.type_id!), layout.size, `${def.name} ${part}: BTF size ${sizeOf(types, ptr.type_id!)}, layouts.ts ${layout.size}`);
        if (layout.cName) {
          assert.equal(target.kind, 'STRUCT', `${def.name} ${part} should be struct ${layout.cName}`);
          assert.equal(target.name, layout.cName);
          const members = target.members!;
          assert.deepEqual(
            members.map((mm) => ({ name: mm.name, offset: mm.bits_offset / 8, size: sizeOf(types, mm.type_id) })),
            layout.fields.map((f) => ({ name: f.name, offset: f.offset, size: f.field.size })),
            `struct ${layout.cName}: members differ between bpf/meshlane.h and layouts.ts`,
          );
        }
        checked++;
      }
    }
    assert.ok(checked >= 2 * Object.keys(MAPS).length);
  });
}

/** A `__uint(name, N)` member of a map definition: BTF records N as the element count of an array. */
function uintMember(types: Map<number, BtfType>, mapStruct: BtfType, name: string): number | undefined {
  const m = mapStruct.members!.find((x) => x.name === name);
  if (!m) return undefined;
  const ptr = types.get(m.type_id)!;
  assert.equal(ptr.kind, 'PTR', `${name} is a __uint()`);
  const arr = types.get(ptr.type_id!)!;
  assert.equal(arr.kind, 'ARRAY', `${name} is a __uint()`);
  return arr.nr_elems!;
}

for (const obj of objects) {
  test(`map type, max_entries and flags match bpf/maps.h in ${obj.split('/').pop()} (BTF and libbpf)`, () => {
    const types = btf(obj);
    const vars = [...types.values()].filter((t) => t.kind === 'VAR');
    const o = new BpfObject(obj);
    try {
      const specs = o.maps();
      let checked = 0;
      for (const def of Object.values(MAPS) as MapDef[]) {
        const mapStruct = resolve(types, vars.find((x) => x.name === def.name)!.type_id!);
        const declared = {
          type: uintMember(types, mapStruct, 'type'),
          maxEntries: uintMember(types, mapStruct, 'max_entries') ?? 0,
          flags: uintMember(types, mapStruct, 'map_flags') ?? 0,
        };
        assert.deepEqual(declared, { type: def.type, maxEntries: def.maxEntries, flags: def.flags }, `map ${def.name}: bpf/maps.h (BTF) and layouts.ts differ`);
        const spec = specs.find((x) => x.name === def.name);
        assert.ok(spec, `libbpf does not list map ${def.name} in ${obj}`);
        assert.deepEqual(
          { type: spec.type, maxEntries: spec.maxEntries },
          { type: def.type, maxEntries: def.maxEntries },
          `map ${def.name}: libbpf and layouts.ts differ`,
        );
        checked++;
      }
      assert.equal(checked, Object.keys(MAPS).length);
    } finally {
      o.close();
    }
  });
}
