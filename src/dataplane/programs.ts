// The BPF objects meshlane loads and where each program attaches. One object per hook family,
// all sharing the maps of layouts.ts (pinned once, reused by every object).
import type { MapName } from './layouts.js';
import { AttachType } from './uapi.js';

export type Attach =
  /** a bpf_link on the cgroup root, pinned under links/<program> */
  | { kind: 'cgroup'; type: number }
  /** bpf_prog_attach to a (pinned) sockmap/sockhash: lives as long as the map; a new load replaces it */
  | { kind: 'sockmap'; type: number; map: MapName }
  /** a bpf_link per captured pod's network namespace (sk_lookup), made by the agent, pinned under
   * links/netns/<program>/<netns cookie> */
  | { kind: 'netns'; type: number };

export interface ProgramDef {
  /** the function name in the object, also the link's pin name */
  name: string;
  attach: Attach;
  /** what it does, for status / dump */
  what: string;
}

export interface ObjectDef {
  file: string;
  programs: ProgramDef[];
  /** loaded only when the kernel can bound the splice backlog (src/dataplane/splice.ts decides): it needs
   * kernel features the rest of meshlane must not depend on */
  splice?: true;
}

const cgroup = (type: number): Attach => ({ kind: 'cgroup', type });

export const OBJECTS: ObjectDef[] = [
  {
    file: 'connect.bpf.o',
    programs: [
      { name: 'meshlane_connect4', attach: cgroup(AttachType.CGROUP_INET4_CONNECT), what: 'outbound decision and redirect (IPv4)' },
      { name: 'meshlane_connect6', attach: cgroup(AttachType.CGROUP_INET6_CONNECT), what: 'outbound decision and redirect (IPv6)' },
    ],
  },
  {
    file: 'sockops.bpf.o',
    programs: [{ name: 'meshlane_sockops', attach: cgroup(AttachType.CGROUP_SOCK_OPS), what: 'original destination hand-over, proxy listeners' }],
  },
  {
    file: 'inbound.bpf.o',
    programs: [{ name: 'meshlane_sk_lookup', attach: { kind: 'netns', type: AttachType.SK_LOOKUP }, what: 'inbound steering to the proxy (per pod netns)' }],
  },
  {
    file: 'sockopt.bpf.o',
    programs: [{ name: 'meshlane_getsockopt', attach: cgroup(AttachType.CGROUP_GETSOCKOPT), what: 'SO_ORIGINAL_DST for the proxy' }],
  },
  {
    file: 'dns.bpf.o',
    programs: [
      { name: 'meshlane_sendmsg4', attach: cgroup(AttachType.CGROUP_UDP4_SENDMSG), what: 'UDP DNS redirect to the proxy (IPv4)' },
      { name: 'meshlane_sendmsg6', attach: cgroup(AttachType.CGROUP_UDP6_SENDMSG), what: 'UDP DNS redirect to the proxy (IPv6)' },
      { name: 'meshlane_recvmsg4', attach: cgroup(AttachType.CGROUP_UDP4_RECVMSG), what: 'DNS replies appear to come from the server (IPv4)' },
      { name: 'meshlane_recvmsg6', attach: cgroup(AttachType.CGROUP_UDP6_RECVMSG), what: 'DNS replies appear to come from the server (IPv6)' },
    ],
  },
  {
    // Serves every redirect (connect and sendmsg). The link pins are named after the programs, so an
    // install that still had them in dns.bpf.o gets them swapped in place.
    file: 'peername.bpf.o',
    programs: [
      {
        name: 'meshlane_getpeername4',
        attach: cgroup(AttachType.CGROUP_INET4_GETPEERNAME),
        what: 'a redirected socket reports the address it dialled as its peer (IPv4)',
      },
      {
        name: 'meshlane_getpeername6',
        attach: cgroup(AttachType.CGROUP_INET6_GETPEERNAME),
        what: 'a redirected socket reports the address it dialled as its peer (IPv6)',
      },
    ],
  },
  {
    file: 'splice.bpf.o',
    splice: true,
    programs: [
      {
        name: 'meshlane_splice',
        attach: { kind: 'sockmap', type: AttachType.SK_MSG_VERDICT, map: 'sock_pairs' },
        what: 'same-node socket splicing with a bounded backlog (sk_msg on sock_pairs)',
      },
      {
        name: 'meshlane_splice_sockops',
        attach: cgroup(AttachType.CGROUP_SOCK_OPS),
        what: 'puts same-node sockets into sock_pairs; takes them out after a fallback',
      },
    ],
  },
];

/** The objects a load takes: all, or all but the splice object. */
export const objectsFor = (splice: boolean): ObjectDef[] => OBJECTS.filter((o) => splice || !o.splice);
/** Programs attached once, on load (cgroup links and sockmap attachments). */
export const staticPrograms = (objects: ObjectDef[] = OBJECTS): ProgramDef[] => objects.flatMap((o) => o.programs).filter((p) => p.attach.kind !== 'netns');
/** Programs attached per pod network namespace by the agent. */
export const netnsPrograms = (objects: ObjectDef[] = OBJECTS): ProgramDef[] => objects.flatMap((o) => o.programs).filter((p) => p.attach.kind === 'netns');
