// dmkit native addon: argument checks and errno-shaped errors shared by every native area.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace dmkit {

// One failed system call: the positive errno, the call's name and the path it addressed ("" if none).
struct SysError {
  int err;
  const char* syscall;
  std::string path;
};

// The errno's symbolic name. glibc names every errno; libuv's table lacks some the kernel's dm code
// returns (ENOTBLK from a block stored at the wrong place, say).
inline std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : uv_err_name(-err);
}

// Shaped like Node's fs errors: code is the errno name, errno is kept positive as dmkit documents.
inline Napi::Error MakeSysError(Napi::Env env, const SysError& e, const std::string& what) {
  std::string message = ErrnoName(e.err) + ": " + std::strerror(e.err) + ", " + what;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrnoName(e.err)));
  error.Set("errno", Napi::Number::New(env, e.err));
  error.Set("syscall", Napi::String::New(env, e.syscall));
  if (!e.path.empty()) error.Set("path", Napi::String::New(env, e.path));
  return error;
}

// "syscall 'path'" or just "syscall": the tail of a system error's message.
inline std::string DescribeCall(const SysError& e) {
  return e.path.empty() ? std::string(e.syscall) : std::string(e.syscall) + " '" + e.path + "'";
}

inline Napi::Value ThrowType(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

inline Napi::Value ThrowRange(Napi::Env env, const std::string& message) {
  Napi::RangeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Reads argument `index` as an integer in [min, max]; throws TypeError/RangeError naming `what`.
inline bool GetInteger(const Napi::CallbackInfo& info, size_t index, const char* what, int64_t min, int64_t max,
                       int64_t* out) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    ThrowType(info.Env(), (std::string(what) + " must be a number").c_str());
    return false;
  }
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!(value >= static_cast<double>(min) && value <= static_cast<double>(max)) ||
      value != static_cast<double>(static_cast<int64_t>(value))) {
    ThrowRange(info.Env(), std::string(what) + " must be an integer in " + std::to_string(min) + ".." +
                               std::to_string(max));
    return false;
  }
  *out = static_cast<int64_t>(value);
  return true;
}

// A file descriptor argument: a non-negative 32-bit integer.
inline bool GetFdArg(const Napi::CallbackInfo& info, size_t index, const char* what, int* fd) {
  int64_t value = 0;
  if (!GetInteger(info, index, what, 0, 0x7fffffff, &value)) return false;
  *fd = static_cast<int>(value);
  return true;
}

}  // namespace dmkit
