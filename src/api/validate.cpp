// Argument validation for flash3::forward / flash3::backward (and the C ABI, which calls them).
//
// Order matters: every check that needs only the arguments runs first, then the device query (arch == 0), then the
// checks that depend on the GPU architecture. So the host checks can be tested on a machine without a GPU by passing
// an explicit arch, and a bad argument is reported as such even where no device exists. Validation reads shapes,
// strides, dtypes and pointer values only; it never dereferences a data pointer (they are device pointers).
#include "api/validate.hpp"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

namespace flash3 {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
// TMA (cp.async.bulk.tensor) needs the tensor's base address and every stride but the innermost to be multiples of
// 16 bytes. Every data pointer is held to the same 16 bytes, so vectorised 128-bit accesses are legal too.
constexpr int64_t kAlignBytes = 16;
constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kHeadDimMultiple = 8;

bool dtype_valid(DType dtype) {
  const auto v = static_cast<int32_t>(dtype);
  return v >= static_cast<int32_t>(DType::kFloat16) && v <= static_cast<int32_t>(DType::kInt32);
}

std::string dtype_str(DType dtype) {
  if (dtype_valid(dtype)) return dtype_name(dtype);
  return "<invalid value " + std::to_string(static_cast<int32_t>(dtype)) + ">";
}

bool is_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes) == 0;
}

// Builds "<where>: <parts...>" and throws it as flash3::Error.
class Checker {
 public:
  explicit Checker(const char* where) : where_(where) {}
  const char* where() const { return where_; }

  template <class... Parts>
  [[noreturn]] void fail(Status status, const Parts&... parts) const {
    std::ostringstream os;
    os << where_ << ": ";
    (os << ... << parts);
    throw Error(status, os.str());
  }

 private:
  const char* where_;
};

// The role a tensor plays decides its dims. The same role covers a tensor and its gradient (q and dq, ...).
enum class Role { kQ, kK, kV, kOut, kLse };

// A tensor with its name and expected layout (dim names, for messages and for cross-tensor shape checks).
struct Slot {
  const TensorRef* t;
  const char* name;
  int rank;
  const char* dims[4];
  bool tma;  // accessed through TMA: strides must be 16-byte multiples
};

Slot make_slot(const TensorRef& t, const char* name, Role role, bool varlen) {
  Slot s{&t, name, 0, {nullptr, nullptr, nullptr, nullptr}, true};
  auto set = [&s](std::initializer_list<const char*> dims) {
    s.rank = 0;
    for (const char* d : dims) s.dims[s.rank++] = d;
  };
  // Batch mode: (b, s, h, d). Varlen: the batch and sequence dims fold into one "total" rows dim.
  switch (role) {
    case Role::kQ:
      varlen ? set({"total_q", "num_heads", "head_dim"}) : set({"batch", "seqlen_q", "num_heads", "head_dim"});
      break;
    case Role::kK:
      varlen ? set({"total_k", "num_heads_k", "head_dim"}) : set({"batch", "seqlen_k", "num_heads_k", "head_dim"});
      break;
    case Role::kV:
      varlen ? set({"total_k", "num_heads_k", "head_dim_v"})
             : set({"batch", "seqlen_k", "num_heads_k", "head_dim_v"});
      break;
    case Role::kOut:
      varlen ? set({"total_q", "num_heads", "head_dim_v"}) : set({"batch", "seqlen_q", "num_heads", "head_dim_v"});
      break;
    case Role::kLse:
      // The LSE is written with plain stores, one fp32 per row, so only its innermost stride matters.
      varlen ? set({"num_heads", "total_q"}) : set({"batch", "num_heads", "seqlen_q"});
      s.tma = false;
      break;
  }
  return s;
}

std::string dims_str(const Slot& s) {
  std::string out = "(";
  for (int i = 0; i < s.rank; ++i) out += std::string(i ? ", " : "") + s.dims[i];
  return out + ")";
}

// Rank, dtype value, non-negative shape and strides, contiguous last dim.
void check_basics(const Slot& s, bool varlen, const Checker& c) {
  const TensorRef& t = *s.t;
  if (!t.defined())
    c.fail(Status::kInvalidArgument, s.name, " is required but was not given (data == nullptr, rank == 0)");
  if (t.rank != s.rank) {
    const char* hint = "";
    if (!varlen && t.rank == s.rank - 1)
      hint = "; for packed variable-length (3-D) tensors set varlen.cu_seqlens_q and varlen.cu_seqlens_k";
    if (varlen && t.rank == s.rank + 1) hint = "; varlen.cu_seqlens_q/cu_seqlens_k are set, so tensors are packed";
    c.fail(Status::kInvalidArgument, s.name, ".rank = ", t.rank, ", expected ", s.rank, " ", dims_str(s), hint);
  }
  if (!dtype_valid(t.dtype))
    c.fail(Status::kInvalidArgument, s.name, ".dtype = ", static_cast<int32_t>(t.dtype),
           " is not a flash3::DType value");
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] < 0)
      c.fail(Status::kInvalidArgument, s.name, ".shape[", i, "] (", s.dims[i], ") = ", t.shape[i],
             " is negative, expected >= 0");
  for (int i = 0; i < t.rank; ++i)
    if (t.stride[i] < 0)
      c.fail(Status::kInvalidArgument, s.name, ".stride[", i, "] (", s.dims[i], ") = ", t.stride[i],
             " is negative; flash3 needs non-negative strides");
  const int last = t.rank - 1;
  if (t.stride[last] != 1)
    c.fail(Status::kInvalidArgument, s.name, ".stride[", last, "] (", s.dims[last], ") = ", t.stride[last],
           ", expected 1: the last dim must be contiguous");
}

// Cross-tensor shape agreement, by dim name: the first tensor that has a dim defines it, the others must match.
class DimTable {
 public:
  void bind(const Slot& s, const Checker& c) {
    for (int i = 0; i < s.rank; ++i) {
      Entry& e = find(s.dims[i]);
      const int64_t got = s.t->shape[i];
      if (!e.set) {
        e.set = true;
        e.value = got;
        e.source_tensor = s.name;
        e.source_index = i;
      } else if (got != e.value) {
        c.fail(Status::kInvalidArgument, s.name, ".shape[", i, "] (", s.dims[i], ") = ", got, ", expected ", e.value,
               " (", source(s.dims[i]), ")");
      }
    }
  }
  int64_t value(const char* dim) { return find(dim).value; }
  bool has(const char* dim) { return find(dim).set; }
  // "q.shape[2]": where the dim's value came from, for messages (built only when one is written).
  std::string source(const char* dim) {
    const Entry& e = find(dim);
    return e.set ? std::string(e.source_tensor) + ".shape[" + std::to_string(e.source_index) + "]" : std::string();
  }

 private:
  struct Entry {
    const char* name = nullptr;
    bool set = false;
    int64_t value = 0;
    const char* source_tensor = nullptr;
    int source_index = 0;
  };
  Entry& find(const char* dim) {
    for (int i = 0; i < count_; ++i)
      if (std::strcmp(entries_[i].name, dim) == 0) return entries_[i];
    entries_[count_].name = dim;  // at most 9 distinct dim names exist
    return entries_[count_++];
  }
  Entry entries_[10];
  int count_ = 0;
};

// Sizes in int64, overflow-checked (the GCC/Clang builtins: no UB on overflow).
bool mul_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_mul_overflow(a, b, r); }
bool add_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_add_overflow(a, b, r); }

// Element count and addressed byte range fit int64; pointer non-null and aligned; TMA strides 16-byte multiples.
void check_memory(const Slot& s, const Checker& c) {
  const TensorRef& t = *s.t;
  const int64_t esize = dtype_size(t.dtype);
  if (s.tma) {
    const int64_t mult = kAlignBytes / esize;  // esize divides 16 for every DType
    for (int i = 0; i < t.rank - 1; ++i)
      if (t.stride[i] % mult != 0)
        c.fail(Status::kInvalidArgument, s.name, ".stride[", i, "] (", s.dims[i], ") = ", t.stride[i],
               " is not a multiple of ", mult, " elements: flash3 loads and stores ", s.name,
               " with TMA, which needs every stride but the last to be a multiple of 16 bytes");
  }
  bool empty = false;
  for (int i = 0; i < t.rank; ++i) empty = empty || t.shape[i] == 0;
  // A tensor without elements is never accessed: its pointer may be null (PyTorch gives empty tensors none).
  if (empty) return;
  int64_t numel = 1, last = 0, bytes = 0;
  bool ok = true;
  for (int i = 0; i < t.rank && ok; ++i) {
    int64_t span = 0;
    ok = mul_ok(numel, t.shape[i], &numel) && mul_ok(t.shape[i] - 1, t.stride[i], &span) && add_ok(last, span, &last);
  }
  ok = ok && add_ok(last, 1, &last) && mul_ok(last, esize, &bytes);
  if (!ok)
    c.fail(Status::kInvalidArgument, s.name, ": shape and strides address more than 2^63 bytes (size overflows int64)");
  if (t.data == nullptr)
    c.fail(Status::kInvalidArgument, s.name, ".data is null but ", s.name, " has ", numel, " elements");
  if (!is_aligned(t.data, kAlignBytes))
    c.fail(Status::kInvalidArgument, s.name, ".data = ", t.data, " is not 16-byte aligned (TMA and vectorised ",
           "accesses need 16-byte aligned base addresses)");
}

void check_varlen(const VarlenArgs& v, const Checker& c) {
  const bool has_q = v.cu_seqlens_q != nullptr, has_k = v.cu_seqlens_k != nullptr;
  if (has_q != has_k)
    c.fail(Status::kInvalidArgument, "varlen.", has_q ? "cu_seqlens_q" : "cu_seqlens_k", " is set but varlen.",
           has_q ? "cu_seqlens_k" : "cu_seqlens_q",
           " is null; variable-length mode needs both (batch mode needs neither)");
  // Device int32 arrays: only their alignment can be checked without reading them.
  const std::pair<const int32_t*, const char*> arrays[] = {{v.cu_seqlens_q, "cu_seqlens_q"},
                                                           {v.cu_seqlens_k, "cu_seqlens_k"},
                                                           {v.seqused_q, "seqused_q"},
                                                           {v.seqused_k, "seqused_k"}};
  for (const auto& [p, name] : arrays)
    if (p != nullptr && !is_aligned(p, sizeof(int32_t)))
      c.fail(Status::kInvalidArgument, "varlen.", name, " = ", static_cast<const void*>(p),
             " is not 4-byte aligned (it must be a device int32 array)");
  if (!has_q) return;  // batch mode: varlen.batch and the max_seqlens are ignored
  if (v.batch < 1)
    c.fail(Status::kInvalidArgument, "varlen.batch = ", v.batch,
           ", expected >= 1 (the number of sequences; cu_seqlens have batch + 1 entries)");
  if (v.max_seqlen_q < 0)
    c.fail(Status::kInvalidArgument, "varlen.max_seqlen_q = ", v.max_seqlen_q, " is negative, expected >= 0");
  if (v.max_seqlen_k < 0)
    c.fail(Status::kInvalidArgument, "varlen.max_seqlen_k = ", v.max_seqlen_k, " is negative, expected >= 0");
}

void check_options(const AttentionOptions& o, const Checker& c) {
  if (!std::isfinite(o.softmax_scale))
    c.fail(Status::kInvalidArgument, "options.softmax_scale = ", o.softmax_scale,
           " must be finite (a value <= 0 selects the default 1 / sqrt(head_dim))");
  if (o.window_left < -1)
    c.fail(Status::kInvalidArgument, "options.window_left = ", o.window_left, ", expected >= -1 (-1 = unbounded)");
  if (o.window_right < -1)
    c.fail(Status::kInvalidArgument, "options.window_right = ", o.window_right, ", expected >= -1 (-1 = unbounded)");
  if (o.causal && o.window_right > 0)
    c.fail(Status::kInvalidArgument, "options.window_right = ", o.window_right,
           " conflicts with options.causal: causal=true requires window_right in {-1, 0} (causal is the window "
           "(left, 0))");
  if (!std::isfinite(o.softcap) || o.softcap < 0.0f)
    c.fail(Status::kInvalidArgument, "options.softcap = ", o.softcap, ", expected a finite value >= 0 (0 = off)");
}

void check_workspace(const void* workspace, int64_t bytes, const Checker& c) {
  if (bytes < 0) c.fail(Status::kInvalidArgument, "workspace_bytes = ", bytes, " is negative");
  if (bytes > 0 && workspace == nullptr)
    c.fail(Status::kInvalidArgument, "workspace is null but workspace_bytes = ", bytes);
  if (workspace != nullptr && !is_aligned(workspace, kAlignBytes))
    c.fail(Status::kInvalidArgument, "workspace = ", workspace, " is not 16-byte aligned");
}

// What forward and backward share. Gradient slots are null for forward.
struct Problem {
  const TensorRef *q, *k, *v, *out, *lse;
  const TensorRef *dout = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  const VarlenArgs* varlen;
  const AttentionOptions* options;
  const void* workspace;
  int64_t workspace_bytes;
  bool backward;
};

void check_host(const Problem& p, const Checker& c) {
  check_varlen(*p.varlen, c);
  check_options(*p.options, c);
  const bool varlen = p.varlen->enabled();

  // The forward's lse is optional; the backward needs it.
  const bool has_lse = p.backward || p.lse->defined();
  Slot slots[9];
  int n = 0;
  slots[n++] = make_slot(*p.q, "q", Role::kQ, varlen);
  slots[n++] = make_slot(*p.k, "k", Role::kK, varlen);
  slots[n++] = make_slot(*p.v, "v", Role::kV, varlen);
  slots[n++] = make_slot(*p.out, "out", Role::kOut, varlen);
  if (has_lse) slots[n++] = make_slot(*p.lse, "lse", Role::kLse, varlen);
  if (p.backward) {
    slots[n++] = make_slot(*p.dout, "dout", Role::kOut, varlen);
    slots[n++] = make_slot(*p.dq, "dq", Role::kQ, varlen);
    slots[n++] = make_slot(*p.dk, "dk", Role::kK, varlen);
    slots[n++] = make_slot(*p.dv, "dv", Role::kV, varlen);
  }
  if (p.backward && !p.lse->defined())
    c.fail(Status::kInvalidArgument, "lse is required for backward (the forward's softmax_lse, fp32 ",
           dims_str(slots[4]), ")");
  for (int i = 0; i < n; ++i) check_basics(slots[i], varlen, c);

  // dtypes: q decides; k, v, out and the gradients must match it; lse is fp32.
  const DType dt = p.q->dtype;
  const bool fp8 = dt == DType::kFloat8E4M3;
  if (fp8 && p.backward)
    c.fail(Status::kNotSupported, "q.dtype = ", dtype_str(dt), ": FP8 backward is not supported");
  if (dt != DType::kFloat16 && dt != DType::kBFloat16 && !fp8)
    c.fail(Status::kInvalidArgument, "q.dtype = ", dtype_str(dt),
           ", expected float16 or bfloat16 (or float8_e4m3 for the FP8 forward)");
  for (int i = 1; i < n; ++i) {
    const Slot& s = slots[i];
    // FP8 forward: q, k, v are e4m3, out is bf16 or fp16 (e4m3 out is not offered).
    if (fp8 && std::strcmp(s.name, "out") == 0) {
      if (s.t->dtype != DType::kBFloat16 && s.t->dtype != DType::kFloat16)
        c.fail(Status::kInvalidArgument, "out.dtype = ", dtype_str(s.t->dtype),
               ", expected bfloat16 or float16 (the output of an FP8 forward)");
      continue;
    }
    const DType want = std::strcmp(s.name, "lse") == 0 ? DType::kFloat32 : dt;
    if (s.t->dtype != want)
      c.fail(Status::kInvalidArgument, s.name, ".dtype = ", dtype_str(s.t->dtype), ", expected ", dtype_str(want),
             want == dt ? " (the dtype of q)" : "");
  }

  // Shapes agree across tensors (q defines batch, seqlen_q, num_heads, head_dim; k seqlen_k, num_heads_k; v
  // head_dim_v; in varlen mode total_q and total_k replace batch and the seqlens).
  DimTable dims;
  for (int i = 0; i < n; ++i) dims.bind(slots[i], c);

  // Sequence lengths and heads are int32 in the kernels' parameters (and cu_seqlens are int32 prefix sums).
  for (const char* dim : {"batch", "seqlen_q", "seqlen_k", "total_q", "total_k", "num_heads", "num_heads_k"}) {
    if (!dims.has(dim)) continue;  // not part of this layout
    if (dims.value(dim) > kInt32Max)
      c.fail(Status::kInvalidArgument, dims.source(dim), " (", dim, ") = ", dims.value(dim),
             " exceeds the int32 limit ", kInt32Max);
  }

  const int64_t h = dims.value("num_heads"), hk = dims.value("num_heads_k");
  if (h <= 0) c.fail(Status::kInvalidArgument, dims.source("num_heads"), " (num_heads) = ", h, ", expected > 0");
  if (hk <= 0)
    c.fail(Status::kInvalidArgument, dims.source("num_heads_k"), " (num_heads_k) = ", hk, ", expected > 0");
  if (h % hk != 0)
    c.fail(Status::kInvalidArgument, dims.source("num_heads_k"), " (num_heads_k) = ", hk, " must divide ",
           dims.source("num_heads"), " (num_heads) = ", h);

  const int64_t d = dims.value("head_dim"), dv = dims.value("head_dim_v");
  if (d <= 0) c.fail(Status::kInvalidArgument, dims.source("head_dim"), " (head_dim) = ", d, ", expected > 0");
  if (dv <= 0)
    c.fail(Status::kInvalidArgument, dims.source("head_dim_v"), " (head_dim_v) = ", dv, ", expected > 0");
  // Head dims round up to a compiled size; 8 elements (16 bytes) is the TMA granule along the contiguous dim.
  if (d % kHeadDimMultiple != 0 || d > kMaxHeadDim)
    c.fail(Status::kNotSupported, dims.source("head_dim"), " (head_dim) = ", d,
           ": head_dim must be a multiple of 8 and at most 256");
  if (dv % kHeadDimMultiple != 0 || dv > kMaxHeadDim)
    c.fail(Status::kNotSupported, dims.source("head_dim_v"), " (head_dim_v) = ", dv,
           ": head_dim_v must be a multiple of 8 and at most 256");
  if (dv != d && !(d == 192 && dv == 128))
    c.fail(Status::kNotSupported, "head_dim = ", d, " (", dims.source("head_dim"), ") with head_dim_v = ", dv, " (",
           dims.source("head_dim_v"), ") is not supported: head_dim_v must equal head_dim, or (head_dim, head_dim_v) "
           "must be (192, 128)");

  for (int i = 0; i < n; ++i) check_memory(slots[i], c);
  check_workspace(p.workspace, p.workspace_bytes, c);
  // Sizes of 0 (batch, seqlens, totals) are valid: there is nothing to compute and the entry points return early.
}

// Architecture-dependent checks. Only sm_90 has kernels so far, so every request that passed the host checks is
// supported there; a per-architecture table of head dims and dtypes belongs here once another architecture does.
void check_arch(int arch, const Checker& c) {
  if (arch < 0)
    c.fail(Status::kInvalidArgument, "arch = ", arch, ", expected 0 (the current device) or an SM version such as 90");
  if (arch == 0) arch = current_device_arch(c.where());
  if (!arch_supported(arch))
    c.fail(Status::kNotSupported, "flash3 has kernels for sm_90 (Hopper) only so far; this GPU is sm_", arch,
           arch > 90 ? " (the sm_90a kernels run on compute capability 9.0 only)" : "");
}

ProblemShape shape_of(const TensorRef& q, const TensorRef& k, const TensorRef& v, const VarlenArgs& varlen) {
  ProblemShape s;
  s.varlen = varlen.enabled();
  const int r = s.varlen ? 1 : 2;  // index of the heads dim
  s.heads = static_cast<int32_t>(q.shape[r]);
  s.heads_k = static_cast<int32_t>(k.shape[r]);
  s.head_dim = static_cast<int32_t>(q.shape[r + 1]);
  s.head_dim_v = static_cast<int32_t>(v.shape[r + 1]);
  if (s.varlen) {
    s.batch = varlen.batch;
    s.seqlen_q = varlen.max_seqlen_q;
    s.seqlen_k = varlen.max_seqlen_k;
    s.total_q = q.shape[0];
    s.total_k = k.shape[0];
  } else {
    s.batch = static_cast<int32_t>(q.shape[0]);
    s.seqlen_q = static_cast<int32_t>(q.shape[1]);
    s.seqlen_k = static_cast<int32_t>(k.shape[1]);
    s.total_q = static_cast<int64_t>(s.batch) * s.seqlen_q;
    s.total_k = static_cast<int64_t>(s.batch) * s.seqlen_k;
  }
  return s;
}

}  // namespace

bool arch_supported(int arch) { return arch == 90; }

namespace {

[[noreturn]] void throw_query_failed(const char* where, const char* call, cudaError_t err) {
  (void)cudaGetLastError();  // the failed query must not leave an error behind for the caller's next CUDA call
  throw Error(Status::kCudaError, std::string(where) + ": " + call + " failed while querying the GPU: " +
                                      cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

DeviceInfo query_device_info(const char* where, int device) {
  int major = 0, minor = 0, sms = 0;
  cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) throw_query_failed(where, "cudaDeviceGetAttribute", err);
  return {10 * major + minor, sms};
}

// Per device ordinal: (arch << 32 | sm_count), 0 = not queried yet. Racing first calls store the same value.
constexpr int kCachedDevices = 64;
std::atomic<uint64_t> g_device_info[kCachedDevices];

}  // namespace

DeviceInfo current_device_info(const char* where) {
  int device = 0;
  if (cudaGetDevice(&device) == cudaSuccess && device >= 0 && device < kCachedDevices) {
    uint64_t const cached = g_device_info[device].load(std::memory_order_relaxed);
    if (cached != 0) return {int(cached >> 32), int(cached & 0xffffffffu)};
  }
  // First call on this device, or something is wrong: the full sequence, telling "no device" apart from other
  // failures.
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count <= 0) {
    (void)cudaGetLastError();
    const std::string why = err != cudaSuccess ? std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)
                                               : std::string("cudaGetDeviceCount found 0 devices");
    throw Error(Status::kNoDevice, std::string(where) + ": no CUDA device is available (" + why + ")");
  }
  err = cudaGetDevice(&device);
  if (err != cudaSuccess) throw_query_failed(where, "cudaGetDevice", err);
  DeviceInfo const info = query_device_info(where, device);
  if (device >= 0 && device < kCachedDevices) {
    g_device_info[device].store((uint64_t(uint32_t(info.arch)) << 32) | uint32_t(info.sm_count),
                                std::memory_order_relaxed);
  }
  return info;
}

int current_device_arch(const char* where) { return current_device_info(where).arch; }

void validate_forward(const ForwardArgs& args, int arch) {
  const Checker c("flash3::forward");
  Problem p{&args.q,     &args.k,       &args.v,         &args.out,         &args.lse,
            nullptr,     nullptr,       nullptr,         nullptr,           &args.varlen,
            &args.options, args.workspace, args.workspace_bytes, /*backward=*/false};
  check_host(p, c);
  // FP8 descales: only meaningful for e4m3 inputs; their shapes are checked in fp8_validate.cpp.
  const TensorRef* descales[] = {&args.q_descale, &args.k_descale, &args.v_descale};
  const char* descale_names[] = {"q_descale", "k_descale", "v_descale"};
  for (int i = 0; i < 3; ++i) {
    if (descales[i]->defined() && args.q.dtype != DType::kFloat8E4M3)
      c.fail(Status::kInvalidArgument, descale_names[i], " is given but q.dtype = ", dtype_str(args.q.dtype),
             ": descale factors apply to FP8 (float8_e4m3) inputs only");
  }
  if (args.q.dtype == DType::kFloat8E4M3) validate_fp8_forward(args, forward_problem_shape(args));
  check_arch(arch, c);
}

void validate_backward(const BackwardArgs& args, int arch) {
  const Checker c("flash3::backward");
  Problem p{&args.q,      &args.k,  &args.v,  &args.out,     &args.lse,     &args.dout,
            &args.dq,     &args.dk, &args.dv, &args.varlen,  &args.options, args.workspace,
            args.workspace_bytes, /*backward=*/true};
  check_host(p, c);
  check_arch(arch, c);
}

ProblemShape forward_problem_shape(const ForwardArgs& args) {
  return shape_of(args.q, args.k, args.v, args.varlen);
}

ProblemShape backward_problem_shape(const BackwardArgs& args) {
  return shape_of(args.q, args.k, args.v, args.varlen);
}

}  // namespace flash3
