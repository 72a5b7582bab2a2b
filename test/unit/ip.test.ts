// src/util/ip.ts: the one IP module (Go netip parsing rules, RFC 5952 text, the 16-byte form, prefixes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AF_INET,
  AF_INET6,
  bytesToIp6,
  bytesToPlainIp,
  canonicalIp,
  formatIp,
  ip6Text,
  ipFamily,
  ipToBytes,
  parseIp,
  parsePrefix,
  plainIp,
} from '../../src/util/ip.js';

const hex = (b: ArrayLike<number>): string => Buffer.from(Array.from(b)).toString('hex');

test("the address families are the kernel's numbers", () => {
  assert.equal(AF_INET, 2);
  assert.equal(AF_INET6, 10);
});

test('special IPv6 addresses: ::, ::1, ::6 and the IPv4-mapped form', () => {
  const cases: Array<[string, string, string]> = [
    ['::', '00000000000000000000000000000000', '::'],
    ['::1', '00000000000000000000000000000001', '::1'],
    ['::6', '00000000000000000000000000000006', '::6'],
    ['0:0:0:0:0:0:0:6', '00000000000000000000000000000006', '::6'],
    ['::ffff:10.0.0.1', '00000000000000000000ffff0a000001', '::ffff:a00:1'],
    ['::FFFF:a00:1', '00000000000000000000ffff0a000001', '::ffff:a00:1'],
    ['::1.2.3.4', '00000000000000000000000001020304', '::102:304'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304', '1:2:3:4:5:6:102:304'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221', '64:ff9b::c000:221'],
    ['1::', '00010000000000000000000000000000', '1::'],
    ['1:0:0:2:0:0:0:3', '00010000000000020000000000000003', '1:0:0:2::3'],
    ['1:0:0:2:0:0:3:4', '00010000000000020000000000030004', '1::2:0:0:3:4'],
    ['0001:0db8::0001', '00010db8000000000000000000000001', '1:db8::1'],
  ];
  for (const [text, bytes, canon] of cases) {
    const ip = parseIp(text);
    assert.ok(ip, text);
    assert.equal(ip.family, 6, text);
    assert.equal(hex(ip.bytes), bytes, text);
    assert.equal(formatIp(6, ip.bytes), canon, text);
    assert.equal(canonicalIp(text)?.addr, canon, text);
    assert.equal(`[${canon}]`, new URL(`http://[${text}]`).hostname, `${text}: the text Node's URL parser prints`);
    assert.equal(hex(ipToBytes(text, 6)), bytes, text);
    assert.equal(bytesToIp6(ipToBytes(canon, 6)), canon, `${canon} round trip`);
  }
});

test('IPv4: text, bytes, and the IPv4-mapped 16-byte form', () => {
  assert.deepEqual(parseIp('10.244.0.10'), { family: 4, bytes: [10, 244, 0, 10] });
  assert.deepEqual(parseIp('0.0.0.0'), { family: 4, bytes: [0, 0, 0, 0] });
  assert.equal(hex(ipToBytes('255.255.255.255', 4)), 'ffffffff');
  assert.equal(hex(ipToBytes('10.244.0.10', 6)), '00000000000000000000ffff0af4000a');
  assert.equal(ip6Text('10.244.0.10'), '::ffff:af4:a');
  assert.equal(ip6Text('FD00::A'), 'fd00::a');
  assert.equal(ip6Text('nope'), undefined);
  assert.equal(ipFamily('10.0.0.1'), 4);
  assert.equal(ipFamily('::ffff:10.0.0.1'), 6, 'IPv4-mapped text is an IPv6 address (netip Is6)');
  assert.equal(ipFamily('x'), undefined);
});

test('decoding a 16-byte key back to plain text: IPv4-mapped as the dotted quad', () => {
  assert.equal(bytesToPlainIp(ipToBytes('10.244.0.10', 6)), '10.244.0.10');
  assert.equal(bytesToPlainIp(ipToBytes('fd00::10', 6)), 'fd00::10');
  assert.equal(bytesToPlainIp(ipToBytes('::', 6)), '::');
  assert.equal(bytesToPlainIp(ipToBytes('::1.2.3.4', 6)), '::102:304', 'IPv4-compatible is not IPv4-mapped');
  assert.equal(plainIp('::ffff:af4:a'), '10.244.0.10');
  assert.equal(plainIp('::ffff:0:1'), '0.0.0.1');
  assert.equal(plainIp('fd00::10'), 'fd00::10');
  assert.equal(plainIp('::ffff:1'), '::ffff:1', 'not mapped: ffff is the 7th group');
  assert.equal(plainIp('garbage'), 'garbage', 'what is not an address passes through');
  assert.throws(() => bytesToIp6([1, 2, 3, 4]), RangeError);
});

test("invalid addresses: what Go's netip.ParseAddr rejects, plus zones", () => {
  const bad = [
    '',
    ' ',
    '1',
    '1.2.3',
    '1.2.3.4.5',
    '1.2.3.256',
    '01.2.3.4',
    '1.2.3.04',
    '1..2.3',
    '.1.2.3',
    '1.2.3.',
    '1.2.3.4 ',
    ' 1.2.3.4',
    '\ufeff1.2.3.4',
    '1.2.3.-4',
    '0x1.2.3.4',
    '١.2.3.4',
    ':',
    ':::',
    '1:::2',
    '1::2::3',
    ':1::',
    '1::2:',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '::1:2:3:4:5:6:7:8',
    '00001::',
    '1:2:3:4:5:6:7:10000',
    'g::1',
    'fe80::1%eth0',
    'fe80::1%',
    '%eth0',
    '1.2.3.4::',
    '::1.2.3.4:5',
    '::01.2.3.4',
    '1:2:3:4:5:6:7:1.2.3.4',
    '1:2:3:4:5:6::1.2.3.4',
    '::ffff:1.2.3',
    '[::1]',
    '::1/128',
  ];
  for (const s of bad) {
    assert.equal(parseIp(s), undefined, JSON.stringify(s));
    assert.equal(canonicalIp(s), undefined, JSON.stringify(s));
    assert.throws(() => ipToBytes(s, 6), TypeError, JSON.stringify(s));
  }
  assert.throws(() => ipToBytes('fd00::1', 4), TypeError);
  assert.throws(() => ipToBytes('::ffff:10.0.0.1', 4), TypeError, 'an IPv4-mapped address is not an IPv4 one');
});

test('prefixes: host bits cleared, the /bits part required, no sign or leading zero in it', () => {
  assert.deepEqual(parsePrefix('10.255.1.1/12'), { family: 4, addr: '10.240.0.0', prefix: 12 });
  assert.deepEqual(parsePrefix('0.0.0.0/0'), { family: 4, addr: '0.0.0.0', prefix: 0 });
  assert.deepEqual(parsePrefix('1.2.3.4/32'), { family: 4, addr: '1.2.3.4', prefix: 32 });
  assert.deepEqual(parsePrefix('::/0'), { family: 6, addr: '::', prefix: 0 });
  assert.deepEqual(parsePrefix('::1/128'), { family: 6, addr: '::1', prefix: 128 });
  assert.deepEqual(parsePrefix('FD00:1:2:3::5/63'), { family: 6, addr: 'fd00:1:2:2::', prefix: 63 });
  assert.deepEqual(parsePrefix('::ffff:10.1.2.3/104'), { family: 6, addr: '::ffff:a00:0', prefix: 104 });
  for (const s of [
    '10.0.0.0',
    '10.0.0.0/',
    '10.0.0.0/33',
    '10.0.0.0/08',
    '10.0.0.0/+8',
    '10.0.0.0/-1',
    '10.0.0.0/8 ',
    ' 10.0.0.0/8',
    '::/129',
    'fe80::1%eth0/64',
    '10.0.0.0/8/8',
    '/8',
    '*',
    '010.0.0.0/8',
    '10.0.0.0/0x8',
    '10.0.0.0/1000',
  ]) {
    assert.equal(parsePrefix(s), undefined, JSON.stringify(s));
  }
});

test("seeded round trip: random addresses print as Node's URL parser prints them and parse back", () => {
  let seed = 0x5eed;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  for (let n = 0; n < 2000; n++) {
    // groups that are often zero, to exercise the :: placement
    const bytes: number[] = [];
    for (let g = 0; g < 8; g++) {
      const v = rnd() < 0.5 ? 0 : Math.floor(rnd() * 0x10000);
      bytes.push(v >> 8, v & 0xff);
    }
    const text = formatIp(6, bytes);
    assert.equal(`[${text}]`, new URL(`http://[${text}]`).hostname, `seed 0x5eed case ${n}: ${text}`);
    assert.equal(hex(parseIp(text)!.bytes), hex(bytes), `seed 0x5eed case ${n}: ${text}`);
    assert.equal(hex(parseIp(text.toUpperCase())!.bytes), hex(bytes), `seed 0x5eed case ${n}: upper case ${text}`);
    const v4 = bytes.slice(0, 4).join('.');
    assert.deepEqual(parseIp(v4), { family: 4, bytes: bytes.slice(0, 4) }, v4);
  }
});
