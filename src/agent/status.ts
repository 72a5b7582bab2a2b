// What the agent knows that the maps do not (names, errors, why a pod is not captured yet), written
// atomically to <state dir>/status.json for `meshlane status`.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CaptureSettings, PodRef } from '../model/types.js';

export const DEFAULT_STATE_DIR = '/run/meshlane';

export interface PodStatus {
  ref: PodRef;
  /** captured: in the maps; pending: wanted but its netns is not known yet */
  state: 'captured' | 'pending';
  reason?: string;
  netnsCookie?: string;
  podId?: number;
  ips: string[];
  settings: CaptureSettings;
  errors: string[];
  unsupported: string[];
}

export interface AgentStatus {
  pid: number;
  startedAt: string;
  updatedAt: string;
  bpffs: string;
  cgroupRoot: string;
  source: string;
  sourceError?: string;
  pods: PodStatus[];
  skipped: Array<{ ref: PodRef; reason: string }>;
}

export const statusPath = (stateDir: string): string => join(stateDir, 'status.json');

export function writeStatus(stateDir: string, s: AgentStatus): void {
  mkdirSync(stateDir, { recursive: true });
  const tmp = `${statusPath(stateDir)}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n');
  renameSync(tmp, statusPath(stateDir));
}

export function readStatus(stateDir: string): AgentStatus | undefined {
  try {
    return JSON.parse(readFileSync(statusPath(stateDir), 'utf8')) as AgentStatus;
  } catch {
    return undefined;
  }
}
