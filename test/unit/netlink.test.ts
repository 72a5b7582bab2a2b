// The route netlink messages of src/dataplane/netlink.ts, byte by byte (the kernel test
// test/kernel/pod-netns.test.ts sends them and reads the result back with `ip`), and the source
// routing numbers against bpf/meshlane.h. Pure: no root, no addon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NLM_F, RTM, RT_TABLE_LOCAL, addrAdd, localRouteReplace, ruleAdd, ruleDel } from '../../src/dataplane/netlink.js';
import { SourceRouting } from '../../src/dataplane/layouts.js';
import { packageRoot } from '../../src/util/paths.js';

/** The attributes of a message after its family header: [type, payload]. */
function attrs(m: Buffer, headerLen: number): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  let off = 16 + headerLen;
  while (off < m.length) {
    const len = m.readUInt16LE(off);
    assert.ok(len >= 4, `attribute at ${off}: length ${len}`);
    out.push([m.readUInt16LE(off + 2), m.subarray(off + 4, off + len)]);
    off += (len + 3) & ~3;
  }
  assert.equal(off, m.length, 'attributes fill the message exactly');
  return out;
}

const u32 = (b: Buffer): number => b.readUInt32LE(0);

test('addrAdd: RTM_NEWADDR ::6/128 on ifindex 1, create-exclusive, no flags, scope 0 (as istio-iptables)', () => {
  const m = addrAdd(1, '::6', 128);
  assert.equal(m.readUInt32LE(0), m.length, 'nlmsg_len');
  assert.equal(m.readUInt16LE(4), RTM.NEWADDR);
  assert.equal(m.readUInt16LE(6), NLM_F.REQUEST | NLM_F.CREATE | NLM_F.EXCL);
  assert.deepEqual([m[16], m[17], m[18], m[19], m.readUInt32LE(20)], [10, 128, 0, 0, 1], 'ifaddrmsg: AF_INET6, /128, no flags, scope 0, lo');
  const a = attrs(m, 8);
  const six = Buffer.alloc(16);
  six[15] = 6;
  assert.deepEqual(
    a,
    [
      [2, six],
      [1, six],
    ],
    'IFA_LOCAL and IFA_ADDRESS ::6',
  );
});

test('ruleAdd / ruleDel: fib_rule_hdr with the table in the header only when it fits, priority and table attributes, fwmark with a full mask', () => {
  const local = ruleAdd({ family: 2, priority: 1, table: RT_TABLE_LOCAL });
  assert.equal(local.readUInt16LE(4), RTM.NEWRULE);
  assert.equal(local.readUInt16LE(6), NLM_F.REQUEST | NLM_F.CREATE | NLM_F.EXCL);
  assert.deepEqual([...local.subarray(16, 28)], [2, 0, 0, 0, 255, 0, 0, 1, 0, 0, 0, 0], 'AF_INET, table local, FR_ACT_TO_TBL');
  assert.deepEqual(
    attrs(local, 12).map(([t, p]) => [t, u32(p)]),
    [
      [6, 1],
      [15, 255],
    ],
  );

  const ours = ruleAdd({ family: 10, priority: 0, table: SourceRouting.TABLE, fwmark: SourceRouting.MARK });
  assert.equal(ours[16], 10);
  assert.equal(ours[20], 0, 'a table above 255 is in FRA_TABLE only');
  assert.deepEqual(
    attrs(ours, 12).map(([t, p]) => [t, u32(p)]),
    [
      [6, 0],
      [15, SourceRouting.TABLE],
      [10, SourceRouting.MARK],
      [16, 0xffffffff],
    ],
  );

  const del = ruleDel({ family: 2, priority: 0, table: RT_TABLE_LOCAL });
  assert.equal(del.readUInt16LE(4), RTM.DELRULE);
  assert.equal(del.readUInt16LE(6), NLM_F.REQUEST, 'no create flags on a delete');
  assert.deepEqual(
    attrs(del, 12).map(([t, p]) => [t, u32(p)]),
    [
      [6, 0],
      [15, 255],
    ],
    'priority 0 is sent: the kernel then matches it exactly',
  );
});

test('localRouteReplace: RTM_NEWROUTE local DST dev lo src PREFSRC table T, create-or-replace', () => {
  const m = localRouteReplace('127.0.0.1', 32, 1, '10.244.0.10', SourceRouting.TABLE);
  assert.equal(m.readUInt16LE(4), RTM.NEWROUTE);
  assert.equal(m.readUInt16LE(6), NLM_F.REQUEST | NLM_F.CREATE | NLM_F.REPLACE);
  assert.deepEqual([...m.subarray(16, 24)], [2, 32, 0, 0, 0, 4, 254, 2], 'AF_INET /32, table in RTA_TABLE, static, scope host, RTN_LOCAL');
  assert.deepEqual(
    attrs(m, 12).map(([t, p]) => [t, t === 4 || t === 15 ? u32(p) : [...p].join('.')]),
    [
      [1, '127.0.0.1'],
      [4, 1],
      [7, '10.244.0.10'],
      [15, SourceRouting.TABLE],
    ],
  );
  const m6 = localRouteReplace('::1', 128, 1, 'fd00:244::10', SourceRouting.TABLE);
  assert.equal(m6[16], 10);
  assert.equal(m6[17], 128);
  assert.equal(attrs(m6, 12)[2]![1].toString('hex'), 'fd000244000000000000000000000010');
  assert.throws(() => localRouteReplace('::1', 128, 1, '10.244.0.10', 1), /families differ/);
});

test("the source mark and table are bpf/meshlane.h's", () => {
  const h = readFileSync(join(packageRoot(), 'bpf', 'meshlane.h'), 'utf8');
  const define = (name: string): number => {
    const m = new RegExp(`^#define ${name} (0x[0-9a-f]+|\\d+)\\b`, 'm').exec(h);
    assert.ok(m, `${name} is defined in meshlane.h`);
    return Number(m[1]);
  };
  assert.equal(define('MESHLANE_SOURCE_MARK'), SourceRouting.MARK);
  assert.equal(define('MESHLANE_SOURCE_TABLE'), SourceRouting.TABLE);
});
