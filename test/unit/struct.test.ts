// src/dataplane/struct.ts: address text <-> bytes, struct encode/decode with the real layouts, and
// the guards of the fixed-size fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cstr, struct, u32, u32Array, u8, u16, ip6 } from '../../src/dataplane/struct.js';
import { bytesToIp6, ipToBytes } from '../../src/util/ip.js';
import { MAX_PROXY_IDS, PodConfig, PodInfo, PortKey, Cidr4Key, Cidr6Key, NetnsCookie } from '../../src/dataplane/layouts.js';

const hex = (b: Buffer): string => b.toString('hex');

test('ipToBytes / bytesToIp6 round trips, canonical text out', () => {
  const cases: Array<[string, string, string]> = [
    // text in, bytes, canonical text out
    ['::', '00000000000000000000000000000000', '::'],
    ['::1', '00000000000000000000000000000001', '::1'],
    ['fd00::10', 'fd000000000000000000000000000010', 'fd00::10'],
    ['::ffff:10.0.0.1', '00000000000000000000ffff0a000001', '::ffff:a00:1'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008', '1:2:3:4:5:6:7:8'],
    ['a::b:0:0:c', '000a000000000000000b00000000000c', 'a::b:0:0:c'],
    ['1:0:0:2:0:0:0:3', '00010000000000020000000000000003', '1:0:0:2::3'],
    ['1:0:2:3:4:5:6:7', '00010000000200030004000500060007', '1:0:2:3:4:5:6:7'],
    ['FD00:0:0::A', 'fd00000000000000000000000000000a', 'fd00::a'],
    ['1::', '00010000000000000000000000000000', '1::'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221', '64:ff9b::c000:221'],
  ];
  for (const [text, bytes, canon] of cases) {
    const b = ipToBytes(text, 6);
    assert.equal(b.length, 16, text);
    assert.equal(hex(b), bytes, text);
    assert.equal(bytesToIp6(b), canon, text);
    assert.equal(hex(ipToBytes(canon, 6)), bytes, `${canon} back to bytes`);
  }
});

test('ipToBytes: IPv4 text, and IPv4 in an IPv6 field becomes IPv4-mapped', () => {
  assert.equal(hex(ipToBytes('10.0.0.1', 4)), '0a000001');
  assert.equal(hex(ipToBytes('255.255.255.255', 4)), 'ffffffff');
  assert.equal(hex(ipToBytes('10.96.0.10', 6)), '00000000000000000000ffff0a60000a');
  assert.equal(bytesToIp6(ipToBytes('10.96.0.10', 6)), '::ffff:a60:a');
});

test('ipToBytes rejects what is not an address of the family', () => {
  assert.throws(() => ipToBytes('fd00::1', 4), TypeError);
  assert.throws(() => ipToBytes('10.0.0', 4), TypeError);
  assert.throws(() => ipToBytes('10.0.0.256', 4), TypeError);
  assert.throws(() => ipToBytes('fd00::1::2', 6), TypeError);
  assert.throws(() => ipToBytes('', 6), TypeError);
  assert.throws(() => ipToBytes('1:2:3:4:5:6:7:8:9', 6), TypeError);
});

test('PodConfig encode/decode round trip', () => {
  const v = {
    pod_id: 42,
    flags: 0xb3,
    outbound_port: 15001,
    inbound_port: 15006,
    tunnel_port: 15008,
    dns_port: 15053,
    ip4: '10.244.0.10',
    ip6: 'fd00:244::10',
    n_uids: 2,
    n_gids: 1,
    uids: [1337, 0xffffffff, 0, 0, 0, 0, 0, 0],
    gids: [1337, 0, 0, 0, 0, 0, 0, 0],
  };
  const b = PodConfig.encode(v);
  assert.equal(b.length, PodConfig.size);
  assert.deepEqual(PodConfig.decode(b), v);
  // layout: natural alignment, little-endian integers, addresses in network order
  const off = Object.fromEntries(PodConfig.fields.map((f) => [f.name, f.offset]));
  assert.equal(b.readUInt32LE(off.pod_id!), 42);
  assert.equal(b.readUInt16LE(off.outbound_port!), 15001);
  assert.equal(hex(b.subarray(off.ip4!, off.ip4! + 4)), '0af4000a');
  assert.equal(hex(b.subarray(off.ip6!, off.ip6! + 16)), 'fd000244000000000000000000000010');
  assert.equal(b.readUInt32LE(off.uids! + 4), 0xffffffff);
  assert.equal(PodConfig.size, 4 + 4 + 2 * 4 + 4 + 16 + 4 + 4 + 4 * MAX_PROXY_IDS * 2);
  // short uid arrays are zero-filled in the encoding
  const short = PodConfig.decode(PodConfig.encode({ ...v, uids: [7], gids: [] }));
  assert.deepEqual(short.uids, [7, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(short.gids, [0, 0, 0, 0, 0, 0, 0, 0]);
});

test('decode refuses a buffer of the wrong size', () => {
  assert.throws(() => PodConfig.decode(Buffer.alloc(PodConfig.size - 1)), RangeError);
  assert.throws(() => PodConfig.decode(Buffer.alloc(PodConfig.size + 1)), RangeError);
});

test('keys: port, CIDR and cookie layouts round trip', () => {
  const pk = { pod_id: 3, port: 8080, kind: 2, pad: 0 };
  assert.equal(PortKey.size, 8);
  assert.deepEqual(PortKey.decode(PortKey.encode(pk)), pk);
  const c4 = { prefixlen: 72, pod_id: 3, kind: 1, addr: '10.0.0.0' };
  assert.deepEqual(Cidr4Key.decode(Cidr4Key.encode(c4)), c4);
  const c6 = { prefixlen: 128, pod_id: 3, kind: 1, addr: 'fd00::' };
  assert.deepEqual(Cidr6Key.decode(Cidr6Key.encode(c6)), c6);
  assert.equal(NetnsCookie.decode(NetnsCookie.encode(0xfedcba9876543210n)), 0xfedcba9876543210n);
});

test('struct: natural alignment and padding, as the C compiler lays it out', () => {
  const s = struct('t', { a: u8, b: u32, c: u16, d: ip6 });
  assert.deepEqual(
    s.fields.map((f) => [f.name, f.offset]),
    [
      ['a', 0],
      ['b', 4],
      ['c', 8],
      ['d', 10],
    ],
  );
  assert.equal(s.size, 28);
  assert.equal(s.align, 4);
});

test('cstr: round trip; a too long text is truncated and still ends in a NUL', () => {
  const f = cstr(8);
  const b = Buffer.alloc(8);
  f.write(b, 0, 'abc');
  assert.equal(f.read(b, 0), 'abc');
  const c = Buffer.alloc(8); // struct encode starts from zeroed memory
  f.write(c, 0, 'abcdefghijkl');
  assert.equal(c[7], 0, 'the last byte stays NUL');
  assert.equal(f.read(c, 0), 'abcdefg');
  const exact = Buffer.alloc(8);
  f.write(exact, 0, 'abcdefgh'); // 8 chars do not fit with the NUL
  assert.equal(exact[7], 0);
  assert.equal(f.read(exact, 0), 'abcdefg');

  const info = { namespace_: 'n'.repeat(100), name: 'web', uid: 'u'.repeat(48) };
  const decoded = PodInfo.decode(PodInfo.encode(info));
  assert.equal(decoded.namespace_, 'n'.repeat(63));
  assert.equal(decoded.uid, 'u'.repeat(47));
  assert.equal(decoded.name, 'web');
  assert.deepEqual(PodInfo.decode(PodInfo.encode({ namespace_: 'shop', name: 'web-1', uid: 'uid-web-1' })), {
    namespace_: 'shop',
    name: 'web-1',
    uid: 'uid-web-1',
  });
});

test('u32Array: a too long array throws; a short one writes only its entries', () => {
  const f = u32Array(3);
  const b = Buffer.alloc(12);
  assert.throws(() => f.write(b, 0, [1, 2, 3, 4]), RangeError);
  f.write(b, 0, [5]);
  assert.deepEqual(f.read(b, 0), [5, 0, 0]);
  assert.throws(() => PodConfig.encode({ ...PodConfig.decode(Buffer.alloc(PodConfig.size)), uids: Array(MAX_PROXY_IDS + 1).fill(1) }), RangeError);
});
