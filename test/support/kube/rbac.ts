// RBAC's rule evaluation (plugin/pkg/auth/authorizer/rbac RuleAllows and the rbac/v1 helpers), so a
// test can check that a ClusterRole covers every request the agent made, and names nothing it did
// not use.
import type { RequestInfo } from './requestinfo.js';

export interface PolicyRule {
  verbs: string[];
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

type Attributes = Pick<RequestInfo, 'isResourceRequest' | 'verb' | 'apiGroup' | 'resource' | 'subresource' | 'name' | 'path'>;

const has = (list: readonly string[] | undefined, v: string): boolean => (list ?? []).some((x) => x === '*' || x === v);

function resourceMatches(rule: PolicyRule, combined: string, subresource: string): boolean {
  return (rule.resources ?? []).some((r) => r === '*' || r === combined || (subresource !== '' && r === `*/${subresource}`));
}

function nonResourceURLMatches(rule: PolicyRule, path: string): boolean {
  return (rule.nonResourceURLs ?? []).some((u) => u === '*' || u === path || (u.endsWith('*') && path.startsWith(u.slice(0, -1))));
}

export function ruleAllows(rule: PolicyRule, req: Attributes): boolean {
  if (!has(rule.verbs, req.verb)) return false;
  if (!req.isResourceRequest) return nonResourceURLMatches(rule, req.path);
  const combined = req.subresource ? `${req.resource}/${req.subresource}` : req.resource;
  return (
    has(rule.apiGroups, req.apiGroup) &&
    resourceMatches(rule, combined, req.subresource) &&
    ((rule.resourceNames ?? []).length === 0 || (rule.resourceNames ?? []).includes(req.name))
  );
}

export const allowedBy = (rules: readonly PolicyRule[], req: Attributes): boolean => rules.some((r) => ruleAllows(r, req));

/** the requests no rule allows */
export const notAllowed = <T extends Attributes>(rules: readonly PolicyRule[], reqs: readonly T[]): T[] => reqs.filter((q) => !allowedBy(rules, q));

/** one rule per verb x group x resource (or verb x URL) of `rules`, resourceNames kept */
export function grants(rules: readonly PolicyRule[]): PolicyRule[] {
  const out: PolicyRule[] = [];
  for (const r of rules) {
    for (const verb of r.verbs) {
      for (const url of r.nonResourceURLs ?? []) out.push({ verbs: [verb], nonResourceURLs: [url] });
      for (const group of r.apiGroups ?? []) {
        for (const resource of r.resources ?? []) {
          const g: PolicyRule = { verbs: [verb], apiGroups: [group], resources: [resource] };
          if (r.resourceNames?.length) g.resourceNames = [...r.resourceNames];
          out.push(g);
        }
      }
    }
  }
  return out;
}

/** the single grants (see grants) that no request used: a role wider than what the agent does */
export const unusedGrants = (rules: readonly PolicyRule[], reqs: readonly Attributes[]): PolicyRule[] =>
  grants(rules).filter((g) => !reqs.some((q) => ruleAllows(g, q)));
