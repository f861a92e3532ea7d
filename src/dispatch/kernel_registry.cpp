#include "dispatch/kernel_registry.hpp"

#include <sstream>

namespace flash3 {

namespace {
// The (d, dv) pairs of tools/kernel_manifest.py, smallest first. dv == d except FA3's (192, 128).
constexpr int32_t kCompiledHeadDims[][2] = {{64, 64}, {96, 96}, {128, 128}, {192, 128}, {192, 192}, {256, 256}};
}  // namespace

std::string KernelKey::to_string() const {
  std::ostringstream s;
  s << (direction == Direction::kForward ? "fwd" : "bwd") << "_sm" << arch << "_" << dtype_name(dtype) << "_hd"
    << head_dim;
  if (head_dim_v != head_dim) { s << "x" << head_dim_v; }
  s << (local_mask ? "_local" : "_none") << (softcap ? "_softcap" : "");
  return s.str();
}

const KernelEntry* find_kernel(const KernelKey& key) {
  for (const KernelEntry& e : compiled_kernels()) {
    if (e.key == key) { return &e; }
  }
  return nullptr;
}

bool round_up_head_dims(int32_t head_dim, int32_t head_dim_v, int32_t* padded_d, int32_t* padded_dv) {
  bool const asymmetric = head_dim != head_dim_v;
  for (const auto& hd : kCompiledHeadDims) {
    if ((hd[0] != hd[1]) != asymmetric) { continue; }
    if (hd[0] >= head_dim && hd[1] >= head_dim_v) {
      *padded_d = hd[0];
      *padded_dv = hd[1];
      return true;
    }
  }
  return false;
}

}  // namespace flash3
