// A node:test reporter for scripts/run-tests.mjs: writes one JSON line per test that was skipped or
// marked todo (file, name, reason), nothing else. The runner reads these lines after the run and fails
// when there are any: on the machines meshlane is tested on every feature is present, so a skip is a
// hidden failure.
export default async function* skipReporter(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { name, file, skip, todo } = event.data;
    if (skip === undefined && todo === undefined) continue;
    const kind = skip !== undefined ? 'skip' : 'todo';
    const why = kind === 'skip' ? skip : todo;
    yield `${JSON.stringify({ kind, file: file ?? '', name, reason: typeof why === 'string' ? why : '' })}\n`;
  }
}
