// Programs, links and objects as owned handles over the addon's Fd (cilium/ebpf's Program, Link and
// Collection): each owns one fd and closes it with close() or at the end of a `using` block. Maps are
// TypedMaps (src/dataplane/typed-map.ts) over a MapFd.
import * as native from './addon.js';
import type { LinkInfo, MapSpec, ProgInfo, ProgramSpec } from './addon.js';
import { LoadError, explainLoadError } from './errors.js';

/** A loaded program. */
export class BpfProgram implements Disposable {
  constructor(
    readonly name: string,
    readonly handle: native.Fd,
  ) {}

  info(): ProgInfo {
    return native.progInfo(this.handle);
  }

  /** A bpf_link of this program on a cgroup directory. */
  attachCgroup(cgroup: native.Fd, attachType: number): BpfLink {
    return new BpfLink(native.attachCgroup(this.handle, cgroup, attachType));
  }

  /** A bpf_link of this program on a network namespace (sk_lookup). */
  attachNetns(netns: native.Fd, attachType: number): BpfLink {
    return new BpfLink(native.attachNetns(this.handle, netns, attachType));
  }

  /** bpf_prog_attach to `target` (sk_msg on a sockhash): lives as long as the target, no link. */
  attachTo(target: native.Fd, attachType: number): void {
    native.progAttach(this.handle, target, attachType);
  }

  close(): void {
    this.handle.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A bpf_link: the attachment of a program, kept alive by its fd or by a pin. */
export class BpfLink implements Disposable {
  constructor(readonly handle: native.Fd) {}

  /** The link pinned at `path`. */
  static open(path: string): BpfLink {
    return new BpfLink(native.objGet(path));
  }

  info(): LinkInfo {
    return native.linkInfo(this.handle);
  }

  /** Put `prog` behind the link in one step (bpf_link_update: no moment without a program). */
  update(prog: BpfProgram): void {
    native.linkUpdate(this.handle, prog.handle);
  }

  /** Detach the program; the link (and its pin) stay, defunct. */
  detach(): void {
    native.linkDetach(this.handle);
  }

  pin(path: string): void {
    native.pin(this.handle, path);
  }

  close(): void {
    this.handle.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

const explained = (e: unknown): unknown => (e instanceof LoadError ? explainLoadError(e) : e);

/**
 * One BPF object file: open, configure (reuseMap, setMaxEntries, setRodata), load, take the handles (map, program),
 * close. The handles outlive the object. A failed open or load throws a LoadError read from libbpf's
 * log: a VerifierError (program, reason, log) when the verifier refused a program.
 */
export class BpfObject implements Disposable {
  private readonly obj: native.BpfObject;

  constructor(readonly path: string) {
    try {
      this.obj = new native.BpfObject(path);
    } catch (e) {
      throw explained(e);
    }
  }

  maps(): MapSpec[] {
    return this.obj.maps();
  }

  programs(): ProgramSpec[] {
    return this.obj.programs();
  }

  /** Before load: use `map` (a pinned map) for the object's map `name` instead of creating one. */
  reuseMap(name: string, map: native.MapFd): void {
    this.obj.reuseMap(name, map);
  }

  /** Before load: the capacity the map is created with (a map reused from a pin keeps its own). */
  setMaxEntries(name: string, maxEntries: number): void {
    this.obj.setMaxEntries(name, maxEntries);
  }

  /** Before load: the initial bytes of a read-only global (a `const volatile` in .rodata). */
  setRodata(varName: string, value: Buffer): void {
    this.obj.setRodata(varName, value);
  }

  load(): void {
    try {
      this.obj.load();
    } catch (e) {
      throw explained(e);
    }
  }

  /** load() off the event loop (libuv's pool): the verifier's time is not the agent's. Nothing else may be
   * called on the object until it settles (EBUSY). */
  async loadAsync(): Promise<void> {
    try {
      await this.obj.loadAsync();
    } catch (e) {
      throw explained(e);
    }
  }

  /** After load: a handle of the map `name`, owned by the caller. */
  map(name: string): native.MapFd {
    return this.obj.map(name);
  }

  /** After load: the program `name`, owned by the caller. */
  program(name: string): BpfProgram {
    return new BpfProgram(name, this.obj.program(name));
  }

  close(): void {
    this.obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
