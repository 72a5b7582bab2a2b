// What a run collects: every measurement, meshlane's own counters, and the notes and problems the report
// lists. One object, made by main and handed to whoever records into it.
import type { Mode } from './options.js';

export interface Sample {
  round: number;
  mode: Mode;
  figure: string;
  value: number;
  /** keep-alive figures */
  p50_us?: number;
  p99_us?: number;
  errors?: number;
  /** sessions through the client pod's outbound proxy listener / the server pod's inbound listener */
  out?: number;
  in?: number;
  /** connections the load generator opened (expected through each proxy when captured) */
  conns?: number;
  /** the agent's CPU use during the measurement, in cores */
  agentCores?: number;
  /** share of the machine's CPU time that was busy (all processes, also other users of the machine) */
  machineBusy?: number;
  /** CPU used by processes outside the benchmark during the measurement, in cores (an estimate) */
  otherCores?: number;
  /** CPU the hypervisor took from the VM during the measurement (steal), in cores */
  stealCores?: number;
}

export interface Results {
  samples: Sample[];
  /** the agent's stats map after each of its runs, per mode */
  counters: Partial<Record<Mode, Record<string, number>[]>>;
  /** worth knowing, the figures stay valid */
  notes: string[];
  /** the figures are not valid (traffic bypassed a proxy, or went through one it should not have) */
  problems: string[];
  /** what TCP flow control lets the six sockets of the slow-reader path hold at most (bytes):
   * 6 x (tcp_rmem max + tcp_wmem max), read from this machine's sysctls */
  tcpCap?: number;
}

export function newResults(): Results {
  return { samples: [], counters: {}, notes: [], problems: [] };
}
