// The BPF objects meshlane loads and where each program attaches. One object per hook family,
// all sharing the maps of layouts.ts (pinned once, reused by every object).
import { AttachType } from './uapi.js';

export interface ProgramDef {
  /** the function name in the object, also the link's pin name */
  name: string;
  attachType: number;
  /** what it does, for status / dump */
  what: string;
}

export interface ObjectDef {
  file: string;
  programs: ProgramDef[];
}

export const OBJECTS: ObjectDef[] = [
  {
    file: 'connect.bpf.o',
    programs: [
      { name: 'meshlane_connect4', attachType: AttachType.CGROUP_INET4_CONNECT, what: 'outbound decision and redirect (IPv4)' },
      { name: 'meshlane_connect6', attachType: AttachType.CGROUP_INET6_CONNECT, what: 'outbound decision and redirect (IPv6)' },
    ],
  },
  {
    file: 'sockops.bpf.o',
    programs: [{ name: 'meshlane_sockops', attachType: AttachType.CGROUP_SOCK_OPS, what: 'original destination hand-over to the proxy' }],
  },
  {
    file: 'sockopt.bpf.o',
    programs: [{ name: 'meshlane_getsockopt', attachType: AttachType.CGROUP_GETSOCKOPT, what: 'SO_ORIGINAL_DST for the proxy' }],
  },
];
