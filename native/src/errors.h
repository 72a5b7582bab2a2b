// Error construction shared by every native function. One shape (see native/index.d.ts NativeError):
//   message  "<syscall>: <strerror> (<CODE>)[, <context>]"
//   errno    positive errno
//   code     symbolic name ('EPERM')
//   syscall  the failing call
// plus optional context properties (path, map, program, log).
#pragma once

#include <napi.h>

#include <string>
#include <utility>
#include <vector>

namespace meshlane {

using Props = std::vector<std::pair<std::string, std::string>>;

// Symbolic name for an errno value ("ENOENT"); "ENOTSUPP" for the kernel-internal 524.
std::string ErrnoName(int err);
// strerror text, with kernel-internal values spelled out.
std::string ErrnoText(int err);

// Build (not throw) a NativeError. `err` may be negative (libbpf style); it is stored positive.
Napi::Error MakeError(Napi::Env env, int err, const std::string &syscall, const std::string &context = "",
                      const Props &props = {});

// Build a NativeError with an explicit message (used for load failures, where the message is the
// verifier's complaint rather than strerror).
Napi::Error MakeErrorWithMessage(Napi::Env env, int err, const std::string &syscall, const std::string &message,
                                 const Props &props = {});

[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const std::string &syscall,
                                    const std::string &context = "", const Props &props = {}) {
  throw MakeError(env, err, syscall, context, props);
}

// Argument helpers: throw TypeError (code ERR_INVALID_ARG_TYPE) on a wrong type.
int ArgFd(const Napi::CallbackInfo &info, size_t i, const char *name);
uint32_t ArgU32(const Napi::CallbackInfo &info, size_t i, const char *name);
uint32_t ArgU32Opt(const Napi::CallbackInfo &info, size_t i, const char *name, uint32_t dflt);
std::string ArgString(const Napi::CallbackInfo &info, size_t i, const char *name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo &info, size_t i, const char *name);

// "'/sys/fs/bpf/x'" style quoting for context strings.
std::string Quote(const std::string &s);

}  // namespace meshlane
