// dmkit native addon: mknod, SysV semaphores (the udev cookie protocol) and poll with cancellation.
// Each function checks its arguments and wraps exactly one system call; what to call when, and why,
// lives in TypeScript (src/dm/nodes.ts, udev.ts, transport.ts). Calls that can block always end (they
// take a timeout), and semWaitZero and pollReadable wait on threads of their own, not on the libuv pool.
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

// semWaitZero(id, timeoutMs) -> Promise<boolean>: true when the value reached zero in time. The wait
// runs on a thread of its own (see RunOnOwnThread below), never on the libuv pool.
Napi::Value StartSemWait(Napi::Env env, int id, int64_t timeout_ms);

Napi::Value SemWaitZero(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = 0;
  int64_t timeout_ms = 0;
  if (!GetSemId(info, &id) || !GetInteger(info, 1, "timeout", 0, kTimeoutMaxMs, &timeout_ms)) {
    return env.Undefined();
  }
  return StartSemWait(env, id, timeout_ms);
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

// ---- blocking waits on threads of their own ----
//
// semWaitZero and pollReadable may wait up to 2^31 ms. On the libuv pool (an AsyncWorker) four such
// waits would hold every pool thread, and fs, dns and crypto would queue behind them. So each wait gets
// a small detached thread; its result comes back to the JS thread through a thread-safe function,
// which settles the promise.
struct ThreadJob {
  virtual ~ThreadJob() = default;
  // On the job's thread: the blocking call; keeps its result in the job.
  virtual void Run() = 0;
  // On the JS thread: resolves or rejects `deferred`.
  virtual void Settle(Napi::Env env) = 0;
  napi_deferred deferred = nullptr;
};

void JobDone(Napi::Env env, Napi::Function, std::nullptr_t*, ThreadJob* job) {
  std::unique_ptr<ThreadJob> owned(job);
  if (env == nullptr) return;  // the environment is being torn down; nothing is waiting
  Napi::HandleScope scope(env);
  job->Settle(env);
}

using JobTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, ThreadJob, JobDone>;

struct JobThreadArgs {
  JobTsfn tsfn;
  ThreadJob* job;
};

void* JobThread(void* arg) {
  std::unique_ptr<JobThreadArgs> args(static_cast<JobThreadArgs*>(arg));
  args->job->Run();
  if (args->tsfn.BlockingCall(args->job) != napi_ok) delete args->job;  // closing: nobody to settle
  args->tsfn.Release();
  return nullptr;
}

// Starts `job` on a thread of its own and returns its promise.
Napi::Value RunOnOwnThread(Napi::Env env, std::unique_ptr<ThreadJob> job, const char* name) {
  napi_value promise = nullptr;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) return env.Undefined();
  auto args = std::make_unique<JobThreadArgs>();
  args->tsfn = JobTsfn::New(env, name, 0, 1);
  args->job = job.get();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, JobThread, args.get());
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    args->tsfn.Release();
    napi_reject_deferred(env, job->deferred,
                         MakeSysError(env, {rc, "pthread_create", ""}, std::string("pthread_create (") + name + ")").Value());
    return Napi::Value(env, promise);
  }
  // The thread owns both now; JobDone settles the promise back on this thread.
  (void)args.release();
  (void)job.release();
  return Napi::Value(env, promise);
}

// Waits until the semaphore is zero or the timeout passes; resolves true / false.
struct SemWaitJob : ThreadJob {
  int id = 0;
  int64_t deadline_ms = 0;
  bool reached = false;
  int err = 0;

  void Run() override {
    for (;;) {
      int64_t left = deadline_ms - MonotonicMs();
      if (left < 0) left = 0;
      struct timespec timeout = {static_cast<time_t>(left / 1000), static_cast<long>((left % 1000) * 1000000)};
      struct sembuf op = {0, 0, 0};
      if (semtimedop(id, &op, 1, &timeout) == 0) {
        reached = true;
        return;
      }
      if (errno == EAGAIN) return;
      if (errno != EINTR) {
        err = errno;
        return;
      }
    }
  }

  void Settle(Napi::Env env) override {
    if (err != 0) {
      napi_reject_deferred(env, deferred, MakeSysError(env, {err, "semtimedop", ""}, "semtimedop").Value());
      return;
    }
    napi_resolve_deferred(env, deferred, Napi::Boolean::New(env, reached));
  }
};

Napi::Value StartSemWait(Napi::Env env, int id, int64_t timeout_ms) {
  auto job = std::make_unique<SemWaitJob>();
  job->id = id;
  job->deadline_ms = MonotonicMs() + timeout_ms;
  return RunOnOwnThread(env, std::move(job), "dmkit:sem-wait");
}

enum class PollResult { kReadable, kCancelled, kTimeout };

// One pollReadable call: the control fd readable, the cancel fd signalled, or the timeout.
struct PollJob : ThreadJob {
  int fd = -1;
  int cancel_fd = -1;
  int timeout_ms = 0;
  PollResult result = PollResult::kTimeout;
  int err = 0;

  void Run() override {
    struct pollfd fds[2] = {{fd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    // EINTR ends this slice early; the caller polls again, as it does after a timeout.
    if (n < 0 && errno != EINTR) err = errno;
    if (n <= 0) return;
    // A closed fd on either side is the caller's bug: say so rather than report a cancel or a timeout.
    if ((fds[0].revents & POLLNVAL) || (fds[1].revents & POLLNVAL)) {
      err = EBADF;
    } else if (fds[1].revents != 0) {
      result = PollResult::kCancelled;
    } else if (fds[0].revents & (POLLERR | POLLHUP)) {
      err = EIO;
    } else if (fds[0].revents & POLLIN) {
      result = PollResult::kReadable;
    }
  }

  void Settle(Napi::Env env) override {
    if (err != 0) {
      Napi::Error e = MakeSysError(env, {err, "poll", ""}, "poll device-mapper control");
      napi_reject_deferred(env, deferred, e.Value());
      return;
    }
    const char* names[] = {"readable", "cancelled", "timeout"};
    napi_resolve_deferred(env, deferred, Napi::String::New(env, names[static_cast<int>(result)]));
  }
};

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
  auto job = std::make_unique<PollJob>();
  job->fd = fd;
  job->cancel_fd = cancel_fd;
  job->timeout_ms = static_cast<int>(timeout_ms);
  return RunOnOwnThread(env, std::move(job), "dmkit:poll");
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
