// The native addon (native/src/*.cc, built by `npm run build:addon`), typed by native/index.d.ts.
// Loaded once, at import: a missing build is a UserError that says how to fix it. Right after loading
// it gets the error classes of errors.ts, so every native failure is a BpfError (or LoadError).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type * as Native from '../../native/index.js';
import { BpfError, LoadError } from './errors.js';
import { UserError } from '../util/errors.js';
import { packageRoot } from '../util/paths.js';

export type NativeAddon = typeof Native;
export type { MapSpec, ProgramSpec, MapInfo, LinkInfo, ProgInfo, NetlinkRequest } from '../../native/index.js';
export type Fd = Native.Fd;
export type MapFd = Native.MapFd;
export type BpfObject = Native.BpfObject;

export const addonPath = join(packageRoot(), 'native', 'build', 'Release', 'meshlane.node');

function load(): NativeAddon {
  if (!existsSync(addonPath)) {
    throw new UserError('the native addon is not built (native/build/Release/meshlane.node missing): run the setup command from the README');
  }
  const a = createRequire(import.meta.url)(addonPath) as NativeAddon;
  a.setErrorClasses({ BpfError, LoadError });
  return a;
}

const addon: NativeAddon = load();
export default addon;

export const Fd = addon.Fd;
export const MapFd = addon.MapFd;
export const BpfObject = addon.BpfObject;
export const attachCgroup = addon.attachCgroup;
export const attachNetns = addon.attachNetns;
export const progAttach = addon.progAttach;
export const linkUpdate = addon.linkUpdate;
export const linkDetach = addon.linkDetach;
export const linkInfo = addon.linkInfo;
export const progInfo = addon.progInfo;
export const pin = addon.pin;
export const objGet = addon.objGet;
export const openMap = addon.openMap;
export const isBpffs = addon.isBpffs;
export const mountBpffs = addon.mountBpffs;
export const openPath = addon.openPath;
export const pidfdGetfd = addon.pidfdGetfd;
export const socketNetnsCookie = addon.socketNetnsCookie;
export const netnsCookie = addon.netnsCookie;
export const netnsInterfaces = addon.netnsInterfaces;
export const netnsNetlink = addon.netnsNetlink;
export const originalDst = addon.originalDst;
export const probeProgType = addon.probeProgType;
export const probeMapType = addon.probeMapType;
export const probeHelper = addon.probeHelper;
