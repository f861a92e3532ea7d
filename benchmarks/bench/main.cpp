// flash3-bench: times flash3's attention on the current GPU and prints a table (FA3 paper convention by default:
// batch = 16384 / seqlen, heads = 2048 / hdim, layout (b, s, h, d), FLOPs 4 * b * h * sq * sk * d, halved for causal;
// backward 2.5x, forward + backward 3.5x). --mode decode times a few query rows against a long KV cache in GB/s.
// Ceilings measured in the same run (bf16 GEMM, FP8 GEMM, device copy) put the numbers in context.
// Run `flash3-bench --help` for the options.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"
#include "flash3/flash3.hpp"

namespace fb = flash3_bench;
using flash3::DType;

namespace {

// ---- options ----------------------------------------------------------------------------------------------------

struct UsageError : std::runtime_error {
  explicit UsageError(const std::string& m) : std::runtime_error(m) {}
};

// Decode shapes (batch, seqlen_k) by default: the anchors' decode table (../shared/reference/h100-anchors.md), so the
// GB/s read directly against FA3's and cuDNN's there.
const std::vector<std::pair<int, int>> kDefaultDecodeShapes = {{1, 8192},   {1, 131072}, {8, 8192},
                                                               {8, 32768},  {32, 8192},  {32, 32768},
                                                               {64, 4096},  {64, 16384}, {128, 8192}};

struct Options {
  std::vector<std::string> modes = {"fwd"};
  std::vector<int> seqlens = {512, 1024, 2048, 4096, 8192, 16384};
  int seqlen_k = 0;                                            // 0: same as seqlen
  std::vector<std::pair<int, int>> hdims = {{64, 64}, {128, 128}, {256, 256}};  // (d, dv)
  std::vector<int> causal = {0, 1};
  std::vector<DType> dtypes = {DType::kBFloat16};
  int64_t total_tokens = 16384;
  int64_t hidden = 2048;
  int batch = 0, heads = 0, heads_k = 0;  // 0: derived
  float softmax_scale = 0.f;
  float softcap = 0.f;
  int window_left = -1, window_right = -1;
  bool write_lse = true;
  bool deterministic = false;  // bwd / fwdbwd: the bitwise-reproducible backward
  // Decode (--mode decode): query lengths, (batch, seqlen_k) pairs; heads/hdim default to 32/8 and 128 unless given.
  std::vector<int> decode_seqlen_q = {1};
  std::vector<std::pair<int, int>> decode_shapes = kDefaultDecodeShapes;
  bool hdims_given = false, causal_given = false;
  double backlog_ms = 20.0;  // GPU sleep enqueued before the timed calls (0: none), see --backlog-ms
  int warmup = 20;
  int iters = 100;
  bool check = false;
  int check_rows = 64;
  std::string l2 = "rotate";  // rotate | flush
  bool ceilings = true;
  int device = 0;
  uint64_t seed = 20261121;
  std::string csv, json;
  bool quiet = false;
};

const char* kUsage = R"(usage: flash3-bench [options]

Times flash3 attention (median of many calls, each between two cudaEvents) and prints one table row per config.
Defaults follow the FA3 paper: bf16, batch = total-tokens / seqlen, heads = hidden / hdim, layout (b, s, h, d).

  --mode LIST               any of fwd, bwd, fwdbwd, decode (default fwd). bwd times flash3::backward alone
                            (after one forward per input set); fwdbwd times forward + backward together. FA3's
                            convention: bwd FLOPs = 2.5x forward, fwdbwd = 3.5x. decode: a few query rows
                            against a long KV (forward kernel), reported as GB/s against the copy ceiling
  --seqlen LIST             query lengths (default 512,1024,2048,4096,8192,16384)
  --seqlen-k N              key length for every config (default: same as seqlen; causal is bottom-right aligned)
  --hdim LIST               head dims; D or DxDV (default 64,128,256)
  --causal LIST             0 and/or 1 (default 0,1)
  --dtype LIST              bf16 and/or fp16 (default bf16)
  --total-tokens N          batch = N / seqlen (default 16384)
  --hidden N                heads = N / hdim (default 2048)
  --batch N, --heads N      override the derived sizes
  --heads-k N               key/value heads (GQA; default = heads)
  --scale X                 softmax scale (default 1/sqrt(hdim))
  --softcap X               tanh softcap (default 0 = off)
  --deterministic           bwd/fwdbwd: the deterministic backward (bitwise-reproducible dQ, dK, dV)
  --window L,R              sliding window (default -1,-1 = none)
  --no-lse                  do not write the logsumexp (default: written, as FA3 does; bwd/fwdbwd always write it)
decode mode (seqlen_q small, long KV; bytes = q + k + v + out (+ lse), each read or written once):
  --decode-seqlen-q LIST    query lengths (default 1; e.g. 1,4,16)
  --decode-shapes LIST      BATCHxSEQLEN_K pairs (default the anchors' 1x8192,1x131072,8x8192,8x32768,32x8192,
                            32x32768,64x4096,64x16384,128x8192)
                            heads default to 32 query / 8 KV heads (--heads/--heads-k override; --heads alone
                            means heads-k = heads) and hdim to 128 (--hdim overrides); causal to 0 (--causal
                            overrides; bottom-right, so it only matters for seqlen_q > 1)
  --warmup N                untimed calls before timing (default 20)
  --iters N                 timed calls; the median is reported (default 100)
  --backlog-ms X            before the timed calls, enqueue a GPU sleep of X ms (default 20) so that the host has
                            queued every timed call before the GPU reaches the first: the events then time the
                            GPU alone, not the host's launch overhead (matters for decode-sized calls); 0: off
  --l2 rotate|flush         rotate among input sets whose total exceeds 3x the L2 (default), or flush the L2 with a
                            256 MiB memset before every timed call
  --check                   before timing, check each config against a naive fp32 GPU attention on a slice of
                            rows (first and last batch, --check-rows rows each, every head), and check that every
                            element of out/lse was written (output poisoned with NaN first); in bwd/fwdbwd
                            also that every element of dq/dk/dv was written and finite (gradient values are
                            checked against PyTorch by benchmarks/compare.py)
  --check-rows N            rows per checked batch (default 64)
  --no-ceilings             skip the bf16 GEMM / FP8 GEMM / copy ceilings
  --device N                CUDA device (default 0)
  --seed N                  input seed
  --csv FILE, --json FILE   also write the results there
  --kernels                 list the kernels compiled into this build and exit
  --quiet                   no progress lines on stderr
  -h, --help                this text

Exit status: 0 ok; 1 bad usage, a failed --check or a row that errored; 2 no CUDA device; 3 nothing ran (every
config skipped, e.g. --mode bwd before the backward kernel exists). A mode flash3 does not support (kNotSupported:
no backward kernel yet, a kernel not compiled into this build) gives rows marked "skipped", never a failure.
)";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) {
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

int64_t parse_int(const std::string& s, const std::string& opt) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno != 0 || end == nullptr || *end != '\0') {
    throw UsageError(opt + ": '" + s + "' is not an integer");
  }
  return v;
}

float parse_float(const std::string& s, const std::string& opt) {
  char* end = nullptr;
  errno = 0;
  const float v = std::strtof(s.c_str(), &end);
  if (s.empty() || errno != 0 || end == nullptr || *end != '\0') {
    throw UsageError(opt + ": '" + s + "' is not a number");
  }
  return v;
}

std::vector<int> parse_int_list(const std::string& s, const std::string& opt, int64_t lo, int64_t hi) {
  std::vector<int> out;
  for (const auto& item : split(s, ',')) {
    const int64_t v = parse_int(item, opt);
    if (v < lo || v > hi) {
      throw UsageError(opt + ": " + item + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) throw UsageError(opt + ": empty list");
  return out;
}

Options parse_args(int argc, char** argv, bool* list_kernels) {
  Options o;
  *list_kernels = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline_value = false;
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_inline_value) return value;
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    auto flag = [&]() {
      if (has_inline_value) throw UsageError(arg + " takes no value");
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--mode") {
      o.modes.clear();
      for (const auto& item : split(next(), ',')) {
        if (item != "fwd" && item != "bwd" && item != "fwdbwd" && item != "decode") {
          throw UsageError("--mode: expected fwd, bwd, fwdbwd or decode, got '" + item + "'");
        }
        if (std::find(o.modes.begin(), o.modes.end(), item) == o.modes.end()) o.modes.push_back(item);
      }
      if (o.modes.empty()) throw UsageError("--mode: empty list");
    } else if (arg == "--decode-seqlen-q") {
      o.decode_seqlen_q = parse_int_list(next(), arg, 1, 1 << 20);
    } else if (arg == "--decode-shapes") {
      o.decode_shapes.clear();
      for (const auto& item : split(next(), ',')) {
        const size_t x = item.find('x');
        if (x == std::string::npos) throw UsageError(arg + ": expected BATCHxSEQLEN_K, got '" + item + "'");
        const int64_t b = parse_int(item.substr(0, x), arg), sk = parse_int(item.substr(x + 1), arg);
        if (b < 1 || sk < 1 || b > (1 << 20) || sk > (1 << 30)) throw UsageError(arg + ": bad shape '" + item + "'");
        o.decode_shapes.emplace_back(static_cast<int>(b), static_cast<int>(sk));
      }
      if (o.decode_shapes.empty()) throw UsageError(arg + ": empty list");
    } else if (arg == "--backlog-ms") {
      o.backlog_ms = parse_float(next(), arg);
      if (!(o.backlog_ms >= 0.0 && o.backlog_ms <= 10000.0)) throw UsageError(arg + ": expected 0..10000");
    } else if (arg == "--seqlen") {
      o.seqlens = parse_int_list(next(), arg, 1, 1 << 30);
    } else if (arg == "--seqlen-k") {
      o.seqlen_k = static_cast<int>(parse_int_list(next(), arg, 1, 1 << 30).at(0));
    } else if (arg == "--hdim") {
      o.hdims.clear();
      o.hdims_given = true;
      for (const auto& item : split(next(), ',')) {
        const size_t x = item.find('x');
        const int d = static_cast<int>(parse_int(item.substr(0, x), arg));
        const int dv = x == std::string::npos ? d : static_cast<int>(parse_int(item.substr(x + 1), arg));
        if (d < 1 || dv < 1 || d > 1024 || dv > 1024) throw UsageError(arg + ": bad head dim '" + item + "'");
        o.hdims.emplace_back(d, dv);
      }
      if (o.hdims.empty()) throw UsageError(arg + ": empty list");
    } else if (arg == "--causal") {
      o.causal = parse_int_list(next(), arg, 0, 1);
      o.causal_given = true;
    } else if (arg == "--dtype") {
      o.dtypes.clear();
      for (const auto& item : split(next(), ',')) {
        if (item == "bf16" || item == "bfloat16") {
          o.dtypes.push_back(DType::kBFloat16);
        } else if (item == "fp16" || item == "float16" || item == "half") {
          o.dtypes.push_back(DType::kFloat16);
        } else {
          throw UsageError(arg + ": expected bf16 or fp16, got '" + item + "'");
        }
      }
      if (o.dtypes.empty()) throw UsageError(arg + ": empty list");
    } else if (arg == "--total-tokens") {
      o.total_tokens = parse_int_list(next(), arg, 1, int64_t(1) << 40).at(0);
    } else if (arg == "--hidden") {
      o.hidden = parse_int_list(next(), arg, 1, int64_t(1) << 30).at(0);
    } else if (arg == "--batch") {
      o.batch = parse_int_list(next(), arg, 1, 1 << 30).at(0);
    } else if (arg == "--heads") {
      o.heads = parse_int_list(next(), arg, 1, 1 << 20).at(0);
    } else if (arg == "--heads-k") {
      o.heads_k = parse_int_list(next(), arg, 1, 1 << 20).at(0);
    } else if (arg == "--scale") {
      o.softmax_scale = parse_float(next(), arg);
    } else if (arg == "--softcap") {
      o.softcap = parse_float(next(), arg);
    } else if (arg == "--deterministic") {
      o.deterministic = true;
    } else if (arg == "--window") {
      const auto w = split(next(), ',');
      if (w.size() != 2) throw UsageError("--window: expected L,R (e.g. 256,0 or -1,-1)");
      o.window_left = static_cast<int>(parse_int(w[0], arg));
      o.window_right = static_cast<int>(parse_int(w[1], arg));
    } else if (arg == "--no-lse") {
      flag();
      o.write_lse = false;
    } else if (arg == "--warmup") {
      o.warmup = parse_int_list(next(), arg, 0, 1000000).at(0);
    } else if (arg == "--iters") {
      o.iters = parse_int_list(next(), arg, 1, 1000000).at(0);
    } else if (arg == "--l2") {
      o.l2 = next();
      if (o.l2 != "rotate" && o.l2 != "flush") throw UsageError("--l2: expected rotate or flush");
    } else if (arg == "--check") {
      flag();
      o.check = true;
    } else if (arg == "--check-rows") {
      o.check_rows = parse_int_list(next(), arg, 1, 1 << 20).at(0);
    } else if (arg == "--no-ceilings") {
      flag();
      o.ceilings = false;
    } else if (arg == "--device") {
      o.device = parse_int_list(next(), arg, 0, 1024).at(0);
    } else if (arg == "--seed") {
      o.seed = static_cast<uint64_t>(parse_int(next(), arg));
    } else if (arg == "--csv") {
      o.csv = next();
    } else if (arg == "--json") {
      o.json = next();
    } else if (arg == "--kernels") {
      flag();
      *list_kernels = true;
    } else if (arg == "--quiet") {
      flag();
      o.quiet = true;
    } else {
      throw UsageError("unknown option '" + arg + "' (see --help)");
    }
  }
  return o;
}

// ---- configs and results -----------------------------------------------------------------------------------------

struct Config {
  std::string mode = "fwd";  // fwd | bwd | fwdbwd | decode
  DType dtype = DType::kBFloat16;
  int batch = 0, heads = 0, heads_k = 0, seqlen_q = 0, seqlen_k = 0, d = 0, dv = 0;
  bool causal = false;
  float softmax_scale = 0.f;  // as passed to flash3 (<= 0: default)
  float softcap = 0.f;
  int window_left = -1, window_right = -1;  // as passed to flash3
  bool deterministic = false;
};

// The mask flash3 applies (types.hpp): causal == window (-1, 0); causal with a window means (left, 0).
void resolved_window(const Config& c, int* left, int* right) {
  *left = c.window_left;
  *right = c.causal ? 0 : c.window_right;
}

std::string dtype_str(DType t) {
  switch (t) {
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat32: return "fp32";
    case DType::kFloat8E4M3: return "e4m3";
    default: return "?";
  }
}

int64_t elem_size(DType t) {
  switch (t) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat8E4M3: return 1;
    default: return 4;
  }
}

std::string hdim_str(const Config& c) {
  return c.d == c.dv ? std::to_string(c.d) : std::to_string(c.d) + "x" + std::to_string(c.dv);
}

std::string mask_str(const Config& c) {
  std::string m;
  if (c.causal) {
    m = c.window_left >= 0 ? "causal+win" + std::to_string(c.window_left) : "causal";
  } else if (c.window_left >= 0 || c.window_right >= 0) {
    m = "win(" + std::to_string(c.window_left) + "," + std::to_string(c.window_right) + ")";
  } else {
    m = "full";
  }
  if (c.softcap > 0.f) m += "+softcap";
  if (c.deterministic && c.mode != "fwd" && c.mode != "decode") m += "+det";
  return m;
}

std::string config_str(const Config& c) {
  std::string s = dtype_str(c.dtype) + " hd" + hdim_str(c) + " " + mask_str(c) + " s" + std::to_string(c.seqlen_q);
  if (c.seqlen_k != c.seqlen_q) s += "x" + std::to_string(c.seqlen_k);
  s += " b" + std::to_string(c.batch) + " h" + std::to_string(c.heads);
  if (c.heads_k != c.heads) s += "/" + std::to_string(c.heads_k);
  return s;
}

// Number of (query, key) pairs the mask lets through, summed over one (batch, head). FA3's convention for the plain
// causal square case is exactly half of sq * sk (the anchors use it); anything else is counted row by row.
double visible_pairs(const Config& c) {
  int wl = 0, wr = 0;
  resolved_window(c, &wl, &wr);
  const double sq = c.seqlen_q, sk = c.seqlen_k;
  if (wl < 0 && wr < 0) return sq * sk;
  if (c.causal && wl < 0 && c.seqlen_q == c.seqlen_k) return sq * sk / 2.0;
  double total = 0;
  for (int64_t i = 0; i < c.seqlen_q; ++i) {
    const int64_t shift = i + c.seqlen_k - c.seqlen_q;
    const int64_t lo = wl >= 0 ? std::max<int64_t>(0, shift - wl) : 0;
    const int64_t hi = wr >= 0 ? std::min<int64_t>(c.seqlen_k - 1, shift + wr) : c.seqlen_k - 1;
    if (hi >= lo) total += static_cast<double>(hi - lo + 1);
  }
  return total;
}

double forward_flops(const Config& c) {
  return 2.0 * c.batch * static_cast<double>(c.heads) * visible_pairs(c) * (c.d + c.dv);
}

bool is_backward(const std::string& mode) { return mode == "bwd" || mode == "fwdbwd"; }

// FA3's convention: the backward does 2.5x the forward's matmul FLOPs (5 GEMMs of the forward's 2 per tile, the
// recomputation of S included); forward + backward is 3.5x.
double mode_flops(const Config& c) {
  const double f = forward_flops(c);
  if (c.mode == "bwd") return 2.5 * f;
  if (c.mode == "fwdbwd") return 3.5 * f;
  return f;
}

struct CheckResult {
  bool ran = false;
  bool ok = false;
  int rows = 0;  // (batch, row) pairs compared, each over every head
  double max_abs = 0, rel_l2 = 0, lse_max_abs = 0;
  int64_t out_nan = 0, lse_nan = 0, out_bad = 0, lse_bad = 0;
  std::string note;
};

struct Result {
  Config cfg;
  std::string status;  // ok | skipped | error | check-failed
  std::string message;
  double flops = 0;
  fb::Timing timing;
  double tflops = 0, pct_gemm = -1;
  int input_sets = 0;
  std::string l2_method;
  CheckResult check;
  bool backward_refused = false;  // bwd/fwdbwd: flash3::backward (or its workspace query) threw flash3::Error
  // bwd/fwdbwd with --check: elements of dq, dk, dv left NaN (unwritten: poisoned first) or not finite. -1: not run.
  int64_t grad_bad = -1;
  // decode: the fewest bytes one call must move (q, k, v read once, out (and lse) written once), and the rates.
  double bytes = 0, kv_bytes = 0, gbps = 0, kv_gbps = 0, pct_copy = -1;
};

std::string status_name(flash3::Status s) {
  switch (s) {
    case flash3::Status::kSuccess: return "kSuccess";
    case flash3::Status::kInvalidArgument: return "kInvalidArgument";
    case flash3::Status::kNotSupported: return "kNotSupported";
    case flash3::Status::kNoDevice: return "kNoDevice";
    case flash3::Status::kCudaError: return "kCudaError";
    case flash3::Status::kInternalError: return "kInternalError";
  }
  return "status " + std::to_string(static_cast<int>(s));
}

// ---- the buffers of one input set ---------------------------------------------------------------------------------

struct InputSet {
  fb::DeviceBuffer storage;
  void *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr, *dout = nullptr, *dq = nullptr, *dk = nullptr,
       *dv = nullptr;
  float* lse = nullptr;
};

struct Sizes {
  int64_t q, k, v, out, lse;  // elements
};

Sizes sizes_of(const Config& c) {
  const int64_t b = c.batch;
  return Sizes{b * c.seqlen_q * c.heads * c.d, b * c.seqlen_k * c.heads_k * c.d, b * c.seqlen_k * c.heads_k * c.dv,
               b * c.seqlen_q * c.heads * c.dv, b * c.heads * c.seqlen_q};
}

int64_t align_up(int64_t x) { return (x + 255) / 256 * 256; }

// The fewest bytes one forward must move through device memory: q, k, v read once, out (and lse) written once.
// (A kernel that re-reads K/V per query head of a GQA group, or per query tile, moves more; this is the floor.)
double forward_min_bytes(const Config& c, bool write_lse) {
  const Sizes s = sizes_of(c);
  const double e = static_cast<double>(elem_size(c.dtype));
  return e * static_cast<double>(s.q + s.k + s.v + s.out) + (write_lse ? 4.0 * static_cast<double>(s.lse) : 0.0);
}

double kv_bytes(const Config& c) {
  const Sizes s = sizes_of(c);
  return static_cast<double>(elem_size(c.dtype)) * static_cast<double>(s.k + s.v);
}

// Bytes of one set: q, k, v, out, lse (+ dout, dq, dk, dv for the backward).
int64_t set_bytes(const Config& c, bool backward) {
  const Sizes s = sizes_of(c);
  const int64_t e = elem_size(c.dtype);
  int64_t total = align_up(s.q * e) + align_up(s.k * e) + align_up(s.v * e) + align_up(s.out * e) + align_up(s.lse * 4);
  if (backward) total += align_up(s.out * e) + align_up(s.q * e) + align_up(s.k * e) + align_up(s.v * e);
  return total;
}

InputSet make_set(const Config& c, bool backward, uint64_t seed, cudaStream_t stream) {
  InputSet set;
  const Sizes s = sizes_of(c);
  const int64_t e = elem_size(c.dtype);
  set.storage = fb::DeviceBuffer(static_cast<size_t>(set_bytes(c, backward)), "input set of " + config_str(c));
  char* p = set.storage.as<char>();
  auto take = [&](int64_t bytes) {
    void* r = p;
    p += align_up(bytes);
    return r;
  };
  set.q = take(s.q * e);
  set.k = take(s.k * e);
  set.v = take(s.v * e);
  set.out = take(s.out * e);
  set.lse = static_cast<float*>(take(s.lse * 4));
  if (backward) {
    set.dout = take(s.out * e);
    set.dq = take(s.q * e);
    set.dk = take(s.k * e);
    set.dv = take(s.v * e);
  }
  fb::check_cuda(fb::fill_random(set.q, c.dtype, s.q, seed + 1, 1.0f, stream), "fill q");
  fb::check_cuda(fb::fill_random(set.k, c.dtype, s.k, seed + 2, 1.0f, stream), "fill k");
  fb::check_cuda(fb::fill_random(set.v, c.dtype, s.v, seed + 3, 1.0f, stream), "fill v");
  if (backward) fb::check_cuda(fb::fill_random(set.dout, c.dtype, s.out, seed + 4, 1.0f, stream), "fill dout");
  return set;
}

flash3::AttentionOptions attention_options(const Config& c, cudaStream_t stream) {
  flash3::AttentionOptions o;
  o.softmax_scale = c.softmax_scale;
  o.causal = c.causal;
  o.window_left = c.window_left;
  o.window_right = c.window_right;
  o.softcap = c.softcap;
  o.deterministic = c.deterministic;
  o.stream = stream;
  return o;
}

flash3::ForwardArgs forward_args(const Config& c, const InputSet& s, bool write_lse, cudaStream_t stream) {
  flash3::ForwardArgs a;
  a.q = flash3::make_tensor(s.q, c.dtype, {c.batch, c.seqlen_q, c.heads, c.d});
  a.k = flash3::make_tensor(s.k, c.dtype, {c.batch, c.seqlen_k, c.heads_k, c.d});
  a.v = flash3::make_tensor(s.v, c.dtype, {c.batch, c.seqlen_k, c.heads_k, c.dv});
  a.out = flash3::make_tensor(s.out, c.dtype, {c.batch, c.seqlen_q, c.heads, c.dv});
  if (write_lse) a.lse = flash3::make_tensor(s.lse, DType::kFloat32, {c.batch, c.heads, c.seqlen_q});
  a.options = attention_options(c, stream);
  return a;
}

flash3::BackwardArgs backward_args(const Config& c, const InputSet& s, cudaStream_t stream) {
  flash3::BackwardArgs a;
  a.q = flash3::make_tensor(s.q, c.dtype, {c.batch, c.seqlen_q, c.heads, c.d});
  a.k = flash3::make_tensor(s.k, c.dtype, {c.batch, c.seqlen_k, c.heads_k, c.d});
  a.v = flash3::make_tensor(s.v, c.dtype, {c.batch, c.seqlen_k, c.heads_k, c.dv});
  a.out = flash3::make_tensor(s.out, c.dtype, {c.batch, c.seqlen_q, c.heads, c.dv});
  a.lse = flash3::make_tensor(s.lse, DType::kFloat32, {c.batch, c.heads, c.seqlen_q});
  a.dout = flash3::make_tensor(s.dout, c.dtype, {c.batch, c.seqlen_q, c.heads, c.dv});
  a.dq = flash3::make_tensor(s.dq, c.dtype, {c.batch, c.seqlen_q, c.heads, c.d});
  a.dk = flash3::make_tensor(s.dk, c.dtype, {c.batch, c.seqlen_k, c.heads_k, c.d});
  a.dv = flash3::make_tensor(s.dv, c.dtype, {c.batch, c.seqlen_k, c.heads_k, c.dv});
  a.options = attention_options(c, stream);
  return a;
}

// A workspace that only grows, allocated once and reused by every config that fits.
struct Workspace {
  fb::DeviceBuffer buffer;
  void* get(int64_t bytes) {
    if (bytes <= 0) return nullptr;
    if (static_cast<int64_t>(buffer.bytes()) < bytes) {
      buffer.reset();
      buffer = fb::DeviceBuffer(static_cast<size_t>(bytes), "flash3 workspace");
    }
    return buffer.get();
  }
};

// ---- --check ---------------------------------------------------------------------------------------------------

float half_bits_to_float(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant != 0 ? std::nanf("") : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), exp - 25);
  }
  return sign ? -v : v;
}

float bf16_bits_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Runs flash3 once on set 0 with NaN-poisoned outputs and compares a slice against the naive fp32 attention.
CheckResult run_check(const Config& c, const InputSet& set, const flash3::ForwardArgs& args, bool write_lse,
                      int rows_per_batch, cudaStream_t stream) {
  CheckResult r;
  const Sizes s = sizes_of(c);
  const int64_t e = elem_size(c.dtype);
  // 0xFF bytes are NaN in fp16, bf16 and fp32: any element flash3 does not write stays NaN.
  fb::check_cuda(cudaMemsetAsync(set.out, 0xFF, s.out * e, stream), "poison out");
  if (write_lse) fb::check_cuda(cudaMemsetAsync(set.lse, 0xFF, s.lse * 4, stream), "poison lse");
  flash3::forward(args);
  fb::check_cuda(cudaGetLastError(), "flash3::forward launch (check run)");
  fb::check_cuda(cudaStreamSynchronize(stream), "flash3::forward (check run)");

  std::vector<uint16_t> out(static_cast<size_t>(s.out));
  fb::check_cuda(cudaMemcpy(out.data(), set.out, s.out * e, cudaMemcpyDeviceToHost), "copy out to host");
  std::vector<float> lse;
  if (write_lse) {
    lse.resize(static_cast<size_t>(s.lse));
    fb::check_cuda(cudaMemcpy(lse.data(), set.lse, s.lse * 4, cudaMemcpyDeviceToHost), "copy lse to host");
  }
  auto to_float = [&](uint16_t bits) {
    return c.dtype == DType::kBFloat16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
  };
  for (uint16_t bits : out) r.out_nan += std::isnan(to_float(bits)) ? 1 : 0;
  for (float x : lse) r.lse_nan += std::isnan(x) ? 1 : 0;

  // The slice: first and last batch, rows evenly spaced over [0, sq) including both ends.
  std::vector<int32_t> row_batch, row_index;
  std::vector<int> batches = {0};
  if (c.batch > 1) batches.push_back(c.batch - 1);
  const int n_rows = std::min(rows_per_batch, c.seqlen_q);
  for (int b : batches) {
    int64_t last = -1;
    for (int t = 0; t < n_rows; ++t) {
      const int64_t i = n_rows == 1 ? 0 : static_cast<int64_t>(t) * (c.seqlen_q - 1) / (n_rows - 1);
      if (i == last) continue;
      last = i;
      row_batch.push_back(b);
      row_index.push_back(static_cast<int32_t>(i));
    }
  }
  const int rows = static_cast<int>(row_batch.size());
  r.rows = rows;
  fb::DeviceBuffer d_batch(rows * sizeof(int32_t), "check row batches");
  fb::DeviceBuffer d_index(rows * sizeof(int32_t), "check row indices");
  fb::DeviceBuffer d_out_ref(static_cast<size_t>(rows) * c.heads * c.dv * sizeof(float), "check out_ref");
  fb::DeviceBuffer d_lse_ref(static_cast<size_t>(rows) * c.heads * sizeof(float), "check lse_ref");
  fb::check_cuda(cudaMemcpy(d_batch.get(), row_batch.data(), rows * sizeof(int32_t), cudaMemcpyHostToDevice),
                 "copy check rows");
  fb::check_cuda(cudaMemcpy(d_index.get(), row_index.data(), rows * sizeof(int32_t), cudaMemcpyHostToDevice),
                 "copy check rows");

  fb::NaiveProblem p;
  p.dtype = c.dtype;
  p.q = set.q;
  p.k = set.k;
  p.v = set.v;
  p.batch = c.batch;
  p.seqlen_q = c.seqlen_q;
  p.seqlen_k = c.seqlen_k;
  p.heads = c.heads;
  p.heads_k = c.heads_k;
  p.head_dim = c.d;
  p.head_dim_v = c.dv;
  p.softmax_scale = c.softmax_scale > 0.f ? c.softmax_scale : 1.0f / std::sqrt(static_cast<float>(c.d));
  p.softcap = c.softcap;
  resolved_window(c, &p.window_left, &p.window_right);
  fb::check_cuda(fb::naive_attention_rows(p, d_batch.as<int32_t>(), d_index.as<int32_t>(), rows,
                                          d_out_ref.as<float>(), d_lse_ref.as<float>(), stream),
                 "naive attention launch");
  fb::check_cuda(cudaStreamSynchronize(stream), "naive attention");
  std::vector<float> out_ref(static_cast<size_t>(rows) * c.heads * c.dv), lse_ref(static_cast<size_t>(rows) * c.heads);
  fb::check_cuda(cudaMemcpy(out_ref.data(), d_out_ref.get(), out_ref.size() * sizeof(float), cudaMemcpyDeviceToHost),
                 "copy out_ref");
  fb::check_cuda(cudaMemcpy(lse_ref.data(), d_lse_ref.get(), lse_ref.size() * sizeof(float), cudaMemcpyDeviceToHost),
                 "copy lse_ref");

  // Tolerances: a few units in the last place of the output type (P is rounded to it before P V), relative to the
  // magnitude of the reference; the LSE is fp32 throughout.
  const bool bf16 = c.dtype == DType::kBFloat16;
  const double atol = bf16 ? 1e-2 : 2e-3, rtol = bf16 ? 1e-2 : 2e-3, rel_l2_max = bf16 ? 1e-2 : 3e-3;
  const double lse_tol = 2e-3;
  double err2 = 0, ref2 = 0;
  for (int rr = 0; rr < rows; ++rr) {
    const int64_t b = row_batch[rr], i = row_index[rr];
    for (int h = 0; h < c.heads; ++h) {
      const int64_t ref_row = static_cast<int64_t>(rr) * c.heads + h;
      for (int col = 0; col < c.dv; ++col) {
        const double ref = out_ref[ref_row * c.dv + col];
        const double got = to_float(out[static_cast<size_t>(((b * c.seqlen_q + i) * c.heads + h) * c.dv + col)]);
        const double diff = std::fabs(got - ref);
        if (!(diff <= atol + rtol * std::fabs(ref))) ++r.out_bad;  // NaN counts as bad
        if (std::isnan(diff)) {
          r.max_abs = NAN;
        } else if (!std::isnan(r.max_abs)) {
          r.max_abs = std::max(r.max_abs, diff);
        }
        err2 += std::isnan(diff) ? 0.0 : diff * diff;
        ref2 += ref * ref;
      }
      if (write_lse) {
        const float ref = lse_ref[ref_row];
        const float got = lse[static_cast<size_t>((b * c.heads + h) * c.seqlen_q + i)];
        if (std::isinf(ref)) {
          if (!(std::isinf(got) && got < 0)) ++r.lse_bad;  // a row that sees no key: lse = -inf
        } else {
          const double d = std::fabs(static_cast<double>(got) - ref);
          if (!(d <= lse_tol)) ++r.lse_bad;
          if (!std::isnan(d)) r.lse_max_abs = std::max(r.lse_max_abs, d);
        }
      }
    }
  }
  r.rel_l2 = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  r.ran = true;
  r.ok = r.out_nan == 0 && r.lse_nan == 0 && r.out_bad == 0 && r.lse_bad == 0 && !std::isnan(r.max_abs) &&
         r.rel_l2 <= rel_l2_max;
  std::ostringstream note;
  note << rows << " rows x " << c.heads << " heads vs naive fp32; tol |err| <= " << atol << " + " << rtol
       << "*|ref|, rel_l2 <= " << rel_l2_max << ", |dlse| <= " << lse_tol;
  if (r.out_nan || r.lse_nan) note << "; unwritten (NaN) elements: out " << r.out_nan << ", lse " << r.lse_nan;
  if (r.out_bad || r.lse_bad) note << "; out of tolerance: out " << r.out_bad << ", lse " << r.lse_bad;
  r.note = note.str();
  return r;
}

// Runs the backward once with dq/dk/dv poisoned (NaN) and counts elements left NaN or not finite. The forward's out
// and lse must be in `set` already.
int64_t run_grad_written_check(const Config& c, const InputSet& set, const flash3::BackwardArgs& args,
                               cudaStream_t stream) {
  const Sizes s = sizes_of(c);
  const int64_t e = elem_size(c.dtype);
  fb::check_cuda(cudaMemsetAsync(set.dq, 0xFF, s.q * e, stream), "poison dq");
  fb::check_cuda(cudaMemsetAsync(set.dk, 0xFF, s.k * e, stream), "poison dk");
  fb::check_cuda(cudaMemsetAsync(set.dv, 0xFF, s.v * e, stream), "poison dv");
  flash3::backward(args);
  fb::check_cuda(cudaGetLastError(), "flash3::backward launch (check run)");
  fb::check_cuda(cudaStreamSynchronize(stream), "flash3::backward (check run)");
  int64_t bad = 0;
  const std::pair<const void*, int64_t> grads[] = {{set.dq, s.q}, {set.dk, s.k}, {set.dv, s.v}};
  for (const auto& g : grads) {
    std::vector<uint16_t> host(static_cast<size_t>(g.second));
    fb::check_cuda(cudaMemcpy(host.data(), g.first, g.second * e, cudaMemcpyDeviceToHost), "copy gradient to host");
    for (uint16_t bits : host) {
      const float x = c.dtype == DType::kBFloat16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
      bad += std::isfinite(x) ? 0 : 1;
    }
  }
  return bad;
}

// ---- output ------------------------------------------------------------------------------------------------------

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (ch == '\n') {
      o += "\\n";
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", u);
      o += buf;
    } else {
      o += ch;
    }
  }
  return o;
}

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"') o += '"';
    o += ch;
  }
  return o + "\"";
}

std::string check_cell(const Result& r) {
  const CheckResult& c = r.check;
  if (!c.ran) return "-";
  std::string cell = std::string(c.ok ? "ok " : "FAIL ") + fmt("%.1e", c.max_abs);
  if (r.grad_bad > 0) cell += " grads FAIL";
  return cell;
}

void print_table_header(const std::string& mode) {
  if (mode == "decode") {
    std::printf("| %-6s | %-5s | %-7s | %-11s | %-14s | %-5s | %-5s | %9s | %7s | %8s | %6s | %6s | %-12s |\n", "mode",
                "dtype", "hdim", "mask", "seqlen q x k", "batch", "heads", "ms", "GB/s", "K+V GB/s", "% copy",
                "SM MHz", "check");
    std::printf("|--------|-------|---------|-------------|----------------|-------|-------|-----------|---------|-----"
                "-----|--------|--------|--------------|\n");
    return;
  }
  std::printf("| %-6s | %-5s | %-7s | %-11s | %-6s | %-5s | %-5s | %9s | %7s | %6s | %6s | %-12s |\n", "mode", "dtype",
              "hdim", "mask", "seqlen", "batch", "heads", "ms", "TFLOPS", "% GEMM", "SM MHz", "check");
  std::printf("|--------|-------|---------|-------------|--------|-------|-------|-----------|---------|--------|-----"
              "---|--------------|\n");
}

void print_row(const Result& r) {
  const Config& c = r.cfg;
  std::string seq = std::to_string(c.seqlen_q);
  if (c.seqlen_k != c.seqlen_q) seq += "x" + std::to_string(c.seqlen_k);
  std::string heads = std::to_string(c.heads);
  if (c.heads_k != c.heads) heads += "/" + std::to_string(c.heads_k);
  const bool decode = c.mode == "decode";
  if (decode) seq = std::to_string(c.seqlen_q) + " x " + std::to_string(c.seqlen_k);
  std::printf(decode ? "| %-6s | %-5s | %-7s | %-11s | %-14s | %-5d | %-5s |"
                     : "| %-6s | %-5s | %-7s | %-11s | %-6s | %-5d | %-5s |",
              c.mode.c_str(), dtype_str(c.dtype).c_str(), hdim_str(c).c_str(), mask_str(c).c_str(), seq.c_str(),
              c.batch, heads.c_str());
  const std::string mhz_cell = r.timing.sm_clock_mhz >= 0 ? std::to_string(r.timing.sm_clock_mhz) : "n/a";
  if ((r.status == "ok" || r.status == "check-failed") && decode) {
    std::printf(" %9.4f | %7.0f | %8.0f | %6s | %6s | %-12s |\n", r.timing.median_ms, r.gbps, r.kv_gbps,
                r.pct_copy >= 0 ? fmt("%.1f", r.pct_copy).c_str() : "n/a", mhz_cell.c_str(), check_cell(r).c_str());
  } else if (r.status == "ok" || r.status == "check-failed") {
    std::printf(" %9.4f | %7.1f | %6s | %6s | %-12s |\n", r.timing.median_ms, r.tflops,
                r.pct_gemm >= 0 ? fmt("%.1f", r.pct_gemm).c_str() : "n/a", mhz_cell.c_str(), check_cell(r).c_str());
  } else if (r.status == "skipped" && r.backward_refused) {
    std::printf(" not supported: %s\n", r.message.c_str());
  } else {
    std::printf(" %s: %s\n", r.status.c_str(), r.message.c_str());
  }
  std::fflush(stdout);
}

void write_csv(const std::string& path, const std::vector<Result>& results) {
  std::ofstream f(path);
  if (!f) {
    std::fprintf(stderr, "flash3-bench: cannot write %s\n", path.c_str());
    return;
  }
  f << "mode,dtype,batch,heads,heads_k,seqlen_q,seqlen_k,hdim,hdim_v,mask,causal,status,ms,min_ms,max_ms,tflops,"
       "pct_bf16_gemm,sm_clock_mhz,flops,bytes,gbps,kv_gbps,pct_copy,input_sets,l2,check,check_max_abs,check_rel_l2,"
       "check_lse_max_abs,grad_bad,message\n";
  for (const Result& r : results) {
    const Config& c = r.cfg;
    const bool timed = r.status == "ok" || r.status == "check-failed";
    const bool decode = timed && c.mode == "decode";
    f << c.mode << ',' << dtype_str(c.dtype) << ',' << c.batch << ',' << c.heads << ',' << c.heads_k << ','
      << c.seqlen_q << ',' << c.seqlen_k << ',' << c.d << ',' << c.dv << ',' << csv_field(mask_str(c)) << ','
      << (c.causal ? 1 : 0) << ',' << r.status << ',' << (timed ? fmt("%.6f", r.timing.median_ms) : "") << ','
      << (timed ? fmt("%.6f", r.timing.min_ms) : "") << ',' << (timed ? fmt("%.6f", r.timing.max_ms) : "") << ','
      << (timed ? fmt("%.2f", r.tflops) : "") << ',' << (timed && r.pct_gemm >= 0 ? fmt("%.2f", r.pct_gemm) : "")
      << ',' << (r.timing.sm_clock_mhz >= 0 ? std::to_string(r.timing.sm_clock_mhz) : "") << ','
      << fmt("%.6g", r.flops) << ',' << (decode ? fmt("%.6g", r.bytes) : "") << ','
      << (decode ? fmt("%.1f", r.gbps) : "") << ',' << (decode ? fmt("%.1f", r.kv_gbps) : "") << ','
      << (decode && r.pct_copy >= 0 ? fmt("%.2f", r.pct_copy) : "") << ',' << r.input_sets << ',' << r.l2_method
      << ',' << (r.check.ran ? (r.check.ok ? "ok" : "FAIL") : "") << ','
      << (r.check.ran ? fmt("%.3e", r.check.max_abs) : "") << ','
      << (r.check.ran ? fmt("%.3e", r.check.rel_l2) : "") << ','
      << (r.check.ran ? fmt("%.3e", r.check.lse_max_abs) : "") << ','
      << (r.grad_bad >= 0 ? std::to_string(r.grad_bad) : "") << ','
      << csv_field(r.message.empty() ? r.check.note : r.message) << '\n';
  }
}

struct DeviceInfo {
  std::string name;
  int cc_major = 0, cc_minor = 0, sms = 0;
  int64_t l2_bytes = 0;
  size_t total_mem = 0;
  int clock_khz = -1, mem_clock_khz = -1;  // peak, from the CUDA attributes
  fb::GpuState nvml;
};

std::string ceiling_json(const fb::Ceiling& c, const char* unit) {
  return std::string("{\"ok\": ") + (c.ok ? "true" : "false") + ", \"value\": " + json_num(c.ok ? c.value : NAN) +
         ", \"unit\": \"" + unit + "\", \"ms\": " + json_num(c.ok ? c.ms : NAN) +
         ", \"sm_clock_mhz\": " + std::to_string(c.sm_clock_mhz) + ", \"note\": \"" + json_escape(c.note) + "\"}";
}

void write_json(const std::string& path, const Options& o, const DeviceInfo& dev, const fb::Ceilings* ceil,
                const std::vector<Result>& results) {
  std::ofstream f(path);
  if (!f) {
    std::fprintf(stderr, "flash3-bench: cannot write %s\n", path.c_str());
    return;
  }
  const fb::GpuState& g = dev.nvml;
  f << "{\n  \"tool\": \"flash3-bench\",\n  \"flash3_version\": \"" << json_escape(flash3::version_string())
    << "\",\n  \"mode\": \"" << [&o] {
         std::string m;
         for (const auto& x : o.modes) m += (m.empty() ? "" : ",") + x;
         return m;
       }() << "\",\n  \"modes\": [";
  for (size_t i = 0; i < o.modes.size(); ++i) f << (i ? ", " : "") << "\"" << o.modes[i] << "\"";
  f << "],\n";
  f << "  \"device\": {\"name\": \"" << json_escape(dev.name) << "\", \"compute_capability\": \"" << dev.cc_major
    << "." << dev.cc_minor << "\", \"sms\": " << dev.sms << ", \"l2_bytes\": " << dev.l2_bytes
    << ", \"memory_bytes\": " << dev.total_mem << ", \"nvml\": " << (g.available ? "true" : "false")
    << ", \"nvml_error\": \"" << json_escape(g.error) << "\", \"sm_clock_mhz\": " << g.sm_clock_mhz
    << ", \"max_sm_clock_mhz\": " << g.max_sm_clock_mhz << ", \"mem_clock_mhz\": " << g.mem_clock_mhz
    << ", \"max_mem_clock_mhz\": " << g.max_mem_clock_mhz << ", \"power_limit_w\": " << json_num(g.power_limit_w)
    << ", \"power_draw_w\": " << json_num(g.power_draw_w) << ", \"temperature_c\": " << g.temperature_c
    << ", \"clock_event_reasons\": " << g.clock_event_reasons << "},\n";
  f << "  \"ceilings\": ";
  if (ceil != nullptr) {
    f << "{\"bf16_gemm_tflops\": " << ceiling_json(ceil->bf16_gemm, "TFLOPS")
      << ",\n    \"fp8_gemm_tflops\": " << ceiling_json(ceil->fp8_gemm, "TFLOPS")
      << ",\n    \"copy_gbps\": " << ceiling_json(ceil->copy, "GB/s") << "},\n";
  } else {
    f << "null,\n";
  }
  f << "  \"settings\": {\"warmup\": " << o.warmup << ", \"iters\": " << o.iters << ", \"l2\": \"" << o.l2
    << "\", \"write_lse\": " << (o.write_lse ? "true" : "false") << ", \"seed\": " << o.seed
    << ", \"backlog_ms\": " << json_num(o.backlog_ms)
    << ", \"flops\": \"4*b*h*pairs*(d+dv)/2; pairs = sq*sk, sq*sk/2 for square causal, counted otherwise; bwd 2.5x, "
       "fwdbwd 3.5x\", \"bytes\": \"decode: q + k + v + out (+ lse) bytes, each moved once\"},\n";
  f << "  \"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    const Config& c = r.cfg;
    const bool timed = r.status == "ok" || r.status == "check-failed";
    const bool decode = timed && c.mode == "decode";
    f << (i ? ",\n    " : "\n    ") << "{\"mode\": \"" << c.mode << "\", \"dtype\": \"" << dtype_str(c.dtype)
      << "\", \"batch\": " << c.batch
      << ", \"heads\": " << c.heads << ", \"heads_k\": " << c.heads_k << ", \"seqlen_q\": " << c.seqlen_q
      << ", \"seqlen_k\": " << c.seqlen_k << ", \"hdim\": " << c.d << ", \"hdim_v\": " << c.dv
      << ", \"mask\": \"" << json_escape(mask_str(c)) << "\", \"causal\": " << (c.causal ? "true" : "false")
      << ", \"status\": \"" << r.status << "\", \"ms\": " << json_num(timed ? r.timing.median_ms : NAN)
      << ", \"min_ms\": " << json_num(timed ? r.timing.min_ms : NAN)
      << ", \"max_ms\": " << json_num(timed ? r.timing.max_ms : NAN)
      << ", \"tflops\": " << json_num(timed ? r.tflops : NAN)
      << ", \"pct_bf16_gemm\": " << json_num(timed && r.pct_gemm >= 0 ? r.pct_gemm : NAN)
      << ", \"sm_clock_mhz\": " << r.timing.sm_clock_mhz << ", \"flops\": " << json_num(r.flops)
      << ", \"bytes\": " << json_num(decode ? r.bytes : NAN) << ", \"gbps\": " << json_num(decode ? r.gbps : NAN)
      << ", \"kv_gbps\": " << json_num(decode ? r.kv_gbps : NAN)
      << ", \"pct_copy\": " << json_num(decode && r.pct_copy >= 0 ? r.pct_copy : NAN)
      << ", \"enqueue_ms\": " << json_num(timed ? r.timing.enqueue_ms : NAN)
      << ", \"backlog_short\": " << (r.timing.backlog_short ? "true" : "false")
      << ", \"input_sets\": " << r.input_sets << ", \"l2\": \"" << r.l2_method << "\"";
    if (r.grad_bad >= 0) f << ", \"grad_unwritten_or_nonfinite\": " << r.grad_bad;
    if (r.check.ran) {
      f << ", \"check\": {\"ok\": " << (r.check.ok ? "true" : "false") << ", \"rows\": " << r.check.rows
        << ", \"max_abs\": " << json_num(r.check.max_abs) << ", \"rel_l2\": " << json_num(r.check.rel_l2)
        << ", \"lse_max_abs\": " << json_num(r.check.lse_max_abs) << ", \"out_nan\": " << r.check.out_nan
        << ", \"lse_nan\": " << r.check.lse_nan << ", \"note\": \"" << json_escape(r.check.note) << "\"}";
    }
    f << ", \"message\": \"" << json_escape(r.message) << "\"}";
  }
  f << "\n  ]\n}\n";
}

std::string mhz(int v) { return v >= 0 ? std::to_string(v) + " MHz" : std::string("n/a"); }

// ---- one config --------------------------------------------------------------------------------------------------

struct Context {
  const Options& opt;
  const DeviceInfo& dev;
  cudaStream_t stream;
  double gemm_tflops;  // <= 0: unknown
  double copy_gbps;    // <= 0: unknown
  Workspace fwd_ws, bwd_ws;
  fb::DeviceBuffer flush;  // 256 MiB, only for --l2 flush or a config whose sets cannot cover the L2
};

void run_config(Context& ctx, Result& r) {
  const Config& c = r.cfg;
  const Options& o = ctx.opt;
  const bool backward = is_backward(c.mode);
  const bool write_lse = o.write_lse || backward;
  r.flops = mode_flops(c);

  // How many input sets: enough that one pass over them is 3x the L2, so no call finds its inputs in the cache.
  const int64_t one_set = set_bytes(c, backward);
  size_t free_mem = 0, total_mem = 0;
  fb::check_cuda(cudaMemGetInfo(&free_mem, &total_mem), "cudaMemGetInfo");
  const int64_t budget = static_cast<int64_t>(free_mem * 0.6);
  if (one_set > budget) {
    r.status = "error";
    r.message = "needs " + std::to_string(one_set >> 20) + " MiB per input set, only " +
                std::to_string(free_mem >> 20) + " MiB free";
    return;
  }
  const int64_t l2_cover = 3 * std::max<int64_t>(ctx.dev.l2_bytes, 1);
  int sets = 1;
  bool use_flush = o.l2 == "flush";
  if (!use_flush) {
    const int64_t want = std::min<int64_t>(64, std::max<int64_t>(2, (l2_cover + one_set - 1) / one_set));
    sets = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, budget / one_set)));
    if (sets * one_set < l2_cover) use_flush = true;  // not enough memory to rotate past the L2
  }
  if (use_flush && ctx.flush.get() == nullptr) ctx.flush = fb::DeviceBuffer(256u << 20, "L2 flush buffer");
  r.input_sets = sets;
  r.l2_method = use_flush ? "flush" : "rotate";

  std::vector<InputSet> data;
  data.reserve(sets);
  for (int s = 0; s < sets; ++s) data.push_back(make_set(c, backward, o.seed + 1000003ull * s, ctx.stream));
  fb::check_cuda(cudaStreamSynchronize(ctx.stream), "filling the inputs");

  std::vector<flash3::ForwardArgs> fwd;
  for (const InputSet& s : data) fwd.push_back(forward_args(c, s, write_lse, ctx.stream));
  // One workspace for every set: the size depends on shapes only, which all sets share.
  const int64_t ws_bytes = flash3::forward_workspace_size(fwd[0]);
  void* ws = ctx.fwd_ws.get(ws_bytes);
  for (auto& a : fwd) {
    a.workspace = ws;
    a.workspace_bytes = ws_bytes;
  }

  if (o.check) {
    r.check = run_check(c, data[0], fwd[0], write_lse, o.check_rows, ctx.stream);
  }

  std::function<void(int)> between;
  if (use_flush) {
    between = [&ctx](int i) {
      fb::check_cuda(cudaMemsetAsync(ctx.flush.get(), i & 0xff, ctx.flush.bytes(), ctx.stream), "L2 flush memset");
    };
  }
  const double backlog = o.backlog_ms;
  if (!backward) {
    r.timing = fb::time_calls([&](int i) { flash3::forward(fwd[i % sets]); }, between, o.warmup, o.iters, ctx.stream,
                              backlog);
  } else {
    // The backward needs the forward's out and lse: compute them once per set (fwdbwd recomputes them in every
    // timed call, as training does).
    for (const auto& a : fwd) flash3::forward(a);
    fb::check_cuda(cudaStreamSynchronize(ctx.stream), "forward before backward");
    std::vector<flash3::BackwardArgs> bwd;
    for (const InputSet& s : data) bwd.push_back(backward_args(c, s, ctx.stream));
    try {
      const int64_t bws_bytes = flash3::backward_workspace_size(bwd[0]);
      void* bws = ctx.bwd_ws.get(bws_bytes);
      for (auto& a : bwd) {
        a.workspace = bws;
        a.workspace_bytes = bws_bytes;
      }
      if (o.check) r.grad_bad = run_grad_written_check(c, data[0], bwd[0], ctx.stream);
      if (c.mode == "bwd") {
        r.timing = fb::time_calls([&](int i) { flash3::backward(bwd[i % sets]); }, between, o.warmup, o.iters,
                                  ctx.stream, backlog);
      } else {
        r.timing = fb::time_calls(
            [&](int i) {
              flash3::forward(fwd[i % sets]);
              flash3::backward(bwd[i % sets]);
            },
            between, o.warmup, o.iters, ctx.stream, backlog);
      }
    } catch (const flash3::Error&) {
      r.backward_refused = true;
      throw;
    }
  }
  const double seconds = r.timing.median_ms * 1e-3;
  r.tflops = r.flops / seconds / 1e12;
  r.pct_gemm = ctx.gemm_tflops > 0 ? 100.0 * r.tflops / ctx.gemm_tflops : -1;
  if (c.mode == "decode") {
    r.bytes = forward_min_bytes(c, write_lse);
    r.kv_bytes = kv_bytes(c);
    r.gbps = r.bytes / seconds / 1e9;
    r.kv_gbps = r.kv_bytes / seconds / 1e9;
    r.pct_copy = ctx.copy_gbps > 0 ? 100.0 * r.gbps / ctx.copy_gbps : -1;
  }
  const bool grads_ok = r.grad_bad <= 0;
  const bool check_failed = (r.check.ran && !r.check.ok) || !grads_ok;
  r.status = check_failed ? "check-failed" : "ok";
  if (r.check.ran && !r.check.ok) r.message = "check FAILED: " + r.check.note;
  if (!grads_ok) {
    r.message += std::string(r.message.empty() ? "" : "; ") + "check FAILED: " + std::to_string(r.grad_bad) +
                 " elements of dq/dk/dv unwritten (NaN) or not finite";
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  bool list_kernels = false;
  try {
    opt = parse_args(argc, argv, &list_kernels);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "flash3-bench: %s\n", e.what());
    return 1;
  }
  if (list_kernels) {
    const std::string kernels = flash3::describe_kernels();
    std::printf("%s",
                kernels.empty() ? "(no kernels compiled into this build: see FLASH3_KERNELS)\n" : kernels.c_str());
    return 0;
  }

  int count = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&count);
  if (count_err != cudaSuccess || count == 0) {
    std::printf("flash3-bench: no CUDA device found (%s)\n",
                count_err != cudaSuccess ? cudaGetErrorString(count_err) : "cudaGetDeviceCount reported 0 devices");
    return 2;
  }
  if (opt.device >= count) {
    std::printf("flash3-bench: no CUDA device found (--device %d, but only %d device(s))\n", opt.device, count);
    return 2;
  }

  cudaStream_t stream = nullptr;
  DeviceInfo dev;
  try {
    fb::check_cuda(cudaSetDevice(opt.device), "cudaSetDevice");
    cudaDeviceProp prop{};
    fb::check_cuda(cudaGetDeviceProperties(&prop, opt.device), "cudaGetDeviceProperties");
    dev.name = prop.name;
    dev.cc_major = prop.major;
    dev.cc_minor = prop.minor;
    dev.sms = prop.multiProcessorCount;
    dev.l2_bytes = prop.l2CacheSize;
    dev.total_mem = prop.totalGlobalMem;
    if (cudaDeviceGetAttribute(&dev.clock_khz, cudaDevAttrClockRate, opt.device) != cudaSuccess) dev.clock_khz = -1;
    if (cudaDeviceGetAttribute(&dev.mem_clock_khz, cudaDevAttrMemoryClockRate, opt.device) != cudaSuccess) {
      dev.mem_clock_khz = -1;
    }
    (void)cudaGetLastError();
    fb::check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  } catch (const std::exception& e) {
    std::printf("flash3-bench: cannot use CUDA device %d: %s\n", opt.device, e.what());
    return 2;
  }

  fb::Nvml& nvml = fb::Nvml::instance();
  nvml.open(opt.device);
  dev.nvml = nvml.query();
  const fb::GpuState& g = dev.nvml;

  std::string modes_str;
  for (const auto& m : opt.modes) modes_str += (modes_str.empty() ? "" : ",") + m;
  std::printf("flash3-bench (flash3 %s), mode %s\n", flash3::version_string(), modes_str.c_str());
  std::printf("GPU %d: %s, sm_%d%d, %d SMs, L2 %lld MiB, %.1f GiB\n", opt.device, dev.name.c_str(), dev.cc_major,
              dev.cc_minor, dev.sms, static_cast<long long>(dev.l2_bytes >> 20), dev.total_mem / 1073741824.0);
  if (g.available) {
    std::printf("clocks (idle, before the run): SM %s (max %s), memory %s (max %s); power limit %s, draw %s; %s; "
                "clock event reasons 0x%llx\n",
                mhz(g.sm_clock_mhz).c_str(), mhz(g.max_sm_clock_mhz).c_str(), mhz(g.mem_clock_mhz).c_str(),
                mhz(g.max_mem_clock_mhz).c_str(), g.power_limit_w >= 0 ? fmt("%.0f W", g.power_limit_w).c_str() : "n/a",
                g.power_draw_w >= 0 ? fmt("%.0f W", g.power_draw_w).c_str() : "n/a",
                g.temperature_c >= 0 ? (std::to_string(g.temperature_c) + " C").c_str() : "temperature n/a",
                static_cast<unsigned long long>(g.clock_event_reasons < 0 ? 0 : g.clock_event_reasons));
  } else {
    std::printf("clocks: SM n/a, memory n/a, power limit n/a (NVML: %s); CUDA peak SM clock %s, memory clock %s\n",
                g.error.c_str(), dev.clock_khz > 0 ? mhz(dev.clock_khz / 1000).c_str() : "n/a",
                dev.mem_clock_khz > 0 ? mhz(dev.mem_clock_khz / 1000).c_str() : "n/a");
  }

  std::unique_ptr<fb::Ceilings> ceilings;
  if (opt.ceilings) {
    if (!opt.quiet) std::fprintf(stderr, "flash3-bench: measuring ceilings (bf16 GEMM, FP8 GEMM, copy)...\n");
    ceilings = std::make_unique<fb::Ceilings>(fb::measure_ceilings(8192, int64_t(1) << 30, 10, 30, stream));
    auto line = [](const char* name, const fb::Ceiling& c, const char* unit, double div) {
      if (c.ok) {
        std::printf("ceiling %-10s %8.1f %s  (%s; %.3f ms; SM %s)\n", name, c.value / div, unit, c.note.c_str(), c.ms,
                    mhz(c.sm_clock_mhz).c_str());
      } else {
        std::printf("ceiling %-10s      n/a  (%s)\n", name, c.note.c_str());
      }
    };
    line("bf16 GEMM", ceilings->bf16_gemm, "TFLOPS", 1.0);
    line("FP8 GEMM", ceilings->fp8_gemm, "TFLOPS", 1.0);
    line("D2D copy", ceilings->copy, "TB/s  ", 1000.0);
  } else {
    std::printf("ceilings: not measured (--no-ceilings)\n");
  }
  const double gemm_tflops = ceilings && ceilings->bf16_gemm.ok ? ceilings->bf16_gemm.value : -1;
  const double copy_gbps = ceilings && ceilings->copy.ok ? ceilings->copy.value : -1;

  // The sweep: mode, then the anchors' order (dtype, hdim, mask, seqlen); decode: dtype, hdim, mask, sq, shape.
  std::vector<Result> results;
  auto base_config = [&](const std::string& mode, DType dtype, const std::pair<int, int>& hd, int causal) {
    Config c;
    c.mode = mode;
    c.dtype = dtype;
    c.d = hd.first;
    c.dv = hd.second;
    c.causal = causal != 0;
    c.softmax_scale = opt.softmax_scale;
    c.softcap = opt.softcap;
    c.window_left = opt.window_left;
    c.window_right = opt.window_right;
    c.deterministic = opt.deterministic;
    return c;
  };
  for (const std::string& mode : opt.modes) {
    if (mode == "decode") {
      const std::vector<std::pair<int, int>> hdims =
          opt.hdims_given ? opt.hdims : std::vector<std::pair<int, int>>{{128, 128}};
      const std::vector<int> causals = opt.causal_given ? opt.causal : std::vector<int>{0};
      for (DType dtype : opt.dtypes) {
        for (const auto& hd : hdims) {
          for (int causal : causals) {
            for (int sq : opt.decode_seqlen_q) {
              for (const auto& shape : opt.decode_shapes) {
                Result r;
                r.cfg = base_config(mode, dtype, hd, causal);
                Config& c = r.cfg;
                c.seqlen_q = sq;
                c.seqlen_k = shape.second;
                c.batch = shape.first;
                c.heads = opt.heads > 0 ? opt.heads : 32;
                c.heads_k = opt.heads_k > 0 ? opt.heads_k : (opt.heads > 0 ? c.heads : 8);
                results.push_back(r);
              }
            }
          }
        }
      }
      continue;
    }
    for (DType dtype : opt.dtypes) {
      for (const auto& hd : opt.hdims) {
        for (int causal : opt.causal) {
          for (int s : opt.seqlens) {
            Result r;
            r.cfg = base_config(mode, dtype, hd, causal);
            Config& c = r.cfg;
            c.seqlen_q = s;
            c.seqlen_k = opt.seqlen_k > 0 ? opt.seqlen_k : s;
            c.batch = opt.batch > 0 ? opt.batch : static_cast<int>(std::max<int64_t>(1, opt.total_tokens / s));
            c.heads = opt.heads > 0 ? opt.heads : static_cast<int>(std::max<int64_t>(1, opt.hidden / c.d));
            c.heads_k = opt.heads_k > 0 ? opt.heads_k : c.heads;
            results.push_back(r);
          }
        }
      }
    }
  }

  std::printf("timing: median of %d calls after %d warm-up calls, each call between two cudaEvents; L2: %s\n",
              opt.iters, opt.warmup,
              opt.l2 == "flush" ? "256 MiB memset before every call (outside the timed region)"
                                : "rotating among input sets that total >= 3x the L2 (flush where memory is short)");
  if (opt.backlog_ms > 0) {
    std::printf("        a %.0f ms GPU sleep is enqueued before the timed calls, so they run back to back (launch "
                "overhead excluded)\n", opt.backlog_ms);
  }
  std::printf("FLOPs: 4*b*h*sq*sk*d (d+dv for d != dv), /2 for square causal; bwd counted as 2.5x forward, fwdbwd as "
              "3.5x (FA3's convention)\n");
  if (std::find(opt.modes.begin(), opt.modes.end(), "decode") != opt.modes.end()) {
    std::printf("decode: GB/s = (q + k + v + out%s bytes, each moved once) / time; K+V GB/s counts k + v only (the "
                "anchors' decode metric); %% copy is GB/s over the measured device copy ceiling\n",
                opt.write_lse ? " + lse" : "");
  }

  Context ctx{opt, dev, stream, gemm_tflops, copy_gbps, {}, {}, {}};
  int n_ok = 0, n_skipped = 0, n_error = 0, n_check_failed = 0, n_backlog_short = 0;
  int n_bwd_rows = 0, n_bwd_refused = 0;
  std::string first_backward_refusal;  // the first flash3::Error of flash3::backward, for the bwd summary
  std::string current_mode;
  for (size_t i = 0; i < results.size(); ++i) {
    Result& r = results[i];
    if (r.cfg.mode != current_mode) {
      current_mode = r.cfg.mode;
      std::printf("\n");
      print_table_header(current_mode);
    }
    if (!opt.quiet) {
      std::fprintf(stderr, "flash3-bench: [%zu/%zu] %s %s\n", i + 1, results.size(), r.cfg.mode.c_str(),
                   config_str(r.cfg).c_str());
    }
    try {
      if (r.cfg.heads % r.cfg.heads_k != 0) {
        r.status = "error";
        r.message = "heads (" + std::to_string(r.cfg.heads) + ") is not a multiple of heads-k (" +
                    std::to_string(r.cfg.heads_k) + ")";
      } else {
        run_config(ctx, r);
      }
    } catch (const flash3::Error& e) {
      r.status = e.status() == flash3::Status::kNotSupported ? "skipped" : "error";
      r.message = r.status == "skipped" ? e.what() : status_name(e.status()) + ": " + e.what();
      if (r.backward_refused && first_backward_refusal.empty()) {
        first_backward_refusal = status_name(e.status()) + ": " + e.what();
      }
    } catch (const std::exception& e) {
      r.status = "error";
      r.message = e.what();
    }
    // A CUDA error left behind by this config: a non-sticky one is cleared and charged to this row; a sticky one (a
    // kernel fault) poisons the context, so every later config would fail: stop there.
    cudaError_t sticky = cudaSuccess;
    const cudaError_t leftover = cudaDeviceSynchronize();
    if (leftover != cudaSuccess) {
      (void)cudaGetLastError();
      sticky = cudaDeviceSynchronize();
      if (r.status == "ok" || r.status == "check-failed" || r.status == "skipped") {
        r.status = "error";
        r.message = std::string("CUDA error after the run: ") + cudaGetErrorName(leftover) + " (" +
                    cudaGetErrorString(leftover) + ")";
      }
    }
    (void)cudaGetLastError();
    if (r.status == "ok") ++n_ok;
    if (r.status == "skipped") ++n_skipped;
    if (r.status == "error") ++n_error;
    if (r.status == "check-failed") ++n_check_failed;
    if (r.timing.backlog_short) ++n_backlog_short;
    if (is_backward(r.cfg.mode)) {
      ++n_bwd_rows;
      n_bwd_refused += r.backward_refused ? 1 : 0;
    }
    print_row(r);
    if (sticky != cudaSuccess) {
      std::printf("flash3-bench: the CUDA context is unusable after %s: %s (%s); stopping\n",
                  config_str(r.cfg).c_str(), cudaGetErrorName(sticky), cudaGetErrorString(sticky));
      results.resize(i + 1);
      break;
    }
  }

  if (!opt.csv.empty()) write_csv(opt.csv, results);
  if (!opt.json.empty()) write_json(opt.json, opt, dev, ceilings.get(), results);

  for (const Result& r : results) {
    if (r.status == "check-failed") {
      std::printf("check FAILED for %s: %s\n", config_str(r.cfg).c_str(), r.message.c_str());
    }
  }
  const fb::GpuState after = nvml.query();
  std::printf("\n%d ok, %d skipped, %d errors, %d check failures; SM clock now %s, power draw %s\n", n_ok, n_skipped,
              n_error, n_check_failed, mhz(after.sm_clock_mhz).c_str(),
              after.power_draw_w >= 0 ? fmt("%.0f W", after.power_draw_w).c_str() : "n/a");
  if (n_backlog_short > 0) {
    std::printf("note: on %d configs the host took longer to enqueue the timed calls than the %.0f ms GPU sleep; their "
                "first calls may include launch gaps (raise --backlog-ms)\n", n_backlog_short, opt.backlog_ms);
  }
  if (n_bwd_rows > 0 && n_bwd_refused == n_bwd_rows) {
    std::printf("flash3-bench: backward not supported by this build (flash3::backward threw %s); bwd/fwdbwd rows are "
                "marked skipped\n", first_backward_refusal.c_str());
  }
  if (stream) cudaStreamDestroy(stream);
  if (n_error > 0 || n_check_failed > 0) return 1;
  if (n_ok == 0) return 3;
  return 0;
}
