// dmkit native addon: a thin, checked layer over the device-mapper control device. The command
// set, header encoding and all policy live in TypeScript (src/dm/); this file only opens the control
// node and runs DM ioctls off the JS thread, re-checking every length the caller promised.
#include "dm_ioctl.h"
#include "napi_util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dmkit {
namespace {

static_assert(sizeof(struct dm_ioctl) == 312, "struct dm_ioctl must be 312 bytes");
static_assert(offsetof(struct dm_ioctl, data_size) == 12, "data_size offset");
static_assert(offsetof(struct dm_ioctl, flags) == 28, "flags offset");

constexpr size_t kHeaderSize = sizeof(struct dm_ioctl);
constexpr const char* kControlDir = "/dev/mapper";
constexpr const char* kControlPath = "/dev/mapper/control";
constexpr const char* kMiscDevPath = "/sys/class/misc/device-mapper/dev";

// Indexed by command number; checked against the header's enum below.
constexpr const char* kCommandNames[] = {
    "DM_VERSION",          "DM_REMOVE_ALL",   "DM_LIST_DEVICES",    "DM_DEV_CREATE",
    "DM_DEV_REMOVE",       "DM_DEV_RENAME",   "DM_DEV_SUSPEND",     "DM_DEV_STATUS",
    "DM_DEV_WAIT",         "DM_TABLE_LOAD",   "DM_TABLE_CLEAR",     "DM_TABLE_DEPS",
    "DM_TABLE_STATUS",     "DM_LIST_VERSIONS", "DM_TARGET_MSG",     "DM_DEV_SET_GEOMETRY",
    "DM_DEV_ARM_POLL",     "DM_GET_TARGET_VERSION",
};
constexpr unsigned kCommandCount = sizeof(kCommandNames) / sizeof(kCommandNames[0]);
static_assert(DM_VERSION_CMD == 0 && DM_TABLE_LOAD_CMD == 9 && DM_TARGET_MSG_CMD == 14,
              "command numbers");
static_assert(DM_GET_TARGET_VERSION_CMD == kCommandCount - 1, "command table covers 0..17");

bool ReadMiscDev(unsigned* major_out, unsigned* minor_out, SysError* error) {
  int fd = open(kMiscDevPath, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = {errno, "open", kMiscDevPath};
    return false;
  }
  char text[32] = {0};
  ssize_t n = read(fd, text, sizeof(text) - 1);
  int read_errno = errno;
  close(fd);
  if (n < 0) {
    *error = {read_errno, "read", kMiscDevPath};
    return false;
  }
  if (sscanf(text, "%u:%u", major_out, minor_out) != 2) {
    *error = {EINVAL, "read", kMiscDevPath};
    return false;
  }
  return true;
}

bool MakeControlNode(SysError* error) {
  unsigned major_nr = 0;
  unsigned minor_nr = 0;
  if (!ReadMiscDev(&major_nr, &minor_nr, error)) return false;
  if (mkdir(kControlDir, 0755) != 0 && errno != EEXIST) {
    *error = {errno, "mkdir", kControlDir};
    return false;
  }
  // EEXIST: someone else (udev, another process) created it meanwhile, which is fine.
  if (mknod(kControlPath, S_IFCHR | 0600, makedev(major_nr, minor_nr)) != 0 && errno != EEXIST) {
    *error = {errno, "mknod", kControlPath};
    return false;
  }
  return true;
}

int OpenControlFd(SysError* error) {
  int fd = open(kControlPath, O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    if (!MakeControlNode(error)) return -1;
    fd = open(kControlPath, O_RDWR | O_CLOEXEC);
  }
  if (fd < 0) {
    *error = {errno, "open", kControlPath};
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) {
    close(fd);
    *error = {ENODEV, "open", kControlPath};
    return -1;
  }
  return fd;
}

Napi::Value ControlOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SysError error{0, "", ""};
  int fd = OpenControlFd(&error);
  if (fd < 0) {
    MakeSysError(env, error, DescribeCall(error)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

bool GetFd(const Napi::CallbackInfo& info, int* fd) { return GetFdArg(info, 0, "fd", fd); }

Napi::Value ControlClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!GetFd(info, &fd)) return env.Undefined();
  if (close(fd) != 0 && errno != EINTR) {
    MakeSysError(env, {errno, "close", ""}, "close device-mapper control").ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// Runs one DM ioctl on a libuv pool thread against memory it owns, so the JS buffer may be reused
// or collected while the kernel works (DEV_SUSPEND can block for seconds, DEV_WAIT indefinitely).
class IoctlWorker : public Napi::AsyncWorker {
 public:
  IoctlWorker(Napi::Env env, int fd, unsigned nr, const uint8_t* data, size_t length, bool secure)
      : Napi::AsyncWorker(env, "dmkit:dm-ioctl"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        nr_(nr),
        secure_(secure),
        input_(data, data + length),
        work_(length) {}

  ~IoctlWorker() override {
    if (secure_) {
      explicit_bzero(input_.data(), input_.size());
      explicit_bzero(work_.data(), work_.size());
    }
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    const unsigned long request = _IOWR(DM_IOCTL, nr_, struct dm_ioctl);
    for (;;) {
      // Each attempt starts from the caller's bytes: a failed ioctl must not leak into a retry.
      memcpy(work_.data(), input_.data(), input_.size());
      if (ioctl(fd_, request, work_.data()) == 0) return;
      if (errno != EINTR) {
        errno_ = errno;
        return;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (errno_ != 0) {
      std::string what = std::string("ioctl ") + kCommandNames[nr_];
      deferred_.Reject(MakeSysError(env, {errno_, "ioctl", ""}, what).Value());
      return;
    }
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(env, work_.data(), work_.size()));
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  unsigned nr_;
  bool secure_;
  int errno_ = 0;
  std::vector<uint8_t> input_;
  std::vector<uint8_t> work_;
};

bool GetCommand(const Napi::CallbackInfo& info, unsigned* nr) {
  if (info.Length() < 2 || !info[1].IsNumber()) {
    ThrowType(info.Env(), "command must be a number");
    return false;
  }
  double value = info[1].As<Napi::Number>().DoubleValue();
  if (!(value >= 0 && value < kCommandCount) || value != static_cast<unsigned>(value)) {
    ThrowRange(info.Env(), "command must be an integer in 0.." + std::to_string(kCommandCount - 1));
    return false;
  }
  *nr = static_cast<unsigned>(value);
  return true;
}

bool CheckHeader(Napi::Env env, const uint8_t* data, size_t length, uint32_t* flags) {
  if (length < kHeaderSize) {
    ThrowRange(env, "buffer must hold at least " + std::to_string(kHeaderSize) + " bytes (struct dm_ioctl)");
    return false;
  }
  uint32_t data_size = 0;
  memcpy(&data_size, data + offsetof(struct dm_ioctl, data_size), sizeof(data_size));
  if (data_size < kHeaderSize || data_size > length) {
    ThrowRange(env, "header data_size " + std::to_string(data_size) + " must be within " +
                        std::to_string(kHeaderSize) + ".." + std::to_string(length));
    return false;
  }
  memcpy(flags, data + offsetof(struct dm_ioctl, flags), sizeof(*flags));
  return true;
}

// dmIoctl(fd, nr, buffer) -> Promise<Buffer>; argument errors throw synchronously. The worker copies
// the bytes here, on the JS thread, so the caller may reuse or detach the buffer at once.
Napi::Value Ioctl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  unsigned nr = 0;
  if (!GetFd(info, &fd) || !GetCommand(info, &nr)) return env.Undefined();
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (info.Length() < 3) return ThrowType(env, "buffer must be a Buffer");
  if (!GetBytes(env, info[2], "buffer", &data, &length)) return env.Undefined();
  uint32_t flags = 0;
  if (!CheckHeader(env, data, length, &flags)) return env.Undefined();
  bool secure = (flags & DM_SECURE_DATA_FLAG) != 0;
  auto* worker = new IoctlWorker(env, fd, nr, data, length, secure);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void RegisterDmIoctl(Napi::Env env, Napi::Object exports) {
  exports.Set("dmControlOpen", Napi::Function::New(env, ControlOpen, "dmControlOpen"));
  exports.Set("dmControlClose", Napi::Function::New(env, ControlClose, "dmControlClose"));
  exports.Set("dmIoctl", Napi::Function::New(env, Ioctl, "dmIoctl"));
}

}  // namespace dmkit
