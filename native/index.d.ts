// The whole native surface of meshlane's addon (native/src/*.cc). Thin: handles and syscalls only,
// every policy decision lives in TypeScript.
//
// Errors: every native failure throws an instance of the classes given to setErrorClasses (see
// src/native/errors.ts, which src/native/addon.ts passes in right after loading): a BpfError, or a
// LoadError when opening or loading a BPF object failed. Wrong argument types throw a TypeError
// (code ERR_INVALID_ARG_TYPE).
//
// Handles: every fd the addon makes comes back as an Fd (a MapFd for maps) that owns it, and every
// function that takes an fd takes a handle. The socket functions are the exception: they borrow the
// fd number of a socket someone else owns (a net.Socket).

/** What the addon passes to `new BpfError(message, props)`. */
export interface BpfErrorProps {
  /** positive errno, e.g. 1 (EPERM), 2 (ENOENT); libbpf's own codes are 4000 and up */
  errno: number;
  /** symbolic errno name, e.g. 'EPERM' (LIBBPF_ERRNO__FORMAT for libbpf's own codes) */
  code: string;
  /** the call that failed, e.g. 'bpf_obj_get' */
  syscall: string;
  /** context, when the call had one: the file path, the map or program name */
  path?: string;
  map?: string;
  program?: string;
}

/** What the addon passes to `new LoadError(message, props)`: libbpf's log of the failed open or load, raw. */
export interface LoadErrorProps extends BpfErrorProps {
  log: string;
}

export interface ErrorClasses {
  BpfError: new (message: string, props: BpfErrorProps) => Error;
  LoadError: new (message: string, props: LoadErrorProps) => Error;
}

/** Called once, before anything else: the classes every native failure is an instance of. */
export declare function setErrorClasses(classes: ErrorClasses): void;

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

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
}

/**
 * One owned fd. Only the addon makes them (the constructor throws a TypeError). close() is
 * idempotent; a handle collected while open closes its fd (a safety net, not a way to manage fds).
 */
export declare class Fd {
  protected constructor();
  /** the fd number; throws BpfError EBADF once closed */
  readonly fd: number;
  readonly closed: boolean;
  close(): void;
  [Symbol.dispose](): void;
}

/**
 * An owned map fd with the map's shape, read once when the handle is made. Every op checks the
 * buffer sizes against it (BpfError EINVAL, no syscall) and makes no syscall but the op itself.
 */
export declare class MapFd extends Fd {
  protected constructor();
  readonly info: MapInfo;
  /** bytes of one value as lookup returns it: valueSize, or round_up(valueSize, 8) * possible CPUs for per-CPU maps */
  readonly valueBytes: number;
  /** null when the key is absent */
  lookup(key: Buffer): Buffer | null;
  /** flags: BPF_ANY (default), BPF_NOEXIST, BPF_EXIST */
  update(key: Buffer, value: Buffer, flags?: number): void;
  /** false when the key was absent */
  delete(key: Buffer): boolean;
  /** every key (get_next_key walk) */
  keys(): Buffer[];
  /** every [key, value] pair (batch lookup where the kernel supports it for the map type, else a walk) */
  entries(): Array<[Buffer, Buffer]>;
}

/** An opened (and later loaded) libbpf bpf_object. Closing it leaves the handles it gave out open. */
export declare class BpfObject {
  /** throws LoadError (with libbpf's log) when the file cannot be opened as a BPF object */
  constructor(path: string);
  readonly path: string;
  maps(): MapSpec[];
  programs(): ProgramSpec[];
  /** Before load: make the object use an existing map (a pinned one) instead of creating it. */
  reuseMap(name: string, map: MapFd): void;
  /** Before load: the capacity (max_entries) the map is created with (bpf_map__set_max_entries). */
  setMaxEntries(name: string, maxEntries: number): void;
  /** Before load: set the initial bytes of a read-only global (a `const volatile` in .rodata). */
  setRodata(varName: string, value: Buffer): void;
  /** Load every program; throws LoadError with libbpf's raw log (a verifier refusal included). */
  load(): void;
  /** load() on libuv's pool (the event loop goes on meanwhile); every other call fails with EBUSY until it
   * settles. Rejects with the LoadError load() throws. */
  loadAsync(): Promise<void>;
  /** After load: a handle of the map / program (a dup of libbpf's fd, owned by the caller). */
  map(name: string): MapFd;
  program(name: string): Fd;
  close(): void;
}

/** bpf_link_create for a cgroup attach type; returns the link. */
export declare function attachCgroup(prog: Fd, cgroup: Fd, attachType: number): Fd;
/** bpf_link_create on a netns fd (sk_lookup); returns the link. */
export declare function attachNetns(prog: Fd, netns: Fd, attachType: number): Fd;
/** bpf_prog_attach (e.g. sk_msg on a sockhash). */
export declare function progAttach(prog: Fd, target: Fd, attachType: number): void;
/** Atomically replace the program behind a link (no capture gap). */
export declare function linkUpdate(link: Fd, prog: Fd): void;
export declare function linkDetach(link: Fd): void;
export declare function linkInfo(link: Fd): LinkInfo;
export declare function progInfo(prog: Fd): ProgInfo;

/** bpf_obj_pin of any handle. */
export declare function pin(handle: Fd, path: string): void;
/** bpf_obj_get: the pinned object (a link, a program). */
export declare function objGet(path: string): Fd;
/** bpf_obj_get of a pinned map (BpfError EINVAL if the pin is not a map). */
export declare function openMap(path: string): MapFd;
/** Is `path` on a bpf filesystem? */
export declare function isBpffs(path: string): boolean;
/** mount -t bpf bpf PATH, with mount(2) data (e.g. 'mode=0700') and MS_* flags (default none) */
export declare function mountBpffs(path: string, data?: string, flags?: number): void;

/** open(2); flags default O_RDONLY. O_CLOEXEC is always added. */
export declare function openPath(path: string, flags?: number): Fd;
/** A duplicate of fd number `fd` of process `pid` (pidfd_getfd). */
export declare function pidfdGetfd(pid: number, fd: number): Fd;

/** getsockopt(SO_NETNS_COOKIE) on a socket fd (borrowed) */
export declare function socketNetnsCookie(fd: number): bigint;
/** The cookie of a network namespace given by a path such as /proc/PID/ns/net or /run/netns/NAME. */
export declare function netnsCookie(nsPath: string): bigint;
/** Every interface of a network namespace given by path: name -> ifindex (read from inside it). */
export declare function netnsInterfaces(nsPath: string): Record<string, number>;
/** One route netlink message (nlmsg_len = its length) and the errnos that count as done. */
export interface NetlinkRequest {
  message: Buffer;
  /** positive errnos, e.g. [17] (EEXIST) for an add that may have been done before */
  tolerate?: number[];
}
/**
 * Send route netlink requests, in order, inside the network namespace given by path (a helper thread
 * enters it), each with NLM_F_REQUEST | NLM_F_ACK and its own sequence number. Returns each request's
 * errno (0 or a tolerated one). The first other failure throws BpfError (syscall 'netlink', the
 * request's index in the message) and the requests after it are not sent.
 */
export declare function netnsNetlink(nsPath: string, requests: NetlinkRequest[]): number[];
/**
 * getsockopt(SOL_IP, SO_ORIGINAL_DST) (family 4) or (SOL_IPV6, IP6T_SO_ORIGINAL_DST) (family 6) on a
 * socket fd (borrowed). Returns { address, port } or throws BpfError with the kernel's errno.
 */
export declare function originalDst(fd: number, family: 4 | 6): { address: string; port: number };
/** Kernel feature probes (libbpf loads a trivial program / creates a tiny map). */
export declare function probeProgType(type: number): boolean;
export declare function probeMapType(type: number): boolean;
export declare function probeHelper(progType: number, helperId: number): boolean;
