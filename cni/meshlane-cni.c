// meshlane-cni: meshlane's chained CNI plugin, a thin client of the node agent.
//
// A container runtime runs it after the network plugin (bridge, ptp, calico, ...) with the CNI_*
// environment and the network config (with prevResult) on stdin. The plugin answers VERSION itself and
// forwards every other command, unchanged, to the agent over a unix socket that only root can open;
// then it prints what the agent answers and exits with the agent's exit code. All policy (which pod,
// how long to wait, what to enroll) lives in the agent; this file only moves bytes and reports, as a
// CNI error result, what went wrong on the way.
//
// The host has no Node.js and maybe no shared libraries we know of: the executable is static and uses
// no NSS function (no getpwnam, getaddrinfo, ...).
//
// Wire protocol (version 1; src/cni/protocol.ts is the other end):
//   request   one line: a JSON object, then "\n" (every control character inside is escaped):
//             {"v":1,"command":"ADD","containerId":...,"netns":...,"ifname":...,"args":...,
//              "path":...,"config":"<stdin, as a JSON string>"}  (an env variable that is unset is left out)
//             The plugin keeps its end open until the answer: the agent takes EOF as "gave up".
//   response  "<exit code>\n" (decimal, 0..255), then the bytes to print on stdout, until EOF.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PLUGIN_NAME "meshlane-cni"
#define DEFAULT_SOCKET "/var/run/meshlane/cni.sock"
#define WIRE_VERSION 1
#define MAX_STDIN (1 << 20)            // a config with prevResult is a few KiB; refuse absurd input
#define MAX_RESPONSE (4 << 20)         // the agent answers with the prevResult (or an error)
#define DEFAULT_TIMEOUT_S 30           // longer than the agent's own bounded wait for the pod
#define MAX_TIMEOUT_S 600
#define STDIN_TIMEOUT_S 10             // a runtime writes the config and closes stdin at once
#define CONNECT_RETRY_NS (20 * 1000 * 1000)  // backlog full: retry connect() after 20 ms
#define MAX_VERSION_LEN 15
#define FALLBACK_CNI_VERSION "1.0.0"   // for our own error results when the config names none
#define SUPPORTED_VERSIONS "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]"

// CNI spec error codes (SPEC.md, Section 5 "Error").
enum cni_code {
  CNI_ERR_ENV = 4,          // invalid necessary environment variables
  CNI_ERR_IO = 5,           // I/O failure, e.g. reading stdin
  CNI_ERR_CONFIG = 7,       // invalid network config
  CNI_ERR_TRY_AGAIN = 11,   // transient: the runtime should retry later
  CNI_ERR_UNAVAILABLE = 50, // STATUS: the plugin cannot service ADD requests
};

// CNI environment variables a command requires (SPEC.md, Section 2).
enum { NEED_CONTAINERID = 1, NEED_NETNS = 2, NEED_IFNAME = 4 };

// What to do when the agent cannot be asked (not running, not listening, too slow).
enum unreachable_policy {
  FAIL_TRY_AGAIN, // ADD, CHECK: fail closed, code 11; the pod does not start
  SUCCEED,        // DEL, GC: best effort; the agent releases by itself when the netns goes
  FAIL_UNAVAILABLE, // STATUS: code 50
};

struct command {
  const char *name;
  unsigned need;
  enum unreachable_policy unreachable;
};

static const struct command commands[] = {
    {"ADD", NEED_CONTAINERID | NEED_NETNS | NEED_IFNAME, FAIL_TRY_AGAIN},
    {"CHECK", NEED_CONTAINERID | NEED_NETNS | NEED_IFNAME, FAIL_TRY_AGAIN},
    {"DEL", NEED_CONTAINERID | NEED_IFNAME, SUCCEED},
    {"GC", 0, SUCCEED},
    {"STATUS", 0, FAIL_UNAVAILABLE},
};

// ---- a growable byte buffer ----

struct buf {
  char *p;
  size_t len, cap;
};

static void die_oom(void) {
  // no allocation left for a JSON error: say it on stderr, exit non-zero
  static const char msg[] = PLUGIN_NAME ": out of memory\n";
  if (write(2, msg, sizeof msg - 1) < 0) { /* nothing left to do */ }
  _exit(1);
}

static void buf_reserve(struct buf *b, size_t more) {
  if (b->len + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) die_oom();
  b->p = p;
  b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

// Appends s[0..n) as a quoted JSON string. Escapes '"', '\\' and every control character (so the
// request stays on one line); other bytes pass as they are (UTF-8 text stays UTF-8).
static void buf_json(struct buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_add(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      buf_add(b, e, 2);
    } else if (c < 0x20 || c == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
      buf_add(b, e, 6);
    } else {
      buf_add(b, (const char *)&c, 1);
    }
  }
  buf_add(b, "\"", 1);
}

static void buf_json_str(struct buf *b, const char *s) { buf_json(b, s, strlen(s)); }

// ---- time ----

static struct timespec deadline_in(int seconds) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += seconds;
  return t;
}

// Milliseconds left until the deadline (0 when it has passed).
static int ms_left(const struct timespec *deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long long ms = (long long)(deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
  return ms <= 0 ? 0 : ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

// ---- results on stdout ----

static char cni_version[MAX_VERSION_LEN + 1] = FALLBACK_CNI_VERSION;

static bool write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

// Prints a CNI error result on stdout (what the runtime reads), the same in one line on stderr (what an
// operator reads in the runtime's log), and exits non-zero.
__attribute__((noreturn, format(printf, 3, 4))) static void fail(int code, const char *msg, const char *details_fmt, ...) {
  char details[1024];
  va_list ap;
  va_start(ap, details_fmt);
  vsnprintf(details, sizeof details, details_fmt, ap);
  va_end(ap);
  struct buf out = {0};
  buf_str(&out, "{\"cniVersion\":");
  buf_json_str(&out, cni_version);
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  buf_str(&out, num);
  buf_json_str(&out, msg);
  buf_str(&out, ",\"details\":");
  buf_json_str(&out, details);
  buf_str(&out, "}\n");
  write_all(1, out.p, out.len);
  dprintf(2, "%s: %s: %s\n", PLUGIN_NAME, msg, details);
  exit(1);
}

// ---- reading the top level of the config (no JSON parser: the agent validates the config) ----
//
// Only three keys are read here: cniVersion (for our own error results), socket and timeoutSeconds
// (where and how long to ask). The scanner walks the top-level object and skips nested values, so a
// "cniVersion" inside prevResult is not mistaken for the config's. It takes the last occurrence of a
// key, as JSON.parse does in the agent.

struct scan {
  const char *p, *end;
};

static void skip_ws(struct scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

// At a '"': moves past the closing quote. false when the string does not end.
static bool skip_string(struct scan *s) {
  for (s->p++; s->p < s->end; s->p++) {
    if (*s->p == '\\') {
      s->p++;
    } else if (*s->p == '"') {
      s->p++;
      return true;
    }
  }
  return false;
}

// Moves past one value (string, object, array, number, literal). false on text it cannot skip.
static bool skip_value(struct scan *s) {
  skip_ws(s);
  if (s->p >= s->end) return false;
  if (*s->p == '"') return skip_string(s);
  if (*s->p == '{' || *s->p == '[') {
    int depth = 0;
    while (s->p < s->end) {
      char c = *s->p;
      if (c == '"') {
        if (!skip_string(s)) return false;
        continue;
      }
      if (c == '{' || c == '[') depth++;
      if (c == '}' || c == ']') depth--;
      s->p++;
      if (depth == 0) return true;
    }
    return false;
  }
  const char *start = s->p;
  while (s->p < s->end && !strchr(",}] \t\r\n", *s->p)) s->p++;
  return s->p > start;
}

struct span {
  const char *p;
  size_t n;
};

// The raw text of the value of top-level key `key`, or {NULL, 0}.
static struct span top_value(const char *text, size_t n, const char *key) {
  struct span found = {NULL, 0};
  struct scan s = {text, text + n};
  size_t klen = strlen(key);
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '{') return found;
  s.p++;
  for (;;) {
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '"') return found;
    const char *k = s.p + 1;
    if (!skip_string(&s)) return found;
    bool match = (size_t)(s.p - 1 - k) == klen && memcmp(k, key, klen) == 0;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != ':') return found;
    s.p++;
    skip_ws(&s);
    const char *v = s.p;
    if (!skip_value(&s)) return found;
    if (match) found = (struct span){v, (size_t)(s.p - v)};
    skip_ws(&s);
    if (s.p >= s.end || *s.p != ',') return found;
    s.p++;
  }
}

// Decodes a JSON string value into out (NUL-terminated). Handles the simple escapes and \u00XX for
// ASCII; anything else (and embedded NULs) is refused: socket paths and versions are plain ASCII.
static bool span_string(struct span v, char *out, size_t outsz) {
  if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"') return false;
  size_t o = 0;
  for (size_t i = 1; i < v.n - 1; i++) {
    char c = v.p[i];
    if (c == '\\') {
      if (++i >= v.n - 1) return false;
      switch (v.p[i]) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'u': {
          if (i + 4 >= v.n - 1) return false;
          char hex[5] = {v.p[i + 1], v.p[i + 2], v.p[i + 3], v.p[i + 4], 0};
          char *endp;
          long cp = strtol(hex, &endp, 16);
          if (*endp || cp <= 0 || cp >= 0x80) return false;
          c = (char)cp;
          i += 4;
          break;
        }
        default: return false;
      }
    }
    if (o + 1 >= outsz) return false;
    out[o++] = c;
  }
  out[o] = '\0';
  return true;
}

static bool span_is(struct span v, const char *lit) { return v.n == strlen(lit) && memcmp(v.p, lit, v.n) == 0; }

// cniVersion of the config, when it looks like a version (digits and dots); else the fallback stays.
static void read_cni_version(const char *cfg, size_t n) {
  char v[MAX_VERSION_LEN + 1];
  if (!span_string(top_value(cfg, n, "cniVersion"), v, sizeof v) || !v[0]) return;
  if (strspn(v, "0123456789.") != strlen(v)) return;
  memcpy(cni_version, v, sizeof v);
}

static void read_socket(const char *cfg, size_t n, char *out, size_t outsz) {
  struct span v = top_value(cfg, n, "socket");
  if (!v.p || span_is(v, "null")) {
    snprintf(out, outsz, "%s", DEFAULT_SOCKET);
    return;
  }
  if (!span_string(v, out, outsz))
    fail(CNI_ERR_CONFIG, "invalid network config", "\"socket\" must be an absolute path of at most %zu ASCII characters, got %.*s",
         outsz - 1, (int)(v.n > 200 ? 200 : v.n), v.p);
  if (out[0] != '/') fail(CNI_ERR_CONFIG, "invalid network config", "\"socket\" must be an absolute path, got \"%s\"", out);
}

static int read_timeout(const char *cfg, size_t n) {
  struct span v = top_value(cfg, n, "timeoutSeconds");
  if (!v.p || span_is(v, "null")) return DEFAULT_TIMEOUT_S;
  char num[16];
  if (v.n == 0 || v.n >= sizeof num) goto bad;
  memcpy(num, v.p, v.n);
  num[v.n] = '\0';
  if (strspn(num, "0123456789") != v.n) goto bad;
  long t = strtol(num, NULL, 10);
  if (t < 1 || t > MAX_TIMEOUT_S) goto bad;
  return (int)t;
bad:
  fail(CNI_ERR_CONFIG, "invalid network config", "\"timeoutSeconds\" must be a whole number from 1 to %d, got %.*s", MAX_TIMEOUT_S,
       (int)(v.n > 40 ? 40 : v.n), v.p);
}

// ---- stdin ----

enum read_result { READ_OK, READ_TOO_BIG, READ_ERROR, READ_TIMEOUT };

// Reads stdin to EOF, at most MAX_STDIN bytes (what was read stays in `in` in every case).
static enum read_result read_stdin(struct buf *in, int *err) {
  struct timespec deadline = deadline_in(STDIN_TIMEOUT_S);
  buf_reserve(in, 0);
  for (;;) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    int r = poll(&pfd, 1, ms_left(&deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      if (errno == EBADF) return READ_OK; // no stdin at all: an empty config
      *err = errno;
      return READ_ERROR;
    }
    if (r == 0) return READ_TIMEOUT;
    if (pfd.revents & POLLNVAL) return READ_OK;
    char chunk[65536];
    ssize_t got = read(0, chunk, sizeof chunk);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got < 0) {
      *err = errno;
      return READ_ERROR;
    }
    if (got == 0) return READ_OK;
    if (in->len + (size_t)got > MAX_STDIN) {
      buf_add(in, chunk, MAX_STDIN - in->len);
      return READ_TOO_BIG;
    }
    buf_add(in, chunk, (size_t)got);
  }
}

// ---- talking to the agent ----

// Why the agent could not be asked, for the error result: its msg and details.
static const char *why_msg = "meshlane agent unreachable";
static char why[512];

__attribute__((format(printf, 1, 2))) static bool unreachable(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  return false;
}

// The agent took the connection but did not answer in time.
__attribute__((format(printf, 1, 2))) static bool too_slow(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  why_msg = "meshlane agent did not answer in time";
  return false;
}

static const char *connect_error(int err) {
  switch (err) {
    case ENOENT: return "no such file (is the meshlane agent running on this node?)";
    case ECONNREFUSED: return "connection refused (the meshlane agent is not listening: a stale socket)";
    case EACCES:
    case EPERM: return "permission denied (only root may connect)";
    case ENOTSOCK: return "not a socket";
    default: return strerror(err);
  }
}

static bool agent_connect(const char *path, const struct timespec *deadline, int *fdp) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) return unreachable("socket path %s is longer than %zu bytes", path, sizeof sa.sun_path - 1);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  struct stat st;
  if (stat(path, &st) < 0) return unreachable("%s: %s", path, connect_error(errno));
  if (!S_ISSOCK(st.st_mode)) return unreachable("%s: %s", path, connect_error(ENOTSOCK));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return unreachable("socket(AF_UNIX): %s", strerror(errno));
  for (;;) {
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN && ms_left(deadline) > 0) {
      // the agent's accept backlog is full: it is alive but busy
      struct timespec pause = {0, CONNECT_RETRY_NS};
      nanosleep(&pause, NULL);
      continue;
    }
    if (errno == EINPROGRESS) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      int r;
      while ((r = poll(&pfd, 1, ms_left(deadline))) < 0 && errno == EINTR) {}
      int soerr = 0;
      socklen_t l = sizeof soerr;
      if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) == 0 && soerr == 0) break;
      close(fd);
      return r == 0 ? unreachable("connect %s: timed out", path) : unreachable("connect %s: %s", path, connect_error(soerr ? soerr : errno));
    }
    int err = errno;
    close(fd);
    if (err == EAGAIN) return unreachable("connect %s: the agent accepts no connection (timed out)", path);
    return unreachable("connect %s: %s", path, connect_error(err));
  }
  *fdp = fd;
  return true;
}

static bool send_all(int fd, const struct buf *req, const struct timespec *deadline, int timeout_s) {
  size_t off = 0;
  while (off < req->len) {
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int r = poll(&pfd, 1, ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return unreachable("poll: %s", strerror(errno));
    if (r == 0) return too_slow("the meshlane agent took no request within %d s", timeout_s);
    ssize_t w = send(fd, req->p + off, req->len - off, MSG_NOSIGNAL);
    if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (w < 0) return unreachable("sending the request: %s (the agent closed the connection)", strerror(errno));
    off += (size_t)w;
  }
  return true;
}

static bool recv_all(int fd, struct buf *resp, const struct timespec *deadline, int timeout_s) {
  buf_reserve(resp, 0);
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return unreachable("poll: %s", strerror(errno));
    if (r == 0) return too_slow("no answer from the meshlane agent within %d s (\"timeoutSeconds\" in the config)", timeout_s);
    char chunk[65536];
    ssize_t got = recv(fd, chunk, sizeof chunk, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got < 0) return unreachable("reading the answer: %s", strerror(errno));
    if (got == 0) return true;
    if (resp->len + (size_t)got > MAX_RESPONSE) return unreachable("the meshlane agent's answer is larger than %d bytes", MAX_RESPONSE);
    buf_add(resp, chunk, (size_t)got);
  }
}

// Splits "<exit code>\n<body>". false when the answer is not framed so (e.g. the agent closed early).
static bool parse_response(const struct buf *resp, int *code, const char **body, size_t *body_len) {
  const char *nl = resp->len ? memchr(resp->p, '\n', resp->len < 5 ? resp->len : 5) : NULL;
  if (!nl || nl == resp->p) return false;
  int c = 0;
  for (const char *p = resp->p; p < nl; p++) {
    if (*p < '0' || *p > '9') return false;
    c = c * 10 + (*p - '0');
  }
  if (c > 255) return false;
  *code = c;
  *body = nl + 1;
  *body_len = resp->len - (size_t)(nl + 1 - resp->p);
  return true;
}

static void add_env(struct buf *req, const char *key, const char *var) {
  const char *v = getenv(var);
  if (!v) return;
  buf_str(req, ",\"");
  buf_str(req, key);
  buf_str(req, "\":");
  buf_json_str(req, v);
}

static void build_request(struct buf *req, const char *command, const struct buf *config) {
  char head[64];
  snprintf(head, sizeof head, "{\"v\":%d,\"command\":", WIRE_VERSION);
  buf_str(req, head);
  buf_json_str(req, command);
  add_env(req, "containerId", "CNI_CONTAINERID");
  add_env(req, "netns", "CNI_NETNS");
  add_env(req, "ifname", "CNI_IFNAME");
  add_env(req, "args", "CNI_ARGS");
  add_env(req, "path", "CNI_PATH");
  buf_str(req, ",\"config\":");
  buf_json(req, config->p, config->len);
  buf_str(req, "}\n");
}

static bool ask_agent(const char *socket_path, int timeout_s, const struct buf *req, struct buf *resp) {
  struct timespec deadline = deadline_in(timeout_s);
  int fd = -1;
  if (!agent_connect(socket_path, &deadline, &fd)) return false;
  bool ok = send_all(fd, req, &deadline, timeout_s) && recv_all(fd, resp, &deadline, timeout_s);
  close(fd);
  return ok;
}

// ---- main ----

static const struct command *find_command(const char *name) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

static bool env_set(const char *name) {
  const char *v = getenv(name);
  return v && v[0];
}

static void require_env(const struct command *cmd) {
  static const struct {
    unsigned bit;
    const char *name;
  } vars[] = {{NEED_CONTAINERID, "CNI_CONTAINERID"}, {NEED_NETNS, "CNI_NETNS"}, {NEED_IFNAME, "CNI_IFNAME"}};
  char missing[128] = "";
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    if ((cmd->need & vars[i].bit) && !env_set(vars[i].name)) {
      if (missing[0]) strcat(missing, ",");
      strcat(missing, vars[i].name);
    }
  }
  if (!missing[0]) return;
  char msg[192];
  snprintf(msg, sizeof msg, "required env variables [%s] missing", missing); // the names, in msg (as the CNI skel says it)
  fail(CNI_ERR_ENV, msg, "CNI_COMMAND=%s needs them", cmd->name);
}

int main(void) {
  // A runtime that goes away must not kill us mid-write with SIGPIPE: writes then fail with EPIPE.
  signal(SIGPIPE, SIG_IGN);

  const char *command = getenv("CNI_COMMAND");
  if (!command || !command[0]) {
    // run by hand (as the CNI skel does): say what this is
    dprintf(2, "%s: meshlane's chained CNI plugin (forwards to the meshlane agent at %s)\n"
               "CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0\n", PLUGIN_NAME, DEFAULT_SOCKET);
    return 0;
  }

  struct buf config = {0};
  int read_err = 0;
  enum read_result rr = read_stdin(&config, &read_err);
  read_cni_version(config.p, config.len);
  if (rr == READ_ERROR) fail(CNI_ERR_IO, "error reading the network config from stdin", "%s", strerror(read_err));
  if (rr == READ_TIMEOUT) fail(CNI_ERR_IO, "error reading the network config from stdin", "stdin was not closed within %d s", STDIN_TIMEOUT_S);
  if (rr == READ_TOO_BIG) fail(CNI_ERR_CONFIG, "invalid network config", "the config on stdin is larger than %d bytes", MAX_STDIN);

  if (strcmp(command, "VERSION") == 0) {
    struct buf out = {0};
    buf_str(&out, "{\"cniVersion\":");
    buf_json_str(&out, cni_version);
    buf_str(&out, ",\"supportedVersions\":" SUPPORTED_VERSIONS "}\n");
    return write_all(1, out.p, out.len) ? 0 : 1;
  }

  const struct command *cmd = find_command(command);
  if (!cmd) fail(CNI_ERR_ENV, "unknown CNI_COMMAND", "CNI_COMMAND=%.64s is not one of ADD, DEL, CHECK, GC, STATUS, VERSION", command);
  require_env(cmd);

  char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  read_socket(config.p, config.len, socket_path, sizeof socket_path);
  int timeout_s = read_timeout(config.p, config.len);

  struct buf req = {0}, resp = {0};
  build_request(&req, cmd->name, &config);
  int code = 1;
  const char *body = NULL;
  size_t body_len = 0;
  bool answered = ask_agent(socket_path, timeout_s, &req, &resp);
  if (answered && !parse_response(&resp, &code, &body, &body_len)) {
    answered = unreachable("the meshlane agent at %s closed the connection without an answer", socket_path);
  }
  if (!answered) {
    switch (cmd->unreachable) {
      case SUCCEED:
        dprintf(2, "%s: %s: %s (%s); nothing to release here, the agent cleans up when the netns goes\n", PLUGIN_NAME,
                cmd->name, why_msg, why);
        return 0;
      case FAIL_UNAVAILABLE: fail(CNI_ERR_UNAVAILABLE, why_msg, "%s", why);
      case FAIL_TRY_AGAIN: fail(CNI_ERR_TRY_AGAIN, why_msg, "%s", why);
    }
  }
  if (code != 0) {
    // the agent's error result, also for the runtime's log (trimmed of its newline)
    size_t n = body_len && body[body_len - 1] == '\n' ? body_len - 1 : body_len;
    dprintf(2, "%s: %s failed in the meshlane agent: %.*s\n", PLUGIN_NAME, cmd->name, (int)(n > 4096 ? 4096 : n), body);
  }
  if (!write_all(1, body, body_len)) {
    dprintf(2, "%s: writing the result to stdout: %s\n", PLUGIN_NAME, strerror(errno));
    return 1;
  }
  return code;
}
