// The agent's CNI endpoint: the CniServer (src/cni/server.ts) on --cni-socket with the agent's handler
// (src/cni/handler.ts). It listens first thing in the start, before the source or any pin, so that a socket
// path we may not serve fails the start with one line and nothing made; requests that arrive while the
// agent is still starting wait (bounded by the server) until ready() hands over the pipeline, i.e. until
// the programs are attached: an ADD answered earlier would let a pod start before capture is live.
import * as native from '../native/addon.js';
import { CniServer } from '../cni/server.js';
import { AgentCniHandler } from '../cni/handler.js';
import type { Enroller } from './enroller.js';
import type { Logger } from '../util/log.js';
import { UserError } from '../util/errors.js';
import type { CniObserver } from '../cni/server.js';

export interface CniEndpoint {
  /** capture is active: answer requests from now on */
  ready(enroller: Enroller): void;
  /** the socket accepts requests (until close()) */
  serving(): boolean;
  close(): Promise<void>;
}

export async function serveCni(o: {
  socketPath: string;
  log: Logger;
  podWaitMs?: number | undefined;
  observer?: CniObserver | undefined;
}): Promise<CniEndpoint> {
  let ready: (e: Enroller) => void = () => {};
  const enroller = new Promise<Enroller>((resolve) => (ready = resolve));
  const handler = new AgentCniHandler({
    enroller,
    log: o.log,
    netnsCookie: (p) => native.netnsCookie(p),
    ...(o.podWaitMs !== undefined ? { podWaitMs: o.podWaitMs } : {}),
  });
  let server: CniServer;
  try {
    server = await CniServer.listen({ socketPath: o.socketPath, handler, log: o.log, ...(o.observer ? { observer: o.observer } : {}) });
  } catch (e) {
    if (e instanceof UserError) throw e;
    // e.g. its directory cannot be made (a read-only /var/run): still one line with the fix
    throw new UserError(`cannot serve the CNI socket ${o.socketPath}: ${(e as Error).message}: pass a --cni-socket in a directory root can write to`, {
      cause: e,
    });
  }
  let open = true;
  return {
    ready,
    serving: () => open,
    close: () => {
      open = false;
      return server.close();
    },
  };
}
