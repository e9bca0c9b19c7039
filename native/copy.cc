// dmkit native addon: the range copy engine (era incremental backup and restore). copyRanges copies a
// list of byte ranges from a source (regular file or block device) to a destination (regular file or
// block device), or only reads them and checksums them when no destination is given. It runs off the
// JS thread with many requests in flight: io_uring (liburing, linked statically) when the kernel has it,
// one ring per online CPU (at most 4), each on its own thread, sharing the queue depth and taking chunks
// from one counter (a device that copies while the request is submitted, such as brd, keeps its
// submitter busy: one ring would be one CPU); a pool of threads doing pread/pwrite otherwise. Buffers are page-aligned and both sides are opened with
// O_DIRECT; a side that refuses O_DIRECT (tmpfs, a 4 KiB-sector device given 512-byte offsets) falls back
// to buffered IO for the rest of the copy.
//
// Ranges are split into chunks of `chunkBytes` (from each range's start); a chunk is the unit of IO, of
// checksums (CRC-32C, Castagnoli, the usual ~0 seed and final inversion) and of the resume journal.
//
// Resume journal (little-endian), the file `journal` names:
//   header, 64 bytes: "DMKCPJN1" | le32 version (1) | le32 header bytes (64) | le64 plan digest (FNV-1a
//     64 of chunkBytes, the checksum flag and every range triple) | le64 chunk count | le64 total bytes |
//     20 zero bytes | le32 CRC-32C of the preceding 60 bytes
//   then one 16-byte record per chunk known done: le64 chunk index | le32 CRC-32C of the chunk's data |
//     le32 CRC-32C of the record's first 12 bytes.
// A record is appended only after the destination was fdatasync'ed with the chunk written, so a crash
// never leaves a record for data that is not durable. On open, a journal with another plan is refused
// (EEXIST); a torn or corrupt tail record ends the list (the file is cut back to the last good record);
// chunks it lists are skipped and their checksums reported from the journal.
#include "copy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#ifdef DMKIT_HAVE_LIBURING
#include <liburing.h>
#endif

#include "napi_util.h"

namespace dmkit {
namespace {

constexpr uint64_t kMaxSafe = (1ULL << 53) - 1;
constexpr uint64_t kSector = 512;
constexpr size_t kAlign = 4096;
constexpr uint64_t kDefaultChunk = 1 << 20;
constexpr uint64_t kMaxChunk = 16 << 20;
constexpr uint32_t kDefaultDepth = 16;
constexpr uint32_t kMaxDepth = 128;
constexpr size_t kMaxRanges = 1 << 24;
constexpr uint64_t kMaxChunks = 1ULL << 26;
constexpr size_t kStride = 3;  // per range: source offset, length, destination offset (bytes)
constexpr auto kProgressEvery = std::chrono::milliseconds(100);
constexpr auto kJournalEvery = std::chrono::milliseconds(1000);
constexpr size_t kJournalBatch = 1024;  // flush the journal at least every this many chunks
constexpr uint64_t kMaxRings = 4;

constexpr char kJournalMagic[8] = {'D', 'M', 'K', 'C', 'P', 'J', 'N', '1'};
constexpr size_t kJournalHeader = 64;
constexpr size_t kJournalRecord = 16;

// ---- CRC-32C ----

uint32_t crc_table[8][256];

void InitCrcTable() {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    for (int k = 1; k < 8; k++) crc_table[k][i] = crc_table[0][crc_table[k - 1][i] & 0xff] ^ (crc_table[k - 1][i] >> 8);
  }
}

uint32_t CrcSoft(uint32_t c, const uint8_t* p, size_t n) {
  for (; n >= 8; n -= 8, p += 8) {
    uint32_t lo = c ^ (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                       static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24);
    c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
        crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
  }
  for (; n > 0; n--, p++) c = crc_table[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t CrcHard(uint32_t c, const uint8_t* p, size_t n) {
  uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
  }
  c = static_cast<uint32_t>(c64);
  for (; n > 0; n--, p++) c = _mm_crc32_u8(c, *p);
  return c;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

// Standard CRC-32C of `n` bytes.
uint32_t Crc32c(const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  if (kHaveSse42) return ~CrcHard(~0u, p, n);
#endif
  return ~CrcSoft(~0u, p, n);
}

void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
uint64_t GetLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// IO buffers come straight from mmap (page-aligned, as O_DIRECT wants), never from malloc: freeing an
// mmapped malloc chunk of 1-16 MiB raises glibc's dynamic mmap threshold to its size for the rest of the
// process, after which other big allocations (the lab's 4 MiB replay images) come from the malloc arenas
// and pile up there (the crash lab's node grew by 3 MiB a crash state until the VM ran out of memory).
uint8_t* MapBuffer(uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
}
void UnmapBuffer(uint8_t* p, uint64_t bytes) {
  if (p != nullptr) munmap(p, bytes);
}

// ---- the plan ----

struct Chunk {
  uint64_t src;
  uint64_t len;
  uint64_t dst;
};

// One side of the copy: a buffered fd and, when the file takes it, an O_DIRECT fd on the same inode.
struct Side {
  int fd = -1;
  int direct_fd = -1;
  std::atomic<bool> direct{false};
  bool block = false;
  int Fd() const { return direct.load() ? direct_fd : fd; }
  // Drops O_DIRECT after an EINVAL on it: true when the request should be retried buffered.
  bool FallBack(int failed_fd) {
    if (failed_fd != direct_fd || direct_fd < 0) return false;
    direct.store(false);
    return true;
  }
  ~Side() {
    if (fd >= 0) close(fd);
    if (direct_fd >= 0) close(direct_fd);
  }
};

struct CancelState {
  std::atomic<bool> cancelled{false};
};

struct Progress {
  double done;
  double total;
};

class CopyWorker : public Napi::AsyncProgressWorker<Progress> {
 public:
  CopyWorker(Napi::Env env, std::string source, std::string dest, std::string journal, std::vector<Chunk> chunks,
             uint64_t plan_digest, uint64_t chunk_bytes, uint32_t depth, int engine, bool checksums, bool direct,
             std::shared_ptr<CancelState> cancel, Napi::Function on_progress)
      : Napi::AsyncProgressWorker<Progress>(env, "dmkit.copyRanges"),
        deferred_(Napi::Promise::Deferred::New(env)),
        source_(std::move(source)),
        dest_(std::move(dest)),
        journal_path_(std::move(journal)),
        chunks_(std::move(chunks)),
        plan_digest_(plan_digest),
        chunk_bytes_(chunk_bytes),
        depth_(depth),
        engine_(engine),
        checksums_(checksums),
        want_direct_(direct),
        cancel_(std::move(cancel)) {
    if (!on_progress.IsEmpty()) progress_fn_ = Napi::Persistent(on_progress);
    for (const Chunk& c : chunks_) total_ += c.len;
  }

  ~CopyWorker() override {
    if (journal_fd_ >= 0) close(journal_fd_);
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  // For tests of resuming: acts as cancel() once this many chunks are done in this run (0: never).
  void InterruptAfter(uint64_t chunks) { interrupt_after_ = chunks; }
  void UringAsync(bool on) { uring_async_ = on; }
  // io_uring: how many rings (threads); 0: one per online CPU (see RingCount).
  void UringRings(uint32_t n) { rings_ = n; }

  void Execute(const ExecutionProgress& progress) override {
    done_.assign(chunks_.size(), 0);
    crcs_.assign(chunks_.size(), 0);
    // The source and the ranges are checked before the destination is opened (or created).
    if (!OpenSource() || !CheckSizes(false) || (!dest_.empty() && (!OpenDest() || !CheckSizes(true))) || !OpenJournal()) return;
    progress_ = &progress;
    bool ran = false;
#ifdef DMKIT_HAVE_LIBURING
    if (engine_ != kThreads) ran = RunUring();
#endif
    if (!ran) {
      if (engine_ == kUring) {
        if (error_.err == 0) error_ = {ENOSYS, "io_uring_queue_init", ""};
      } else {
        error_ = {0, "", ""};
        RunThreads();
      }
    }
    // Whatever stopped the copy, the chunks that finished are made durable and journaled.
    FlushJournal(true);
    if (error_.err == 0 && !cancel_->cancelled.load() && dst_.fd >= 0 && fsync(dst_.fd) != 0 &&
        !(errno == EINVAL && !dst_.block)) {
      error_ = {errno, "fsync", dest_};
    }
    Report(true);
    progress_ = nullptr;
  }

  void OnProgress(const Progress* data, size_t count) override {
    if (count == 0 || progress_fn_.IsEmpty() || !progress_error_.IsEmpty()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    progress_fn_.Call({Napi::Number::New(env, data[count - 1].done), Napi::Number::New(env, data[count - 1].total)});
    if (env.IsExceptionPending()) {
      // The callback threw: stop the copy and reject with what it threw.
      progress_error_ = Napi::Reference<Napi::Value>::New(env.GetAndClearPendingException().Value(), 1);
      cancel_->cancelled.store(true);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!progress_error_.IsEmpty()) {
      deferred_.Reject(progress_error_.Value());
      return;
    }
    if (error_.err != 0) {
      Napi::Error e = MakeSysError(env, error_, detail_.empty() ? DescribeCall(error_) : detail_);
      AddCounts(e.Value().As<Napi::Object>());
      deferred_.Reject(e.Value());
      return;
    }
    if (cancel_->cancelled.load()) {
      Napi::Error e = Napi::Error::New(env, "the copy was cancelled");
      e.Set("name", Napi::String::New(env, "AbortError"));
      e.Set("code", Napi::String::New(env, "ABORT_ERR"));
      AddCounts(e.Value().As<Napi::Object>());
      deferred_.Reject(e.Value());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    AddCounts(result);
    result.Set("engine", Napi::String::New(env, used_uring_ ? "io_uring" : "threads"));
    if (used_uring_) result.Set("rings", Napi::Number::New(env, rings_used_));
    result.Set("directSource", Napi::Boolean::New(env, src_.direct.load()));
    result.Set("directDest", Napi::Boolean::New(env, dst_.fd >= 0 && dst_.direct.load()));
    if (checksums_) {
      Napi::Uint32Array sums = Napi::Uint32Array::New(env, crcs_.size());
      if (!crcs_.empty()) memcpy(sums.Data(), crcs_.data(), crcs_.size() * sizeof(uint32_t));
      result.Set("checksums", sums);
    }
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  static constexpr int kAuto = 0, kUring = 1, kThreads = 2;

 private:
  void AddCounts(Napi::Object o) {
    Napi::Env env = Env();
    uint64_t bytes = 0, chunks = 0;
    for (size_t i = 0; i < chunks_.size(); i++) {
      if (done_[i]) {
        bytes += chunks_[i].len;
        chunks++;
      }
    }
    o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
    o.Set("chunks", Napi::Number::New(env, static_cast<double>(chunks)));
    o.Set("resumedChunks", Napi::Number::New(env, static_cast<double>(resumed_)));
    o.Set("totalChunks", Napi::Number::New(env, static_cast<double>(chunks_.size())));
  }

  // Opens `path` (never waiting on a FIFO), checks it is a regular file or a block device and sets
  // up both fds of `side`.
  bool OpenSide(const std::string& path, int flags, Side* side, struct stat* st) {
    int fd = open(path.c_str(), flags | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
      error_ = {errno, "open", path};
      return false;
    }
    side->fd = fd;
    if (fstat(fd, st) != 0) {
      error_ = {errno, "fstat", path};
      return false;
    }
    if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
      error_ = {EINVAL, "open", path};
      detail_ = "open '" + path + "': not a regular file or a block device";
      return false;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
      error_ = {errno, "fcntl", path};
      return false;
    }
    side->block = S_ISBLK(st->st_mode);
    if (want_direct_) {
      // The O_DIRECT fd reopens the same inode through /proc (not the path, which may have changed).
      std::string self = "/proc/self/fd/" + std::to_string(fd);
      int dfd = open(self.c_str(), (flags & ~(O_CREAT | O_TRUNC)) | O_CLOEXEC | O_DIRECT);
      struct stat dst;
      if (dfd >= 0 && fstat(dfd, &dst) == 0 && dst.st_dev == st->st_dev && dst.st_ino == st->st_ino) {
        side->direct_fd = dfd;
        side->direct.store(true);
      } else if (dfd >= 0) {
        close(dfd);
      }
    }
    return true;
  }

  bool SizeOf(const Side& side, const struct stat& st, const std::string& path, uint64_t* size) {
    if (!side.block) {
      *size = static_cast<uint64_t>(st.st_size);
      return true;
    }
    if (ioctl(side.fd, BLKGETSIZE64, size) != 0) {
      error_ = {errno, "ioctl", path};
      return false;
    }
    return true;
  }

  bool OpenSource() {
    struct stat st;
    if (!OpenSide(source_, O_RDONLY, &src_, &st)) return false;
    src_dev_ = st.st_dev;
    src_ino_ = st.st_ino;
    src_rdev_ = st.st_rdev;
    return SizeOf(src_, st, source_, &src_size_);
  }

  bool OpenDest() {
    struct stat st;
    if (!OpenSide(dest_, O_WRONLY | O_CREAT, &dst_, &st)) return false;
    bool same = dst_.block ? (src_.block && st.st_rdev == src_rdev_) : (st.st_dev == src_dev_ && st.st_ino == src_ino_);
    if (same) {
      error_ = {EINVAL, "open", dest_};
      detail_ = "open '" + dest_ + "': the destination is the source";
      return false;
    }
    if (dst_.block) return SizeOf(dst_, st, dest_, &dst_size_);
    dst_size_ = UINT64_MAX;
    return true;
  }

  // Every range must lie inside the source, and inside a block device destination.
  bool CheckSizes(bool dest) {
    for (size_t i = 0; i < chunks_.size(); i++) {
      const Chunk& c = chunks_[i];
      if (!dest && c.src + c.len > src_size_) {
        error_ = {EINVAL, "copyRanges", source_};
        detail_ = "chunk " + std::to_string(i) + " [" + std::to_string(c.src) + ", " + std::to_string(c.src + c.len) +
                  ") lies past the end of '" + source_ + "' (" + std::to_string(src_size_) + " bytes)";
        return false;
      }
      if (dest && c.dst + c.len > dst_size_) {
        error_ = {ENOSPC, "copyRanges", dest_};
        detail_ = "chunk " + std::to_string(i) + " ends at byte " + std::to_string(c.dst + c.len) + ", past the end of '" +
                  dest_ + "' (" + std::to_string(dst_size_) + " bytes)";
        return false;
      }
    }
    return true;
  }

  // ---- the journal ----

  void JournalHeader(uint8_t* h) {
    memset(h, 0, kJournalHeader);
    memcpy(h, kJournalMagic, 8);
    PutLe32(h + 8, 1);
    PutLe32(h + 12, kJournalHeader);
    PutLe64(h + 16, plan_digest_);
    PutLe64(h + 24, chunks_.size());
    PutLe64(h + 32, total_);
    PutLe32(h + 60, Crc32c(h, 60));
  }

  bool JournalFail(int err, const char* call, const std::string& why = "") {
    error_ = {err, call, journal_path_};
    if (!why.empty()) detail_ = "journal '" + journal_path_ + "': " + why;
    return false;
  }

  bool OpenJournal() {
    if (journal_path_.empty()) return true;
    journal_fd_ = open(journal_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (journal_fd_ < 0) return JournalFail(errno, "open");
    struct stat st;
    if (fstat(journal_fd_, &st) != 0) return JournalFail(errno, "fstat");
    if (!S_ISREG(st.st_mode)) return JournalFail(EINVAL, "open", "not a regular file");
    uint8_t want[kJournalHeader];
    JournalHeader(want);
    if (st.st_size == 0) {
      if (pwrite(journal_fd_, want, kJournalHeader, 0) != static_cast<ssize_t>(kJournalHeader)) {
        return JournalFail(errno ? errno : EIO, "pwrite");
      }
      if (fdatasync(journal_fd_) != 0) return JournalFail(errno, "fdatasync");
      journal_end_ = kJournalHeader;
      return true;
    }
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size < kJournalHeader || size > kJournalHeader + kJournalRecord * (chunks_.size() * 2 + 1)) {
      return JournalFail(EEXIST, "open", "not a journal of this copy (size " + std::to_string(size) + ")");
    }
    std::vector<uint8_t> all(size);
    size_t got = 0;
    while (got < size) {
      ssize_t r = pread(journal_fd_, all.data() + got, size - got, static_cast<off_t>(got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return JournalFail(r < 0 ? errno : EIO, "pread");
      got += static_cast<size_t>(r);
    }
    if (memcmp(all.data(), want, kJournalHeader) != 0) {
      return JournalFail(EEXIST, "open", "it records another copy (other ranges, chunk size or source); remove it to start over");
    }
    uint64_t at = kJournalHeader;
    for (; at + kJournalRecord <= size; at += kJournalRecord) {
      const uint8_t* r = all.data() + at;
      if (GetLe32(r + 12) != Crc32c(r, 12)) break;
      uint64_t index = GetLe64(r);
      if (index >= chunks_.size()) break;
      if (!done_[index]) {
        done_[index] = 1;
        crcs_[index] = GetLe32(r + 8);
        resumed_++;
      }
    }
    journal_end_ = at;
    if (at != size && ftruncate(journal_fd_, static_cast<off_t>(at)) != 0) return JournalFail(errno, "ftruncate");
    return true;
  }

  // Called with the indices of chunks whose data is written (any thread: takes the lock).
  void Completed(size_t index, uint32_t crc) {
    std::lock_guard<std::mutex> lock(mu_);
    done_[index] = 1;
    crcs_[index] = crc;
    copied_ += chunks_[index].len;
    pending_.push_back(index);
    if (interrupt_after_ > 0 && ++done_now_ >= interrupt_after_) cancel_->cancelled.store(true);
  }

  // Makes the finished chunks durable and appends their records. `force`: whatever the batch size.
  void FlushJournal(bool force) {
    std::vector<size_t> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto now = std::chrono::steady_clock::now();
      if (pending_.empty() || (!force && pending_.size() < kJournalBatch && now - last_journal_ < kJournalEvery)) return;
      batch.swap(pending_);
      last_journal_ = now;
    }
    if (journal_fd_ < 0) return;
    if (dst_.fd >= 0 && fdatasync(dst_.fd) != 0 && !(errno == EINVAL && !dst_.block)) {
      Fail({errno, "fdatasync", dest_});
      return;  // nothing recorded: the data may not be durable
    }
    std::vector<uint8_t> records(batch.size() * kJournalRecord);
    for (size_t k = 0; k < batch.size(); k++) {
      uint8_t* r = records.data() + k * kJournalRecord;
      PutLe64(r, batch[k]);
      PutLe32(r + 8, crcs_[batch[k]]);
      PutLe32(r + 12, Crc32c(r, 12));
    }
    size_t off = 0;
    while (off < records.size()) {
      ssize_t w = pwrite(journal_fd_, records.data() + off, records.size() - off, static_cast<off_t>(journal_end_ + off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        Fail({w < 0 ? errno : EIO, "pwrite", journal_path_});
        return;
      }
      off += static_cast<size_t>(w);
    }
    journal_end_ += records.size();
    if (fdatasync(journal_fd_) != 0) Fail({errno, "fdatasync", journal_path_});
  }

  void Report(bool force) {
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_progress_ < kProgressEvery) return;
    last_progress_ = now;
    uint64_t copied;
    {
      std::lock_guard<std::mutex> lock(mu_);
      copied = copied_;
    }
    Progress p = {static_cast<double>(copied + resumed_bytes_), static_cast<double>(total_)};
    if (progress_ != nullptr) progress_->Send(&p, 1);
  }

  bool Stopping() { return cancel_->cancelled.load() || failed_.load(); }

  void Fail(const SysError& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.err == 0) error_ = e;
    failed_.store(true);
  }

  void ComputeResumedBytes() {
    resumed_bytes_ = 0;
    for (size_t i = 0; i < chunks_.size(); i++) {
      if (done_[i]) resumed_bytes_ += chunks_[i].len;
    }
  }

  // ---- the thread pool ----

  void RunThreads() {
    ComputeResumedBytes();
    size_t n = std::min<size_t>(std::max<uint32_t>(1, std::min<uint32_t>(depth_, 8)), std::max<size_t>(chunks_.size(), 1));
    std::atomic<size_t> next{0};
    std::atomic<size_t> running{n};
    std::mutex wait_mu;
    std::condition_variable wake;
    std::vector<std::thread> threads;
    for (size_t t = 0; t < n; t++) {
      threads.emplace_back([&]() {
        uint8_t* mem = MapBuffer(chunk_bytes_);
        if (mem == nullptr) {
          Fail({ENOMEM, "mmap", ""});
        } else {
          uint8_t* buf = static_cast<uint8_t*>(mem);
          for (;;) {
            size_t i = next.fetch_add(1);
            if (i >= chunks_.size() || Stopping()) break;
            if (done_[i]) continue;  // only the journal sets done_ before the threads start
            if (!CopyChunkSync(chunks_[i], buf, i)) break;
          }
          UnmapBuffer(mem, chunk_bytes_);
        }
        std::lock_guard<std::mutex> lock(wait_mu);
        running.fetch_sub(1);
        wake.notify_all();
      });
    }
    {
      std::unique_lock<std::mutex> lock(wait_mu);
      while (running.load() > 0) {
        wake.wait_for(lock, kProgressEvery);
        lock.unlock();
        Report(false);
        FlushJournal(false);
        lock.lock();
      }
    }
    for (auto& t : threads) t.join();
  }

  bool IoLoop(Side* side, bool write, uint8_t* buf, uint64_t len, uint64_t off, const std::string& path) {
    uint64_t at = 0;
    while (at < len) {
      int fd = side->Fd();
      ssize_t r = write ? pwrite(fd, buf + at, len - at, static_cast<off_t>(off + at))
                        : pread(fd, buf + at, len - at, static_cast<off_t>(off + at));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EINVAL && side->FallBack(fd)) continue;
      if (r < 0) {
        Fail({errno, write ? "pwrite" : "pread", path});
        return false;
      }
      if (r == 0) {  // the source shrank under us, or a device refused to take more
        Fail({EIO, write ? "pwrite" : "pread", path});
        return false;
      }
      at += static_cast<uint64_t>(r);
    }
    return true;
  }

  bool CopyChunkSync(const Chunk& c, uint8_t* buf, size_t index) {
    if (!IoLoop(&src_, false, buf, c.len, c.src, source_)) return false;
    uint32_t crc = checksums_ ? Crc32c(buf, c.len) : 0;
    if (dst_.fd >= 0 && !IoLoop(&dst_, true, buf, c.len, c.dst, dest_)) return false;
    Completed(index, crc);
    return true;
  }

#ifdef DMKIT_HAVE_LIBURING
  // ---- io_uring ----

  struct Slot {
    size_t chunk = 0;
    bool busy = false;
    bool writing = false;
    uint64_t at = 0;  // bytes of the current phase done
    int fd = -1;      // the fd the request in flight uses
    uint32_t crc = 0;  // the chunk's checksum, computed once it was read
    uint8_t* buf = nullptr;
  };

  void Prep(struct io_uring* ring, Slot* s, size_t slot_index) {
    const Chunk& c = chunks_[s->chunk];
    struct io_uring_sqe* sqe = io_uring_get_sqe(ring);
    // The ring has as many entries as slots, and each slot has at most one request in flight.
    Side* side = s->writing ? &dst_ : &src_;
    s->fd = side->Fd();
    if (s->writing) {
      io_uring_prep_write(sqe, s->fd, s->buf + s->at, static_cast<unsigned>(c.len - s->at), c.dst + s->at);
    } else {
      io_uring_prep_read(sqe, s->fd, s->buf + s->at, static_cast<unsigned>(c.len - s->at), c.src + s->at);
    }
    // Punted to io-wq workers, requests run in parallel even on devices whose submission path does the
    // IO inline (brd copies in submit_bio; dm targets may block): inline, one thread would do it all.
    if (uring_async_) io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
    io_uring_sqe_set_data64(sqe, slot_index);
  }

  // How many rings (each on its own thread): one per online CPU, at most 4, at most one per slot of
  // the queue depth, 1 for a single chunk. A device that does its IO while the request is submitted
  // (brd copies inside submit_bio, dm over it too) keeps a submitting thread busy for the whole copy,
  // so one ring is one CPU; on a device that DMAs, submission returns at once and the extra rings only
  // share the same queue depth.
  uint32_t RingCount() const {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t want = cpus > 0 ? static_cast<uint64_t>(cpus) : 1;
    if (rings_ > 0) want = rings_;
    want = std::min<uint64_t>({want, kMaxRings, depth_, std::max<uint64_t>(chunks_.size(), 1)});
    return static_cast<uint32_t>(std::max<uint64_t>(want, 1));
  }

  // The next chunk not done yet (shared by every ring), or chunks_.size().
  size_t NextChunk() {
    for (;;) {
      size_t i = next_chunk_.fetch_add(1);
      if (i >= chunks_.size()) return chunks_.size();
      if (!done_[i]) return i;  // only the journal sets done_ for a chunk no ring took yet
    }
  }

  // Returns false when io_uring is unavailable (nothing was done); errors after that are in error_.
  // The queue depth is shared out among the rings; each ring's thread fills its slots from the shared
  // chunk counter; this thread reports progress and writes the journal meanwhile.
  bool RunUring() {
    uint32_t want = RingCount();
    std::vector<std::unique_ptr<struct io_uring>> rings;
    for (uint32_t k = 0; k < want; k++) {
      uint32_t slots = depth_ / want + (k < depth_ % want ? 1 : 0);
      auto ring = std::make_unique<struct io_uring>();
      int rc = io_uring_queue_init(slots, ring.get(), 0);
      if (rc < 0) {
        if (k == 0) {
          error_ = {-rc, "io_uring_queue_init", ""};
          return false;
        }
        break;  // fewer rings than wanted: the ones set up take the whole depth below
      }
      rings.push_back(std::move(ring));
    }
    used_uring_ = true;
    rings_used_ = static_cast<uint32_t>(rings.size());
    ComputeResumedBytes();
    next_chunk_.store(0);
    uint8_t* mem = MapBuffer(chunk_bytes_ * depth_);
    if (mem == nullptr) {
      for (auto& r : rings) io_uring_queue_exit(r.get());
      Fail({ENOMEM, "mmap", ""});
      return true;
    }
    uint32_t n = rings_used_;
    std::atomic<uint32_t> running{n};
    std::mutex wait_mu;
    std::condition_variable wake;
    std::vector<std::thread> threads;
    uint32_t first_slot = 0;
    for (uint32_t k = 0; k < n; k++) {
      uint32_t slots = depth_ / n + (k < depth_ % n ? 1 : 0);
      uint8_t* bufs = static_cast<uint8_t*>(mem) + static_cast<uint64_t>(first_slot) * chunk_bytes_;
      first_slot += slots;
      struct io_uring* ring = rings[k].get();
      threads.emplace_back([this, ring, slots, bufs, &running, &wait_mu, &wake]() {
        RingLoop(ring, slots, bufs);
        // After a failed submit or wait, requests may still be in flight: tearing the ring down waits
        // for them, and only then is their memory freed (after every thread was joined).
        io_uring_queue_exit(ring);
        std::lock_guard<std::mutex> lock(wait_mu);
        running.fetch_sub(1);
        wake.notify_all();
      });
    }
    {
      std::unique_lock<std::mutex> lock(wait_mu);
      while (running.load() > 0) {
        wake.wait_for(lock, kProgressEvery);
        lock.unlock();
        Report(false);
        FlushJournal(false);
        lock.lock();
      }
    }
    for (auto& t : threads) t.join();
    UnmapBuffer(mem, chunk_bytes_ * depth_);
    return true;
  }

  // One ring's loop: `count` slots with their buffers at `bufs`, until no chunk is left or the copy stops.
  void RingLoop(struct io_uring* ring, uint32_t count, uint8_t* bufs) {
    std::vector<Slot> slots(count);
    for (uint32_t k = 0; k < count; k++) slots[k].buf = bufs + static_cast<uint64_t>(k) * chunk_bytes_;
    size_t in_flight = 0;
    bool drained = false;  // the shared counter ran out: no more chunks for this ring
    for (;;) {
      // Fill idle slots with the next chunks not yet done.
      if (!Stopping() && !drained) {
        for (uint32_t k = 0; k < count; k++) {
          if (slots[k].busy) continue;
          size_t next = NextChunk();
          if (next >= chunks_.size()) {
            drained = true;
            break;
          }
          slots[k] = {next, true, false, 0, -1, 0, slots[k].buf};
          Prep(ring, &slots[k], k);
          in_flight++;
        }
      }
      if (in_flight == 0) break;
      int rc = io_uring_submit(ring);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        Fail({-rc, "io_uring_submit", ""});
        break;  // nothing more will complete reliably; the ring is torn down by the caller
      }
      struct io_uring_cqe* cqe = nullptr;
      struct __kernel_timespec ts = {0, 100 * 1000 * 1000};
      rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
      if (rc < 0 && rc != -ETIME && rc != -EINTR) {
        Fail({-rc, "io_uring_wait_cqe", ""});
        break;
      }
      unsigned head;
      unsigned seen = 0;
      io_uring_for_each_cqe(ring, head, cqe) {
        seen++;
        Complete(ring, &slots, static_cast<size_t>(io_uring_cqe_get_data64(cqe)), cqe->res, &in_flight);
      }
      io_uring_cq_advance(ring, seen);
    }
  }

  void Complete(struct io_uring* ring, std::vector<Slot>* slots, size_t k, int res, size_t* in_flight) {
    Slot& s = (*slots)[k];
    const Chunk& c = chunks_[s.chunk];
    Side* side = s.writing ? &dst_ : &src_;
    const std::string& path = s.writing ? dest_ : source_;
    const char* call = s.writing ? "write" : "read";
    bool resubmit = false;
    if (res == -EINTR || res == -EAGAIN || (res == -EINVAL && side->FallBack(s.fd))) {
      resubmit = !Stopping();
    } else if (res < 0) {
      Fail({-res, call, path});
    } else if (res == 0) {
      Fail({EIO, call, path});
    } else {
      s.at += static_cast<uint64_t>(res);
      if (s.at < c.len) {
        resubmit = !Stopping();
      } else if (!s.writing && dst_.fd >= 0) {
        if (checksums_) s.crc = Crc32c(s.buf, c.len);
        s.writing = true;
        s.at = 0;
        resubmit = !Stopping();
      } else {
        uint32_t crc = s.writing ? s.crc : (checksums_ ? Crc32c(s.buf, c.len) : 0);
        Completed(s.chunk, crc);
      }
    }
    if (resubmit) {
      Prep(ring, &s, k);
      return;
    }
    s.busy = false;
    (*in_flight)--;
  }

  std::atomic<size_t> next_chunk_{0};
#endif

  Napi::Promise::Deferred deferred_;
  std::string source_, dest_, journal_path_;
  std::vector<Chunk> chunks_;
  uint64_t plan_digest_;
  uint64_t chunk_bytes_;
  uint32_t depth_;
  int engine_;
  bool checksums_;
  bool want_direct_;
  std::shared_ptr<CancelState> cancel_;
  Napi::FunctionReference progress_fn_;
  Napi::Reference<Napi::Value> progress_error_;

  Side src_, dst_;
  dev_t src_dev_ = 0, src_rdev_ = 0;
  ino_t src_ino_ = 0;
  uint64_t src_size_ = 0, dst_size_ = 0, total_ = 0, resumed_bytes_ = 0;
  int journal_fd_ = -1;
  uint64_t journal_end_ = 0;
  size_t resumed_ = 0;
  bool used_uring_ = false;

  std::mutex mu_;  // guards done_/crcs_ writes after start, copied_, pending_, error_ (from pool threads)
  std::vector<uint8_t> done_;
  std::vector<uint32_t> crcs_;
  std::vector<size_t> pending_;
  uint64_t copied_ = 0;
  uint64_t done_now_ = 0;
  uint64_t interrupt_after_ = 0;
  bool uring_async_ = false;
  uint32_t rings_ = 0, rings_used_ = 0;
  std::atomic<bool> failed_{false};
  std::chrono::steady_clock::time_point last_progress_{}, last_journal_ = std::chrono::steady_clock::now();
  const ExecutionProgress* progress_ = nullptr;
  SysError error_ = {0, "", ""};
  std::string detail_;
};

uint64_t Fnv(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= 0x100000001b3ULL;
  }
  return h;
}

bool ReadUint(Napi::Env env, Napi::Value v, const char* what, uint64_t min, uint64_t max, uint64_t def, uint64_t* out) {
  if (v.IsUndefined()) {
    *out = def;
    return true;
  }
  if (!v.IsNumber()) {
    ThrowType(env, std::string(what) + " must be a number");
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowRange(env, std::string(what) + " must be an integer in " + std::to_string(min) + ".." + std::to_string(max));
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool ReadPath(Napi::Env env, Napi::Value v, const char* what, bool optional, std::string* out) {
  if (optional && (v.IsUndefined() || v.IsNull())) return true;
  if (!v.IsString()) {
    ThrowType(env, std::string(what) + " must be a string path");
    return false;
  }
  *out = v.As<Napi::String>().Utf8Value();
  if (out->empty() || out->size() >= PATH_MAX || out->find('\0') != std::string::npos) {
    ThrowRange(env, std::string(what) + " must be 1.." + std::to_string(PATH_MAX - 1) + " bytes without NUL");
    return false;
  }
  return true;
}

bool ReadBool(Napi::Env env, Napi::Value v, const char* what, bool def, bool* out) {
  if (v.IsUndefined()) {
    *out = def;
    return true;
  }
  if (!v.IsBoolean()) {
    ThrowType(env, std::string(what) + " must be a boolean");
    return false;
  }
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

// copyRanges({ source, dest?, ranges: Float64Array [src, len, dst]..., chunkBytes?, queueDepth?,
//              engine?: 'auto'|'io_uring'|'threads', journal?, checksums?, direct?, onProgress?,
//              interruptAfterChunks?, uringAsync? (IOSQE_ASYNC: requests run on io-wq workers; default false),
//              uringRings? (0..4 rings, each on its own thread; 0, the default: one per online CPU) })
//   -> { promise, cancel() }. Every option is read first (getters may run JS), then checked.
Napi::Value CopyRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return ThrowType(env, "copy options must be an object");
  Napi::Object opts = info[0].As<Napi::Object>();

  Napi::Value source_v = GetProp(opts, "source");
  Napi::Value dest_v = GetProp(opts, "dest");
  Napi::Value ranges_v = GetProp(opts, "ranges");
  Napi::Value chunk_v = GetProp(opts, "chunkBytes");
  Napi::Value depth_v = GetProp(opts, "queueDepth");
  Napi::Value engine_v = GetProp(opts, "engine");
  Napi::Value journal_v = GetProp(opts, "journal");
  Napi::Value checksums_v = GetProp(opts, "checksums");
  Napi::Value direct_v = GetProp(opts, "direct");
  Napi::Value progress_v = GetProp(opts, "onProgress");
  Napi::Value interrupt_v = GetProp(opts, "interruptAfterChunks");
  Napi::Value uring_async_v = GetProp(opts, "uringAsync");
  Napi::Value uring_rings_v = GetProp(opts, "uringRings");
  if (env.IsExceptionPending()) return env.Undefined();

  std::string source, dest, journal;
  if (!ReadPath(env, source_v, "source", false, &source) || !ReadPath(env, dest_v, "dest", true, &dest) ||
      !ReadPath(env, journal_v, "journal", true, &journal)) {
    return env.Undefined();
  }
  uint64_t chunk = 0, depth = 0;
  if (!ReadUint(env, chunk_v, "chunkBytes", kAlign, kMaxChunk, kDefaultChunk, &chunk) ||
      !ReadUint(env, depth_v, "queueDepth", 1, kMaxDepth, kDefaultDepth, &depth)) {
    return env.Undefined();
  }
  if (chunk % kAlign != 0) return ThrowRange(env, "chunkBytes must be a multiple of 4096");
  uint64_t interrupt_after = 0;
  if (!ReadUint(env, interrupt_v, "interruptAfterChunks", 0, kMaxChunks, 0, &interrupt_after)) return env.Undefined();
  uint64_t uring_rings = 0;
  if (!ReadUint(env, uring_rings_v, "uringRings", 0, kMaxRings, 0, &uring_rings)) return env.Undefined();
  int engine = CopyWorker::kAuto;
  if (!engine_v.IsUndefined()) {
    if (!engine_v.IsString()) return ThrowType(env, "engine must be 'auto', 'io_uring' or 'threads'");
    std::string e = engine_v.As<Napi::String>().Utf8Value();
    if (e == "io_uring") {
      engine = CopyWorker::kUring;
    } else if (e == "threads") {
      engine = CopyWorker::kThreads;
    } else if (e != "auto") {
      return ThrowRange(env, "engine must be 'auto', 'io_uring' or 'threads'");
    }
  }
  bool checksums = false, direct = true, uring_async = false;
  if (!ReadBool(env, checksums_v, "checksums", false, &checksums) || !ReadBool(env, direct_v, "direct", true, &direct) ||
      !ReadBool(env, uring_async_v, "uringAsync", false, &uring_async)) {
    return env.Undefined();
  }
  if (!progress_v.IsUndefined() && !progress_v.IsNull() && !progress_v.IsFunction()) {
    return ThrowType(env, "onProgress must be a function");
  }
  if (!ranges_v.IsTypedArray() || ranges_v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    return ThrowType(env, "ranges must be a Float64Array of [sourceOffset, length, destOffset] triples");
  }
  Napi::Float64Array ranges = ranges_v.As<Napi::Float64Array>();
  if (ranges.ArrayBuffer().IsDetached()) return ThrowType(env, "ranges is detached");
  size_t values = ranges.ElementLength();
  if (values % kStride != 0) return ThrowRange(env, "ranges must hold whole [sourceOffset, length, destOffset] triples");
  if (values / kStride > kMaxRanges) return ThrowRange(env, "ranges holds more than " + std::to_string(kMaxRanges) + " ranges");

  // Split into chunks, checking every value (no JS runs from here on).
  std::vector<Chunk> chunks;
  const double* r = values > 0 ? ranges.Data() : nullptr;
  uint64_t digest = Fnv(Fnv(0xcbf29ce484222325ULL, chunk), checksums ? 1 : 0);
  for (size_t i = 0; i < values / kStride; i++) {
    uint64_t v[kStride];
    for (size_t k = 0; k < kStride; k++) {
      double d = r[i * kStride + k];
      if (!(d >= 0 && d <= static_cast<double>(kMaxSafe)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
        return ThrowRange(env, "ranges[" + std::to_string(i) + "] holds a value that is not an integer in 0..2^53-1");
      }
      v[k] = static_cast<uint64_t>(d);
      digest = Fnv(digest, v[k]);
    }
    if (v[1] == 0 || v[0] % kSector != 0 || v[1] % kSector != 0 || v[2] % kSector != 0) {
      return ThrowRange(env, "ranges[" + std::to_string(i) + "]: offsets and lengths must be multiples of 512, lengths > 0");
    }
    if (v[0] + v[1] > kMaxSafe || v[2] + v[1] > kMaxSafe) {
      return ThrowRange(env, "ranges[" + std::to_string(i) + "] ends past 2^53-1");
    }
    if (chunks.size() + (v[1] + chunk - 1) / chunk > kMaxChunks) {
      return ThrowRange(env, "the ranges make more than " + std::to_string(kMaxChunks) + " chunks");
    }
    for (uint64_t at = 0; at < v[1]; at += chunk) {
      chunks.push_back({v[0] + at, std::min(chunk, v[1] - at), v[2] + at});
    }
  }

  auto cancel = std::make_shared<CancelState>();
  Napi::Function on_progress = progress_v.IsFunction() ? progress_v.As<Napi::Function>() : Napi::Function();
  auto* worker = new CopyWorker(env, std::move(source), std::move(dest), std::move(journal), std::move(chunks), digest, chunk,
                                static_cast<uint32_t>(depth), engine, checksums, direct, cancel, on_progress);
  worker->InterruptAfter(interrupt_after);
  worker->UringAsync(uring_async);
  worker->UringRings(static_cast<uint32_t>(uring_rings));
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("promise", worker->Promise());
  handle.Set("cancel", Napi::Function::New(
                           env, [cancel](const Napi::CallbackInfo&) { cancel->cancelled.store(true); }, "cancel"));
  worker->Queue();
  return handle;
}

// crc32c(buf) -> the standard CRC-32C of the bytes, as the engine computes per chunk.
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (info.Length() < 1) return ThrowType(env, "data must be a Buffer");
  if (!GetBytes(env, info[0], "data", &data, &length)) return env.Undefined();
  return Napi::Number::New(env, Crc32c(data, length));
}

// Which engine `auto` would use here: 'io_uring' when a ring can be set up, 'threads' otherwise.
Napi::Value CopyEngine(const Napi::CallbackInfo& info) {
#ifdef DMKIT_HAVE_LIBURING
  struct io_uring ring;
  if (io_uring_queue_init(2, &ring, 0) == 0) {
    io_uring_queue_exit(&ring);
    return Napi::String::New(info.Env(), "io_uring");
  }
#endif
  return Napi::String::New(info.Env(), "threads");
}

}  // namespace

void RegisterCopy(Napi::Env env, Napi::Object exports) {
  InitCrcTable();
  exports.Set("copyRanges", Napi::Function::New(env, CopyRanges, "copyRanges"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs, "crc32c"));
  exports.Set("copyEngine", Napi::Function::New(env, CopyEngine, "copyEngine"));
}

}  // namespace dmkit
