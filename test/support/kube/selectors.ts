// Label and field selectors with the grammar and meaning of k8s.io/apimachinery's labels and fields
// packages: `a=b`, `a==b`, `a!=b` (true when the label is absent), `a in (x,y)`, `a notin (x,y)` (true
// when absent), `a` (exists), `!a` (absent), `a>1`, `a<1`; fields take `=`, `==`, `!=` with `\,` `\=`
// `\\` escapes. A malformed selector is a 400, as on the real server.
import { StatusError } from './status.js';

type LabelOp = 'exists' | 'notexists' | 'eq' | 'ne' | 'in' | 'notin' | 'gt' | 'lt';

export interface LabelRequirement {
  key: string;
  op: LabelOp;
  values: string[];
}

export interface LabelSelector {
  readonly text: string;
  readonly requirements: readonly LabelRequirement[];
  matches(labels: Readonly<Record<string, string>> | undefined): boolean;
}

export interface FieldRequirement {
  field: string;
  op: 'eq' | 'ne';
  value: string;
}

export interface FieldSelector {
  readonly text: string;
  readonly requirements: readonly FieldRequirement[];
  matches(fields: Readonly<Record<string, string>>): boolean;
  /** the value `field` must equal for anything to match (the real RequiresExactMatch) */
  exact(field: string): string | undefined;
}

// ---- labels ----

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function validKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return NAME.test(key);
  const prefix = key.slice(0, slash);
  return prefix.length <= 253 && DNS_SUBDOMAIN.test(prefix) && NAME.test(key.slice(slash + 1));
}

const validValue = (v: string): boolean => v === '' || NAME.test(v);

type Token = { t: 'id'; v: string } | { t: '!' | '=' | '==' | '!=' | '(' | ')' | ',' | '>' | '<' | 'end' };

function tokenize(s: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const two = s.slice(i, i + 2);
    if (two === '==' || two === '!=') {
      out.push({ t: two });
      i += 2;
      continue;
    }
    if ('!=(),<>'.includes(c)) {
      out.push({ t: c as '!' | '=' | '(' | ')' | ',' | '<' | '>' });
      i++;
      continue;
    }
    let j = i;
    while (j < s.length && !/[\s!=(),<>]/.test(s[j] as string)) j++;
    out.push({ t: 'id', v: s.slice(i, j) });
    i = j;
  }
  out.push({ t: 'end' });
  return out;
}

function labelMatches(r: LabelRequirement, labels: Readonly<Record<string, string>>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const v = labels[r.key];
  switch (r.op) {
    case 'exists':
      return has;
    case 'notexists':
      return !has;
    case 'eq':
    case 'in':
      return has && r.values.includes(v as string);
    case 'ne':
    case 'notin':
      return !has || !r.values.includes(v as string);
    case 'gt':
    case 'lt': {
      if (!has || !/^-?\d+$/.test(v as string)) return false;
      const n = Number(v);
      const bound = Number(r.values[0]);
      return r.op === 'gt' ? n > bound : n < bound;
    }
  }
}

export function parseLabelSelector(text: string): LabelSelector {
  const bad = (why: string): StatusError => StatusError.badRequest(`unable to parse requirement: ${why} in label selector "${text}"`);
  const toks = tokenize(text);
  let p = 0;
  const peek = (): Token => toks[p] as Token;
  const next = (): Token => toks[p++] as Token;
  const key = (): string => {
    const k = next();
    if (k.t !== 'id' || !validKey(k.v)) throw bad(`invalid label key ${k.t === 'id' ? JSON.stringify(k.v) : k.t}`);
    return k.v;
  };
  const value = (): string => {
    const v = peek();
    if (v.t !== 'id') return ''; // `a=` selects the empty value, as the real parser allows
    p++;
    if (!validValue(v.v)) throw bad(`invalid label value ${JSON.stringify(v.v)}`);
    return v.v;
  };
  const reqs: LabelRequirement[] = [];
  if (peek().t !== 'end') {
    for (;;) {
      if (peek().t === '!') {
        p++;
        reqs.push({ key: key(), op: 'notexists', values: [] });
      } else {
        const k = key();
        const op = peek();
        if (op.t === ',' || op.t === 'end') reqs.push({ key: k, op: 'exists', values: [] });
        else if (op.t === '=' || op.t === '==' || op.t === '!=') {
          p++;
          reqs.push({ key: k, op: op.t === '!=' ? 'ne' : 'eq', values: [value()] });
        } else if (op.t === '>' || op.t === '<') {
          p++;
          const v = value();
          if (!/^-?\d+$/.test(v)) throw bad(`for 'gt', 'lt' operators, exactly one integer value is required`);
          reqs.push({ key: k, op: op.t === '>' ? 'gt' : 'lt', values: [v] });
        } else if (op.t === 'id' && (op.v === 'in' || op.v === 'notin')) {
          p++;
          if (next().t !== '(') throw bad(`expected '(' after ${op.v}`);
          const values: string[] = [];
          if (peek().t === ')') throw bad(`for 'in', 'notin' operators, values set can't be empty`);
          for (;;) {
            values.push(value());
            const sep = next();
            if (sep.t === ')') break;
            if (sep.t !== ',') throw bad(`expected ',' or ')' in the values of ${k}`);
          }
          reqs.push({ key: k, op: op.v, values });
        } else throw bad(`unexpected ${op.t === 'id' ? JSON.stringify(op.v) : op.t} after ${k}`);
      }
      const sep = next();
      if (sep.t === 'end') break;
      if (sep.t !== ',') throw bad(`expected ','`);
    }
  }
  return {
    text,
    requirements: reqs,
    matches: (labels) => reqs.every((r) => labelMatches(r, labels ?? {})),
  };
}

// ---- fields ----

/** Split on separators not escaped with a backslash; unescape afterwards. */
function splitUnescaped(s: string, sep: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (c === '\\' && i + 1 < s.length) {
      cur += c + (s[i + 1] as string);
      i++;
    } else if (c === sep) {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  return parts;
}

function unescapeField(v: string, text: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i] as string;
    if (c === '\\') {
      const n = v[i + 1];
      if (n !== '\\' && n !== ',' && n !== '=') throw StatusError.badRequest(`invalid field selector "${text}": invalid escape sequence`);
      out += n;
      i++;
    } else if (c === ',' || c === '=') throw StatusError.badRequest(`invalid field selector "${text}": unescaped ${c}`);
    else out += c;
  }
  return out;
}

/** Parse a field selector; `supported` lists the field labels the resource allows (others are a 400). */
export function parseFieldSelector(text: string, supported: readonly string[]): FieldSelector {
  const reqs: FieldRequirement[] = [];
  for (const term of text === '' ? [] : splitUnescaped(text, ',')) {
    // as the real parser: the first unescaped operator, trying `!=`, `==`, `=` at each position
    let m: { at: number; op: FieldRequirement['op']; len: number } | undefined;
    for (let i = 0; i < term.length && !m; i++) {
      if (term[i] === '\\') {
        i++;
        continue;
      }
      for (const [sym, op] of [
        ['!=', 'ne'],
        ['==', 'eq'],
        ['=', 'eq'],
      ] as const) {
        if (term.startsWith(sym, i)) {
          m = { at: i, op, len: sym.length };
          break;
        }
      }
    }
    if (!m) throw StatusError.badRequest(`invalid field selector "${text}": "${term}" is not a valid field requirement`);
    const field = term.slice(0, m.at).trim();
    const value = unescapeField(term.slice(m.at + m.len), text);
    if (!supported.includes(field)) throw StatusError.badRequest(`field label not supported: ${field}`);
    reqs.push({ field, op: m.op, value });
  }
  return {
    text,
    requirements: reqs,
    matches: (fields) => reqs.every((r) => ((fields[r.field] ?? '') === r.value) === (r.op === 'eq')),
    exact: (field) => reqs.find((r) => r.field === field && r.op === 'eq')?.value,
  };
}
