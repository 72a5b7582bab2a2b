// Handles: JS objects that own one fd each (cilium/ebpf's Map/Program/Link, better-sqlite3's
// Database). Every native function that makes an fd returns one; every function that takes an fd
// takes one. close() is idempotent, the fd getter throws BpfError EBADF once closed, and the finalizer
// closes a still-open fd as a safety net (a leak of a link fd would keep a program attached).
//
//   Fd     any fd (program, link, cgroup directory, netns file, socket)
//   MapFd  a map fd that knows its map: the shape (bpf_obj_get_info_by_fd) is read once when the
//          handle is made, and every map op checks buffer sizes against it with no syscall beyond
//          the op itself. MapFd.prototype inherits Fd.prototype (a MapFd is an Fd in JS).
#pragma once

#include <linux/bpf.h>
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace meshlane {

// The fd one handle owns, and what it is (for messages).
struct OwnedFd {
  int fd = -1;
  std::string what;
  OwnedFd() = default;
  OwnedFd(const OwnedFd &) = delete;
  OwnedFd &operator=(const OwnedFd &) = delete;
  ~OwnedFd();
  // The fd, or BpfError EBADF (syscall `call`) when the handle is closed.
  int Get(Napi::Env env, const std::string &call) const;
  void Close(Napi::Env env);
};

class Fd : public Napi::ObjectWrap<Fd> {
 public:
  static Napi::Function Define(Napi::Env env);
  // A new handle owning `fd` (closed here if making the handle fails). `what` names it in messages.
  static Napi::Object New(Napi::Env env, int fd, const std::string &what);
  explicit Fd(const Napi::CallbackInfo &info);
  OwnedFd own;

 private:
  Napi::Value GetFd(const Napi::CallbackInfo &info);
  Napi::Value GetClosed(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value ToString(const Napi::CallbackInfo &info);
};

class MapFd : public Napi::ObjectWrap<MapFd> {
 public:
  static Napi::Function Define(Napi::Env env);
  // A new map handle owning `fd`: reads the map's info once (the fd is closed if that fails or the
  // fd is not a map).
  static Napi::Object New(Napi::Env env, int fd, const std::string &what);
  explicit MapFd(const Napi::CallbackInfo &info);
  OwnedFd own;

 private:
  struct bpf_map_info info_ = {};
  size_t valueBytes_ = 0;  // what lookup writes: value_size, or round_up(value_size, 8) * possible CPUs
  std::string name_;
  std::string ctx_;  // "map 'name' (id N)"

  int Open(Napi::Env env, const char *call) const { return own.Get(env, call); }
  void CheckSize(Napi::Env env, const char *call, const char *what, size_t got, size_t want) const;
  std::vector<std::vector<uint8_t>> WalkKeys(Napi::Env env, int fd) const;

  Napi::Value GetFd(const Napi::CallbackInfo &info);
  Napi::Value GetClosed(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value ToString(const Napi::CallbackInfo &info);
  Napi::Value GetInfo(const Napi::CallbackInfo &info);
  Napi::Value GetValueBytes(const Napi::CallbackInfo &info);
  Napi::Value Lookup(const Napi::CallbackInfo &info);
  Napi::Value Update(const Napi::CallbackInfo &info);
  Napi::Value Delete(const Napi::CallbackInfo &info);
  Napi::Value Keys(const Napi::CallbackInfo &info);
  Napi::Value Entries(const Napi::CallbackInfo &info);
};

// The fd of argument i, which must be an Fd or a MapFd handle (TypeError otherwise, BpfError EBADF
// when it is closed). `call` names the function for the EBADF message.
int ArgHandle(const Napi::CallbackInfo &info, size_t i, const char *name, const std::string &call);

// Registers Fd and MapFd (exports and instance data).
void InitHandles(Napi::Env env, Napi::Object exports);

}  // namespace meshlane
