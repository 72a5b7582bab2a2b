// How the agent's process runs: the image sets this environment (Dockerfile ENV; a unit test checks the
// two agree) and the node-scale benchmark starts its agent with it. Figures: bench/RESULTS.md, "Node scale".
//
// NODE_OPTIONS=--max-semi-space-size=1 (MiB): V8's young generation grows to 16 MiB per semi-space under
// allocation (every watch event, every resync builds short-lived objects) and keeps it: tens of MiB of RSS
// for a daemon whose live data is a few MiB. One MiB costs more scavenges, each as cheap as what survives it.
//
// MALLOC_ARENA_MAX=2: glibc gives every thread that allocates (V8's GC and compiler workers, libuv's pool) an
// arena of its own and keeps what was freed in each; two arenas hold the agent's native memory (libbpf, the
// BTF, node's own) with about 9 MiB less RSS, and its threads hardly allocate at once.
export const AGENT_ENV = {
  NODE_OPTIONS: '--max-semi-space-size=1',
  MALLOC_ARENA_MAX: '2',
} as const;
