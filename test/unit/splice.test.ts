// Splicing's pure parts: the budget option, the BTF reader and what splicing needs from the kernel's BTF,
// and the decision (on, off and why) from what the user asked and what the kernel check found. The check
// itself and the programs run in test/kernel/splice-bound.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Btf, BtfKind } from '../../src/dataplane/btf.js';
import {
  SPLICE_BTF,
  SPLICE_BUDGET_DEFAULT,
  SPLICE_KFUNCS,
  decideSplice,
  formatSize,
  parseSize,
  parseSpliceBudget,
  spliceBtfMissing,
  wantOf,
} from '../../src/dataplane/splice.js';
import { UserError } from '../../src/util/errors.js';

const MiB = 1 << 20;

test('sizes: bytes, KiB, MiB, GiB (K/KB/KiB alike), spaces and case ignored; anything else is not a size', () => {
  assert.equal(parseSize('4194304'), 4 * MiB);
  assert.equal(parseSize('4MiB'), 4 * MiB);
  assert.equal(parseSize('4 mb'), 4 * MiB);
  assert.equal(parseSize('4M'), 4 * MiB);
  assert.equal(parseSize('512KiB'), 512 * 1024);
  assert.equal(parseSize('1g'), 1024 * MiB);
  assert.equal(parseSize('100b'), 100);
  for (const bad of ['', 'MiB', '4.5MiB', '-1', '4 TiB', '0x10', '4MiBs', '1e6']) assert.equal(parseSize(bad), undefined, bad);
  assert.equal(formatSize(4 * MiB), '4 MiB');
  assert.equal(formatSize(1536 * 1024), '1536 KiB');
  assert.equal(formatSize(1000), '1000 bytes');
});

test('--splice-budget: 1 MiB to 1 GiB; outside, or not a size, one line naming the fix', () => {
  assert.equal(parseSpliceBudget('1MiB'), MiB);
  assert.equal(parseSpliceBudget('1GiB'), 1024 * MiB);
  const err = (text: string, re: RegExp): void =>
    assert.throws(
      () => parseSpliceBudget(text),
      (e: unknown) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n'),
    );
  err('lots', /^--splice-budget 'lots' is not a size: give a size from 1 MiB to 1 GiB, e\.g\. --splice-budget 4MiB \(the default\)$/);
  err('512KiB', /^--splice-budget 512KiB is out of range: give a size from 1 MiB to 1 GiB/);
  err('2GiB', /out of range/);
  err('0', /out of range/);
});

test('decision: on where the kernel can bound it, unless --no-splice; --splice where it cannot is an error', () => {
  const ok = { ok: true };
  const no = { ok: false, reason: 'redirected bytes are not charged' };
  assert.deepEqual(decideSplice('auto', ok, SPLICE_BUDGET_DEFAULT, '6.18.0'), {
    load: true,
    on: true,
    budget: 4 * MiB,
    reason: 'on (bounded: at most 4 MiB unread per direction, then that connection goes through TCP)',
  });
  assert.deepEqual(decideSplice('on', ok, 8 * MiB, '6.18.0').on, true);
  assert.equal(decideSplice('on', ok, 8 * MiB, '6.18.0').budget, 8 * MiB);
  // --no-splice still loads the programs (the switch is a map entry), but splices nothing
  assert.deepEqual(decideSplice('off', ok, SPLICE_BUDGET_DEFAULT, '6.18.0'), { load: true, on: false, budget: 4 * MiB, reason: 'off (--no-splice)' });
  // a kernel that cannot: never loaded, never on, and the reason says why
  for (const want of ['auto', 'off'] as const) {
    const d = decideSplice(want, no, SPLICE_BUDGET_DEFAULT, '6.1.0');
    assert.equal(d.load, false);
    assert.equal(d.on, false);
    assert.equal(d.reason, 'off: kernel 6.1.0 cannot bound the splice backlog: redirected bytes are not charged');
  }
  assert.throws(
    () => decideSplice('on', no, SPLICE_BUDGET_DEFAULT, '6.1.0'),
    (e: unknown) =>
      e instanceof UserError &&
      e.message ===
        '--splice: kernel 6.1.0 cannot bound the splice backlog: redirected bytes are not charged: run without --splice (splicing stays off), or on Linux 6.13 or newer',
  );
  assert.deepEqual([wantOf(undefined), wantOf(true), wantOf(false)], ['auto', 'on', 'off']);
});

/** A raw BTF blob from a list of types (type ids from 1, in order) and their names. */
function btfBlob(types: Array<{ kind: number; name?: string; ref?: number; members?: Array<[string, number]>; extra?: number }>): Buffer {
  const strings: string[] = [''];
  const off = (s: string | undefined): number => {
    if (!s) return 0;
    let o = 0;
    for (const x of strings) {
      if (x === s) return o;
      o += x.length + 1;
    }
    strings.push(s);
    return o;
  };
  const parts: Buffer[] = [];
  for (const t of types) {
    const vlen = t.members?.length ?? 0;
    const h = Buffer.alloc(12);
    h.writeUInt32LE(off(t.name), 0);
    h.writeUInt32LE(((t.kind & 0x1f) << 24) | vlen, 4);
    h.writeUInt32LE(t.ref ?? 4, 8);
    parts.push(h);
    if (t.kind === BtfKind.INT) parts.push(Buffer.alloc(4));
    for (const [name, type] of t.members ?? []) {
      const m = Buffer.alloc(12);
      m.writeUInt32LE(off(name), 0);
      m.writeUInt32LE(type, 4);
      parts.push(m);
    }
  }
  const typeSec = Buffer.concat(parts);
  const strSec = Buffer.from(strings.map((s) => `${s}\0`).join(''));
  const hdr = Buffer.alloc(24);
  hdr.writeUInt16LE(0xeb9f, 0);
  hdr.writeUInt8(1, 2);
  hdr.writeUInt32LE(24, 4);
  hdr.writeUInt32LE(0, 8);
  hdr.writeUInt32LE(typeSec.length, 12);
  hdr.writeUInt32LE(typeSec.length, 16);
  hdr.writeUInt32LE(strSec.length, 20);
  return Buffer.concat([hdr, typeSec, strSec]);
}

test('BTF reader: member paths through typedefs and anonymous members, functions by name', () => {
  const btf = new Btf(
    btfBlob([
      { kind: BtfKind.INT, name: 'int' }, // 1
      { kind: BtfKind.STRUCT, members: [['rmem_alloc', 1]] }, // 2: struct { int rmem_alloc; }
      {
        kind: BtfKind.STRUCT,
        name: 'sock',
        members: [
          ['sk_backlog', 2],
          ['', 4],
        ],
      }, // 3
      { kind: BtfKind.UNION, members: [['skc_cookie', 5]] }, // 4: anonymous union
      { kind: BtfKind.TYPEDEF, name: 'atomic64_t', ref: 6 }, // 5
      { kind: BtfKind.STRUCT, name: 'atomic64', members: [['counter', 1]] }, // 6
      { kind: BtfKind.FUNC, name: 'bpf_cast_to_kern_ctx', ref: 0 }, // 7
      { kind: BtfKind.STRUCT, name: 'bpf_rdonly_cast', members: [] }, // 8: a struct, not a function
    ]),
  );
  assert.equal(btf.hasMember('sock', ['sk_backlog', 'rmem_alloc']), true);
  assert.equal(btf.hasMember('sock', ['skc_cookie', 'counter']), true, 'through an anonymous union and a typedef');
  assert.equal(btf.hasMember('sock', ['sk_backlog', 'nope']), false);
  assert.equal(btf.hasMember('sock', ['rmem_alloc']), false, 'not a member of sock itself');
  assert.equal(btf.hasMember('nosuch', ['x']), false);
  assert.equal(btf.hasFunc('bpf_cast_to_kern_ctx'), true);
  assert.equal(btf.hasFunc('bpf_rdonly_cast'), false, 'a struct of that name is not the function');
  const missing = spliceBtfMissing(btf);
  assert.ok(missing.includes('the kfunc bpf_rdonly_cast (Linux 6.2)'), missing.join('; '));
  assert.ok(!missing.some((m) => m.includes('bpf_cast_to_kern_ctx')));
  assert.ok(missing.includes('struct sk_msg member sk_redir'));
  assert.ok(!missing.includes('struct sock member sk_backlog.rmem_alloc'));
  assert.equal(missing.length, SPLICE_KFUNCS.length - 1 + SPLICE_BTF.length - 1, missing.join('; '));
  assert.throws(() => new Btf(Buffer.alloc(24)), /not BTF/);
});
