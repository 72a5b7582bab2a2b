// BpfObject: owns one libbpf bpf_object (open -> configure -> load -> handles -> close). After load,
// map(name) and program(name) hand out handles that own a dup of libbpf's fd, so the caller can
// close the object and keep only the handles. A failed open or load throws a LoadError carrying
// libbpf's log as it was printed: which program the verifier refused, and why, is read from it in
// TypeScript (src/native/errors.ts parseLibbpfLog).
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/btf.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "handles.h"
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
                           InstanceMethod<&BpfObject::SetMaxEntries>("setMaxEntries"),
                           InstanceMethod<&BpfObject::SetRodata>("setRodata"),
                           InstanceMethod<&BpfObject::Load>("load"),
                           InstanceMethod<&BpfObject::LoadAsync>("loadAsync"),
                           InstanceMethod<&BpfObject::Map>("map"),
                           InstanceMethod<&BpfObject::Program>("program"),
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
      throw MakeError(info.Env(), err, "bpf_object__open_file", "object " + Quote(path_),
                      {{"path", path_}, {"log", cap.text()}}, ErrorKind::Load);
    }
  }

  ~BpfObject() override {
    if (obj_ != nullptr) bpf_object__close(obj_);
  }

 private:
  friend class LoadWorker;
  struct bpf_object *obj_ = nullptr;
  std::string path_;
  bool loaded_ = false;
  bool loadFailed_ = false;  // libbpf refuses a second bpf_object__load after a failed one
  bool loading_ = false;     // loadAsync() runs on libuv's pool: nothing else may touch obj_ meanwhile

  struct bpf_object *Obj(const Napi::CallbackInfo &info, const char *method) {
    if (obj_ == nullptr)
      ThrowErrno(info.Env(), EBADF, std::string("BpfObject.") + method, "object " + Quote(path_) + " is closed",
                 {{"path", path_}});
    RequireIdle(info, method);
    return obj_;
  }

  // Refuses every call while loadAsync()'s pool thread is in bpf_object__load.
  void RequireIdle(const Napi::CallbackInfo &info, const char *method) {
    if (loading_)
      ThrowErrno(info.Env(), EBUSY, std::string("BpfObject.") + method,
                 "object " + Quote(path_) + " is being loaded (loadAsync)", {{"path", path_}});
  }

  // bpf_object__load with libbpf's output (a verifier log) captured, on the calling thread.
  static int LoadCapturing(struct bpf_object *obj, std::string *log) {
    LogCapture cap;  // per thread
    int err = bpf_object__load(obj);
    *log = cap.text();
    return err;
  }

  // The end of a load, on the JS thread: the object's state, and the error a failed load throws.
  Napi::Error LoadOutcome(Napi::Env env, int err, const std::string &log) {
    if (err == 0) {
      loaded_ = true;
      return Napi::Error();
    }
    loadFailed_ = true;
    return MakeError(env, err, "bpf_object__load", "object " + Quote(path_), {{"path", path_}, {"log", log}},
                     ErrorKind::Load);
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
    int fd = ArgHandle(info, 1, "map", "BpfObject.reuseMap");
    RequireState(info, "reuseMap", false);
    struct bpf_map *m = FindMap(info, "reuseMap", name);
    int err = bpf_map__reuse_fd(m, fd);
    if (err < 0)
      ThrowErrno(info.Env(), err, "bpf_map__reuse_fd",
                 "map " + Quote(name) + " in object " + Quote(path_) + ", fd " + std::to_string(fd),
                 {{"path", path_}, {"map", name}});
    return info.Env().Undefined();
  }

  // Before load: the capacity the map is created with (all policy is the agent's: capacity.ts).
  Napi::Value SetMaxEntries(const Napi::CallbackInfo &info) {
    std::string name = ArgString(info, 0, "name");
    uint32_t n = ArgU32(info, 1, "maxEntries");
    RequireState(info, "setMaxEntries", false);
    struct bpf_map *m = FindMap(info, "setMaxEntries", name);
    int err = bpf_map__set_max_entries(m, n);
    if (err < 0)
      ThrowErrno(info.Env(), err, "bpf_map__set_max_entries",
                 "map " + Quote(name) + " in object " + Quote(path_) + ", " + std::to_string(n) + " entries",
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
    std::string log;
    int err = LoadCapturing(obj_, &log);
    Napi::Error e = LoadOutcome(env, err, log);
    if (!e.IsEmpty()) throw e;
    return env.Undefined();
  }

  // load(), on libuv's pool: the verifier's work (most of a start's 0.6-0.9 s here) does not hold the event
  // loop, so that the agent's source (a cluster file's parse, the API's lists) goes on meanwhile. A promise of
  // undefined, or the LoadError load() throws. Every other call on the object fails with EBUSY until it ends.
  Napi::Value LoadAsync(const Napi::CallbackInfo &info);

  // A dup of an fd libbpf owns (close-on-exec, above stdio), so the handle outlives the object.
  int Dup(const Napi::CallbackInfo &info, int fd, const std::string &what, const Props &props) {
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) ThrowErrno(info.Env(), errno, "fcntl", "F_DUPFD_CLOEXEC of " + what, props);
    return d;
  }

  // After load: a handle of the map (owned by the caller).
  Napi::Value Map(const Napi::CallbackInfo &info) {
    std::string name = ArgString(info, 0, "name");
    RequireState(info, "map", true);
    const Props props = {{"path", path_}, {"map", name}};
    std::string what = "map " + Quote(name) + " in object " + Quote(path_);
    int fd = bpf_map__fd(FindMap(info, "map", name));
    if (fd < 0) ThrowErrno(info.Env(), fd, "bpf_map__fd", what, props);
    return MapFd::New(info.Env(), Dup(info, fd, what, props), what);
  }

  // After load: a handle of the program (owned by the caller).
  Napi::Value Program(const Napi::CallbackInfo &info) {
    std::string name = ArgString(info, 0, "name");
    RequireState(info, "program", true);
    const Props props = {{"path", path_}, {"program", name}};
    std::string what = "program " + Quote(name) + " in object " + Quote(path_);
    struct bpf_program *p = bpf_object__find_program_by_name(obj_, name.c_str());
    if (p == nullptr)
      ThrowErrno(info.Env(), ENOENT, "BpfObject.program", "no program " + Quote(name) + " in object " + Quote(path_),
                 props);
    int fd = bpf_program__fd(p);
    if (fd < 0) ThrowErrno(info.Env(), fd, "bpf_program__fd", what, props);
    return Fd::New(info.Env(), Dup(info, fd, what, props), what);
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    RequireIdle(info, "close");  // the pool thread is in bpf_object__load: the object goes once it is done
    if (obj_ != nullptr) {
      bpf_object__close(obj_);
      obj_ = nullptr;
    }
    return info.Env().Undefined();
  }
};

// bpf_object__load on libuv's pool, for BpfObject.loadAsync. The worker holds a reference to the JS object,
// so it is not collected while its load runs.
class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Object self, BpfObject *obj)
      : Napi::AsyncWorker(self.Env(), "meshlane:bpf_object__load"),
        self_(Napi::Persistent(self)),
        obj_(obj),
        deferred_(Napi::Promise::Deferred::New(self.Env())) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { err_ = BpfObject::LoadCapturing(obj_->obj_, &log_); }

  void OnOK() override {
    obj_->loading_ = false;
    Napi::Error e = obj_->LoadOutcome(Env(), err_, log_);
    if (e.IsEmpty())
      deferred_.Resolve(Env().Undefined());
    else
      deferred_.Reject(e.Value());
  }

  void OnError(const Napi::Error &e) override {  // not reached (Execute reports through err_), but never hang
    obj_->loading_ = false;
    obj_->loadFailed_ = true;
    deferred_.Reject(e.Value());
  }

 private:
  Napi::ObjectReference self_;
  BpfObject *obj_;
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
  std::string log_;
};

Napi::Value BpfObject::LoadAsync(const Napi::CallbackInfo &info) {
  RequireState(info, "loadAsync", false);
  auto *w = new LoadWorker(info.This().As<Napi::Object>(), this);
  loading_ = true;
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

void InitObject(Napi::Env env, Napi::Object exports) { exports.Set("BpfObject", BpfObject::Define(env)); }

}  // namespace meshlane
