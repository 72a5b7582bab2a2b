// The map layouts of TypeScript (src/dataplane/layouts.ts) against the BTF of the compiled objects:
// every struct's size, member names and offsets, every map's key and value type. And each layout's
// fingerprint against its version, so a layout cannot change without a new version (pinned maps
// outlive the agent: a new layout must be a new pin).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MAPS, type MapDef } from '../../src/dataplane/layouts.js';
import { OBJECTS } from '../../src/dataplane/programs.js';
import { fingerprint } from '../../src/dataplane/struct.js';
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
      for (const [part, layout] of [['key', def.key], ['value', def.value]] as const) {
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

test('every layout version matches its fingerprint (change a layout: bump its version)', () => {
  const wrong = (Object.values(MAPS) as MapDef[])
    .map((d) => ({ name: d.name, version: d.version, recorded: d.fingerprint, actual: fingerprint(d.key, d.value) }))
    .filter((x) => x.recorded !== x.actual);
  assert.deepEqual(wrong, [], 'a map layout changed: give it a new version and record its new fingerprint');
});

test('a changed layout changes the fingerprint (the check above can fail)', async () => {
  const { struct, u32, u16 } = await import('../../src/dataplane/struct.js');
  const a = struct('x', { a: u32, b: u16 });
  const b = struct('x', { a: u32, b: u32 });
  assert.notEqual(fingerprint(a, a), fingerprint(a, b));
});
