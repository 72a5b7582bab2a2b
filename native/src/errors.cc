#include "errors.h"

#include <cerrno>
#include <cmath>
#include <cstring>

namespace meshlane {

namespace {
constexpr int kENOTSUPP = 524;  // kernel-internal, leaks out of bpf(2)

Napi::Error Decorate(Napi::Error e, int err, const std::string &syscall, const Props &props) {
  Napi::Object o = e.Value();
  o.Set("errno", Napi::Number::New(e.Env(), err));
  o.Set("code", Napi::String::New(e.Env(), ErrnoName(err)));
  o.Set("syscall", Napi::String::New(e.Env(), syscall));
  for (const auto &kv : props) o.Set(kv.first, Napi::String::New(e.Env(), kv.second));
  return e;
}

[[noreturn]] void ThrowType(const Napi::CallbackInfo &info, size_t i, const char *name, const char *want) {
  Napi::TypeError e = Napi::TypeError::New(
      info.Env(), std::string("argument ") + std::to_string(i + 1) + " (" + name + ") must be " + want);
  e.Value().Set("code", Napi::String::New(info.Env(), "ERR_INVALID_ARG_TYPE"));
  throw e;
}
}  // namespace

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  if (err == kENOTSUPP) return "ENOTSUPP";
  const char *n = strerrorname_np(err);
  return n ? n : "E" + std::to_string(err);
}

std::string ErrnoText(int err) {
  if (err < 0) err = -err;
  if (err == kENOTSUPP) return "Operation not supported by the kernel";
  return strerror(err);
}

std::string Quote(const std::string &s) { return "'" + s + "'"; }

Napi::Error MakeError(Napi::Env env, int err, const std::string &syscall, const std::string &context,
                      const Props &props) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;  // a failure without errno: never report "Success"
  std::string msg = syscall + ": " + ErrnoText(err) + " (" + ErrnoName(err) + ")";
  if (!context.empty()) msg += ", " + context;
  return Decorate(Napi::Error::New(env, msg), err, syscall, props);
}

Napi::Error MakeErrorWithMessage(Napi::Env env, int err, const std::string &syscall, const std::string &message,
                                 const Props &props) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;
  return Decorate(Napi::Error::New(env, message), err, syscall, props);
}

int ArgFd(const Napi::CallbackInfo &info, size_t i, const char *name) {
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
