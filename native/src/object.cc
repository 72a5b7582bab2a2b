// BpfObject: owns one libbpf bpf_object (open -> configure -> load -> fds -> close).
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/btf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "native.h"

namespace meshlane {

// ---------------------------------------------------------------------------------------------
// libbpf log capture

namespace {
thread_local LogCapture *tls_capture = nullptr;

int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list ap) {
  LogCapture *c = tls_capture;
  if (c == nullptr || level == LIBBPF_DEBUG) return 0;
  char stack[1024];
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(stack, sizeof stack, fmt, ap);
  if (n < 0) {
    va_end(ap2);
    return 0;
  }
  if (static_cast<size_t>(n) < sizeof stack) {
    c->Append(stack, n);
  } else {  // verifier logs are long: format again into a big enough buffer
    std::vector<char> big(static_cast<size_t>(n) + 1);
    vsnprintf(big.data(), big.size(), fmt, ap2);
    c->Append(big.data(), n);
  }
  va_end(ap2);
  return n;
}
}  // namespace

LogCapture::LogCapture() : prev_(tls_capture) { tls_capture = this; }
LogCapture::~LogCapture() { tls_capture = prev_; }
LogCapture *LogCapture::Current() { return tls_capture; }

void InstallLibbpfPrint() { libbpf_set_print(LibbpfPrint); }

// ---------------------------------------------------------------------------------------------
// Load-failure log parsing

namespace {

std::string Trim(const std::string &s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> Lines(const std::string &s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    out.push_back(s.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

std::string StripLibbpf(std::string l) {
  l = Trim(l);
  if (l.rfind("libbpf: ", 0) == 0) l = l.substr(8);
  return l;
}

// "libbpf: prog 'NAME': ..." -> NAME (empty if the line is not about a program)
std::string ProgOfLine(const std::string &line, std::string *rest = nullptr) {
  std::string l = StripLibbpf(line);
  if (l.rfind("prog '", 0) != 0) return "";
  size_t end = l.find("': ", 6);
  if (end == std::string::npos) return "";
  if (rest) *rest = l.substr(end + 3);
  return l.substr(6, end - 6);
}

bool Boring(const std::string &l) {
  // verifier statistics and libbpf framing, not the reason
  static const char *const kPrefixes[] = {"processed ", "verification time", "stack depth",
                                          "-- END PROG LOAD LOG --", "mark_precise", "libbpf: "};
  if (l.empty()) return true;
  for (const char *p : kPrefixes)
    if (l.rfind(p, 0) == 0) return true;
  return false;
}

struct LoadFailure {
  std::string program;
  std::string verifierReason;  // last meaningful line of the verifier log (may be empty)
  std::string lastLibbpfLine;  // last libbpf line, "libbpf: " stripped
};

LoadFailure ParseLoadLog(const std::string &log) {
  LoadFailure f;
  std::vector<std::string> lines = Lines(log);
  std::string anyProgFailing;
  for (size_t i = 0; i < lines.size(); i++) {
    std::string rest;
    std::string prog = ProgOfLine(lines[i], &rest);
    if (!prog.empty()) {
      if (rest.rfind("BPF program load failed", 0) == 0 && f.program.empty()) f.program = prog;
      if (rest.find("fail") != std::string::npos) anyProgFailing = prog;
      if (rest.rfind("-- BEGIN PROG LOAD LOG --", 0) == 0 && (f.program.empty() || f.program == prog)) {
        // The verifier text follows until "-- END PROG LOAD LOG --".
        std::string reason;
        for (size_t j = i + 1; j < lines.size(); j++) {
          std::string t = Trim(lines[j]);
          if (t.rfind("-- END PROG LOAD LOG --", 0) == 0) break;
          if (!Boring(t)) reason = t;
        }
        if (f.verifierReason.empty()) f.verifierReason = reason;
      }
    }
    std::string t = Trim(lines[i]);
    if (t.rfind("libbpf: ", 0) == 0) f.lastLibbpfLine = StripLibbpf(t);
  }
  if (f.program.empty()) f.program = anyProgFailing;
  return f;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// BpfObject

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceAccessor<&BpfObject::GetPath>("path"),
                           InstanceMethod<&BpfObject::Maps>("maps"),
                           InstanceMethod<&BpfObject::Programs>("programs"),
                           InstanceMethod<&BpfObject::ReuseMap>("reuseMap"),
                           InstanceMethod<&BpfObject::SetRodata>("setRodata"),
                           InstanceMethod<&BpfObject::Load>("load"),
                           InstanceMethod<&BpfObject::MapFd>("mapFd"),
                           InstanceMethod<&BpfObject::ProgramFd>("programFd"),
                           InstanceMethod<&BpfObject::Close>("close"),
                       });
  }

  explicit BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info) {
    if (!info.IsConstructCall()) throw Napi::TypeError::New(info.Env(), "BpfObject must be called with new");
    path_ = ArgString(info, 0, "path");
    LIBBPF_OPTS(bpf_object_open_opts, opts);
    // kernel_log_level stays 0: libbpf then retries a refused program with log_level 1 and its own
    // buffer, and prints that verifier log through the print callback (captured by load()). A
    // non-zero level would also log (and risk ENOSPC on) every program that verifies fine.
    LogCapture cap;
    errno = 0;
    obj_ = bpf_object__open_file(path_.c_str(), &opts);
    if (obj_ == nullptr) {
      int err = errno ? errno : EINVAL;
      std::string ctx = "object " + Quote(path_);
      LoadFailure f = ParseLoadLog(cap.text());
      if (!f.lastLibbpfLine.empty()) ctx += ": " + f.lastLibbpfLine;
      Props props = {{"path", path_}};
      if (!cap.text().empty()) props.push_back({"log", cap.text()});
      ThrowErrno(info.Env(), err, "bpf_object__open_file", ctx, props);
    }
  }

  ~BpfObject() override {
    if (obj_ != nullptr) bpf_object__close(obj_);
  }

 private:
  struct bpf_object *obj_ = nullptr;
  std::string path_;
  bool loaded_ = false;
  bool loadFailed_ = false;  // libbpf refuses a second bpf_object__load after a failed one

  struct bpf_object *Obj(const Napi::CallbackInfo &info, const char *method) {
    if (obj_ == nullptr)
      ThrowErrno(info.Env(), EBADF, std::string("BpfObject.") + method, "object " + Quote(path_) + " is closed",
                 {{"path", path_}});
    return obj_;
  }

  void RequireState(const Napi::CallbackInfo &info, const char *method, bool wantLoaded) {
    Obj(info, method);
    if (loadFailed_)
      ThrowErrno(info.Env(), EBADFD, std::string("BpfObject.") + method,
                 "loading object " + Quote(path_) + " failed before; close it and open it again", {{"path", path_}});
    if (loaded_ != wantLoaded)
      ThrowErrno(info.Env(), wantLoaded ? ENOENT : EBUSY, std::string("BpfObject.") + method,
                 "object " + Quote(path_) + (wantLoaded ? " is not loaded yet" : " is already loaded"),
                 {{"path", path_}});
  }

  struct bpf_map *FindMap(const Napi::CallbackInfo &info, const char *method, const std::string &name) {
    struct bpf_map *m = bpf_object__find_map_by_name(Obj(info, method), name.c_str());
    if (m == nullptr)
      ThrowErrno(info.Env(), ENOENT, std::string("BpfObject.") + method,
                 "no map " + Quote(name) + " in object " + Quote(path_), {{"path", path_}, {"map", name}});
    return m;
  }

  Napi::Value GetPath(const Napi::CallbackInfo &info) { return Napi::String::New(info.Env(), path_); }

  Napi::Value Maps(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    struct bpf_object *obj = Obj(info, "maps");
    struct bpf_map *m;
    uint32_t i = 0;
    bpf_object__for_each_map(m, obj) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_map__name(m));
      o.Set("type", static_cast<double>(bpf_map__type(m)));
      o.Set("keySize", static_cast<double>(bpf_map__key_size(m)));
      o.Set("valueSize", static_cast<double>(bpf_map__value_size(m)));
      o.Set("maxEntries", static_cast<double>(bpf_map__max_entries(m)));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Programs(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    struct bpf_object *obj = Obj(info, "programs");
    struct bpf_program *p;
    uint32_t i = 0;
    bpf_object__for_each_program(p, obj) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(p));
      o.Set("section", bpf_program__section_name(p));
      o.Set("type", static_cast<double>(bpf_program__type(p)));
      o.Set("attachType", static_cast<double>(bpf_program__expected_attach_type(p)));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value ReuseMap(const Napi::CallbackInfo &info) {
    std::string name = ArgString(info, 0, "name");
    int fd = ArgFd(info, 1, "fd");
    RequireState(info, "reuseMap", false);
    struct bpf_map *m = FindMap(info, "reuseMap", name);
    int err = bpf_map__reuse_fd(m, fd);
    if (err < 0)
      ThrowErrno(info.Env(), err, "bpf_map__reuse_fd",
                 "map " + Quote(name) + " in object " + Quote(path_) + ", fd " + std::to_string(fd),
                 {{"path", path_}, {"map", name}});
    return info.Env().Undefined();
  }

  Napi::Value SetRodata(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string var = ArgString(info, 0, "varName");
    Napi::Buffer<uint8_t> value = ArgBuffer(info, 1, "value");
    RequireState(info, "setRodata", false);
    const Props props = {{"path", path_}, {"map", ".rodata"}};
    auto fail = [&](int err, const std::string &why) -> void {
      ThrowErrno(env, err, "setRodata", why + " (object " + Quote(path_) + ")", props);
    };

    struct btf *btf = bpf_object__btf(obj_);
    if (btf == nullptr) fail(ENOENT, "the object has no BTF (compile it with -g)");
    int secId = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
    if (secId < 0) fail(ENOENT, "the object has no .rodata section (no const volatile globals)");
    const struct btf_type *sec = btf__type_by_id(btf, secId);
    const struct btf_var_secinfo *vsi = btf_var_secinfos(sec);
    const struct btf_var_secinfo *found = nullptr;
    for (int i = 0; i < btf_vlen(sec); i++, vsi++) {
      const struct btf_type *vt = btf__type_by_id(btf, vsi->type);
      if (vt == nullptr || !btf_is_var(vt)) continue;
      const char *n = btf__name_by_offset(btf, vt->name_off);
      if (n != nullptr && var == n) {
        found = vsi;
        break;
      }
    }
    if (found == nullptr) fail(ENOENT, "no variable " + Quote(var) + " in .rodata");
    if (value.Length() != found->size)
      fail(EINVAL, "variable " + Quote(var) + " is " + std::to_string(found->size) + " bytes, the value is " +
                       std::to_string(value.Length()));

    struct bpf_map *m = nullptr;
    struct bpf_map *it;
    bpf_object__for_each_map(it, obj_) {
      const char *n = bpf_map__name(it);
      size_t len = strlen(n);
      if (bpf_map__is_internal(it) && len >= 7 && strcmp(n + len - 7, ".rodata") == 0) {
        m = it;
        break;
      }
    }
    if (m == nullptr) fail(ENOENT, "libbpf made no .rodata map");
    // libbpf 1.1 hands out the initial value read-only: patch a copy and set it back.
    size_t size = 0;
    const void *cur = bpf_map__initial_value(m, &size);
    if (cur == nullptr) fail(ENOENT, "the .rodata map has no initial value");
    if (static_cast<size_t>(found->offset) + found->size > size)
      fail(ERANGE, "variable " + Quote(var) + " lies outside the .rodata map");
    std::vector<uint8_t> copy(static_cast<const uint8_t *>(cur), static_cast<const uint8_t *>(cur) + size);
    memcpy(copy.data() + found->offset, value.Data(), value.Length());
    int err = bpf_map__set_initial_value(m, copy.data(), copy.size());
    if (err < 0) ThrowErrno(env, err, "bpf_map__set_initial_value", "map .rodata in object " + Quote(path_), props);
    return env.Undefined();
  }

  Napi::Value Load(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireState(info, "load", false);
    int err;
    std::string log;
    {
      LogCapture cap;
      err = bpf_object__load(obj_);
      log = cap.text();
    }
    if (err == 0) {
      loaded_ = true;
      return env.Undefined();
    }
    loadFailed_ = true;
    LoadFailure f = ParseLoadLog(log);
    Props props = {{"path", path_}, {"log", log}};
    std::string msg;
    if (!f.program.empty()) {
      props.push_back({"program", f.program});
      if (!f.verifierReason.empty())
        msg = "verifier refused program " + Quote(f.program) + ": " + f.verifierReason;
      else
        msg = "loading program " + Quote(f.program) + " failed: " + ErrnoText(err) + " (" + ErrnoName(err) + ")" +
              (f.lastLibbpfLine.empty() ? "" : ": " + f.lastLibbpfLine);
    } else {
      msg = "bpf_object__load: " + ErrnoText(err) + " (" + ErrnoName(err) + "), object " + Quote(path_) +
            (f.lastLibbpfLine.empty() ? "" : ": " + f.lastLibbpfLine);
    }
    throw MakeErrorWithMessage(env, err, "bpf_object__load", msg, props);
  }

  Napi::Value MapFd(const Napi::CallbackInfo &info) {
    std::string name = ArgString(info, 0, "name");
    RequireState(info, "mapFd", true);
    int fd = bpf_map__fd(FindMap(info, "mapFd", name));
    if (fd < 0)
      ThrowErrno(info.Env(), fd, "bpf_map__fd", "map " + Quote(name) + " in object " + Quote(path_),
                 {{"path", path_}, {"map", name}});
    return Napi::Number::New(info.Env(), fd);
  }

  Napi::Value ProgramFd(const Napi::CallbackInfo &info) {
    std::string name = ArgString(info, 0, "name");
    RequireState(info, "programFd", true);
    struct bpf_program *p = bpf_object__find_program_by_name(obj_, name.c_str());
    if (p == nullptr)
      ThrowErrno(info.Env(), ENOENT, "BpfObject.programFd", "no program " + Quote(name) + " in object " + Quote(path_),
                 {{"path", path_}, {"program", name}});
    int fd = bpf_program__fd(p);
    if (fd < 0)
      ThrowErrno(info.Env(), fd, "bpf_program__fd", "program " + Quote(name) + " in object " + Quote(path_),
                 {{"path", path_}, {"program", name}});
    return Napi::Number::New(info.Env(), fd);
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (obj_ != nullptr) {
      bpf_object__close(obj_);
      obj_ = nullptr;
    }
    return info.Env().Undefined();
  }
};

void InitObject(Napi::Env env, Napi::Object exports) { exports.Set("BpfObject", BpfObject::Define(env)); }

}  // namespace meshlane
