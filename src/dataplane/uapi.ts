// The numbers of the kernel's BPF uapi (linux/bpf.h) that meshlane uses, by name.
export const AttachType = {
  CGROUP_SOCK_OPS: 3,
  SK_MSG_VERDICT: 7,
  CGROUP_INET4_CONNECT: 10,
  CGROUP_INET6_CONNECT: 11,
  CGROUP_UDP4_SENDMSG: 14,
  CGROUP_UDP6_SENDMSG: 15,
  CGROUP_UDP4_RECVMSG: 19,
  CGROUP_UDP6_RECVMSG: 20,
  CGROUP_GETSOCKOPT: 21,
  CGROUP_INET4_GETPEERNAME: 29,
  CGROUP_INET6_GETPEERNAME: 30,
  SK_LOOKUP: 36,
} as const;

export const ProgType = {
  SOCK_OPS: 13,
  SK_MSG: 16,
  CGROUP_SOCK_ADDR: 18,
  CGROUP_SOCKOPT: 25,
  SK_LOOKUP: 30,
} as const;

export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LPM_TRIE: 11,
  SOCKHASH: 18,
  SK_STORAGE: 24,
} as const;

/** map_flags (BPF_F_*) */
export const MapFlags = { NO_PREALLOC: 1 << 0 } as const;

export const MapUpdate = { ANY: 0, NOEXIST: 1, EXIST: 2 } as const;
