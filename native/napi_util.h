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

// Argument errors carry Node's own codes, so callers can tell them from system errors by `code` alone.
inline Napi::Value ThrowType(Napi::Env env, const std::string& message) {
  if (env.IsExceptionPending()) return env.Undefined();  // never throw over a pending exception
  Napi::TypeError error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

inline Napi::Value ThrowRange(Napi::Env env, const std::string& message) {
  if (env.IsExceptionPending()) return env.Undefined();
  Napi::RangeError error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  error.ThrowAsJavaScriptException();
  return env.Undefined();
}

// Reads a byte-buffer argument: a Uint8Array, which every Node Buffer is. napi_is_buffer also accepts
// any other view (a DataView, a Float64Array) whose data napi_get_buffer_info then refuses, so the
// check goes through the typed-array info instead. `value` may be empty (an exception is pending from
// the getter that produced it): false without throwing. A detached buffer reads as 0 bytes.
inline bool GetBytes(Napi::Env env, Napi::Value value, const std::string& what, const uint8_t** data,
                     size_t* length) {
  if (value.IsEmpty() || env.IsExceptionPending()) return false;
  napi_typedarray_type type = napi_int8_array;
  size_t n = 0;
  void* p = nullptr;
  if (!value.IsTypedArray() ||
      napi_get_typedarray_info(env, value, &type, &n, &p, nullptr, nullptr) != napi_ok ||
      type != napi_uint8_array) {
    ThrowType(env, what + " must be a Buffer");
    return false;
  }
  static const uint8_t kEmpty = 0;
  *data = (p != nullptr) ? static_cast<const uint8_t*>(p) : &kEmpty;
  *length = (p != nullptr) ? n : 0;
  return true;
}

// Reads property `name`, running any getter or Proxy trap; empty (with the getter's exception left
// pending for the caller to return into JS) when it throws.
inline Napi::Value GetProp(Napi::Object object, const char* name) {
  Napi::Env env = object.Env();
  if (env.IsExceptionPending()) return Napi::Value();
  Napi::Value value = object.Get(name);
  if (env.IsExceptionPending()) return Napi::Value();
  return value;
}

// Reads argument `index` as an integer in [min, max]; throws TypeError/RangeError naming `what`.
inline bool GetInteger(const Napi::CallbackInfo& info, size_t index, const char* what, int64_t min, int64_t max,
                       int64_t* out) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    ThrowType(info.Env(), std::string(what) + " must be a number");
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
