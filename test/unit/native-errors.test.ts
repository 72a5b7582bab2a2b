// The reading of libbpf's log (src/native/errors.ts) on real logs captured from the kernel
// (test/fixtures/logs), the classes a LoadError becomes, and explain() deciding by class.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BpfError, LoadError, VerifierError, explainLoadError, parseLibbpfLog, type LoadErrorProps } from '../../src/native/errors.js';
import { explain } from '../../src/dataplane/dataplane.js';
import { UserError } from '../../src/util/errors.js';
import { packageRoot } from '../../src/util/paths.js';

const log = (name: string): string => readFileSync(join(packageRoot(), 'test', 'fixtures', 'logs', `${name}.log`), 'utf8');

/** A LoadError as the addon throws it for a log sample. */
function loadError(name: string, props: Omit<LoadErrorProps, 'log'>): LoadError {
  return new LoadError(`${props.syscall}: (${props.code}), object '${props.path}'`, { ...props, log: log(name) });
}

const refused = (): LoadError => loadError('load-verifier-refused', { errno: 13, code: 'EACCES', syscall: 'bpf_object__load', path: 'bad.bpf.o' });

test('parseLibbpfLog: a refused program, its verifier reason and the last libbpf line', () => {
  assert.deepEqual(parseLibbpfLog(log('load-verifier-refused')), {
    program: 'bad_connect4',
    verifierReason: 'invalid bpf_context access off=4096 size=4',
    lastLibbpfLine: "prog 'bad_connect4': failed to load: -13",
  });
  assert.deepEqual(parseLibbpfLog(log('load-verifier-wrong-map')), {
    program: 'fixture_connect4',
    verifierReason: 'invalid read from stack R2 off=-4 size=8',
    lastLibbpfLine: "prog 'fixture_connect4': failed to load: -22",
  });
});

test('parseLibbpfLog: failures that name no program', () => {
  assert.deepEqual(parseLibbpfLog(log('load-unprivileged')), {
    lastLibbpfLine:
      "Error in bpf_object__probe_loading():Operation not permitted(1). Couldn't load trivial BPF program. Make sure your kernel supports BPF (CONFIG_BPF_SYSCALL=y) and/or that RLIMIT_MEMLOCK is set to big enough value.",
  });
  assert.deepEqual(parseLibbpfLog(log('open-missing-path')), {
    lastLibbpfLine: 'elf: failed to open /nonexistent/meshlane/x.bpf.o: No such file or directory',
  });
  assert.match(parseLibbpfLog(log('open-not-elf')).lastLibbpfLine ?? '', /^elf: '.*package\.json' is not a proper ELF object$/);
  // a missing program (the addon's own ENOENT) or a failure libbpf printed nothing about
  assert.deepEqual(parseLibbpfLog(''), {});
});

test('parseLibbpfLog: a program that failed without a verifier log is named, with no reason', () => {
  // the lines libbpf prints when a program fails before the verifier runs (e.g. a bad relocation)
  const f = parseLibbpfLog("libbpf: prog 'p2': failed to relocate calls: -22\nlibbpf: prog 'p2': failed to load: -22\nlibbpf: failed to load object 'x.o'\n");
  assert.deepEqual(f, { program: 'p2', lastLibbpfLine: "prog 'p2': failed to load: -22" });
});

test('a LoadError whose log shows a refused program becomes a VerifierError', () => {
  const e = explainLoadError(refused());
  assert.ok(e instanceof VerifierError && e instanceof LoadError && e instanceof BpfError && e instanceof Error);
  assert.equal(e.name, 'VerifierError');
  assert.equal(e.program, 'bad_connect4');
  assert.equal(e.reason, 'invalid bpf_context access off=4096 size=4');
  assert.equal(e.message, "verifier refused program 'bad_connect4': invalid bpf_context access off=4096 size=4");
  assert.deepEqual([e.errno, e.code, e.syscall, e.path], [13, 'EACCES', 'bpf_object__load', 'bad.bpf.o']);
  assert.equal(e.log, log('load-verifier-refused'));
  assert.equal(explainLoadError(e), e, 'already read');
  // the errno does not decide: the wrong-map refusal is EINVAL
  const w = explainLoadError(loadError('load-verifier-wrong-map', { errno: 22, code: 'EINVAL', syscall: 'bpf_object__load', path: 'fixture.bpf.o' }));
  assert.ok(w instanceof VerifierError);
  assert.equal(w.program, 'fixture_connect4');
});

test('other LoadErrors stay LoadErrors and say what libbpf said last', () => {
  const eperm = explainLoadError(loadError('load-unprivileged', { errno: 1, code: 'EPERM', syscall: 'bpf_object__load', path: 'fixture.bpf.o' }));
  assert.ok(eperm instanceof LoadError && !(eperm instanceof VerifierError));
  assert.equal(eperm.program, undefined);
  assert.match(eperm.message, /^bpf_object__load: \(EPERM\), object 'fixture\.bpf\.o': Error in bpf_object__probe_loading\(\):Operation not permitted/);
  const missing = explainLoadError(
    loadError('open-missing-path', { errno: 2, code: 'ENOENT', syscall: 'bpf_object__open_file', path: '/nonexistent/meshlane/x.bpf.o' }),
  );
  assert.ok(missing instanceof LoadError && !(missing instanceof VerifierError));
  assert.equal(missing.code, 'ENOENT');
  assert.match(missing.message, /: elf: failed to open \/nonexistent\/meshlane\/x\.bpf\.o: No such file or directory$/);
  const empty = new LoadError('bpf_object__load: (EINVAL)', { errno: 22, code: 'EINVAL', syscall: 'bpf_object__load', log: '' });
  assert.equal(explainLoadError(empty), empty, 'nothing to add');
});

test('BpfError keeps only the context the call had', () => {
  const e = new BpfError('bpf_obj_get: (ENOENT)', { errno: 2, code: 'ENOENT', syscall: 'bpf_obj_get', path: '/x' });
  assert.deepEqual({ ...e }, { errno: 2, code: 'ENOENT', syscall: 'bpf_obj_get', path: '/x' });
  assert.equal(e.name, 'BpfError');
});

test('explain() decides by class', () => {
  const verifier = explain(explainLoadError(refused()), 'loading the BPF programs');
  assert.ok(verifier instanceof UserError);
  assert.match(
    verifier.message,
    /^loading the BPF programs: the verifier of kernel \S+ refused program 'bad_connect4' \(verifier refused program 'bad_connect4': invalid bpf_context access off=4096 size=4\); /,
  );

  for (const code of ['EPERM', 'EACCES']) {
    const denied = explain(new BpfError(`bpf_obj_get: (${code})`, { errno: code === 'EPERM' ? 1 : 13, code, syscall: 'bpf_obj_get' }), 'reading the pins');
    assert.ok(denied instanceof UserError);
    assert.equal(denied.message, 'reading the pins: permission denied (bpf_obj_get): run meshlane as root (it needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)');
  }
  const unprivileged = explain(
    explainLoadError(loadError('load-unprivileged', { errno: 1, code: 'EPERM', syscall: 'bpf_object__load', path: 'x.o' })),
    'loading',
  );
  assert.ok(unprivileged instanceof UserError && unprivileged.message.includes('permission denied (bpf_object__load)'));

  // a missing program is an ENOENT that carries the program's name: not a verifier refusal
  const noProgram = new BpfError("BpfObject.program: (ENOENT), no program 'nope'", { errno: 2, code: 'ENOENT', syscall: 'BpfObject.program', program: 'nope' });
  assert.equal(explain(noProgram, 'loading'), noProgram);
  // nor is anything that merely looks like one
  const lookalike = Object.assign(new Error('x'), { program: 'p', code: 'EACCES', log: 'verifier' });
  assert.equal(explain(lookalike, 'loading'), lookalike);
  const user = new UserError('bad flag');
  assert.equal(explain(user, 'loading'), user);
});
