// Istio's default per-pod capture settings, i.e. what the reference invocation
//   istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020
// means (gid defaults to the uid in istio-iptables' config.FillConfigFromEnvironment; tunnel port 15008
// is config.DefaultConfig's InboundTunnelPort; 15053 is constants.IstioAgentDNSListenerPort).
import type { CaptureSettings } from '../../src/model/types.js';

export function defaultSettings(): CaptureSettings {
  return {
    outboundPort: 15001,
    inboundPort: 15006,
    inboundTunnelPort: 15008,
    dnsPort: 15053,
    proxyUids: [1337],
    proxyGids: [1337],
    interceptionMode: 'REDIRECT',
    inboundPorts: { mode: 'all', exclude: [15090, 15021, 15020] },
    outboundInclude: { all: true, cidrs: [] },
    outboundExclude: [],
    includeOutboundPorts: [],
    excludeOutboundPorts: [],
    excludeInterfaces: [],
    rerouteInterfaces: [],
    dns: { enabled: false, captureAll: false },
  };
}
