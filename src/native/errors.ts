// The error classes of every native failure (the addon constructs them: src/native/addon.ts passes
// BpfError and LoadError in with setErrorClasses), and the reading of libbpf's log, so callers decide
// by class (instanceof VerifierError), never by which properties an error happens to carry.
//
//   BpfError       a failed syscall or libbpf call: errno, code, syscall (+ path, map, program)
//   LoadError      opening or loading a BPF object failed; carries libbpf's log as printed
//   VerifierError  a LoadError whose log shows the verifier refusing a program: program, reason
import type { BpfErrorProps, LoadErrorProps } from '../../native/index.js';

export type { BpfErrorProps, LoadErrorProps };

export class BpfError extends Error {
  static {
    this.prototype.name = 'BpfError'; // on the prototype: an error's own properties are its facts
  }

  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  declare readonly path?: string;
  declare readonly map?: string;
  declare readonly program?: string;

  constructor(message: string, props: BpfErrorProps, options?: ErrorOptions) {
    super(message, options);
    this.errno = props.errno;
    this.code = props.code;
    this.syscall = props.syscall;
    // only the context the call had: no `path: undefined` in every inspected error
    for (const k of ['path', 'map', 'program'] as const) if (props[k] !== undefined) Object.assign(this, { [k]: props[k] });
  }
}

export class LoadError extends BpfError {
  static {
    this.prototype.name = 'LoadError';
  }

  /** libbpf's log of the failed open or load, as printed (INFO and WARN lines, verifier log included) */
  readonly log: string;

  constructor(message: string, props: LoadErrorProps, options?: ErrorOptions) {
    super(message, props, options);
    this.log = props.log;
  }
}

export class VerifierError extends LoadError {
  static {
    this.prototype.name = 'VerifierError';
  }

  declare readonly program: string;
  /** the verifier's last meaningful line, e.g. 'invalid bpf_context access off=4096 size=4' */
  readonly reason: string;

  constructor(props: LoadErrorProps & { program: string; reason: string }, options?: ErrorOptions) {
    super(`verifier refused program '${props.program}': ${props.reason}`, props, options);
    this.reason = props.reason;
  }
}

export interface LibbpfLogFacts {
  /** the program libbpf reports as failing to load */
  program?: string;
  /** the last meaningful line of that program's verifier log (absent: the verifier printed none) */
  verifierReason?: string;
  /** the last line libbpf itself printed ("libbpf: " stripped), not counting its closing
   * "failed to load object '...'", which every load failure ends with */
  lastLibbpfLine?: string;
}

const LIBBPF = 'libbpf: ';
const BEGIN_LOG = '-- BEGIN PROG LOAD LOG --';
const END_LOG = '-- END PROG LOAD LOG --';
/** verifier statistics and libbpf framing: never the reason */
const BORING = ['processed ', 'verification time', 'stack depth', END_LOG, 'mark_precise', LIBBPF];

const stripLibbpf = (line: string): string => {
  const t = line.trim();
  return t.startsWith(LIBBPF) ? t.slice(LIBBPF.length) : t;
};

/** "libbpf: prog 'NAME': REST" -> [NAME, REST] */
function progLine(line: string): [string, string] | undefined {
  const m = /^prog '([^']*)': (.*)$/.exec(stripLibbpf(line));
  return m ? [m[1]!, m[2]!] : undefined;
}

/** What libbpf's log of a failed open or load says: which program failed and why. */
export function parseLibbpfLog(log: string): LibbpfLogFacts {
  const lines = log.split('\n');
  const facts: LibbpfLogFacts = {};
  let anyFailing: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const p = progLine(line);
    if (p) {
      const [prog, rest] = p;
      if (rest.startsWith('BPF program load failed') && facts.program === undefined) facts.program = prog;
      if (rest.includes('fail')) anyFailing = prog;
      if (rest.startsWith(BEGIN_LOG) && (facts.program === undefined || facts.program === prog)) {
        // the verifier's text follows, up to END_LOG
        let reason: string | undefined;
        for (let j = i + 1; j < lines.length; j++) {
          const t = lines[j]!.trim();
          if (t.startsWith(END_LOG)) break;
          if (t !== '' && !BORING.some((b) => t.startsWith(b))) reason = t;
        }
        if (facts.verifierReason === undefined && reason !== undefined) facts.verifierReason = reason;
      }
    }
    const t = line.trim();
    if (t.startsWith(LIBBPF) && !/^failed to load object '/.test(stripLibbpf(t))) facts.lastLibbpfLine = stripLibbpf(t);
  }
  if (facts.program === undefined && anyFailing !== undefined) facts.program = anyFailing;
  return facts;
}

/**
 * A LoadError as the addon throws it (raw log) -> what it means: a VerifierError when the log shows the
 * verifier refusing a program, else a LoadError whose message ends with what libbpf said last.
 */
export function explainLoadError(e: LoadError): LoadError {
  if (e instanceof VerifierError) return e;
  const f = parseLibbpfLog(e.log);
  const props: LoadErrorProps = { errno: e.errno, code: e.code, syscall: e.syscall, log: e.log };
  if (e.path !== undefined) props.path = e.path;
  if (f.program !== undefined && f.verifierReason !== undefined) {
    return new VerifierError({ ...props, program: f.program, reason: f.verifierReason });
  }
  if (f.program === undefined && f.lastLibbpfLine === undefined) return e;
  if (f.program !== undefined) props.program = f.program;
  return new LoadError(f.lastLibbpfLine === undefined ? e.message : `${e.message}: ${f.lastLibbpfLine}`, props);
}
