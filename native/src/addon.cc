// Module init: meshlane.node. The native surface is declared in native/index.d.ts.
#include <napi.h>

#include "native.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  meshlane::InstallLibbpfPrint();
  meshlane::InitObject(env, exports);
  meshlane::InitSyscalls(env, exports);
  meshlane::InitSockets(env, exports);
  meshlane::InitProbe(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(meshlane, Init)
