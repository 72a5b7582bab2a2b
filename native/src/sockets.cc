// Socket facts: the netns cookie of a socket or of a namespace path, and SO_ORIGINAL_DST; route
// netlink requests run inside a network namespace (a pod's addresses and rules).
// The socket functions take a plain fd number, not an Fd handle: the socket belongs to whoever made
// it (a net.Socket of Node, whose fd libuv closes), so it is borrowed for one getsockopt, never owned.
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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

// One route netlink request and the errnos that count as done (EEXIST for an idempotent add).
struct NetlinkRequest {
  std::vector<uint8_t> message;
  std::vector<int> tolerate;
};

// Send each request in order on a NETLINK_ROUTE socket and wait for its ack. Returns 0 and the
// per-request errnos (0 or a tolerated one), or the failing errno with *failed = its index (the
// requests after it are not sent). The messages are built by TypeScript (src/dataplane/netlink.ts);
// this only numbers them and asks for the ack.
int RunNetlink(std::vector<NetlinkRequest> &reqs, std::vector<int> *results, size_t *failed, const char **call) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) {
    *call = "socket";
    return errno;
  }
  struct sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  alignas(struct nlmsghdr) uint8_t reply[8192];
  for (size_t i = 0; i < reqs.size(); i++) {
    *failed = i;
    auto &m = reqs[i].message;
    auto *h = reinterpret_cast<struct nlmsghdr *>(m.data());
    uint32_t seq = static_cast<uint32_t>(i + 1);
    h->nlmsg_seq = seq;
    h->nlmsg_pid = 0;
    h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    if (sendto(s, m.data(), m.size(), 0, reinterpret_cast<struct sockaddr *>(&kernel), sizeof kernel) < 0) {
      int e = errno;
      close(s);
      *call = "sendto";
      return e;
    }
    int err = -1;
    while (err < 0) {
      ssize_t n = recv(s, reply, sizeof reply, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(s);
        *call = "recv";
        return e;
      }
      int left = static_cast<int>(n);
      for (auto *r = reinterpret_cast<struct nlmsghdr *>(reply); NLMSG_OK(r, left); r = NLMSG_NEXT(r, left)) {
        if (r->nlmsg_seq != seq || r->nlmsg_type != NLMSG_ERROR) continue;
        err = -reinterpret_cast<struct nlmsgerr *>(NLMSG_DATA(r))->error;
      }
    }
    if (err != 0 && std::find(reqs[i].tolerate.begin(), reqs[i].tolerate.end(), err) == reqs[i].tolerate.end()) {
      close(s);
      *call = "netlink";
      return err;
    }
    results->push_back(err);
  }
  close(s);
  return 0;
}

// Route netlink requests inside the network namespace `nsPath`, on a helper thread (as
// NetnsInterfaces does): netnsNetlink(nsPath, [{ message, tolerate }]) -> errno per request.
Napi::Value NetnsNetlink(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "nsPath");
  if (info.Length() < 2 || !info[1].IsArray()) ThrowType(info, 1, "requests", "an array of { message, tolerate }");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<NetlinkRequest> reqs;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr[i];
    if (!v.IsObject()) ThrowType(info, 1, "requests", "an array of { message, tolerate }");
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value msg = o.Get("message");
    if (!msg.IsBuffer()) ThrowType(info, 1, "requests[].message", "a Buffer");
    auto buf = msg.As<Napi::Buffer<uint8_t>>();
    if (buf.Length() < sizeof(struct nlmsghdr) || reinterpret_cast<const struct nlmsghdr *>(buf.Data())->nlmsg_len != buf.Length()) {
      Napi::TypeError e = Napi::TypeError::New(env, "requests[" + std::to_string(i) + "].message is not one netlink message (nlmsg_len must be its length)");
      e.Value().Set("code", "ERR_INVALID_ARG_VALUE");
      throw e;
    }
    NetlinkRequest r;
    r.message.assign(buf.Data(), buf.Data() + buf.Length());
    Napi::Value tol = o.Get("tolerate");
    if (tol.IsArray()) {
      Napi::Array t = tol.As<Napi::Array>();
      for (uint32_t j = 0; j < t.Length(); j++) r.tolerate.push_back(Napi::Value(t[j]).As<Napi::Number>().Int32Value());
    } else if (!tol.IsUndefined()) {
      ThrowType(info, 1, "requests[].tolerate", "an array of errno numbers");
    }
    reqs.push_back(std::move(r));
  }
  int err = 0;
  const char *call = "";
  size_t failed = 0;
  std::vector<int> results;
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
    err = RunNetlink(reqs, &results, &failed, &call);
  });
  helper.join();
  if (err != 0) {
    std::string ctx = "network namespace " + Quote(path);
    if (std::string(call) == "netlink") ctx = "request " + std::to_string(failed) + " in " + ctx;
    ThrowErrno(env, err, call, ctx, {{"path", path}});
  }
  Napi::Array out = Napi::Array::New(env, results.size());
  for (size_t i = 0; i < results.size(); i++) out.Set(static_cast<uint32_t>(i), results[i]);
  return out;
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
  exports.Set("netnsNetlink", Napi::Function::New(env, NetnsNetlink, "netnsNetlink"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
}

}  // namespace meshlane
