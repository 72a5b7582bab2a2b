// Kernel feature probes (libbpf loads a trivial program / creates a tiny map). A negative result
// from libbpf means it cannot probe that type (e.g. a type newer than libbpf): that throws.
#include <bpf/libbpf.h>

#include <string>

#include "errors.h"
#include "native.h"

namespace meshlane {

namespace {

Napi::Value Result(const Napi::CallbackInfo &info, int r, const char *call, const std::string &ctx) {
  if (r < 0) ThrowErrno(info.Env(), r, call, ctx);
  return Napi::Boolean::New(info.Env(), r > 0);
}

Napi::Value ProbeProgType(const Napi::CallbackInfo &info) {
  uint32_t t = ArgU32(info, 0, "type");
  return Result(info, libbpf_probe_bpf_prog_type(static_cast<enum bpf_prog_type>(t), nullptr),
                "libbpf_probe_bpf_prog_type", "program type " + std::to_string(t));
}

Napi::Value ProbeMapType(const Napi::CallbackInfo &info) {
  uint32_t t = ArgU32(info, 0, "type");
  return Result(info, libbpf_probe_bpf_map_type(static_cast<enum bpf_map_type>(t), nullptr),
                "libbpf_probe_bpf_map_type", "map type " + std::to_string(t));
}

Napi::Value ProbeHelper(const Napi::CallbackInfo &info) {
  uint32_t pt = ArgU32(info, 0, "progType");
  uint32_t h = ArgU32(info, 1, "helperId");
  return Result(info,
                libbpf_probe_bpf_helper(static_cast<enum bpf_prog_type>(pt), static_cast<enum bpf_func_id>(h), nullptr),
                "libbpf_probe_bpf_helper", "helper " + std::to_string(h) + " in program type " + std::to_string(pt));
}

}  // namespace

void InitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probeProgType", Napi::Function::New(env, ProbeProgType, "probeProgType"));
  exports.Set("probeMapType", Napi::Function::New(env, ProbeMapType, "probeMapType"));
  exports.Set("probeHelper", Napi::Function::New(env, ProbeHelper, "probeHelper"));
}

}  // namespace meshlane
