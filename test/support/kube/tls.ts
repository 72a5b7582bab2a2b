// A throwaway CA and a server certificate for the test API server, made in-process: a few DER
// encoders and node:crypto's EC keys and ECDSA signatures. No openssl CLI (it is optional on Debian 12
// and a subprocess per server start), no certificate library (node-forge is 1.6 MB for what fits here).
// node:crypto's X509Certificate parses and verifies the result; the TLS handshake of client-node
// (OpenSSL underneath) is the real check.
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

export interface ServerCerts {
  /** PEM of the self-signed CA: what a kubeconfig's certificate-authority-data carries */
  caPem: string;
  /** PEM of the server certificate (signed by the CA) and its PKCS#8 key, for https.createServer */
  certPem: string;
  keyPem: string;
}

export interface CertOptions {
  /** subjectAltName entries: IP addresses and DNS names (default 127.0.0.1, ::1, localhost) */
  hosts?: readonly string[];
  /** validity in days from an hour ago (default 365) */
  days?: number;
}

// ---- DER (X.690), only the types an X.509 v3 certificate needs ----

const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const seq = (...items: Buffer[]): Buffer => tlv(TAG.sequence, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(TAG.set, Buffer.concat(items));
const octets = (b: Buffer): Buffer => tlv(TAG.octetString, b);
const bool = (v: boolean): Buffer => tlv(TAG.boolean, Buffer.from([v ? 0xff : 0x00]));
/** [n] EXPLICIT: a constructed context tag around a whole element */
const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 | n, inner);
/** [n] IMPLICIT on a primitive: the context tag replaces the element's own */
const implicit = (n: number, body: Buffer): Buffer => tlv(0x80 | n, body);

/** INTEGER from unsigned big-endian bytes (a leading 0x00 keeps it positive) */
function uint(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(TAG.integer, (v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

/** BIT STRING whose content is whole bytes (keys, signatures) */
const bits = (b: Buffer): Buffer => tlv(TAG.bitString, Buffer.concat([Buffer.from([0]), b]));

/** BIT STRING of named bits (bit 0 = most significant bit of the first byte), DER-minimal */
function namedBits(set: readonly number[]): Buffer {
  const top = Math.max(...set);
  const bytes = Buffer.alloc((top >> 3) + 1);
  for (const bit of set) bytes[bit >> 3] = (bytes[bit >> 3] ?? 0) | (0x80 >> (bit & 7));
  const unused = 7 - (top & 7);
  return tlv(TAG.bitString, Buffer.concat([Buffer.from([unused]), bytes]));
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const [a = 0, b = 0, ...rest] = parts;
  const out: number[] = [a * 40 + b];
  for (const p of rest) {
    const base128: number[] = [p & 0x7f];
    for (let v = p >>> 7; v > 0; v >>>= 7) base128.unshift(0x80 | (v & 0x7f));
    out.push(...base128);
  }
  return tlv(TAG.oid, Buffer.from(out));
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after */
function time(d: Date): Buffer {
  const iso = d
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:T]/g, '');
  const year = d.getUTCFullYear();
  return year < 2050 ? tlv(TAG.utcTime, Buffer.from(iso.slice(2), 'ascii')) : tlv(TAG.generalizedTime, Buffer.from(iso, 'ascii'));
}

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyId: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyId: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** keyUsage bit numbers (RFC 5280 4.2.1.3) */
const KU = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

const name = (cn: string): Buffer =>
  seq(set(seq(oid(OID.organization), tlv(TAG.utf8String, Buffer.from('meshlane-test')))), set(seq(oid(OID.commonName), tlv(TAG.utf8String, Buffer.from(cn)))));

const extension = (id: string, critical: boolean, value: Buffer): Buffer => (critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value)));

/** subjectPublicKey BIT STRING contents inside a DER SubjectPublicKeyInfo (for the key identifier) */
function keyId(spki: Buffer): Buffer {
  // SPKI = SEQUENCE { AlgorithmIdentifier, BIT STRING }: the key bits are the BIT STRING's tail. For
  // P-256 that is the 65-byte uncompressed point; RFC 5280's method 1 hashes exactly those bytes.
  const point = spki.subarray(spki.length - 65);
  return createHash('sha1').update(point).digest();
}

function sanEntry(host: string): Buffer {
  const v = isIP(host);
  if (v === 4) return implicit(7, Buffer.from(host.split('.').map(Number)));
  if (v === 6) return implicit(7, ipv6Bytes(host));
  return implicit(2, Buffer.from(host, 'ascii'));
}

function ipv6Bytes(addr: string): Buffer {
  const [head = '', tail] = addr.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

interface Issued {
  der: Buffer;
  spki: Buffer;
}

function issue(o: {
  subject: string;
  issuer: string;
  subjectKey: KeyObject;
  signingKey: KeyObject;
  issuerSpki: Buffer;
  extensions: Buffer[];
  days: number;
}): Issued {
  const spki = o.subjectKey.export({ type: 'spki', format: 'der' });
  const notBefore = new Date(Date.now() - 3600_000);
  const notAfter = new Date(notBefore.getTime() + o.days * 86_400_000);
  const serial = randomBytes(16);
  serial[0] = (serial[0] ?? 0) & 0x7f;
  const sigAlg = seq(oid(OID.ecdsaWithSha256));
  const exts = [
    ...o.extensions,
    extension(OID.subjectKeyId, false, octets(keyId(spki))),
    extension(OID.authorityKeyId, false, seq(implicit(0, keyId(o.issuerSpki)))),
  ];
  const tbs = seq(
    explicit(0, uint(Buffer.from([2]))), // v3
    uint(serial),
    sigAlg,
    name(o.issuer),
    seq(time(notBefore), time(notAfter)),
    name(o.subject),
    spki,
    explicit(3, seq(...exts)),
  );
  const signature = sign('sha256', tbs, o.signingKey); // ECDSA-Sig-Value in DER by default
  return { der: seq(tbs, sigAlg, bits(signature)), spki };
}

function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}

/** A fresh CA and a server certificate for `hosts`, both P-256 / ECDSA-SHA256. */
export function makeServerCerts(opts: CertOptions = {}): ServerCerts {
  const hosts = opts.hosts ?? ['127.0.0.1', '::1', 'localhost'];
  const days = opts.days ?? 365;
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const srv = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const caSpki = ca.publicKey.export({ type: 'spki', format: 'der' });
  const caCert = issue({
    subject: 'meshlane-test-ca',
    issuer: 'meshlane-test-ca',
    subjectKey: ca.publicKey,
    signingKey: ca.privateKey,
    issuerSpki: caSpki,
    days,
    extensions: [
      extension(OID.basicConstraints, true, seq(bool(true))),
      extension(OID.keyUsage, true, namedBits([KU.digitalSignature, KU.keyCertSign, KU.cRLSign])),
    ],
  });
  const srvCert = issue({
    subject: 'kube-apiserver',
    issuer: 'meshlane-test-ca',
    subjectKey: srv.publicKey,
    signingKey: ca.privateKey,
    issuerSpki: caSpki,
    days,
    extensions: [
      extension(OID.basicConstraints, true, seq()),
      extension(OID.keyUsage, true, namedBits([KU.digitalSignature])),
      extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
      extension(OID.subjectAltName, false, seq(...hosts.map(sanEntry))),
    ],
  });
  return {
    caPem: pem('CERTIFICATE', caCert.der),
    certPem: pem('CERTIFICATE', srvCert.der),
    keyPem: srv.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}
