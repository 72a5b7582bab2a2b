// Thin wrappers over bpf(2) via libbpf's low-level API, plus the few plain syscalls the agent needs
// (open of cgroup and netns paths, statfs/mount for bpffs, pidfd_getfd). Every fd they make comes
// back as an Fd (or MapFd) handle, every fd they take is one. Every failure throws a BpfError.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "errors.h"
#include "handles.h"
#include "native.h"

namespace meshlane {

namespace {

// libbpf 1.x returns -errno; be tolerant of a bare -1 with errno set.
inline int Err(int ret) { return ret == -1 && errno != 0 ? errno : -ret; }

std::string FdCtx(const char *what, int fd) { return std::string(what) + " fd " + std::to_string(fd); }

// ----- links and attachment -----

Napi::Value LinkCreate(const Napi::CallbackInfo &info, const char *targetWhat, const char *call) {
  int progFd = ArgHandle(info, 0, "prog", call);
  int targetFd = ArgHandle(info, 1, targetWhat, call);
  uint32_t attachType = ArgU32(info, 2, "attachType");
  int fd = bpf_link_create(progFd, targetFd, static_cast<enum bpf_attach_type>(attachType), nullptr);
  std::string ctx =
      FdCtx("program", progFd) + ", " + FdCtx(targetWhat, targetFd) + ", attach type " + std::to_string(attachType);
  if (fd < 0) ThrowErrno(info.Env(), Err(fd), "bpf_link_create", ctx);
  return Fd::New(info.Env(), fd, "link (" + ctx + ")");
}

Napi::Value AttachCgroup(const Napi::CallbackInfo &info) { return LinkCreate(info, "cgroup", "attachCgroup"); }
Napi::Value AttachNetns(const Napi::CallbackInfo &info) { return LinkCreate(info, "netns", "attachNetns"); }

Napi::Value ProgAttach(const Napi::CallbackInfo &info) {
  int progFd = ArgHandle(info, 0, "prog", "progAttach");
  int targetFd = ArgHandle(info, 1, "target", "progAttach");
  uint32_t attachType = ArgU32(info, 2, "attachType");
  int r = bpf_prog_attach(progFd, targetFd, static_cast<enum bpf_attach_type>(attachType), 0);
  if (r < 0)
    ThrowErrno(info.Env(), Err(r), "bpf_prog_attach",
               FdCtx("program", progFd) + ", " + FdCtx("target", targetFd) + ", attach type " +
                   std::to_string(attachType));
  return info.Env().Undefined();
}

Napi::Value LinkUpdate(const Napi::CallbackInfo &info) {
  int linkFd = ArgHandle(info, 0, "link", "linkUpdate");
  int progFd = ArgHandle(info, 1, "prog", "linkUpdate");
  int r = bpf_link_update(linkFd, progFd, nullptr);
  if (r < 0)
    ThrowErrno(info.Env(), Err(r), "bpf_link_update", FdCtx("link", linkFd) + ", new " + FdCtx("program", progFd));
  return info.Env().Undefined();
}

Napi::Value LinkDetach(const Napi::CallbackInfo &info) {
  int linkFd = ArgHandle(info, 0, "link", "linkDetach");
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
  int fd = ArgHandle(info, 0, "link", "linkInfo");
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

Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgHandle(info, 0, "prog", "progInfo");
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
  int fd = ArgHandle(info, 0, "handle", "pin");
  std::string path = ArgString(info, 1, "path");
  int r = bpf_obj_pin(fd, path.c_str());
  if (r < 0) ThrowErrno(info.Env(), Err(r), "bpf_obj_pin", "path " + Quote(path) + ", fd " + std::to_string(fd),
                        {{"path", path}});
  return info.Env().Undefined();
}

int GetPinned(const Napi::CallbackInfo &info, const std::string &path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), Err(fd), "bpf_obj_get", "path " + Quote(path), {{"path", path}});
  return fd;
}

Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  return Fd::New(info.Env(), GetPinned(info, path), "pin " + Quote(path));
}

Napi::Value OpenMap(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  return MapFd::New(info.Env(), GetPinned(info, path), "pin " + Quote(path));
}

Napi::Value IsBpffs(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  struct statfs st;
  if (statfs(path.c_str(), &st) != 0)
    ThrowErrno(info.Env(), errno, "statfs", "path " + Quote(path), {{"path", path}});
  return Napi::Boolean::New(info.Env(), static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC);
}

// mount -t bpf -o DATA bpf PATH, with MS_* FLAGS (the caller decides both: see src/dataplane/bpffs.ts).
Napi::Value MountBpffs(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  std::string data = info.Length() > 1 && !info[1].IsUndefined() ? ArgString(info, 1, "data") : "";
  uint32_t flags = ArgU32Opt(info, 2, "flags", 0);
  if (mount("bpf", path.c_str(), "bpf", flags, data.empty() ? nullptr : data.c_str()) != 0)
    ThrowErrno(info.Env(), errno, "mount", "bpffs on " + Quote(path) + (data.empty() ? "" : " -o " + data),
               {{"path", path}});
  return info.Env().Undefined();
}

Napi::Value OpenPath(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "path");
  // Always close-on-exec: these fds (cgroup dirs, netns files) must never leak into children.
  uint32_t flags = ArgU32Opt(info, 1, "flags", O_RDONLY) | O_CLOEXEC;
  int fd = open(path.c_str(), static_cast<int>(flags));
  if (fd < 0) ThrowErrno(info.Env(), errno, "open", "path " + Quote(path), {{"path", path}});
  return Fd::New(info.Env(), fd, "path " + Quote(path));
}

// A duplicate of another process's fd (pidfd_open + pidfd_getfd, Linux 5.6): used to put a proxy's
// listening socket that predates meshlane into a sockhash. Needs CAP_SYS_PTRACE over the process.
Napi::Value PidfdGetfd(const Napi::CallbackInfo &info) {
  int pid = static_cast<int>(ArgU32Opt(info, 0, "pid", 0));
  int target = ArgRawFd(info, 1, "fd");
  std::string ctx = "pid " + std::to_string(pid) + " fd " + std::to_string(target);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowErrno(info.Env(), errno, "pidfd_open", ctx);
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  int err = errno;
  close(pidfd);
  if (fd < 0) ThrowErrno(info.Env(), err, "pidfd_getfd", ctx);
  return Fd::New(info.Env(), fd, "a copy of " + ctx);
}

}  // namespace

void InitSyscalls(Napi::Env env, Napi::Object exports) {
  struct {
    const char *name;
    Napi::Value (*fn)(const Napi::CallbackInfo &);
  } fns[] = {
      {"attachCgroup", AttachCgroup}, {"attachNetns", AttachNetns}, {"progAttach", ProgAttach},
      {"linkUpdate", LinkUpdate},     {"linkDetach", LinkDetach},   {"linkInfo", LinkInfo},
      {"progInfo", ProgInfo},         {"pin", Pin},                 {"objGet", ObjGet},
      {"openMap", OpenMap},           {"isBpffs", IsBpffs},         {"mountBpffs", MountBpffs},
      {"openPath", OpenPath},         {"pidfdGetfd", PidfdGetfd},
  };
  for (auto &f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
}

}  // namespace meshlane
