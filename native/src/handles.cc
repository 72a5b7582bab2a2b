// Fd and MapFd: the handle classes (see handles.h), and the map operations of MapFd.
#include "handles.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "errors.h"

namespace meshlane {

namespace {

constexpr int kENOTSUPP = 524;

// napi type tags: ArgHandle tells the handle kinds apart by tag, not by prototype (which JS can fake).
constexpr napi_type_tag kFdTag = {0x6d6573686c616e65ULL, 0x0000000000fd0001ULL};
constexpr napi_type_tag kMapFdTag = {0x6d6573686c616e65ULL, 0x0000000000fd0002ULL};

// Only the addon makes handles: the constructors want this token (an External JS cannot forge).
int kToken = 0;

bool FromAddon(const Napi::CallbackInfo &info) {
  return info.IsConstructCall() && info.Length() == 1 && info[0].IsExternal() &&
         info[0].As<Napi::External<int>>().Data() == &kToken;
}

// libbpf 1.x returns -errno; be tolerant of a bare -1 with errno set.
inline int Err(int ret) { return ret == -1 && errno != 0 ? errno : -ret; }

// Closes an fd unless released: a handle that cannot be made must not leak the fd it was given.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

// Symbol.dispose, when this Node has it (20.4+): handles then work with `using`.
template <typename T>
void AddDispose(Napi::Env env, std::vector<Napi::ClassPropertyDescriptor<T>> &props,
                typename Napi::ObjectWrap<T>::InstanceMethodCallback close) {
  Napi::Value sym = env.Global().Get("Symbol").As<Napi::Object>().Get("dispose");
  if (sym.IsSymbol()) props.push_back(Napi::ObjectWrap<T>::InstanceMethod(sym.As<Napi::Symbol>(), close));
}

bool IsPercpu(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

// What /proc/self/fd/N points to ("anon_inode:bpf-map"), or "" when /proc cannot tell.
std::string FdTarget(int fd) {
  char buf[128];
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// OwnedFd

OwnedFd::~OwnedFd() {
  if (fd >= 0) close(fd);  // the safety net: the handle was collected while still open
}

int OwnedFd::Get(Napi::Env env, const std::string &call) const {
  if (fd < 0) ThrowErrno(env, EBADF, call, what + " is closed");
  return fd;
}

void OwnedFd::Close(Napi::Env env) {
  if (fd < 0) return;
  int f = fd;
  fd = -1;
  // Linux releases the fd even when close(2) reports EINTR: never retry.
  if (close(f) != 0 && errno != EINTR) ThrowErrno(env, errno, "close", what + ", fd " + std::to_string(f));
}

// ---------------------------------------------------------------------------------------------
// Fd

Napi::Function Fd::Define(Napi::Env env) {
  std::vector<Napi::ClassPropertyDescriptor<Fd>> props = {
      InstanceAccessor<&Fd::GetFd>("fd"),
      InstanceAccessor<&Fd::GetClosed>("closed"),
      InstanceMethod<&Fd::Close>("close"),
      InstanceMethod<&Fd::ToString>("toString"),
  };
  AddDispose<Fd>(env, props, &Fd::Close);
  return DefineClass(env, "Fd", props);
}

Fd::Fd(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Fd>(info) {
  if (!FromAddon(info)) throw Napi::TypeError::New(info.Env(), "Fd handles are made by the addon (objGet, openPath, ...)");
  info.This().As<Napi::Object>().TypeTag(&kFdTag);
}

Napi::Object Fd::New(Napi::Env env, int fd, const std::string &what) {
  FdGuard g{fd};
  Napi::Object o = Data(env).fdClass.New({Napi::External<int>::New(env, &kToken)});
  Fd *h = Unwrap(o);
  h->own.what = what;
  h->own.fd = g.release();
  return o;
}

Napi::Value Fd::GetFd(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), own.Get(info.Env(), "Fd.fd")); }
Napi::Value Fd::GetClosed(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), own.fd < 0); }
Napi::Value Fd::Close(const Napi::CallbackInfo &info) {
  own.Close(info.Env());
  return info.Env().Undefined();
}
Napi::Value Fd::ToString(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), "Fd(" + own.what + (own.fd < 0 ? ", closed)" : ", fd " + std::to_string(own.fd) + ")"));
}

// ---------------------------------------------------------------------------------------------
// MapFd

Napi::Function MapFd::Define(Napi::Env env) {
  std::vector<Napi::ClassPropertyDescriptor<MapFd>> props = {
      InstanceAccessor<&MapFd::GetFd>("fd"),
      InstanceAccessor<&MapFd::GetClosed>("closed"),
      InstanceMethod<&MapFd::Close>("close"),
      InstanceMethod<&MapFd::ToString>("toString"),
      InstanceAccessor<&MapFd::GetInfo>("info"),
      InstanceAccessor<&MapFd::GetValueBytes>("valueBytes"),
      InstanceMethod<&MapFd::Lookup>("lookup"),
      InstanceMethod<&MapFd::Update>("update"),
      InstanceMethod<&MapFd::Delete>("delete"),
      InstanceMethod<&MapFd::Keys>("keys"),
      InstanceMethod<&MapFd::Entries>("entries"),
  };
  AddDispose<MapFd>(env, props, &MapFd::Close);
  return DefineClass(env, "MapFd", props);
}

MapFd::MapFd(const Napi::CallbackInfo &info) : Napi::ObjectWrap<MapFd>(info) {
  if (!FromAddon(info)) throw Napi::TypeError::New(info.Env(), "MapFd handles are made by the addon (openMap, BpfObject.map)");
  info.This().As<Napi::Object>().TypeTag(&kMapFdTag);
}

Napi::Object MapFd::New(Napi::Env env, int fd, const std::string &what) {
  FdGuard g{fd};
  // bpf_obj_get_info_by_fd answers for programs and links too (with their info): check the kind first.
  std::string target = FdTarget(fd);
  if (!target.empty() && target != "anon_inode:bpf-map")
    ThrowErrno(env, EINVAL, "MapFd", what + " is not a BPF map (" + target + ")");
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof mi);
  __u32 len = sizeof mi;
  int r = bpf_obj_get_info_by_fd(fd, &mi, &len);
  if (r < 0) ThrowErrno(env, Err(r), "bpf_obj_get_info_by_fd", what);
  size_t valueBytes = mi.value_size;
  std::string name(mi.name, strnlen(mi.name, sizeof mi.name));
  std::string ctx = "map " + Quote(name) + " (id " + std::to_string(mi.id) + ")";
  if (IsPercpu(mi.type)) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus < 0) ThrowErrno(env, cpus, "libbpf_num_possible_cpus", ctx);
    valueBytes = ((mi.value_size + 7) / 8) * 8 * static_cast<size_t>(cpus);
  }
  Napi::Object o = Data(env).mapFdClass.New({Napi::External<int>::New(env, &kToken)});
  MapFd *m = Unwrap(o);
  m->info_ = mi;
  m->valueBytes_ = valueBytes;
  m->name_ = name;
  m->ctx_ = ctx;
  m->own.what = ctx;
  m->own.fd = g.release();
  return o;
}

Napi::Value MapFd::GetFd(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), own.Get(info.Env(), "MapFd.fd")); }
Napi::Value MapFd::GetClosed(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), own.fd < 0); }
Napi::Value MapFd::Close(const Napi::CallbackInfo &info) {
  own.Close(info.Env());
  return info.Env().Undefined();
}
Napi::Value MapFd::ToString(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), "MapFd(" + ctx_ + (own.fd < 0 ? ", closed)" : ", fd " + std::to_string(own.fd) + ")"));
}

// The shape read when the handle was made (a map cannot change it).
Napi::Value MapFd::GetInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(info_.id));
  o.Set("name", name_);
  o.Set("type", static_cast<double>(info_.type));
  o.Set("keySize", static_cast<double>(info_.key_size));
  o.Set("valueSize", static_cast<double>(info_.value_size));
  o.Set("maxEntries", static_cast<double>(info_.max_entries));
  o.Set("flags", static_cast<double>(info_.map_flags));
  return o;
}

Napi::Value MapFd::GetValueBytes(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), static_cast<double>(valueBytes_));
}

// The kernel writes the map's value size, not the caller's: check sizes before handing it a buffer.
void MapFd::CheckSize(Napi::Env env, const char *call, const char *what, size_t got, size_t want) const {
  if (got != want)
    ThrowErrno(env, EINVAL, call,
               ctx_ + ": the " + what + " is " + std::to_string(got) + " bytes, the map's is " + std::to_string(want),
               {{"map", name_}});
}

Napi::Value MapFd::Lookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "key");
  CheckSize(env, "bpf_map_lookup_elem", "key", key.Length(), info_.key_size);
  int fd = Open(env, "bpf_map_lookup_elem");
  Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, valueBytes_);
  int r = bpf_map_lookup_elem(fd, key.Data(), value.Data());
  if (r < 0) {
    int e = Err(r);
    if (e == ENOENT) return env.Null();
    ThrowErrno(env, e, "bpf_map_lookup_elem", ctx_, {{"map", name_}});
  }
  return value;
}

Napi::Value MapFd::Update(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "key");
  Napi::Buffer<uint8_t> value = ArgBuffer(info, 1, "value");
  uint32_t flags = ArgU32Opt(info, 2, "flags", BPF_ANY);
  CheckSize(env, "bpf_map_update_elem", "key", key.Length(), info_.key_size);
  CheckSize(env, "bpf_map_update_elem", "value", value.Length(), valueBytes_);
  int r = bpf_map_update_elem(Open(env, "bpf_map_update_elem"), key.Data(), value.Data(), flags);
  if (r < 0) ThrowErrno(env, Err(r), "bpf_map_update_elem", ctx_, {{"map", name_}});
  return env.Undefined();
}

Napi::Value MapFd::Delete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "key");
  CheckSize(env, "bpf_map_delete_elem", "key", key.Length(), info_.key_size);
  int r = bpf_map_delete_elem(Open(env, "bpf_map_delete_elem"), key.Data());
  if (r < 0) {
    int e = Err(r);
    if (e == ENOENT) return Napi::Boolean::New(env, false);
    ThrowErrno(env, e, "bpf_map_delete_elem", ctx_, {{"map", name_}});
  }
  return Napi::Boolean::New(env, true);
}

// get_next_key walk. A hash walk restarts from the first bucket when the current key is deleted
// under it; bound the walk so a map that churns cannot loop forever.
std::vector<std::vector<uint8_t>> MapFd::WalkKeys(Napi::Env env, int fd) const {
  std::vector<std::vector<uint8_t>> keys;
  size_t ks = info_.key_size;
  std::vector<uint8_t> cur(ks), next(ks);
  const size_t limit = static_cast<size_t>(info_.max_entries) * 4 + 1024;
  bool first = true;
  for (;;) {
    int r = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
    if (r < 0) {
      int e = Err(r);
      if (e == ENOENT) break;
      ThrowErrno(env, e, "bpf_map_get_next_key", ctx_, {{"map", name_}});
    }
    keys.push_back(next);
    if (keys.size() > limit)
      ThrowErrno(env, EAGAIN, "bpf_map_get_next_key", ctx_ + ": the map changed too much during the walk", {{"map", name_}});
    cur.swap(next);
    first = false;
  }
  return keys;
}

Napi::Value MapFd::Keys(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  auto keys = WalkKeys(env, Open(env, "bpf_map_get_next_key"));
  Napi::Array out = Napi::Array::New(env, keys.size());
  for (size_t i = 0; i < keys.size(); i++)
    out.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, keys[i].data(), keys[i].size()));
  return out;
}

// Every [key, value] pair: batch lookup where the kernel supports it for the map type, else a walk.
Napi::Value MapFd::Entries(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = Open(env, "bpf_map_lookup_batch");
  const size_t ks = info_.key_size, vs = valueBytes_;

  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  auto push = [&](const uint8_t *k, const uint8_t *v) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, Napi::Buffer<uint8_t>::Copy(env, k, ks));
    pair.Set(1u, Napi::Buffer<uint8_t>::Copy(env, v, vs));
    out.Set(n++, pair);
  };

  // Batch lookup. The batch token is a u32 bucket for hash maps and a key for arrays: size it for both.
  std::vector<uint8_t> inTok(std::max<size_t>(ks, 8)), outTok(std::max<size_t>(ks, 8));
  uint32_t chunk = std::max<uint32_t>(1, std::min<uint32_t>(info_.max_entries, 256));
  bool first = true, batchWorks = true;
  for (;;) {
    std::vector<uint8_t> keys(chunk * ks), vals(chunk * vs);
    __u32 count = chunk;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int r = bpf_map_lookup_batch(fd, first ? nullptr : inTok.data(), outTok.data(), keys.data(), vals.data(), &count,
                                 &opts);
    int e = r < 0 ? Err(r) : 0;
    if (e != 0 && e != ENOENT) {
      if (e == ENOSPC && count == 0 && chunk < (1u << 20)) {  // one hash bucket holds more than `chunk`
        chunk *= 2;
        continue;
      }
      if (first && (e == EINVAL || e == ENOTSUP || e == kENOTSUPP)) {  // map type without batch ops
        batchWorks = false;
        break;
      }
      ThrowErrno(env, e, "bpf_map_lookup_batch", ctx_, {{"map", name_}});
    }
    for (__u32 i = 0; i < count; i++) push(&keys[i * ks], &vals[i * vs]);
    if (e == ENOENT) break;
    inTok.swap(outTok);
    first = false;
  }
  if (batchWorks) return out;

  // Fallback: walk the keys and look each one up (entries deleted meanwhile are skipped).
  auto keyList = WalkKeys(env, fd);
  std::vector<uint8_t> val(vs);
  for (auto &k : keyList) {
    int r = bpf_map_lookup_elem(fd, k.data(), val.data());
    if (r < 0) {
      int e = Err(r);
      if (e == ENOENT) continue;
      ThrowErrno(env, e, "bpf_map_lookup_elem", ctx_, {{"map", name_}});
    }
    push(k.data(), val.data());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

int ArgHandle(const Napi::CallbackInfo &info, size_t i, const char *name, const std::string &call) {
  if (info.Length() > i && info[i].IsObject()) {
    Napi::Object o = info[i].As<Napi::Object>();
    if (o.CheckTypeTag(&kMapFdTag)) return MapFd::Unwrap(o)->own.Get(info.Env(), call);
    if (o.CheckTypeTag(&kFdTag)) return Fd::Unwrap(o)->own.Get(info.Env(), call);
  }
  ThrowType(info, i, name, "an Fd handle");
}

void InitHandles(Napi::Env env, Napi::Object exports) {
  AddonData &d = Data(env);
  Napi::Function fd = Fd::Define(env);
  Napi::Function mapFd = MapFd::Define(env);
  // A MapFd is an Fd in JS (instanceof, and one type for functions that take any handle). MapFd
  // defines every Fd method itself, so no Fd method ever runs on a MapFd.
  Napi::Function setProto = env.Global().Get("Object").As<Napi::Object>().Get("setPrototypeOf").As<Napi::Function>();
  setProto.Call({mapFd.Get("prototype"), fd.Get("prototype")});
  setProto.Call({mapFd, fd});
  d.fdClass = Napi::Persistent(fd);
  d.mapFdClass = Napi::Persistent(mapFd);
  exports.Set("Fd", fd);
  exports.Set("MapFd", mapFd);
}

}  // namespace meshlane
