// The three PATCH bodies kube-apiserver takes (apply-patch, server-side apply, is not served).
//
// - application/merge-patch+json: RFC 7386. Objects merge key by key, null deletes, anything else
//   (lists included) replaces.
// - application/strategic-merge-patch+json: SIMPLIFIED to RFC 7386. The real server merges some lists
//   by a key from the Go struct tags (containers by name, conditions by type, finalizers as a set...);
//   here every list is replaced, as in a merge patch. For the maps and scalars tests patch (labels,
//   annotations, status.phase, an Event's count/lastTimestamp/message) the two are the same. A patch that
//   uses a strategic-merge directive ($patch, $retainKeys, $setElementOrder/..., $deleteFromPrimitiveList/...)
//   is refused with a 500 that says so, rather than being applied with the wrong meaning.
// - application/json-patch+json: RFC 6902 (add, remove, replace, move, copy, test).
import { StatusError } from './status.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export const PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'] as const;
export type PatchType = (typeof PATCH_TYPES)[number];

export const isPatchType = (t: string): t is PatchType => (PATCH_TYPES as readonly string[]).includes(t);

const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function refuseDirectives(patch: Json, path: string): void {
  if (Array.isArray(patch)) patch.forEach((v, i) => refuseDirectives(v, `${path}[${i}]`));
  if (!isObject(patch)) return;
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) {
      throw new StatusError(
        500,
        `meshlane test API server: strategic merge directive ${k} at ${path || '.'} is not implemented (strategic merge is served as a JSON merge patch)`,
        'InternalError',
      );
    }
    refuseDirectives(v, `${path}.${k}`);
  }
}

export function strategicMergePatch(target: Json | undefined, patch: Json): Json {
  refuseDirectives(patch, '');
  return mergePatch(target, patch);
}

// ---- RFC 6902 ----

interface Op {
  op: string;
  path: string;
  from?: string;
  value?: Json;
}

function pointer(p: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw invalidPatch(`invalid JSON pointer ${JSON.stringify(p)}`);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

const invalidPatch = (msg: string): StatusError => new StatusError(422, `the server rejected our request due to an error in our request: ${msg}`, 'Invalid');

function parentOf(doc: Json, parts: string[], path: string): { parent: Json; key: string } {
  let cur: Json = doc;
  for (const seg of parts.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(seg)] as Json;
    else if (isObject(cur)) cur = cur[seg] as Json;
    else cur = undefined as unknown as Json;
    if (cur === undefined) throw invalidPatch(`doc is missing path: "${path}"`);
  }
  return { parent: cur, key: parts[parts.length - 1] as string };
}

function index(arr: Json[], key: string, path: string, forAdd: boolean): number {
  if (forAdd && key === '-') return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(key)) throw invalidPatch(`invalid array index in "${path}"`);
  const i = Number(key);
  if (i > arr.length || (!forAdd && i === arr.length)) throw invalidPatch(`array index out of bounds in "${path}"`);
  return i;
}

function get(doc: Json, path: string): Json {
  let cur: Json | undefined = doc;
  for (const seg of pointer(path)) {
    if (Array.isArray(cur)) cur = cur[index(cur, seg, path, false)];
    else if (isObject(cur) && Object.prototype.hasOwnProperty.call(cur, seg)) cur = cur[seg];
    else throw invalidPatch(`doc is missing path: "${path}"`);
  }
  return cur as Json;
}

function add(doc: Json, path: string, value: Json): Json {
  const parts = pointer(path);
  if (parts.length === 0) return value;
  const { parent, key } = parentOf(doc, parts, path);
  if (Array.isArray(parent)) parent.splice(index(parent, key, path, true), 0, value);
  else if (isObject(parent)) parent[key] = value;
  else throw invalidPatch(`doc is missing path: "${path}"`);
  return doc;
}

function remove(doc: Json, path: string): Json {
  const parts = pointer(path);
  if (parts.length === 0) throw invalidPatch('cannot remove the whole document');
  const { parent, key } = parentOf(doc, parts, path);
  if (Array.isArray(parent)) parent.splice(index(parent, key, path, false), 1);
  else if (isObject(parent) && Object.prototype.hasOwnProperty.call(parent, key)) delete parent[key];
  else throw invalidPatch(`unable to remove nonexistent key: ${key}: missing value`);
  return doc;
}

export function jsonPatch(target: Json, patch: Json): Json {
  if (!Array.isArray(patch)) throw StatusError.badRequest('a JSON patch must be a list of operations');
  let doc = structuredClone(target);
  for (const raw of patch) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') throw invalidPatch('each operation needs "op" and "path"');
    const op = raw as unknown as Op;
    const needValue = (): Json => {
      if (!Object.prototype.hasOwnProperty.call(raw, 'value')) throw invalidPatch(`"${op.op}" operation needs "value"`);
      return structuredClone(op.value as Json);
    };
    const from = (): string => {
      if (typeof op.from !== 'string') throw invalidPatch(`"${op.op}" operation needs "from"`);
      return op.from;
    };
    switch (op.op) {
      case 'add':
        doc = add(doc, op.path, needValue());
        break;
      case 'remove':
        doc = remove(doc, op.path);
        break;
      case 'replace':
        get(doc, op.path); // replace needs the target to exist
        doc = op.path === '' ? needValue() : add(remove(doc, op.path), op.path, needValue());
        break;
      case 'move': {
        const v = structuredClone(get(doc, from()));
        doc = add(remove(doc, from()), op.path, v);
        break;
      }
      case 'copy':
        doc = add(doc, op.path, structuredClone(get(doc, from())));
        break;
      case 'test':
        if (JSON.stringify(get(doc, op.path)) !== JSON.stringify(needValue())) throw invalidPatch(`testing value ${op.path} failed`);
        break;
      default:
        throw invalidPatch(`unexpected kind: ${op.op}`);
    }
  }
  return doc;
}

export function applyPatch(type: PatchType, target: Json, patch: Json): Json {
  switch (type) {
    case 'application/json-patch+json':
      return jsonPatch(target, patch);
    case 'application/merge-patch+json':
      if (!isObject(patch)) throw StatusError.badRequest('a merge patch must be a JSON object');
      return mergePatch(target, patch);
    case 'application/strategic-merge-patch+json':
      if (!isObject(patch)) throw StatusError.badRequest('a strategic merge patch must be a JSON object');
      return strategicMergePatch(target, patch);
  }
}
