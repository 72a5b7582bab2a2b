// The agent's readiness as a small typed object: in status.json (`health`), and what the health endpoint
// of a later issue serves. Ready means: the programs are attached, the pins were adopted (the maps are the
// pinned ones), the source's complete state has been applied once, the proxy listeners that predate the
// programs have been adopted (until then inbound to those pods is refused), and the source follows changes
// right now. A source that is down makes the agent not ready, and changes nothing that is pinned.
import type { SourceHealth } from '../sources/source.js';

export interface AgentHealth {
  ready: boolean;
  programsAttached: boolean;
  pinsAdopted: boolean;
  /** the source delivered a complete state and the pipeline applied it */
  firstSync: boolean;
  sourceConnected: boolean;
  /** when the source last heard from its origin (ISO time) */
  sourceLastContact?: string;
  /** the CNI socket serves requests (set once the CNI handler is wired in) */
  cniServing?: boolean;
  /** maps that were full for some pod's last write (that pod keeps its last good entries) */
  fullMaps: string[];
  /** pods whose proxy listeners, older than the programs, are still being adopted at start */
  startupAdoption?: number;
  /** why not ready, one line each */
  reasons: string[];
}

export interface HealthInput {
  programsAttached: boolean;
  pinsAdopted: boolean;
  firstSync: boolean;
  source: SourceHealth;
  fullMaps: string[];
  /** pods whose pre-existing proxy listeners are still being adopted at start (0 or absent: none) */
  startupAdoption?: number;
  cniServing?: boolean;
  /** why not ready, from the conditions other parts registered (ReadinessConditions) */
  extra?: string[];
}

/**
 * Readiness conditions that other parts of the agent add (the CNI server: "the CNI socket serves"), so
 * that /readyz and status.json take them in without this file knowing each part. A condition answers
 * why the agent is not ready, or undefined when it is fine.
 */
export class ReadinessConditions {
  private readonly conditions = new Map<string, () => string | undefined>();

  /** Add (or replace) condition `name`; returns what removes it. */
  add(name: string, notReady: () => string | undefined): () => void {
    this.conditions.set(name, notReady);
    return () => {
      if (this.conditions.get(name) === notReady) this.conditions.delete(name);
    };
  }

  /** One line per condition that is not met, in the order they were added. */
  reasons(): string[] {
    const out: string[] = [];
    for (const [name, check] of this.conditions) {
      let why: string | undefined;
      try {
        why = check();
      } catch (e) {
        why = `${name}: ${(e as Error).message}`;
      }
      if (why !== undefined) out.push(why);
    }
    return out;
  }
}

export function agentHealth(i: HealthInput): AgentHealth {
  const reasons: string[] = [];
  if (!i.pinsAdopted) reasons.push('the BPF objects are not loaded yet');
  if (!i.programsAttached) reasons.push('the programs are not attached yet');
  if (!i.source.synced) reasons.push('the source has not delivered a complete state yet');
  else if (!i.firstSync) reasons.push('the first complete state is being applied');
  if (!i.source.connected) reasons.push(`the source is not connected${i.source.error ? `: ${i.source.error}` : ''}`);
  if (i.cniServing === false) reasons.push('the CNI socket is not serving');
  // until then those pods' inbound connections are refused (fail closed): not ready to serve them
  if ((i.startupAdoption ?? 0) > 0) reasons.push(`the proxy listeners of ${i.startupAdoption} pod(s), older than the programs, are being adopted`);
  reasons.push(...(i.extra ?? []));
  const h: AgentHealth = {
    ready: reasons.length === 0,
    programsAttached: i.programsAttached,
    pinsAdopted: i.pinsAdopted,
    firstSync: i.firstSync,
    sourceConnected: i.source.connected,
    fullMaps: i.fullMaps,
    reasons,
  };
  if (i.source.lastContact !== undefined) h.sourceLastContact = new Date(i.source.lastContact).toISOString();
  if (i.cniServing !== undefined) h.cniServing = i.cniServing;
  if ((i.startupAdoption ?? 0) > 0) h.startupAdoption = i.startupAdoption;
  return h;
}
