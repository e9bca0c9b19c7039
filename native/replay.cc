// dmkit native addon: dm-log-writes logs for the crash and fault lab. logIndex parses a log (every
// offset bounds-checked: a corrupt log is an EINVAL error, never a wild read); replayImage builds the
// device image of one crash state off the JS thread and hashes it; imageDigest is the same hash. Which
// entries make up a crash state is policy and lives in TypeScript (src/lab/faultlab/states.ts).
//
// Log layout (kernel drivers/md/dm-log-writes.c; xfstests src/log-writes/log-writes.h), blocks of
// `sectorsize` bytes: block 0 is the superblock {le64 magic, le64 version, le64 nr_entries,
// le32 sectorsize}; from block 1 each entry is one header block {le64 sector, le64 nr_sectors,
// le64 flags, le64 data_len} (a mark's text follows the 32-byte header in that block) and then
// nr_sectors blocks of data, none for discards and marks. sector and nr_sectors count log blocks.
#include "replay.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "napi_util.h"

namespace dmkit {
namespace {

constexpr uint64_t kLogMagic = 0x6a736677736872ULL;
constexpr uint64_t kLogVersion = 1;
constexpr size_t kSuperblockBytes = 28;
constexpr size_t kEntryHeaderBytes = 32;
constexpr uint32_t kMaxSectorSize = 64 * 1024;

constexpr uint64_t kFlagFlush = 1, kFlagFua = 2, kFlagDiscard = 4, kFlagMark = 8, kFlagMetadata = 16;
constexpr uint64_t kKnownFlags = kFlagFlush | kFlagFua | kFlagDiscard | kFlagMark | kFlagMetadata;

constexpr uint64_t kMaxSafe = (1ULL << 53) - 1;  // Number.MAX_SAFE_INTEGER
constexpr uint64_t kSector = 512;

// The index handed to JS: per entry {sector, sectors (both 512-byte), flags, dataOffset (bytes)}.
constexpr size_t kTableStride = 4;

constexpr size_t kDirectAlign = 4096;
constexpr size_t kWriteChunk = 8 << 20;
// Pool threads keep one scratch image up to this size for digest-only and `out` replays.
constexpr size_t kScratchKeepMax = 64 << 20;

uint64_t Le64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return le64toh(v);
}

uint32_t Le32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, sizeof(v));
  return le32toh(v);
}

// A corrupt log or an inconsistent index: shaped like a system error (code EINVAL) without a syscall.
Napi::Error MakeInvalid(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, "EINVAL: " + message);
  error.Set("code", Napi::String::New(env, "EINVAL"));
  error.Set("errno", Napi::Number::New(env, EINVAL));
  return error;
}

// ---- the digest: XXH64 (seed 0) of the image, as 16 lowercase hex digits ----

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL, kP2 = 0xC2B2AE3D27D4EB4FULL, kP3 = 0x165667B19E3779F9ULL,
                   kP4 = 0x85EBCA77C2B2AE63ULL, kP5 = 0x27D4EB2F165667C5ULL;

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t Round(uint64_t acc, uint64_t input) { return Rotl(acc + input * kP2, 31) * kP1; }

uint64_t MergeRound(uint64_t acc, uint64_t val) { return (acc ^ Round(0, val)) * kP1 + kP4; }

uint64_t Xxh64(const uint8_t* p, size_t len) {
  const uint8_t* end = p + len;
  uint64_t h;
  if (len >= 32) {
    uint64_t v1 = kP1 + kP2, v2 = kP2, v3 = 0, v4 = 0 - kP1;
    for (const uint8_t* limit = end - 32; p <= limit; p += 32) {
      v1 = Round(v1, Le64(p));
      v2 = Round(v2, Le64(p + 8));
      v3 = Round(v3, Le64(p + 16));
      v4 = Round(v4, Le64(p + 24));
    }
    h = Rotl(v1, 1) + Rotl(v2, 7) + Rotl(v3, 12) + Rotl(v4, 18);
    h = MergeRound(MergeRound(MergeRound(MergeRound(h, v1), v2), v3), v4);
  } else {
    h = kP5;
  }
  h += static_cast<uint64_t>(len);
  for (; end - p >= 8; p += 8) h = Rotl(h ^ Round(0, Le64(p)), 27) * kP1 + kP4;
  if (end - p >= 4) {
    h = Rotl(h ^ (static_cast<uint64_t>(Le32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; p++) h = Rotl(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

std::string Hex64(uint64_t v) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; i--, v >>= 4) s[i] = kDigits[v & 15];
  return s;
}

// ---- logIndex ----

struct MarkText {
  uint32_t index;
  std::string text;
};

// Parses the whole log into `table` (kTableStride doubles per entry) and `marks`; returns "" or what
// is wrong with the log.
std::string ParseLog(const uint8_t* log, size_t len, uint32_t* sector_size, std::vector<double>* table,
                     std::vector<MarkText>* marks) {
  if (len < kSuperblockBytes) return "log is " + std::to_string(len) + " bytes, shorter than its superblock";
  uint64_t magic = Le64(log);
  if (magic != kLogMagic) {
    char text[40];
    snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(magic));
    return std::string("bad log magic ") + text;
  }
  uint64_t version = Le64(log + 8);
  if (version != kLogVersion) return "unknown log version " + std::to_string(version);
  uint64_t count = Le64(log + 16);
  uint32_t bs = Le32(log + 24);
  if (bs < kSector || bs > kMaxSectorSize || (bs & (bs - 1)) != 0) {
    return "bad log sector size " + std::to_string(bs);
  }
  // Each entry takes at least its header block, so the count is bounded by the log's size.
  uint64_t blocks = len / bs;
  if (count > 0 && (blocks == 0 || count > blocks - 1)) {
    return "superblock claims " + std::to_string(count) + " entries but the log holds " +
           std::to_string(blocks) + " blocks";
  }
  const uint64_t per_block = bs / kSector;
  table->assign(count * kTableStride, 0);
  uint64_t at = bs;
  for (uint64_t i = 0; i < count; i++) {
    auto where = [i, at]() { return "entry " + std::to_string(i) + " at byte " + std::to_string(at); };
    if (at + bs > len) return where() + ": header block runs past the end of the log (" + std::to_string(len) + " bytes)";
    const uint8_t* header = log + at;
    uint64_t sector = Le64(header), nr = Le64(header + 8), flags = Le64(header + 16), data_len = Le64(header + 24);
    if ((flags & ~kKnownFlags) != 0) return where() + ": unknown flags 0x" + Hex64(flags);
    const uint64_t limit = kMaxSafe / kSector;  // in 512-byte sectors
    if (sector > limit / per_block || nr > limit / per_block || sector * per_block + nr * per_block > limit) {
      return where() + ": sector " + std::to_string(sector) + " + " + std::to_string(nr) + " blocks is out of range";
    }
    uint64_t data_offset = at + bs;
    if (flags & kFlagMark) {
      if (data_len > bs - kEntryHeaderBytes) {
        return where() + ": mark text of " + std::to_string(data_len) + " bytes does not fit its block";
      }
      size_t n = static_cast<size_t>(data_len);
      const char* text = reinterpret_cast<const char*>(header + kEntryHeaderBytes);
      while (n > 0 && text[n - 1] == '\0') n--;
      marks->push_back({static_cast<uint32_t>(i), std::string(text, n)});
      at = data_offset;
    } else if (flags & kFlagDiscard) {
      at = data_offset;
    } else {
      // nr <= limit / per_block, so nr * bs < 2^53 and the sum cannot wrap.
      uint64_t data_bytes = nr * bs;
      if (data_offset > len || data_bytes > len - data_offset) {
        return where() + ": " + std::to_string(nr) + " data blocks run past the end of the log (" +
               std::to_string(len) + " bytes)";
      }
      at = data_offset + data_bytes;
    }
    double* row = table->data() + i * kTableStride;
    row[0] = static_cast<double>(sector * per_block);
    row[1] = static_cast<double>(nr * per_block);
    row[2] = static_cast<double>(flags);
    row[3] = static_cast<double>(data_offset);
  }
  *sector_size = bs;
  return "";
}

// logIndex(log: Buffer) -> { sectorSize, table: Float64Array, marks: {index, text}[] }.
Napi::Value LogIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* log = nullptr;
  size_t log_length = 0;
  if (info.Length() < 1) return ThrowType(env, "log must be a Buffer");
  if (!GetBytes(env, info[0], "log", &log, &log_length)) return env.Undefined();
  uint32_t sector_size = 0;
  std::vector<double> table;
  std::vector<MarkText> marks;
  std::string problem = ParseLog(log, log_length, &sector_size, &table, &marks);
  if (!problem.empty()) {
    MakeInvalid(env, "corrupt dm-log-writes log: " + problem).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Float64Array out = Napi::Float64Array::New(env, table.size());
  if (!table.empty()) memcpy(out.Data(), table.data(), table.size() * sizeof(double));
  Napi::Array mark_list = Napi::Array::New(env, marks.size());
  for (size_t i = 0; i < marks.size(); i++) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("index", Napi::Number::New(env, marks[i].index));
    m.Set("text", Napi::String::New(env, marks[i].text));
    mark_list.Set(static_cast<uint32_t>(i), m);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("sectorSize", Napi::Number::New(env, sector_size));
  result.Set("table", out);
  result.Set("marks", mark_list);
  return result;
}

// ---- replayImage ----

// One step of a replay, already validated and clipped to the image: copy `length` bytes from the log
// at `src` (or zero them for a discard) to image offset `dst`.
struct Op {
  uint64_t dst;
  uint64_t length;
  uint64_t src;
  bool zero;
};

// An image buffer aligned for O_DIRECT, padded to kDirectAlign.
struct ImageMemory {
  uint8_t* data = nullptr;
  size_t capacity = 0;
};

thread_local ImageMemory scratch;

void FreeImage(Napi::Env, uint8_t* data) { free(data); }

bool AllocImage(size_t length, ImageMemory* out) {
  size_t capacity = (length + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  if (capacity == 0) capacity = kDirectAlign;
  void* p = nullptr;
  if (posix_memalign(&p, kDirectAlign, capacity) != 0) return false;
  out->data = static_cast<uint8_t*>(p);
  out->capacity = capacity;
  return true;
}

struct Torn {
  bool set = false;
  uint32_t entry = 0;
  uint64_t sector = 0;
};

// Memory the worker owns outright (malloc'd, so a failed allocation is an error, not an abort).
struct OwnedBytes {
  uint8_t* data = nullptr;
  size_t length = 0;
  OwnedBytes() = default;
  OwnedBytes(const OwnedBytes&) = delete;
  OwnedBytes& operator=(const OwnedBytes&) = delete;
  OwnedBytes(OwnedBytes&& o) noexcept : data(o.data), length(o.length) { o.data = nullptr, o.length = 0; }
  ~OwnedBytes() { free(data); }
  bool Allocate(size_t n) {
    data = static_cast<uint8_t*>(malloc(n == 0 ? 1 : n));
    length = n;
    return data != nullptr;
  }
};

// Builds the image on a pool thread from copies made on the JS thread: JS may detach, transfer or
// rewrite the caller's buffers the moment replayImage returns (or from a getter while the options are
// read), so the worker never points into JS memory.
class ReplayWorker : public Napi::AsyncWorker {
 public:
  ReplayWorker(Napi::Env env, OwnedBytes data, OwnedBytes base, bool has_base, size_t length, std::vector<Op> ops,
               std::string out, bool digest_only)
      : Napi::AsyncWorker(env, "dmkit:replay-image"),
        deferred_(Napi::Promise::Deferred::New(env)),
        data_(std::move(data)),
        base_(std::move(base)),
        has_base_(has_base),
        length_(length),
        ops_(std::move(ops)),
        out_(std::move(out)),
        digest_only_(digest_only) {}

  ~ReplayWorker() override {
    if (owned_.data != nullptr) free(owned_.data);
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    uint8_t* image = Acquire();
    if (image == nullptr) {
      error_ = {ENOMEM, "posix_memalign", ""};
      return;
    }
    if (has_base_) {
      memcpy(image, base_.data, length_);
    } else {
      memset(image, 0, length_);
    }
    for (const Op& op : ops_) {
      if (op.zero) {
        memset(image + op.dst, 0, op.length);
      } else {
        memcpy(image + op.dst, data_.data + op.src, op.length);
      }
    }
    digest_ = Xxh64(image, length_);
    if (!out_.empty()) WriteOut(image);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (error_.err != 0) {
      deferred_.Reject(MakeSysError(env, error_, DescribeCall(error_)).Value());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("digest", Napi::String::New(env, Hex64(digest_)));
    if (ReturnsImage()) {
      Napi::Buffer<uint8_t> image = Napi::Buffer<uint8_t>::NewOrCopy(env, owned_.data, length_, FreeImage);
      if (image.IsEmpty()) {
        env.GetAndClearPendingException();
        deferred_.Reject(MakeSysError(env, {ENOMEM, "napi_create_external_buffer", ""}, "image buffer").Value());
        return;
      }
      owned_.data = nullptr;  // the Buffer frees it (or NewOrCopy copied it and freed ours)
      result.Set("image", image);
    }
    deferred_.Resolve(result);
  }

 private:
  bool ReturnsImage() const { return out_.empty() && !digest_only_; }

  // The image memory: a fresh allocation handed to JS, or this pool thread's scratch image.
  uint8_t* Acquire() {
    if (ReturnsImage() || length_ > kScratchKeepMax) {
      if (!AllocImage(length_, &owned_)) return nullptr;
      return owned_.data;
    }
    if (scratch.capacity < length_ || scratch.data == nullptr) {
      free(scratch.data);
      scratch = {};
      if (!AllocImage(length_, &scratch)) return nullptr;
    }
    return scratch.data;
  }

  void WriteOut(const uint8_t* image) {
    // O_NONBLOCK: opening a FIFO (or a tty, a socket) must not wait for a peer. Only regular files
    // and block devices are written; anything else fails with EINVAL before a byte is written.
    int fd = open(out_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
      error_ = {errno, "open", out_};
      return;
    }
    struct stat st;
    int fl = 0;
    if (fstat(fd, &st) != 0) {
      error_ = {errno, "fstat", out_};
    } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
      error_ = {EINVAL, "open", out_};
    } else if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
      error_ = {errno, "fcntl", out_};
    } else if (S_ISBLK(st.st_mode)) {
      WriteBlockDevice(fd, image);
    } else {
      WriteAll(fd, image, false);
      if (error_.err == 0 && S_ISREG(st.st_mode) && ftruncate(fd, static_cast<off_t>(length_)) != 0) {
        error_ = {errno, "ftruncate", out_};
      }
      if (error_.err == 0 && fsync(fd) != 0 && (S_ISREG(st.st_mode) || errno != EINVAL)) {
        error_ = {errno, "fsync", out_};
      }
    }
    if (close(fd) != 0 && error_.err == 0 && errno != EINTR) error_ = {errno, "close", out_};
  }

  void WriteBlockDevice(int fd, const uint8_t* image) {
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
      error_ = {errno, "ioctl", out_};
      return;
    }
    if (size < length_) {
      error_ = {ENOSPC, "pwrite", out_};
      return;
    }
    // O_DIRECT keeps a multi-GiB image out of the page cache; a length the device's logical block
    // size does not divide falls back to buffered writes for the rest (WriteAll).
    int fl = fcntl(fd, F_GETFL);
    bool direct = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    WriteAll(fd, image, direct);
    if (error_.err == 0 && fsync(fd) != 0) error_ = {errno, "fsync", out_};
  }

  void WriteAll(int fd, const uint8_t* image, bool direct) {
    size_t done = 0;
    while (done < length_) {
      size_t n = std::min(kWriteChunk, length_ - done);
      ssize_t w = pwrite(fd, image + done, n, static_cast<off_t>(done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EINVAL && direct) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) != 0) {
          error_ = {errno, "fcntl", out_};
          return;
        }
        direct = false;
        continue;
      }
      if (w < 0) {
        error_ = {errno, "pwrite", out_};
        return;
      }
      if (w == 0) {
        error_ = {EIO, "pwrite", out_};
        return;
      }
      done += static_cast<size_t>(w);
    }
  }

  Napi::Promise::Deferred deferred_;
  OwnedBytes data_;  // the log data the ops copy, gathered (op.src indexes this, not the log)
  OwnedBytes base_;
  bool has_base_;
  size_t length_;
  std::vector<Op> ops_;
  std::string out_;
  bool digest_only_;
  ImageMemory owned_;
  uint64_t digest_ = 0;
  SysError error_ = {0, "", ""};
};

// Checks `v` (already read) as an integer in [0, max]; false (and a thrown error) when invalid.
bool GetIntegerValue(Napi::Env env, Napi::Value v, const char* what, uint64_t max, uint64_t* out) {
  if (!v.IsNumber()) {
    ThrowType(env, std::string(what) + " must be a number");
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowRange(env, std::string(what) + " must be an integer in 0.." + std::to_string(max));
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool IsTypedArrayOf(Napi::Value v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

// Reads one index row, checking what JS could have put there; false (and a thrown error) when bad.
bool ReadRow(Napi::Env env, const double* row, uint32_t entry, size_t log_length, uint64_t* sector,
             uint64_t* sectors, uint64_t* flags, uint64_t* data_offset) {
  uint64_t v[kTableStride];
  for (size_t k = 0; k < kTableStride; k++) {
    double d = row[k];
    if (!(d >= 0 && d <= static_cast<double>(kMaxSafe)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
      MakeInvalid(env, "index row " + std::to_string(entry) + " holds a non-integer").ThrowAsJavaScriptException();
      return false;
    }
    v[k] = static_cast<uint64_t>(d);
  }
  *sector = v[0];
  *sectors = v[1];
  *flags = v[2];
  *data_offset = v[3];
  bool has_data = (*flags & (kFlagMark | kFlagDiscard)) == 0 && *sectors > 0;
  if (*sector > kMaxSafe / kSector || *sectors > kMaxSafe / kSector ||
      (has_data && (*data_offset > log_length || *sectors * kSector > log_length - *data_offset))) {
    MakeInvalid(env, "index row " + std::to_string(entry) + " does not fit the log (" +
                         std::to_string(log_length) + " bytes)")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// Appends the ops for `[from, from + n)` of one entry clipped to the image.
void AddOp(std::vector<Op>* ops, uint64_t image_length, uint64_t dst, uint64_t n, uint64_t src, bool zero) {
  if (dst >= image_length || n == 0) return;
  n = std::min(n, image_length - dst);
  ops->push_back({dst, n, src, zero});
}

// The clipped data range of one applied entry, gathered once however often `apply` names the entry.
struct Gather {
  uint64_t log_offset;
  uint64_t length;
  uint64_t at;  // offset in the gathered copy
};

// replayImage({ log, table, base, length, apply, torn?, out?, digestOnly? }) -> Promise<{digest, image?}>.
// Every option is read first (getters and Proxy traps run JS, which may detach any buffer read before
// it); only then are the buffers looked at, checked and copied, with no JS running in between.
Napi::Value ReplayImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return ThrowType(env, "replay options must be an object");
  Napi::Object opts = info[0].As<Napi::Object>();

  // ---- 1. read (JS may run) ----
  Napi::Value log_value = GetProp(opts, "log");
  Napi::Value table_value = GetProp(opts, "table");
  Napi::Value length_value = GetProp(opts, "length");
  Napi::Value base = GetProp(opts, "base");
  Napi::Value apply_value = GetProp(opts, "apply");
  Napi::Value torn_value = GetProp(opts, "torn");
  Napi::Value torn_entry_value, torn_sector_value;
  if (!torn_value.IsEmpty() && torn_value.IsObject()) {
    torn_entry_value = GetProp(torn_value.As<Napi::Object>(), "entry");
    torn_sector_value = GetProp(torn_value.As<Napi::Object>(), "sector");
  }
  Napi::Value out_value = GetProp(opts, "out");
  Napi::Value digest_only_value = GetProp(opts, "digestOnly");
  if (env.IsExceptionPending()) return env.Undefined();  // a getter threw: that is the caller's error

  // ---- 2. check (no JS runs from here on) ----
  if (!log_value.IsTypedArray()) return ThrowType(env, "log must be a Buffer");
  if (!IsTypedArrayOf(table_value, napi_float64_array)) return ThrowType(env, "table must be a Float64Array");
  Napi::Float64Array table = table_value.As<Napi::Float64Array>();
  if (table.ElementLength() % kTableStride != 0) {
    return ThrowRange(env, "table length must be a multiple of " + std::to_string(kTableStride));
  }
  uint64_t length = 0;
  if (!GetIntegerValue(env, length_value, "length", kMaxSafe, &length)) return env.Undefined();
  if (length > SIZE_MAX / 2) return ThrowRange(env, "length is too large for this machine");
  bool has_base = !base.IsNull() && !base.IsUndefined();
  if (has_base && !base.IsTypedArray()) return ThrowType(env, "base must be a Buffer or null");
  if (!IsTypedArrayOf(apply_value, napi_uint32_array)) return ThrowType(env, "apply must be a Uint32Array");
  Napi::Uint32Array apply = apply_value.As<Napi::Uint32Array>();

  Torn torn;
  if (!torn_value.IsUndefined() && !torn_value.IsNull()) {
    if (!torn_value.IsObject()) return ThrowType(env, "torn must be an object {entry, sector}");
    uint64_t entry = 0;
    if (!GetIntegerValue(env, torn_entry_value, "torn.entry", 0xffffffffULL, &entry) ||
        !GetIntegerValue(env, torn_sector_value, "torn.sector", kMaxSafe, &torn.sector)) {
      return env.Undefined();
    }
    torn.set = true;
    torn.entry = static_cast<uint32_t>(entry);
  }

  std::string out;
  if (!out_value.IsUndefined()) {
    if (!out_value.IsString()) return ThrowType(env, "out must be a string path");
    out = out_value.As<Napi::String>().Utf8Value();
    if (out.empty() || out.size() >= PATH_MAX || out.find('\0') != std::string::npos) {
      return ThrowRange(env, "out must be 1.." + std::to_string(PATH_MAX - 1) + " bytes without NUL");
    }
  }
  if (!digest_only_value.IsUndefined() && !digest_only_value.IsBoolean()) {
    return ThrowType(env, "digestOnly must be a boolean");
  }
  bool digest_only = digest_only_value.IsBoolean() && digest_only_value.As<Napi::Boolean>().Value();

  const uint8_t* log = nullptr;
  size_t log_length = 0;
  if (!GetBytes(env, log_value, "log", &log, &log_length)) return env.Undefined();
  const uint8_t* base_data = nullptr;
  size_t base_length = 0;
  if (has_base) {
    if (!GetBytes(env, base, "base", &base_data, &base_length)) return env.Undefined();
    if (base_length != length) {
      return ThrowRange(env, "base must be exactly length (" + std::to_string(length) + ") bytes, not " +
                                 std::to_string(base_length));
    }
  }
  const size_t count = table.ElementLength() / kTableStride;
  const double* rows = count > 0 ? table.Data() : nullptr;
  const size_t apply_count = apply.ElementLength();
  const uint32_t* applied = apply_count > 0 ? apply.Data() : nullptr;

  // Validate every applied entry now, so the worker only copies checked ranges. Op.src is first an
  // offset in the log and becomes one in the gathered copy below.
  std::vector<Op> ops;
  std::vector<uint32_t> op_entry;
  std::unordered_map<uint32_t, Gather> gathers;
  uint64_t gathered = 0;
  bool torn_seen = false;
  for (size_t i = 0; i < apply_count; i++) {
    uint32_t entry = applied[i];
    if (entry >= count) {
      return ThrowRange(env, "apply[" + std::to_string(i) + "] = " + std::to_string(entry) +
                                 " is not an entry index (the log has " + std::to_string(count) + ")");
    }
    uint64_t sector, sectors, flags, data_offset;
    if (!ReadRow(env, rows + entry * kTableStride, entry, log_length, &sector, &sectors, &flags, &data_offset)) {
      return env.Undefined();
    }
    if ((flags & kFlagMark) || sectors == 0) continue;  // marks and empty flushes change nothing
    bool zero = (flags & kFlagDiscard) != 0;
    uint64_t dst = sector * kSector, bytes = sectors * kSector;
    size_t before = ops.size();
    if (torn.set && entry == torn.entry) {
      if (torn.sector >= sectors) {
        return ThrowRange(env, "torn.sector " + std::to_string(torn.sector) + " is outside entry " +
                                   std::to_string(entry) + " (" + std::to_string(sectors) + " sectors)");
      }
      // The torn sector keeps what the image held before this entry: apply the parts around it.
      uint64_t cut = torn.sector * kSector;
      AddOp(&ops, length, dst, cut, data_offset, zero);
      AddOp(&ops, length, dst + cut + kSector, bytes - cut - kSector, data_offset + cut + kSector, zero);
      torn_seen = true;
    } else {
      AddOp(&ops, length, dst, bytes, data_offset, zero);
    }
    op_entry.resize(ops.size(), entry);
    if (zero || ops.size() == before || gathers.count(entry) != 0) continue;
    // The part of the entry inside the image (ReadRow checked it lies inside the log).
    uint64_t inside = std::min(bytes, length - dst);
    gathers[entry] = {data_offset, inside, gathered};
    gathered += inside;
  }
  if (torn.set && !torn_seen) {
    return ThrowRange(env, "torn.entry " + std::to_string(torn.entry) + " is not a data entry in apply");
  }

  OwnedBytes data, base_copy;
  if (gathered > SIZE_MAX / 2 || !data.Allocate(static_cast<size_t>(gathered)) ||
      (has_base && !base_copy.Allocate(static_cast<size_t>(length)))) {
    MakeSysError(env, {ENOMEM, "malloc", ""}, "replay buffers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (const auto& g : gathers) memcpy(data.data + g.second.at, log + g.second.log_offset, g.second.length);
  for (size_t k = 0; k < ops.size(); k++) {
    Op& op = ops[k];
    if (op.zero) continue;
    const Gather& g = gathers.find(op_entry[k])->second;
    op.src = g.at + (op.src - g.log_offset);
  }
  if (has_base && length > 0) memcpy(base_copy.data, base_data, static_cast<size_t>(length));

  auto* worker = new ReplayWorker(env, std::move(data), std::move(base_copy), has_base, static_cast<size_t>(length),
                                  std::move(ops), std::move(out), digest_only);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// imageDigest(buf: Buffer) -> string: the digest replayImage reports, computed on the JS thread.
Napi::Value ImageDigest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (info.Length() < 1) return ThrowType(env, "image must be a Buffer");
  if (!GetBytes(env, info[0], "image", &data, &length)) return env.Undefined();
  return Napi::String::New(env, Hex64(Xxh64(data, length)));
}

}  // namespace

void RegisterReplay(Napi::Env env, Napi::Object exports) {
  exports.Set("logIndex", Napi::Function::New(env, LogIndex, "logIndex"));
  exports.Set("replayImage", Napi::Function::New(env, ReplayImage, "replayImage"));
  exports.Set("imageDigest", Napi::Function::New(env, ImageDigest, "imageDigest"));
}

}  // namespace dmkit
