// dmkit native addon: mknod, SysV semaphores (the udev cookie protocol) and poll with cancellation.
// Each function checks its arguments and wraps exactly one system call; what to call when, and why,
// lives in TypeScript (src/dm/nodes.ts, udev.ts, transport.ts). Calls that can block always end (they
// take a timeout): semWaitZero runs in an AsyncWorker, pollReadable on a thread of its own.
#include "sys.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <memory>
#include <cstring>
#include <string>

#include "napi_util.h"

namespace dmkit {
namespace {

constexpr int64_t kU32Max = 0xffffffffLL;
constexpr int64_t kSemValueMax = 32767;  // SEMVMX
constexpr int64_t kTimeoutMaxMs = 0x7fffffff;

// semctl's fourth argument; glibc leaves the definition to the caller.
union SemArg {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
};

void ThrowSys(Napi::Env env, const SysError& e) {
  MakeSysError(env, e, DescribeCall(e)).ThrowAsJavaScriptException();
}

bool GetPath(const Napi::CallbackInfo& info, size_t index, std::string* out) {
  if (info.Length() <= index || !info[index].IsString()) {
    ThrowType(info.Env(), "path must be a string");
    return false;
  }
  *out = info[index].As<Napi::String>().Utf8Value();
  if (out->empty() || out->size() >= PATH_MAX || out->find('\0') != std::string::npos) {
    ThrowRange(info.Env(), "path must be 1.." + std::to_string(PATH_MAX - 1) + " bytes without NUL");
    return false;
  }
  return true;
}

bool GetSemId(const Napi::CallbackInfo& info, int* id) {
  int64_t value = 0;
  if (!GetInteger(info, 0, "semaphore id", 0, INT_MAX, &value)) return false;
  *id = static_cast<int>(value);
  return true;
}

// ---- mknod ----

// sysMknod(path, mode, major, minor): mode holds the type (S_IFBLK or S_IFCHR) and permission bits.
Napi::Value Mknod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  int64_t mode = 0, major_nr = 0, minor_nr = 0;
  if (!GetPath(info, 0, &path) || !GetInteger(info, 1, "mode", 0, kU32Max, &mode) ||
      !GetInteger(info, 2, "major", 0, kU32Max, &major_nr) || !GetInteger(info, 3, "minor", 0, kU32Max, &minor_nr)) {
    return env.Undefined();
  }
  mode_t type = static_cast<mode_t>(mode) & S_IFMT;
  if ((type != S_IFBLK && type != S_IFCHR) || (mode & ~static_cast<int64_t>(S_IFMT | 07777)) != 0) {
    return ThrowRange(env, "mode must be S_IFBLK or S_IFCHR plus permission bits");
  }
  dev_t dev = makedev(static_cast<unsigned>(major_nr), static_cast<unsigned>(minor_nr));
  if (mknod(path.c_str(), static_cast<mode_t>(mode), dev) != 0) ThrowSys(env, {errno, "mknod", path});
  return env.Undefined();
}

// ---- SysV semaphores ----

// semCreate(key) -> id: one new semaphore, 0600, failing with EEXIST when the key is taken.
Napi::Value SemCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t key = 0;
  // Key 0 is IPC_PRIVATE, which would never collide and so never be found by udev's helper.
  if (!GetInteger(info, 0, "key", 1, kU32Max, &key)) return env.Undefined();
  int id = semget(static_cast<key_t>(static_cast<uint32_t>(key)), 1, 0600 | IPC_CREAT | IPC_EXCL);
  if (id < 0) {
    ThrowSys(env, {errno, "semget", ""});
    return env.Undefined();
  }
  return Napi::Number::New(env, id);
}

Napi::Value SemSetValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = 0;
  int64_t value = 0;
  if (!GetSemId(info, &id) || !GetInteger(info, 1, "value", 0, kSemValueMax, &value)) return env.Undefined();
  SemArg arg;
  arg.val = static_cast<int>(value);
  if (semctl(id, 0, SETVAL, arg) != 0) ThrowSys(env, {errno, "semctl", ""});
  return env.Undefined();
}

Napi::Value SemGetValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = 0;
  if (!GetSemId(info, &id)) return env.Undefined();
  int value = semctl(id, 0, GETVAL);
  if (value < 0) {
    ThrowSys(env, {errno, "semctl", ""});
    return env.Undefined();
  }
  return Napi::Number::New(env, value);
}

// semAdd(id, delta): increments never block; a decrement that would go below zero fails with EAGAIN.
Napi::Value SemAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = 0;
  int64_t delta = 0;
  if (!GetSemId(info, &id) || !GetInteger(info, 1, "delta", -kSemValueMax, kSemValueMax, &delta)) {
    return env.Undefined();
  }
  if (delta == 0) return ThrowRange(env, "delta must not be 0 (use semWaitZero to wait)");
  struct sembuf op = {0, static_cast<short>(delta), static_cast<short>(delta < 0 ? IPC_NOWAIT : 0)};
  while (semop(id, &op, 1) != 0) {
    if (errno != EINTR) {
      ThrowSys(env, {errno, "semop", ""});
      break;
    }
  }
  return env.Undefined();
}

Napi::Value SemRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = 0;
  if (!GetSemId(info, &id)) return env.Undefined();
  if (semctl(id, 0, IPC_RMID) != 0) ThrowSys(env, {errno, "semctl", ""});
  return env.Undefined();
}

int64_t MonotonicMs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

// Waits on a pool thread until the semaphore is zero or the timeout passes; resolves true / false.
class SemWaitWorker : public Napi::AsyncWorker {
 public:
  SemWaitWorker(Napi::Env env, int id, int64_t timeout_ms)
      : Napi::AsyncWorker(env, "dmkit:sem-wait"),
        deferred_(Napi::Promise::Deferred::New(env)),
        id_(id),
        deadline_ms_(MonotonicMs() + timeout_ms) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    for (;;) {
      int64_t left = deadline_ms_ - MonotonicMs();
      if (left < 0) left = 0;
      struct timespec timeout = {static_cast<time_t>(left / 1000), static_cast<long>((left % 1000) * 1000000)};
      struct sembuf op = {0, 0, 0};
      if (semtimedop(id_, &op, 1, &timeout) == 0) {
        reached_ = true;
        return;
      }
      if (errno == EAGAIN) return;
      if (errno != EINTR) {
        errno_ = errno;
        return;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (errno_ != 0) {
      deferred_.Reject(MakeSysError(env, {errno_, "semtimedop", ""}, "semtimedop").Value());
      return;
    }
    deferred_.Resolve(Napi::Boolean::New(env, reached_));
  }

 private:
  Napi::Promise::Deferred deferred_;
  int id_;
  int64_t deadline_ms_;
  bool reached_ = false;
  int errno_ = 0;
};

// semWaitZero(id, timeoutMs) -> Promise<boolean>: true when the value reached zero in time.
Napi::Value SemWaitZero(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = 0;
  int64_t timeout_ms = 0;
  if (!GetSemId(info, &id) || !GetInteger(info, 1, "timeout", 0, kTimeoutMaxMs, &timeout_ms)) {
    return env.Undefined();
  }
  auto* worker = new SemWaitWorker(env, id, timeout_ms);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- eventfd and poll ----

Napi::Value EventfdOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    ThrowSys(env, {errno, "eventfd", ""});
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// An eventfd shows in /proc as the anonymous inode "[eventfd]"; fstat alone cannot tell it from an
// epoll or signalfd descriptor (all anonymous inodes share one inode).
bool CheckEventfd(int fd, SysError* error) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    *error = {errno, "fstat", ""};
    return false;
  }
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  char target[64] = {0};
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) {
    *error = {errno, "readlink", path};
    return false;
  }
  target[n] = '\0';
  if (strcmp(target, "anon_inode:[eventfd]") != 0) {
    *error = {EINVAL, "eventfdSignal", ""};
    return false;
  }
  return true;
}

// eventfdSignal(fd): adds 1 to the counter, waking any poll on it. A full counter is already signalled.
// Only an eventfd is written (EINVAL otherwise), and never by a blocking write: a counter that cannot
// take 1 more (POLLOUT clear) is left as it is.
Napi::Value EventfdSignal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!GetFdArg(info, 0, "fd", &fd)) return env.Undefined();
  SysError error{0, "", ""};
  if (!CheckEventfd(fd, &error)) {
    if (error.err == EINVAL) {
      Napi::Error e = MakeSysError(env, error, "eventfdSignal: fd " + std::to_string(fd) + " is not an eventfd");
      e.ThrowAsJavaScriptException();
    } else {
      ThrowSys(env, error);
    }
    return env.Undefined();
  }
  struct pollfd p = {fd, POLLOUT, 0};
  int ready;
  do {
    ready = poll(&p, 1, 0);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) {
    ThrowSys(env, {errno, "poll", ""});
    return env.Undefined();
  }
  if (ready == 0 || (p.revents & POLLOUT) == 0) return env.Undefined();
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(fd, &one, sizeof(one));
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN) ThrowSys(env, {errno, "write", ""});
  return env.Undefined();
}

enum class PollResult { kReadable, kCancelled, kTimeout };

// One pollReadable call. It waits on a thread of its own, not on the libuv pool: a wait may last up to
// 2^31 ms, and a handful of them would otherwise hold every pool thread (fs, dns and crypto queue
// behind them). The result comes back through a thread-safe function.
struct PollJob {
  int fd;
  int cancel_fd;
  int timeout_ms;
  PollResult result = PollResult::kTimeout;
  int err = 0;
  napi_deferred deferred = nullptr;
};

void PollDone(Napi::Env env, Napi::Function, std::nullptr_t*, PollJob* job) {
  std::unique_ptr<PollJob> owned(job);
  if (env == nullptr) return;  // the environment is being torn down; nothing is waiting
  Napi::HandleScope scope(env);
  if (job->err != 0) {
    Napi::Error e = MakeSysError(env, {job->err, "poll", ""}, "poll device-mapper control");
    napi_reject_deferred(env, job->deferred, e.Value());
    return;
  }
  const char* names[] = {"readable", "cancelled", "timeout"};
  napi_resolve_deferred(env, job->deferred, Napi::String::New(env, names[static_cast<int>(job->result)]));
}

using PollTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, PollJob, PollDone>;

struct PollThreadArgs {
  PollTsfn tsfn;
  PollJob* job;
};

void RunPoll(PollJob* job) {
  struct pollfd fds[2] = {{job->fd, POLLIN, 0}, {job->cancel_fd, POLLIN, 0}};
  int n = poll(fds, 2, job->timeout_ms);
  // EINTR ends this slice early; the caller polls again, as it does after a timeout.
  if (n < 0 && errno != EINTR) job->err = errno;
  if (n <= 0) return;
  // A closed fd on either side is the caller's bug: say so rather than report a cancel or a timeout.
  if ((fds[0].revents & POLLNVAL) || (fds[1].revents & POLLNVAL)) {
    job->err = EBADF;
  } else if (fds[1].revents != 0) {
    job->result = PollResult::kCancelled;
  } else if (fds[0].revents & (POLLERR | POLLHUP)) {
    job->err = EIO;
  } else if (fds[0].revents & POLLIN) {
    job->result = PollResult::kReadable;
  }
}

void* PollThread(void* arg) {
  std::unique_ptr<PollThreadArgs> args(static_cast<PollThreadArgs*>(arg));
  RunPoll(args->job);
  if (args->tsfn.BlockingCall(args->job) != napi_ok) delete args->job;  // closing: nobody to resolve
  args->tsfn.Release();
  return nullptr;
}

// pollReadable(fd, cancelFd, timeoutMs) -> Promise<'readable' | 'cancelled' | 'timeout'>; a closed fd
// (either one) rejects with EBADF.
Napi::Value PollReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1, cancel_fd = -1;
  int64_t timeout_ms = 0;
  if (!GetFdArg(info, 0, "fd", &fd) || !GetFdArg(info, 1, "cancel fd", &cancel_fd) ||
      !GetInteger(info, 2, "timeout", 0, kTimeoutMaxMs, &timeout_ms)) {
    return env.Undefined();
  }
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) return env.Undefined();
  auto job = std::make_unique<PollJob>();
  job->fd = fd;
  job->cancel_fd = cancel_fd;
  job->timeout_ms = static_cast<int>(timeout_ms);
  job->deferred = deferred;
  auto args = std::make_unique<PollThreadArgs>();
  args->tsfn = PollTsfn::New(env, "dmkit:poll", 0, 1);
  args->job = job.get();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, PollThread, args.get());
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    args->tsfn.Release();
    napi_reject_deferred(env, deferred,
                         MakeSysError(env, {rc, "pthread_create", ""}, "pthread_create (poll thread)").Value());
    return Napi::Value(env, promise);
  }
  // The thread owns both now; PollDone settles the promise back on this thread.
  (void)args.release();
  (void)job.release();
  return Napi::Value(env, promise);
}

}  // namespace

void RegisterSys(Napi::Env env, Napi::Object exports) {
  exports.Set("sysMknod", Napi::Function::New(env, Mknod, "sysMknod"));
  exports.Set("semCreate", Napi::Function::New(env, SemCreate, "semCreate"));
  exports.Set("semSetValue", Napi::Function::New(env, SemSetValue, "semSetValue"));
  exports.Set("semGetValue", Napi::Function::New(env, SemGetValue, "semGetValue"));
  exports.Set("semAdd", Napi::Function::New(env, SemAdd, "semAdd"));
  exports.Set("semWaitZero", Napi::Function::New(env, SemWaitZero, "semWaitZero"));
  exports.Set("semRemove", Napi::Function::New(env, SemRemove, "semRemove"));
  exports.Set("eventfdOpen", Napi::Function::New(env, EventfdOpen, "eventfdOpen"));
  exports.Set("eventfdSignal", Napi::Function::New(env, EventfdSignal, "eventfdSignal"));
  exports.Set("pollReadable", Napi::Function::New(env, PollReadable, "pollReadable"));
}

}  // namespace dmkit
