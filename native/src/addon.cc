// Module init: meshlane.node. The native surface is declared in native/index.d.ts.
#include <napi.h>

#include "errors.h"
#include "handles.h"
#include "native.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new meshlane::AddonData());  // freed by napi when the env goes
  meshlane::InstallLibbpfPrint();
  exports.Set("setErrorClasses", Napi::Function::New(env, meshlane::SetErrorClasses, "setErrorClasses"));
  meshlane::InitHandles(env, exports);
  meshlane::InitObject(env, exports);
  meshlane::InitSyscalls(env, exports);
  meshlane::InitSockets(env, exports);
  meshlane::InitProbe(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(meshlane, Init)
