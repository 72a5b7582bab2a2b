// Error construction shared by every native function. Every failure is an instance of an error class
// that TypeScript passes in once (setErrorClasses, see src/native/errors.ts), like better-sqlite3:
//   new BpfError(message, { errno, code, syscall, path?, map?, program? })
//   new LoadError(message, { errno, code, syscall, path?, log })   (bpf_object open/load failures)
// where
//   message  "<syscall>: <strerror> (<CODE>)[, <context>]"
//   errno    positive errno
//   code     symbolic name ('EPERM')
//   syscall  the failing call
// The log a LoadError carries is libbpf's, raw: reading it (which program, why) is TypeScript's job.
// Argument type errors stay TypeErrors (code ERR_INVALID_ARG_TYPE).
#pragma once

#include <napi.h>

#include <string>
#include <utility>
#include <vector>

namespace meshlane {

using Props = std::vector<std::pair<std::string, std::string>>;

// Per addon instance (napi instance data): the error classes from setErrorClasses and the handle
// classes (handles.cc), so a native function can construct either.
struct AddonData {
  Napi::FunctionReference bpfError;
  Napi::FunctionReference loadError;
  Napi::FunctionReference fdClass;
  Napi::FunctionReference mapFdClass;
};
AddonData &Data(Napi::Env env);

enum class ErrorKind { Bpf, Load };

// Symbolic name for an errno value ("ENOENT"); "ENOTSUPP" for the kernel-internal 524.
std::string ErrnoName(int err);
// strerror text, with kernel-internal values spelled out.
std::string ErrnoText(int err);

// Build (not throw) a BpfError (or a LoadError: pass kind Load and a "log" prop). `err` may be
// negative (libbpf style); it is stored positive.
Napi::Error MakeError(Napi::Env env, int err, const std::string &syscall, const std::string &context = "",
                      const Props &props = {}, ErrorKind kind = ErrorKind::Bpf);

[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const std::string &syscall,
                                    const std::string &context = "", const Props &props = {}) {
  throw MakeError(env, err, syscall, context, props);
}

// setErrorClasses({ BpfError, LoadError }): registered by addon.cc.
Napi::Value SetErrorClasses(const Napi::CallbackInfo &info);

// Argument helpers: throw TypeError (code ERR_INVALID_ARG_TYPE) on a wrong type.
[[noreturn]] void ThrowType(const Napi::CallbackInfo &info, size_t i, const char *name, const char *want);
int ArgRawFd(const Napi::CallbackInfo &info, size_t i, const char *name);
uint32_t ArgU32(const Napi::CallbackInfo &info, size_t i, const char *name);
uint32_t ArgU32Opt(const Napi::CallbackInfo &info, size_t i, const char *name, uint32_t dflt);
std::string ArgString(const Napi::CallbackInfo &info, size_t i, const char *name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo &info, size_t i, const char *name);

// "'/sys/fs/bpf/x'" style quoting for context strings.
std::string Quote(const std::string &s);

}  // namespace meshlane
