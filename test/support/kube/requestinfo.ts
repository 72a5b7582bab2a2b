// What a request means to authorization: the decoding of k8s.io/apiserver's RequestInfoFactory
// (request/requestinfo.go), so the request log says verb/resource/subresource/namespace/name exactly
// as RBAC sees them, and a test can hold the agent's ClusterRole against the requests it made.

export interface RequestInfo {
  /** false for /version, /api, /healthz...: RBAC matches those with nonResourceURLs */
  isResourceRequest: boolean;
  /** the path without the query */
  path: string;
  /** RBAC verb: get list watch create update patch delete deletecollection (or the lower-case method) */
  verb: string;
  apiPrefix: string;
  apiGroup: string;
  apiVersion: string;
  namespace: string;
  resource: string;
  subresource: string;
  name: string;
  /** path segments after the version (and after namespaces/<ns> when that names the scope) */
  parts: string[];
}

const API_PREFIXES = new Set(['api', 'apis']);
const GROUPLESS_API_PREFIXES = new Set(['api']);
/** verbs that appear as a path segment ahead of the resource */
const SPECIAL_VERBS = new Set(['proxy', 'watch']);
const SPECIAL_VERBS_NO_SUBRESOURCES = new Set(['proxy']);
/** subresources of a namespace object itself (/api/v1/namespaces/<ns>/status) */
const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);

const METHOD_VERB: Record<string, string> = {
  POST: 'create',
  GET: 'get',
  HEAD: 'get',
  PUT: 'update',
  PATCH: 'patch',
  DELETE: 'delete',
};

/** strconv.ParseBool's true, which the query parameter decoding uses */
export const isTrue = (v: string | null): boolean => v !== null && ['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v);

/** a path segment that can be an object name (path.IsValidPathSegmentName) */
const validSegment = (s: string): boolean => s !== '.' && s !== '..' && !s.includes('/') && !s.includes('%');

/** metadata.name=<x> when the field selector pins it (fields.Selector.RequiresExactMatch) */
function exactName(fieldSelector: string | null): string | undefined {
  if (!fieldSelector) return undefined;
  for (const term of fieldSelector.split(',')) {
    const m = /^\s*metadata\.name\s*(==|=)(.*)$/.exec(term);
    if (m) return m[2];
  }
  return undefined;
}

export function requestInfo(method: string, url: URL): RequestInfo {
  const path = url.pathname;
  const info: RequestInfo = {
    isResourceRequest: false,
    path,
    verb: method.toLowerCase(),
    apiPrefix: '',
    apiGroup: '',
    apiVersion: '',
    namespace: '',
    resource: '',
    subresource: '',
    name: '',
    parts: [],
  };
  let cur = path
    .replace(/^\/+|\/+$/g, '')
    .split('/')
    .map(decodeURIComponent);
  if (cur.length < 3 || !API_PREFIXES.has(cur[0] as string)) return info; // /api, /api/v1, /version...
  info.apiPrefix = cur[0] as string;
  cur = cur.slice(1);
  if (!GROUPLESS_API_PREFIXES.has(info.apiPrefix)) {
    if (cur.length < 3) return info; // /apis/<group>/<version>: discovery
    info.apiGroup = cur[0] as string;
    cur = cur.slice(1);
  }
  info.isResourceRequest = true;
  info.apiVersion = cur[0] as string;
  cur = cur.slice(1);

  if (SPECIAL_VERBS.has(cur[0] as string)) {
    if (cur.length < 2) return { ...info, isResourceRequest: false, verb: method.toLowerCase() };
    info.verb = cur[0] as string;
    cur = cur.slice(1);
  } else {
    info.verb = METHOD_VERB[method] ?? method.toLowerCase();
  }

  if (cur[0] === 'namespaces') {
    if (cur.length > 1) {
      info.namespace = cur[1] as string;
      // namespaces/<ns>/<resource>...: the resource is the next segment, unless it is a namespace's own subresource
      if (cur.length > 2 && !NAMESPACE_SUBRESOURCES.has(cur[2] as string)) cur = cur.slice(2);
    }
  }
  info.parts = cur;
  if (cur.length >= 3 && !SPECIAL_VERBS_NO_SUBRESOURCES.has(info.verb)) info.subresource = cur[2] as string;
  if (cur.length >= 2) info.name = cur[1] as string;
  if (cur.length >= 1) info.resource = cur[0] as string;

  // a get without a name is a list or a watch; a field selector on metadata.name names the object
  if (!info.name && info.verb === 'get') {
    info.verb = isTrue(url.searchParams.get('watch')) ? 'watch' : 'list';
    const name = exactName(url.searchParams.get('fieldSelector'));
    if (name !== undefined && validSegment(name)) info.name = name;
  }
  if (!info.name && info.verb === 'delete') info.verb = 'deletecollection';
  return info;
}
