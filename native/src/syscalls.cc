// Thin wrappers over bpf(2) via libbpf's low-level API, plus the few plain syscalls the agent needs
// (open/close of cgroup and netns paths, statfs/mount for bpffs). Every failure throws a NativeError.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "native.h"

namespace meshlane {

namespace {

constexpr int kENOTSUPP = 524;

// libbpf 1.x returns -errno; be tolerant of a bare -1 with errno set.
inline int Err(int ret) { return ret == -1 && errno != 0 ? errno : -ret; }

std::string FdCtx(const char *what, int fd) { return std::string(what) + " fd " + std::to_string(fd); }

// ----- links and attachment -----

Napi::Value LinkCreate(const Napi::CallbackInfo &info, const char *targetWhat) {
  int progFd = ArgFd(info, 0, "progFd");
  int targetFd = ArgFd(info, 1, targetWhat);
  uint32_t attachType = ArgU32(info, 2, "attachType");
  int fd = bpf_link_create(progFd, targetFd, static_cast<enum bpf_attach_type>(attachType), nullptr);
  if (fd < 0)
    ThrowErrno(info.Env(), Err(fd), "bpf_link_create",
               FdCtx("program", progFd) + ", " + FdCtx(targetWhat, targetFd) + ", attach type " +
                   std::to_string(attachType));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value AttachCgroup(const Napi::CallbackInfo &info) { return LinkCreate(info, "cgroup"); }
Napi::Value AttachNetns(const Napi::CallbackInfo &info) { return LinkCreate(info, "netns"); }

Napi::Value ProgAttach(const Napi::CallbackInfo &info) {
  int progFd = ArgFd(info, 0, "progFd");
  int targetFd = ArgFd(info, 1, "targetFd");
  uint32_t attachType = ArgU32(info, 2, "attachType");
  int r = bpf_prog_attach(progFd, targetFd, static_cast<enum bpf_attach_type>(attachType), 0);
  if (r < 0)
    ThrowErrno(info.Env(), Err(r), "bpf_prog_attach",
               FdCtx("program", progFd) + ", " + FdCtx("target", targetFd) + ", attach type " +
                   std::to_string(attachType));
  return info.Env().Undefined();
}

Napi::Value ProgDetach(const Napi::CallbackInfo &info) {
  int progFd = ArgFd(info, 0, "progFd");
  int targetFd = ArgFd(info, 1, "targetFd");
  uint32_t attachType = ArgU32(info, 2, "attachType");
  int r = bpf_prog_detach2(progFd, targetFd, static_cast<enum bpf_attach_type>(attachType));
  if (r < 0)
    ThrowErrno(info.Env(), Err(r), "bpf_prog_detach2",
               FdCtx("program", progFd) + ", " + FdCtx("target", targetFd) + ", attach type " +
                   std::to_string(attachType));
  return info.Env().Undefined();
}

Napi::Value LinkUpdate(const Napi::CallbackInfo &info) {
  int linkFd = ArgFd(info, 0, "linkFd");
  int progFd = ArgFd(info, 1, "newProgFd");
  int r = bpf_link_update(linkFd, progFd, nullptr);
  if (r < 0)
    ThrowErrno(info.Env(), Err(r), "bpf_link_update", FdCtx("link", linkFd) + ", new " + FdCtx("program", progFd));
  return info.Env().Undefined();
}

Napi::Value LinkDetach(const Napi::CallbackInfo &info) {
  int linkFd = ArgFd(info, 0, "linkFd");
  int r = bpf_link_detach(linkFd);
  if (r < 0) ThrowErrno(info.Env(), Err(r), "bpf_link_detach", FdCtx("link", linkFd));
  return info.Env().Undefined();
}

template <typename T>
void GetInfo(const Napi::CallbackInfo &info, int fd, T *out, const char *what) {
  memset(out, 0, sizeof *out);
  __u32 len = sizeof *out;
  int r = bpf_obj_get_info_by_fd(fd, out, &len);
  if (r < 0) ThrowErrno(info.Env(), Err(r), "bpf_obj_get_info_by_fd", FdCtx(what, fd));
}

Napi::Value LinkInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "linkFd");
  struct bpf_link_info li;
  GetInfo(info, fd, &li, "link");
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(li.id));
  o.Set("progId", static_cast<double>(li.prog_id));
  o.Set("type", static_cast<double>(li.type));
  if (li.type == BPF_LINK_TYPE_CGROUP) {
    o.Set("cgroupId", static_cast<double>(li.cgroup.cgroup_id));  // a kernfs inode number: < 2^53
    o.Set("attachType", static_cast<double>(li.cgroup.attach_type));
  } else if (li.type == BPF_LINK_TYPE_NETNS) {
    o.Set("attachType", static_cast<double>(li.netns.attach_type));
  }
  return o;
}

Napi::Value MapInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "mapFd");
  struct bpf_map_info mi;
  GetInfo(info, fd, &mi, "map");
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(mi.id));
  o.Set("name", std::string(mi.name, strnlen(mi.name, sizeof mi.name)));
  o.Set("type", static_cast<double>(mi.type));
  o.Set("keySize", static_cast<double>(mi.key_size));
  o.Set("valueSize", static_cast<double>(mi.value_size));
  o.Set("maxEntries", static_cast<double>(mi.max_entries));
  o.Set("flags", static_cast<double>(mi.map_flags));
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "progFd");
  struct bpf_prog_info pi;
  GetInfo(info, fd, &pi, "program");
  char tag[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(pi.id));
  o.Set("name", std::string(pi.name, strnlen(pi.name, sizeof pi.name)));
  o.Set("type", static_cast<double>(pi.type));
  o.Set("tag", std::string(tag));
  return o;
}

// ----- pins, bpffs, fds -----

Napi::Value Pin(const Napi::CallbackInfo &info) {
  int fd = ArgFd(info, 0, "fd");
  std::string path = ArgString(info, 1, "path");
  int r = bpf_obj_pin(fd, path.c_str());
  if (r < 0) ThrowErrno(info.Env(), Err(r), "bpf_obj_pin", "path " + Quote(path) + ", fd " + std::to_string(fd),
                        {{"path", path}});
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), Err(fd), "bpf_obj_get", "path " + Quote(path), {{"path", path}});
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value IsBpffs(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  struct statfs st;
  if (statfs(path.c_str(), &st) != 0)
    ThrowErrno(info.Env(), errno, "statfs", "path " + Quote(path), {{"path", path}});
  return Napi::Boolean::New(info.Env(), static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC);
}

Napi::Value MountBpffs(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  if (mount("bpf", path.c_str(), "bpf", 0, nullptr) != 0)
    ThrowErrno(info.Env(), errno, "mount", "bpffs on " + Quote(path), {{"path", path}});
  return info.Env().Undefined();
}

Napi::Value OpenPath(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  // Always close-on-exec: these fds (cgroup dirs, netns files) must never leak into children.
  uint32_t flags = ArgU32Opt(info, 1, "flags", O_RDONLY) | O_CLOEXEC;
  int fd = open(path.c_str(), static_cast<int>(flags));
  if (fd < 0) ThrowErrno(info.Env(), errno, "open", "path " + Quote(path), {{"path", path}});
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo &info) {
  int fd = ArgFd(info, 0, "fd");
  // Linux releases the fd even when close(2) reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(info.Env(), errno, "close", "fd " + std::to_string(fd));
  return info.Env().Undefined();
}

// A duplicate of another process's fd (pidfd_open + pidfd_getfd, Linux 5.6): used to put a proxy's
// listening socket that predates meshlane into a sockhash. Needs CAP_SYS_PTRACE over the process.
Napi::Value PidfdGetfd(const Napi::CallbackInfo &info) {
  int pid = static_cast<int>(ArgU32Opt(info, 0, "pid", 0));
  int target = ArgFd(info, 1, "fd");
  std::string ctx = "pid " + std::to_string(pid) + " fd " + std::to_string(target);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowErrno(info.Env(), errno, "pidfd_open", ctx);
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  int err = errno;
  close(pidfd);
  if (fd < 0) ThrowErrno(info.Env(), err, "pidfd_getfd", ctx);
  return Napi::Number::New(info.Env(), fd);
}

// ----- map operations -----

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

struct MapShape {
  struct bpf_map_info info;
  size_t valueBytes;  // what lookup writes: value_size, or round_up(value_size, 8) * possible CPUs
  std::string ctx;    // "map 'name' (id N, fd F)"
};

// The kernel writes the map's value size, not the caller's: check sizes before handing it a buffer.
MapShape Shape(const Napi::CallbackInfo &info, int fd) {
  MapShape s;
  GetInfo(info, fd, &s.info, "map");
  s.ctx = "map " + Quote(std::string(s.info.name, strnlen(s.info.name, sizeof s.info.name))) + " (id " +
          std::to_string(s.info.id) + ", fd " + std::to_string(fd) + ")";
  s.valueBytes = s.info.value_size;
  if (IsPercpu(s.info.type)) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus < 0) ThrowErrno(info.Env(), cpus, "libbpf_num_possible_cpus", s.ctx);
    s.valueBytes = ((s.info.value_size + 7) / 8) * 8 * static_cast<size_t>(cpus);
  }
  return s;
}

void CheckSize(const Napi::CallbackInfo &info, const MapShape &s, const char *call, const char *what, size_t got,
               size_t want) {
  if (got != want)
    ThrowErrno(info.Env(), EINVAL, call,
               s.ctx + ": the " + what + " is " + std::to_string(got) + " bytes, the map's is " + std::to_string(want),
               {{"map", std::string(s.info.name, strnlen(s.info.name, sizeof s.info.name))}});
}

Napi::Value MapLookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 1, "key");
  uint32_t valueSize = ArgU32(info, 2, "valueSize");
  MapShape s = Shape(info, fd);
  CheckSize(info, s, "bpf_map_lookup_elem", "key", key.Length(), s.info.key_size);
  CheckSize(info, s, "bpf_map_lookup_elem", "value size", valueSize, s.valueBytes);
  Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, valueSize);
  int r = bpf_map_lookup_elem(fd, key.Data(), value.Data());
  if (r < 0) {
    int e = Err(r);
    if (e == ENOENT) return env.Null();
    ThrowErrno(env, e, "bpf_map_lookup_elem", s.ctx);
  }
  return value;
}

Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
  int fd = ArgFd(info, 0, "fd");
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 1, "key");
  Napi::Buffer<uint8_t> value = ArgBuffer(info, 2, "value");
  uint32_t flags = ArgU32Opt(info, 3, "flags", BPF_ANY);
  MapShape s = Shape(info, fd);
  CheckSize(info, s, "bpf_map_update_elem", "key", key.Length(), s.info.key_size);
  CheckSize(info, s, "bpf_map_update_elem", "value", value.Length(), s.valueBytes);
  int r = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
  if (r < 0) ThrowErrno(info.Env(), Err(r), "bpf_map_update_elem", s.ctx);
  return info.Env().Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo &info) {
  int fd = ArgFd(info, 0, "fd");
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 1, "key");
  MapShape s = Shape(info, fd);
  CheckSize(info, s, "bpf_map_delete_elem", "key", key.Length(), s.info.key_size);
  int r = bpf_map_delete_elem(fd, key.Data());
  if (r < 0) {
    int e = Err(r);
    if (e == ENOENT) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), e, "bpf_map_delete_elem", s.ctx);
  }
  return Napi::Boolean::New(info.Env(), true);
}

// get_next_key walk. A hash walk restarts from the first bucket when the current key is deleted
// under it; bound the walk so a map that churns cannot loop forever.
std::vector<std::vector<uint8_t>> WalkKeys(const Napi::CallbackInfo &info, int fd, const MapShape &s) {
  std::vector<std::vector<uint8_t>> keys;
  size_t ks = s.info.key_size;
  std::vector<uint8_t> cur(ks), next(ks);
  const size_t limit = static_cast<size_t>(s.info.max_entries) * 4 + 1024;
  bool first = true;
  for (;;) {
    int r = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
    if (r < 0) {
      int e = Err(r);
      if (e == ENOENT) break;
      ThrowErrno(info.Env(), e, "bpf_map_get_next_key", s.ctx);
    }
    keys.push_back(next);
    if (keys.size() > limit)
      ThrowErrno(info.Env(), EAGAIN, "bpf_map_get_next_key", s.ctx + ": the map changed too much during the walk");
    cur.swap(next);
    first = false;
  }
  return keys;
}

Napi::Value MapKeys(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint32_t keySize = ArgU32(info, 1, "keySize");
  MapShape s = Shape(info, fd);
  CheckSize(info, s, "bpf_map_get_next_key", "key size", keySize, s.info.key_size);
  auto keys = WalkKeys(info, fd, s);
  Napi::Array out = Napi::Array::New(env, keys.size());
  for (size_t i = 0; i < keys.size(); i++)
    out.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, keys[i].data(), keys[i].size()));
  return out;
}

Napi::Value MapEntries(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint32_t keySize = ArgU32(info, 1, "keySize");
  uint32_t valueSize = ArgU32(info, 2, "valueSize");
  MapShape s = Shape(info, fd);
  CheckSize(info, s, "bpf_map_lookup_batch", "key size", keySize, s.info.key_size);
  CheckSize(info, s, "bpf_map_lookup_batch", "value size", valueSize, s.valueBytes);
  const size_t ks = keySize, vs = valueSize;

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
  uint32_t chunk = std::max<uint32_t>(1, std::min<uint32_t>(s.info.max_entries, 256));
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
      ThrowErrno(env, e, "bpf_map_lookup_batch", s.ctx);
    }
    for (__u32 i = 0; i < count; i++) push(&keys[i * ks], &vals[i * vs]);
    if (e == ENOENT) break;
    inTok.swap(outTok);
    first = false;
  }
  if (batchWorks) return out;

  // Fallback: walk the keys and look each one up (entries deleted meanwhile are skipped).
  auto keyList = WalkKeys(info, fd, s);
  std::vector<uint8_t> val(vs);
  for (auto &k : keyList) {
    int r = bpf_map_lookup_elem(fd, k.data(), val.data());
    if (r < 0) {
      int e = Err(r);
      if (e == ENOENT) continue;
      ThrowErrno(env, e, "bpf_map_lookup_elem", s.ctx);
    }
    push(k.data(), val.data());
  }
  return out;
}

}  // namespace

void InitSyscalls(Napi::Env env, Napi::Object exports) {
  struct {
    const char *name;
    Napi::Value (*fn)(const Napi::CallbackInfo &);
  } fns[] = {
      {"attachCgroup", AttachCgroup}, {"attachNetns", AttachNetns}, {"progAttach", ProgAttach},
      {"progDetach", ProgDetach},     {"linkUpdate", LinkUpdate},   {"linkDetach", LinkDetach},
      {"linkInfo", LinkInfo},         {"mapInfo", MapInfo},         {"progInfo", ProgInfo},
      {"pin", Pin},                   {"objGet", ObjGet},           {"isBpffs", IsBpffs},
      {"mountBpffs", MountBpffs},     {"openPath", OpenPath},       {"close", Close},
      {"mapLookup", MapLookup},       {"mapUpdate", MapUpdate},     {"mapDelete", MapDelete},
      {"mapKeys", MapKeys},           {"mapEntries", MapEntries},   {"pidfdGetfd", PidfdGetfd},
  };
  for (auto &f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
}

}  // namespace meshlane
