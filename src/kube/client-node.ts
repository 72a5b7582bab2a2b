// The one part of @kubernetes/client-node the agent uses. The build (scripts/bundle-client-node.mjs) replaces
// this module's output with KubeConfig bundled from the unmodified package, without the package's generated API
// that importing the package loads (about 57 MiB of RSS). Import KubeConfig from here, never from the package.
export { KubeConfig } from '@kubernetes/client-node';
