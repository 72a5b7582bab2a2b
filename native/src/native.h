// Registration entry points of each concern; addon.cc calls them from module init.
#pragma once

#include <napi.h>

#include <string>

namespace meshlane {

void InitObject(Napi::Env env, Napi::Object exports);    // object.cc: BpfObject
void InitSyscalls(Napi::Env env, Napi::Object exports);  // syscalls.cc: links, pins, opens
// (handles.h: InitHandles, the Fd and MapFd classes)
void InitSockets(Napi::Env env, Napi::Object exports);   // sockets.cc: netns cookies, SO_ORIGINAL_DST
void InitProbe(Napi::Env env, Napi::Object exports);     // probe.cc: kernel feature probes

// libbpf's print callback is process-global. It is installed once and drops everything unless a
// LogCapture is active on the calling thread, in which case INFO and WARN lines are appended to it.
void InstallLibbpfPrint();

class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture &) = delete;
  LogCapture &operator=(const LogCapture &) = delete;
  const std::string &text() const { return text_; }
  void Append(const char *s, size_t n) { text_.append(s, n); }
  // The innermost capture active on this thread, or nullptr.
  static LogCapture *Current();

 private:
  std::string text_;
  LogCapture *prev_;
};

}  // namespace meshlane
