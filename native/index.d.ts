// The whole native surface of meshlane's addon (native/src/*.cc). Thin: handles and syscalls only,
// every policy decision lives in TypeScript. Every function throws a NativeError on failure.

export interface NativeError extends Error {
  /** positive errno, e.g. 1 (EPERM), 2 (ENOENT) */
  errno: number;
  /** symbolic errno name, e.g. 'EPERM' */
  code: string;
  /** the call that failed, e.g. 'bpf_object__load' */
  syscall: string;
  /** on a load failure: the program the verifier refused, and the verifier / libbpf log */
  program?: string;
  log?: string;
  /** context, when the call had one: the file path, the map name */
  path?: string;
  map?: string;
}

export interface MapSpec {
  name: string;
  /** BPF_MAP_TYPE_* number */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export interface ProgramSpec {
  name: string;
  /** ELF section name, e.g. 'cgroup/connect4' */
  section: string;
  /** BPF_PROG_TYPE_* number */
  type: number;
  /** expected BPF_ATTACH_TYPE number */
  attachType: number;
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface LinkInfo {
  id: number;
  progId: number;
  /** BPF_LINK_TYPE_* */
  type: number;
  /** for cgroup links */
  cgroupId?: number;
  attachType?: number;
}

/** An opened (and later loaded) libbpf bpf_object. Closing it closes its program and map fds. */
export declare class BpfObject {
  constructor(path: string);
  readonly path: string;
  maps(): MapSpec[];
  programs(): ProgramSpec[];
  /** Before load: make the object use an existing map (a pinned one) instead of creating it. */
  reuseMap(name: string, fd: number): void;
  /** Before load: set the initial bytes of a read-only global (a `const volatile` in .rodata). */
  setRodata(varName: string, value: Buffer): void;
  /** Load every program; on verifier refusal throws with .program and .log set. */
  load(): void;
  /** After load: the fd owned by the object (do not close it yourself). */
  mapFd(name: string): number;
  programFd(name: string): number;
  close(): void;
}

/** bpf_link_create for a cgroup attach type; returns a new link fd (caller closes). */
export declare function attachCgroup(progFd: number, cgroupFd: number, attachType: number): number;
/** bpf_link_create on a netns fd (sk_lookup); returns a new link fd. */
export declare function attachNetns(progFd: number, netnsFd: number, attachType: number): number;
/** bpf_prog_attach (e.g. sk_msg on a sockhash). */
export declare function progAttach(progFd: number, targetFd: number, attachType: number): void;
export declare function progDetach(progFd: number, targetFd: number, attachType: number): void;
/** Atomically replace the program behind a link (no capture gap). */
export declare function linkUpdate(linkFd: number, newProgFd: number): void;
export declare function linkDetach(linkFd: number): void;
export declare function linkInfo(linkFd: number): LinkInfo;
export declare function mapInfo(mapFd: number): MapInfo;
export declare function progInfo(progFd: number): { id: number; name: string; type: number; tag: string };

/** bpf_obj_pin / bpf_obj_get. objGet returns a new fd (caller closes). */
export declare function pin(fd: number, path: string): void;
export declare function objGet(path: string): number;
/** Is `path` on a bpf filesystem? */
export declare function isBpffs(path: string): boolean;
/** mount -t bpf bpf PATH */
export declare function mountBpffs(path: string): void;

/** open(2); flags default O_RDONLY. O_CLOEXEC is always added. Returns a new fd (caller closes). */
/** A duplicate of fd `fd` of process `pid` (pidfd_getfd); the caller closes it. */
export declare function pidfdGetfd(pid: number, fd: number): number;
export declare function openPath(path: string, flags?: number): number;
export declare function close(fd: number): void;

/**
 * Map ops on any map fd. lookup returns null when the key is absent. Sizes are checked against the
 * map (bpf_obj_get_info_by_fd) and a mismatch throws EINVAL; for per-CPU maps valueSize is
 * round_up(value_size, 8) * possible CPUs.
 */
export declare function mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null;
export declare function mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
/** returns false when the key was absent */
export declare function mapDelete(fd: number, key: Buffer): boolean;
/** every key (get_next_key walk) */
export declare function mapKeys(fd: number, keySize: number): Buffer[];
/** every [key, value] pair (batch lookup where the kernel supports it, else a walk) */
export declare function mapEntries(fd: number, keySize: number, valueSize: number): Array<[Buffer, Buffer]>;

/** getsockopt(SO_NETNS_COOKIE) on a socket fd */
export declare function socketNetnsCookie(fd: number): bigint;
/** The cookie of a network namespace given by a path such as /proc/PID/ns/net or /run/netns/NAME. */
export declare function netnsCookie(nsPath: string): bigint;
/** Every interface of a network namespace given by path: name -> ifindex (read from inside it). */
export declare function netnsInterfaces(nsPath: string): Record<string, number>;
/**
 * getsockopt(SOL_IP, SO_ORIGINAL_DST) (family 4) or (SOL_IPV6, IP6T_SO_ORIGINAL_DST) (family 6) on a
 * socket fd. Returns { address, port } or throws NativeError with the kernel's errno.
 */
export declare function originalDst(fd: number, family: 4 | 6): { address: string; port: number };
/** libbpf_num_possible_cpus etc. are not needed; kernel feature probe: */
export declare function probeProgType(type: number): boolean;
export declare function probeMapType(type: number): boolean;
export declare function probeHelper(progType: number, helperId: number): boolean;
