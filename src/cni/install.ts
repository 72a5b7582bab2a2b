// `meshlane cni install|uninstall`: put meshlane-cni on the node as istio-cni does for its plugin.
//
//  - the executable is copied into the CNI bin directory atomically (temp file + rename, 0755), so a
//    runtime that runs it at that moment runs either the old or the new one, never half a file;
//  - the primary network's config is the one the runtime uses: the lexically first *.conf, *.conflist or
//    *.json in the conf directory (containerd's go-cni, kubelet). Our entry {"type":"meshlane-cni",
//    "socket":...} goes at the end of its "plugins"; a single-plugin .conf/.json is first turned into a
//    .conflist as libcni's ConfListFromConf does (name and cniVersion from the plugin, the plugin kept
//    verbatim), and the old file removed, as istio-cni does;
//  - idempotent: an entry already there keeps its place (another installer, e.g. istio-cni, may append
//    after us; moving back to the end would make us fight), only its socket is brought up to date;
//  - a config that does not parse is never written: the runtime cannot use it either, and guessing
//    would lose the primary CNI's settings;
//  - CniConfigWatcher keeps it so: when the primary CNI rewrites its file (on restart, on upgrade), the
//    entry is inserted again (fs.watch on the directory, and a periodic check for missed events).
import {
  closeSync,
  existsSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  lstatSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  watch,
  writeSync,
  type FSWatcher,
  type Stats,
} from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from '../util/log.js';
import { UserError, isErrno } from '../util/errors.js';
import { packageRoot } from '../util/paths.js';
import { DEFAULT_CNI_SOCKET, PLUGIN_TYPE } from './protocol.js';

export const DEFAULT_CNI_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CNI_CONF_DIR = '/etc/cni/net.d';
/** The file names a runtime reads in the conf directory (go-cni: ConfFiles(dir, [.conf .conflist .json])). */
const CONF_EXTENSIONS = ['.conf', '.conflist', '.json'];
const WATCH_DEBOUNCE_MS = 100;
export const DEFAULT_RECHECK_MS = 5_000;

/** The executable scripts/setup.sh builds (make -C cni). */
export const builtPlugin = (): string => join(packageRoot(), 'cni', 'build', PLUGIN_TYPE);

type Json = Record<string, unknown>;

/** A network config file as the runtime would read it, in list form. */
export interface NetworkConfigFile {
  file: string;
  /** true when the file is a single-plugin .conf/.json that must become a .conflist to chain */
  single: boolean;
  list: Json & { plugins: Json[] };
}

const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Parses a network config file's text as the runtime does; throws a UserError that names the file. */
export function parseNetworkConfig(file: string, text: string): NetworkConfigFile {
  const never = 'fix or remove it; meshlane does not overwrite a config it cannot parse';
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file} is not valid JSON (${(e as Error).message}): ${never}`, { cause: e });
  }
  if (!isObject(doc)) throw new UserError(`${file} is not a JSON object: ${never}`);
  if (file.endsWith('.conflist')) {
    const plugins = doc.plugins;
    if (!Array.isArray(plugins) || plugins.length === 0 || !plugins.every(isObject)) {
      throw new UserError(`${file} has no "plugins" list of objects: ${never}`);
    }
    return { file, single: false, list: { ...doc, plugins } };
  }
  // .conf and .json hold one plugin (go-cni and kubelet read them with ConfFromFile)
  if (typeof doc.type !== 'string' || doc.type === '') throw new UserError(`${file} has no "type" (a conflist in a .conf file?): ${never}`);
  const list: Json & { plugins: Json[] } = { cniVersion: doc.cniVersion, name: doc.name, plugins: [doc] };
  return { file, single: true, list };
}

/** Our entry, at the end of the plugins unless it is already there (then only its socket is updated). */
export function withPlugin(list: Json & { plugins: Json[] }, socket: string): { list: Json & { plugins: Json[] }; changed: boolean } {
  const ours = list.plugins.filter((p) => p.type === PLUGIN_TYPE);
  if (ours.length === 1 && ours[0]!.socket === socket) return { list, changed: false };
  let kept = false;
  const plugins: Json[] = [];
  for (const p of list.plugins) {
    if (p.type !== PLUGIN_TYPE) plugins.push(p);
    else if (!kept) {
      // the first of ours keeps its place and any field an operator added (e.g. timeoutSeconds)
      plugins.push({ ...p, socket });
      kept = true;
    }
  }
  if (!kept) plugins.push({ type: PLUGIN_TYPE, socket });
  return { list: { ...list, plugins }, changed: true };
}

/** Every entry of ours out, the other plugins exactly as they were. */
export function withoutPlugin(list: Json & { plugins: Json[] }): { list: Json & { plugins: Json[] }; changed: boolean } {
  const plugins = list.plugins.filter((p) => p.type !== PLUGIN_TYPE);
  return plugins.length === list.plugins.length ? { list, changed: false } : { list: { ...list, plugins }, changed: true };
}

const serialize = (doc: Json): string => JSON.stringify(doc, null, 2) + '\n';

/** The conf files a runtime considers, in its order (lexical, like Go's sort.Strings on the names). */
export function configFiles(confDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(confDir);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) throw new UserError(`CNI conf directory ${confDir} does not exist: install the primary CNI first, or pass --cni-conf-dir`);
    if (isErrno(e, 'ENOTDIR')) throw new UserError(`CNI conf directory ${confDir} is not a directory: pass --cni-conf-dir`);
    throw e;
  }
  return names
    .filter((n) => CONF_EXTENSIONS.includes(extname(n)))
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((n) => join(confDir, n))
    .filter((f) => {
      try {
        return !statSync(f).isDirectory();
      } catch {
        return false; // a dangling symlink: the runtime fails to read it too, it is not ours to judge
      }
    });
}

/** The primary network's config file, or undefined when there is none yet. */
export function findPrimaryConfig(confDir: string): string | undefined {
  return configFiles(confDir)[0];
}

const writeError = (what: string, dir: string, flag: string, e: unknown): UserError =>
  new UserError(`cannot write ${what} in ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): run as root, or pass a writable ${flag}`, { cause: e });

/**
 * Writes `data` to `path` atomically: a temp file in the same directory (a name no runtime reads),
 * fsync, the given mode and owner, rename over the old file.
 */
function writeAtomic(path: string, text: string | Buffer, mode: number, owner?: { uid: number; gid: number }): void {
  const data = typeof text === 'string' ? Buffer.from(text) : text;
  const tmp = join(dirname(path), `.${basename(path)}.meshlane-tmp`);
  try {
    unlinkSync(tmp); // left by a run that died
  } catch {
    /* none */
  }
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    try {
      for (let off = 0; off < data.length; ) off += writeSync(fd, data, off);
      fchmodSync(fd, mode);
      if (owner && typeof process.geteuid === 'function' && process.geteuid() === 0) fchownSync(fd, owner.uid, owner.gid);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* gone */
    }
    throw e;
  }
}

// ---- the executable ----

/** Copies the plugin into binDir (only when it differs); true when it wrote. */
export function installBinary(binDir: string, source: string = builtPlugin()): boolean {
  let src: Buffer;
  try {
    src = readFileSync(source);
  } catch (e) {
    throw new UserError(`the plugin executable ${source} is missing (${(e as NodeJS.ErrnoException).code}): build it with scripts/setup.sh (make -C cni)`, { cause: e });
  }
  let st: Stats;
  try {
    st = statSync(binDir);
  } catch (e) {
    throw new UserError(`CNI bin directory ${binDir} does not exist (${(e as NodeJS.ErrnoException).code}): install the primary CNI first, or pass --cni-bin-dir`, { cause: e });
  }
  if (!st.isDirectory()) throw new UserError(`CNI bin directory ${binDir} is not a directory: pass --cni-bin-dir`);
  const dest = join(binDir, PLUGIN_TYPE);
  try {
    const cur = statSync(dest);
    if (cur.isFile() && (cur.mode & 0o777) === 0o755 && readFileSync(dest).equals(src)) return false;
  } catch {
    /* not there yet */
  }
  try {
    writeAtomic(dest, src, 0o755);
  } catch (e) {
    throw writeError(PLUGIN_TYPE, binDir, '--cni-bin-dir', e);
  }
  return true;
}

/** Removes the plugin executable from binDir; true when it was there. */
export function uninstallBinary(binDir: string): boolean {
  const dest = join(binDir, PLUGIN_TYPE);
  try {
    if (!lstatSync(dest).isFile()) return false; // not something we put there
    unlinkSync(dest);
    return true;
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return false;
    throw writeError(`(removing) ${PLUGIN_TYPE}`, binDir, '--cni-bin-dir', e);
  }
}

// ---- the network config ----

export interface ConfigChange {
  /** the primary config, after the change (a converted .conf is now a .conflist) */
  file: string;
  changed: boolean;
  /** a single-plugin file that was turned into `file` and removed */
  convertedFrom?: string;
}

/** Reads and checks the primary config; throws a UserError when there is none or it does not parse. */
export function readPrimaryConfig(confDir: string): NetworkConfigFile {
  const file = findPrimaryConfig(confDir);
  if (!file) throw new UserError(`no CNI network config (*.conflist, *.conf, *.json) in ${confDir}: install the primary CNI first, or pass --cni-conf-dir`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read ${file} (${(e as NodeJS.ErrnoException).code}): run as root`, { cause: e });
  }
  return parseNetworkConfig(file, text);
}

/** Writes a config with our entry in (see the file comment); `parsed` from readPrimaryConfig. */
export function writeConfigWithPlugin(parsed: NetworkConfigFile, socket: string): ConfigChange {
  const { list, changed } = withPlugin(parsed.list, socket);
  if (!changed && !parsed.single) return { file: parsed.file, changed: false };
  const st = statSync(parsed.file);
  // a list is written through a symlink to its target, so that the link the primary CNI made stays; a
  // converted single plugin becomes <name>.conflist beside it, where the runtime looks
  const file = parsed.single ? join(dirname(parsed.file), basename(parsed.file, extname(parsed.file)) + '.conflist') : parsed.file;
  const target = parsed.single ? file : realpathSync(parsed.file);
  try {
    writeAtomic(target, serialize(list), st.mode & 0o7777, { uid: st.uid, gid: st.gid });
    // the .conflist first, then the old file: until then the runtime still reads the old one (it sorts first)
    if (parsed.single) unlinkSync(parsed.file);
  } catch (e) {
    throw writeError(basename(target), dirname(target), '--cni-conf-dir', e);
  }
  return parsed.single ? { file, changed: true, convertedFrom: parsed.file } : { file, changed: true };
}

/** Takes our entries out of every config file in confDir that has one; the files it changed. */
export function uninstallConfig(confDir: string, log?: Logger): string[] {
  let files: string[];
  try {
    files = configFiles(confDir);
  } catch (e) {
    if (e instanceof UserError && !existsSync(confDir)) return [];
    throw e;
  }
  const changed: string[] = [];
  for (const file of files) {
    let parsed: NetworkConfigFile;
    try {
      parsed = parseNetworkConfig(file, readFileSync(file, 'utf8'));
    } catch (e) {
      log?.warn({ file, err: (e as Error).message }, 'cni: skipping a config that does not parse');
      continue; // not ours to fix; we never wrote a file we could not parse
    }
    if (parsed.single) continue; // a single plugin is never us
    const out = withoutPlugin(parsed.list);
    if (!out.changed) continue;
    const real = realpathSync(file);
    const st = statSync(real);
    try {
      writeAtomic(real, serialize(out.list), st.mode & 0o7777, { uid: st.uid, gid: st.gid });
    } catch (e) {
      throw writeError(basename(real), dirname(real), '--cni-conf-dir', e);
    }
    changed.push(file);
  }
  return changed;
}

// ---- install / uninstall as the commands do them ----

export interface CniInstallOptions {
  binDir: string;
  confDir: string;
  socket: string;
  /** the executable to install (default: the one scripts/setup.sh built) */
  source?: string;
}

export interface CniInstallReport {
  binary: string;
  binaryChanged: boolean;
  config: ConfigChange;
}

/**
 * Installs once: checks the primary config first (nothing is written when it is missing or does not
 * parse), then the executable (it must exist before a conflist names it), then the config.
 */
export function cniInstall(o: CniInstallOptions): CniInstallReport {
  const parsed = readPrimaryConfig(o.confDir);
  const binaryChanged = installBinary(o.binDir, o.source);
  const config = writeConfigWithPlugin(parsed, o.socket);
  return { binary: join(o.binDir, PLUGIN_TYPE), binaryChanged, config };
}

export interface CniUninstallReport {
  configs: string[];
  binaryRemoved: boolean;
}

/** Takes the plugin out: the config entries first (new pods stop calling it), then the executable. */
export function cniUninstall(o: { binDir: string; confDir: string; log?: Logger }): CniUninstallReport {
  const configs = uninstallConfig(o.confDir, o.log);
  const binaryRemoved = existsSync(o.binDir) ? uninstallBinary(o.binDir) : false;
  return { configs, binaryRemoved };
}

// ---- keeping it installed ----

export interface CniWatcherOptions extends CniInstallOptions {
  log?: Logger;
  /** the periodic check, for events fs.watch misses (default 5 s) */
  recheckMs?: number;
  /** called after every check that wrote something (tests, metrics) */
  onInstalled?: (r: CniInstallReport) => void;
}

/**
 * Keeps the plugin installed: checks now, on every change in the conf directory and every recheckMs.
 * A missing primary config is waited for; one that does not parse is logged and left alone until it is
 * fixed. The agent (or `meshlane cni install --watch`) runs one.
 */
export class CniConfigWatcher {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private lastProblem = '';
  private readonly log: Logger;

  constructor(private readonly o: CniWatcherOptions) {
    this.log = o.log ?? pino({ level: 'silent' });
  }

  start(): void {
    this.timer = setInterval(() => this.check(), this.o.recheckMs ?? DEFAULT_RECHECK_MS);
    this.check();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.debounce);
    this.watcher?.close();
    this.watcher = undefined;
  }

  /** One check (also what the timer and the directory events run); the report when it wrote something. */
  check(): CniInstallReport | undefined {
    this.ensureWatch();
    try {
      const r = cniInstall(this.o);
      if (this.lastProblem) this.log.info({ confDir: this.o.confDir }, 'cni: the CNI config is usable again');
      this.lastProblem = '';
      if (r.binaryChanged || r.config.changed) {
        this.log.info({ binary: r.binary, config: r.config.file, convertedFrom: r.config.convertedFrom, socket: this.o.socket }, 'cni: meshlane-cni (re)installed');
        this.o.onInstalled?.(r);
        return r;
      }
      return undefined;
    } catch (e) {
      const problem = e instanceof Error ? e.message : String(e);
      // once per distinct problem, not every recheck
      if (problem !== this.lastProblem) this.log[e instanceof UserError ? 'warn' : 'error']({ err: problem }, 'cni: cannot install meshlane-cni yet; retrying');
      this.lastProblem = problem;
      return undefined;
    }
  }

  private ensureWatch(): void {
    if (this.watcher || this.timer === undefined) return; // a check() without start() watches nothing
    try {
      this.watcher = watch(this.o.confDir, { persistent: false }, () => this.schedule());
      this.watcher.on('error', () => {
        // the directory went away or was replaced: watch it again on the next check
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      // no directory yet: the periodic check tries again
    }
  }

  private schedule(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.check(), WATCH_DEBOUNCE_MS);
  }
}

export { DEFAULT_CNI_SOCKET };
