// Socket facts: the netns cookie of a socket or of a namespace path, and SO_ORIGINAL_DST.
// The socket functions take a plain fd number, not an Fd handle: the socket belongs to whoever made
// it (a net.Socket of Node, whose fd libuv closes), so it is borrowed for one getsockopt, never owned.
#include <arpa/inet.h>
#include <net/if.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "errors.h"
#include "native.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80  // linux/netfilter_ipv4.h
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80  // linux/netfilter_ipv6/ip6_tables.h
#endif

namespace meshlane {

namespace {

int ReadCookie(int fd, uint64_t *cookie) {
  socklen_t len = sizeof *cookie;
  return getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len) == 0 ? 0 : errno;
}

Napi::Value SocketNetnsCookie(const Napi::CallbackInfo &info) {
  int fd = ArgRawFd(info, 0, "fd");
  uint64_t cookie = 0;
  int e = ReadCookie(fd, &cookie);
  if (e != 0) ThrowErrno(info.Env(), e, "getsockopt", "SO_NETNS_COOKIE on fd " + std::to_string(fd));
  return Napi::BigInt::New(info.Env(), cookie);
}

// Namespaces are per thread: do the setns on a short-lived helper thread so the JS thread (and
// libuv's pool) never leave the agent's own netns. The helper exits right after.
Napi::Value NetnsCookie(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "nsPath");
  struct Result {
    int err = 0;
    const char *call = "";
    uint64_t cookie = 0;
  } res;
  std::thread helper([&path, &res] {
    int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
      res = {errno, "open", 0};
      return;
    }
    if (setns(nsfd, CLONE_NEWNET) != 0) {
      res = {errno, "setns", 0};
      close(nsfd);
      return;
    }
    close(nsfd);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      res = {errno, "socket", 0};
      return;
    }
    int e = ReadCookie(s, &res.cookie);
    if (e != 0) res = {e, "getsockopt", 0};
    close(s);
  });
  helper.join();
  if (res.err != 0)
    ThrowErrno(info.Env(), res.err, res.call, "network namespace " + Quote(path), {{"path", path}});
  return Napi::BigInt::New(info.Env(), res.cookie);
}

// Every interface of a network namespace (name -> ifindex), read from inside it on a helper thread.
Napi::Value NetnsInterfaces(const Napi::CallbackInfo &info) {
  std::string path = ArgString(info, 0, "nsPath");
  int err = 0;
  const char *call = "";
  std::vector<std::pair<std::string, unsigned>> ifs;
  std::thread helper([&] {
    int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
      err = errno;
      call = "open";
      return;
    }
    if (setns(nsfd, CLONE_NEWNET) != 0) {
      err = errno;
      call = "setns";
      close(nsfd);
      return;
    }
    close(nsfd);
    struct if_nameindex *list = if_nameindex();
    if (list == nullptr) {
      err = errno;
      call = "if_nameindex";
      return;
    }
    for (struct if_nameindex *i = list; i->if_index != 0 && i->if_name != nullptr; i++) ifs.emplace_back(i->if_name, i->if_index);
    if_freenameindex(list);
  });
  helper.join();
  if (err != 0) ThrowErrno(info.Env(), err, call, "network namespace " + Quote(path), {{"path", path}});
  Napi::Object o = Napi::Object::New(info.Env());
  for (auto &p : ifs) o.Set(p.first, static_cast<double>(p.second));
  return o;
}

Napi::Value OriginalDst(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgRawFd(info, 0, "fd");
  uint32_t family = ArgU32(info, 1, "family");
  char text[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  if (family == 4) {
    struct sockaddr_in sa = {};
    socklen_t len = sizeof sa;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0)
      ThrowErrno(env, errno, "getsockopt", "SO_ORIGINAL_DST on fd " + std::to_string(fd));
    inet_ntop(AF_INET, &sa.sin_addr, text, sizeof text);
    port = ntohs(sa.sin_port);
  } else if (family == 6) {
    struct sockaddr_in6 sa = {};
    socklen_t len = sizeof sa;
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sa, &len) != 0)
      ThrowErrno(env, errno, "getsockopt", "IP6T_SO_ORIGINAL_DST on fd " + std::to_string(fd));
    inet_ntop(AF_INET6, &sa.sin6_addr, text, sizeof text);
    port = ntohs(sa.sin6_port);
  } else {
    Napi::TypeError e = Napi::TypeError::New(env, "argument 2 (family) must be 4 or 6");
    e.Value().Set("code", "ERR_INVALID_ARG_VALUE");
    throw e;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", std::string(text));
  o.Set("port", port);
  return o;
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("socketNetnsCookie", Napi::Function::New(env, SocketNetnsCookie, "socketNetnsCookie"));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("netnsInterfaces", Napi::Function::New(env, NetnsInterfaces, "netnsInterfaces"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
}

}  // namespace meshlane
