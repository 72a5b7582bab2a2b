// The Dockerfile as the image test reads it: stages, their instructions (continuation lines joined,
// comments dropped, as BuildKit does), COPY sources and destinations, the exec-form ENTRYPOINT and CMD,
// the WORKDIR, the packages an `apt-get install` line names. Only what meshlane's Dockerfile uses: no
// ARG substitution, no heredocs (the test fails on an instruction it does not know).
export interface Instruction {
  cmd: string;
  rest: string;
  line: number;
}

export interface Stage {
  image: string;
  name?: string;
  instructions: Instruction[];
}

export interface Copy {
  from?: string;
  sources: string[];
  dest: string;
  line: number;
}

const KNOWN = new Set(['FROM', 'RUN', 'COPY', 'WORKDIR', 'ENTRYPOINT', 'CMD', 'ENV', 'LABEL', 'USER', 'EXPOSE']);

export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const first = i + 1;
    let l = lines[i]!;
    if (/^\s*(#|$)/.test(l)) continue;
    while (/\\\s*$/.test(l) && i + 1 < lines.length) {
      l = l.replace(/\\\s*$/, ' ');
      i++;
      if (!/^\s*#/.test(lines[i]!)) l += lines[i]!;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`Dockerfile line ${first}: cannot parse ${l}`);
    const cmd = m[1]!.toUpperCase();
    if (!KNOWN.has(cmd)) throw new Error(`Dockerfile line ${first}: ${cmd} is not handled by test/support/dockerfile.ts`);
    const rest = m[2]!.trim().replace(/\s+/g, ' ');
    if (cmd === 'FROM') {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      if (!f) throw new Error(`Dockerfile line ${first}: FROM ${rest}`);
      stages.push({ image: f[1]!, ...(f[2] ? { name: f[2] } : {}), instructions: [] });
    } else {
      const s = stages.at(-1);
      if (!s) throw new Error(`Dockerfile line ${first}: ${cmd} before FROM`);
      s.instructions.push({ cmd, rest, line: first });
    }
  }
  return stages;
}

export function copies(s: Stage): Copy[] {
  return s.instructions
    .filter((i) => i.cmd === 'COPY')
    .map((i) => {
      const words = i.rest.startsWith('[') ? (JSON.parse(i.rest) as string[]) : i.rest.split(' ');
      let from: string | undefined;
      const paths: string[] = [];
      for (const w of words) {
        const f = /^--from=(.+)$/.exec(w);
        if (f) from = f[1];
        else if (w.startsWith('--')) throw new Error(`Dockerfile line ${i.line}: COPY ${w} is not handled`);
        else paths.push(w);
      }
      if (paths.length < 2) throw new Error(`Dockerfile line ${i.line}: COPY needs a source and a destination`);
      return { ...(from !== undefined ? { from } : {}), sources: paths.slice(0, -1), dest: paths.at(-1)!, line: i.line };
    });
}

/** The last ENTRYPOINT or CMD of the stage, which must be in exec (JSON) form. */
export function execForm(s: Stage, cmd: 'ENTRYPOINT' | 'CMD'): string[] {
  const i = s.instructions.filter((x) => x.cmd === cmd).at(-1);
  if (!i) return [];
  const v = JSON.parse(i.rest) as unknown;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`Dockerfile line ${i.line}: ${cmd} is not in exec form`);
  return v as string[];
}

/** The WORKDIR in force at the end of the stage ('/' when none). */
export function workdir(s: Stage): string {
  let d = '/';
  for (const i of s.instructions) if (i.cmd === 'WORKDIR') d = i.rest.startsWith('/') ? i.rest : `${d.replace(/\/$/, '')}/${i.rest}`;
  return d;
}

/** Where a COPY destination lands: relative ones are under the WORKDIR in force at that COPY; a trailing / or . names a directory. */
export function destination(s: Stage, c: Copy): string {
  let d = '/';
  for (const i of s.instructions) {
    if (i.line > c.line) break;
    if (i.cmd === 'WORKDIR') d = i.rest.startsWith('/') ? i.rest : `${d.replace(/\/$/, '')}/${i.rest}`;
  }
  const dest = c.dest === '.' || c.dest === './' ? d : c.dest.startsWith('/') ? c.dest : `${d.replace(/\/$/, '')}/${c.dest.replace(/^\.\//, '')}`;
  return dest;
}

/** Packages named by `apt-get install` in the stage's RUN instructions (options dropped). */
export function aptPackages(s: Stage): string[] {
  const out: string[] = [];
  for (const i of s.instructions.filter((x) => x.cmd === 'RUN')) {
    for (const part of i.rest.split(/&&|;/)) {
      const m = /apt-get\s+install\s+(.*)$/.exec(part.trim());
      if (m) out.push(...m[1]!.split(' ').filter((w) => w && !w.startsWith('-')));
    }
  }
  return out;
}

export const runs = (s: Stage): string[] => s.instructions.filter((x) => x.cmd === 'RUN').map((x) => x.rest);
