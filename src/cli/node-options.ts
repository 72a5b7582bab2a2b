// The node options the agent runs with: the image sets them as NODE_OPTIONS (Dockerfile; a unit test
// checks the two agree) and the node-scale benchmark starts its agent with them.
//
// --max-semi-space-size=1 (MiB): V8's young generation grows to 16 MiB per semi-space under allocation
// (every watch event, every resync builds short-lived objects) and keeps it: 30+ MiB of RSS for a daemon
// whose live data is a few MiB (bench/RESULTS.md, "Node scale"). One MiB costs more scavenges, each as
// cheap as what survives it.
export const AGENT_NODE_OPTIONS = '--max-semi-space-size=1';
