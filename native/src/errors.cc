#include "errors.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cmath>
#include <cstring>

namespace meshlane {

namespace {
constexpr int kENOTSUPP = 524;  // kernel-internal, leaks out of bpf(2)

// libbpf's own codes (4000..), e.g. LIBBPF_ERRNO__FORMAT for a file that is not a BPF object
const char *const kLibbpfNames[] = {"LIBELF", "FORMAT", "KVERSION", "ENDIAN", "INTERNAL", "RELOC",  "LOAD",
                                    "VERIFY", "PROG2BIG", "KVER", "PROGTYPE", "WRNGPID", "INVSEQ", "NLPARSE"};
constexpr int kLibbpfNameCount = sizeof kLibbpfNames / sizeof kLibbpfNames[0];

bool IsLibbpfErrno(int err) { return err >= __LIBBPF_ERRNO__START && err < __LIBBPF_ERRNO__START + kLibbpfNameCount; }
}  // namespace

AddonData &Data(Napi::Env env) {
  AddonData *d = env.GetInstanceData<AddonData>();
  if (d == nullptr) {  // module init sets it first thing: only a broken build gets here
    d = new AddonData();
    env.SetInstanceData(d);
  }
  return *d;
}

[[noreturn]] void ThrowType(const Napi::CallbackInfo &info, size_t i, const char *name, const char *want) {
  Napi::TypeError e = Napi::TypeError::New(
      info.Env(), std::string("argument ") + std::to_string(i + 1) + " (" + name + ") must be " + want);
  e.Value().Set("code", Napi::String::New(info.Env(), "ERR_INVALID_ARG_TYPE"));
  throw e;
}

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  if (err == kENOTSUPP) return "ENOTSUPP";
  if (IsLibbpfErrno(err)) return std::string("LIBBPF_ERRNO__") + kLibbpfNames[err - __LIBBPF_ERRNO__START];
  const char *n = strerrorname_np(err);
  return n ? n : "E" + std::to_string(err);
}

std::string ErrnoText(int err) {
  if (err < 0) err = -err;
  if (err == kENOTSUPP) return "Operation not supported by the kernel";
  if (IsLibbpfErrno(err)) {
    char buf[128];
    libbpf_strerror(err, buf, sizeof buf);
    return buf;
  }
  return strerror(err);
}

std::string Quote(const std::string &s) { return "'" + s + "'"; }

Napi::Error MakeError(Napi::Env env, int err, const std::string &syscall, const std::string &context,
                      const Props &props, ErrorKind kind) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;  // a failure without errno: never report "Success"
  std::string msg = syscall + ": " + ErrnoText(err) + " (" + ErrnoName(err) + ")";
  if (!context.empty()) msg += ", " + context;

  Napi::Object p = Napi::Object::New(env);
  p.Set("errno", Napi::Number::New(env, err));
  p.Set("code", Napi::String::New(env, ErrnoName(err)));
  p.Set("syscall", Napi::String::New(env, syscall));
  for (const auto &kv : props) p.Set(kv.first, Napi::String::New(env, kv.second));
  if (kind == ErrorKind::Load && !p.Has("log")) p.Set("log", Napi::String::New(env, ""));

  AddonData &d = Data(env);
  Napi::FunctionReference &cls = kind == ErrorKind::Load ? d.loadError : d.bpfError;
  if (!cls.IsEmpty()) return Napi::Error(env, cls.New({Napi::String::New(env, msg), p}));
  // setErrorClasses not called (the addon used on its own): a plain Error with the same properties
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  Napi::Array keys = p.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); i++) o.Set(keys.Get(i), p.Get(keys.Get(i)));
  return e;
}

Napi::Value SetErrorClasses(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsObject()) ThrowType(info, 0, "classes", "{ BpfError, LoadError }");
  Napi::Object classes = info[0].As<Napi::Object>();
  Napi::Value bpf = classes.Get("BpfError");
  Napi::Value load = classes.Get("LoadError");
  if (!bpf.IsFunction()) ThrowType(info, 0, "classes.BpfError", "a class");
  if (!load.IsFunction()) ThrowType(info, 0, "classes.LoadError", "a class");
  AddonData &d = Data(info.Env());
  d.bpfError = Napi::Persistent(bpf.As<Napi::Function>());
  d.loadError = Napi::Persistent(load.As<Napi::Function>());
  return info.Env().Undefined();
}

int ArgRawFd(const Napi::CallbackInfo &info, size_t i, const char *name) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info, i, name, "a file descriptor (number)");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 2147483647.0) || std::floor(d) != d)
    ThrowType(info, i, name, "a file descriptor (non-negative integer)");
  return static_cast<int>(d);
}

uint32_t ArgU32(const Napi::CallbackInfo &info, size_t i, const char *name) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info, i, name, "a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || std::floor(d) != d) ThrowType(info, i, name, "an unsigned 32-bit integer");
  return static_cast<uint32_t>(d);
}

uint32_t ArgU32Opt(const Napi::CallbackInfo &info, size_t i, const char *name, uint32_t dflt) {
  if (info.Length() <= i || info[i].IsUndefined()) return dflt;
  return ArgU32(info, i, name);
}

std::string ArgString(const Napi::CallbackInfo &info, size_t i, const char *name) {
  if (info.Length() <= i || !info[i].IsString()) ThrowType(info, i, name, "a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) ThrowType(info, i, name, "a string without NUL bytes");
  return s;
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo &info, size_t i, const char *name) {
  if (info.Length() <= i || !info[i].IsBuffer()) ThrowType(info, i, name, "a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

}  // namespace meshlane
