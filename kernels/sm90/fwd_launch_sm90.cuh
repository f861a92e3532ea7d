// Host side of one sm90 forward variant: its TMA descriptors; the launch itself is launch_persistent_forward.
// Included by the generated kernel files (one variant each).
#pragma once

#include <cuda_runtime_api.h>

#include <cute/tensor.hpp>

#include "kernels/common/fwd_params.hpp"
#include "kernels/sm90/fwd_launch_common.cuh"
#include "kernels/sm90/fwd_kernel_sm90.hpp"

namespace flash3 {

template <class Element, int kHeadDim, int kHeadDimV, bool kHasLocal, bool kHasSoftcap, bool kLongSequence>
void launch_fwd_sm90(FwdParams const& p, cudaStream_t stream) {
  using namespace cute;
  using Traits = FwdTraitsSm90<Element, kHeadDim, kHeadDimV, kHasLocal, kHasSoftcap, kLongSequence>;
  using Kernel = FwdKernelSm90<Traits>;
  typename Kernel::Params params{};
  params.fwd = p;
  // The plan's choice (src/dispatch: forward_uses_fixed_offsets), where this kernel has the fixed offsets compiled.
  if (!Traits::kFixedOffsetSoftmax) { params.fwd.softmax_mode = int32_t(FwdSoftmaxMode::kExact); }

  bool const varlen = p.cu_seqlens_q != nullptr;
  // A descriptor needs non-zero extents; with no keys (or queries) no load is ever issued, so 1 is safe.
  auto at_least_1 = [](int64_t x) { return int32_t(x > 0 ? x : 1); };
  // TMA tensors: (rows, d, heads, batch). Varlen: all sequences are rows of one (total, d, heads, 1) tensor.
  int32_t const rows_q = at_least_1(varlen ? p.total_q : p.seqlen_q);
  int32_t const rows_k = at_least_1(varlen ? p.total_k : p.seqlen_k);
  int32_t const batch = varlen ? 1 : p.batch;
  params.shape_q = make_shape(rows_q, p.head_dim, p.num_heads, batch);
  params.shape_k = make_shape(rows_k, p.head_dim, p.num_heads_k, batch);
  params.shape_vt = make_shape(p.head_dim_v, rows_k, p.num_heads_k, batch);

  auto const* q = static_cast<Element const*>(p.q);
  // Empty k/v may come with null pointers (PyTorch does that); no K/V load is issued then, but the descriptor
  // still needs a valid address.
  auto const* k = p.k != nullptr ? static_cast<Element const*>(p.k) : q;
  auto const* v = p.v != nullptr ? static_cast<Element const*>(p.v) : q;
  Tensor mQ = make_tensor(make_gmem_ptr(q), params.shape_q,
                          make_stride(p.q_row_stride, _1{}, p.q_head_stride, varlen ? int64_t(0) : p.q_batch_stride));
  Tensor mK = make_tensor(make_gmem_ptr(k), params.shape_k,
                          make_stride(p.k_row_stride, _1{}, p.k_head_stride, varlen ? int64_t(0) : p.k_batch_stride));
  Tensor mVt = make_tensor(make_gmem_ptr(v), params.shape_vt,
                           make_stride(_1{}, p.v_row_stride, p.v_head_stride, varlen ? int64_t(0) : p.v_batch_stride));
  params.tma_q = make_tma_copy(SM90_TMA_LOAD{}, mQ, typename Traits::SmemLayoutQ{},
                               Shape<typename Traits::BlockM, typename Traits::HeadDim>{}, _1{});
  params.tma_k = make_tma_copy(SM90_TMA_LOAD{}, mK, take<0, 2>(typename Traits::SmemLayoutK{}),
                               Shape<typename Traits::BlockN, typename Traits::HeadDim>{}, _1{});
  params.tma_v = make_tma_copy(SM90_TMA_LOAD{}, mVt, take<0, 2>(typename Traits::SmemLayoutVt{}),
                               Shape<typename Traits::HeadDimV, typename Traits::BlockN>{}, _1{});

  if constexpr (Traits::kStagedO) { params.o_staging = Traits::OStaging::make_params(p, rows_q, batch); }

  launch_persistent_forward<Traits, Kernel>(&fwd_kernel_sm90<Kernel>, params, p, stream, "flash3::forward");
}

// The generated files' entry: one kernel, or two where the variant has a long-sequence tile (tile_config.hpp).
template <class Element, int kHeadDim, int kHeadDimV, bool kHasLocal, bool kHasSoftcap>
void run_fwd_sm90(FwdParams const& p, cudaStream_t stream) {
  if constexpr (fwd_has_long_sequence_tile(kHeadDim, kHeadDimV, kHasLocal)) {
    if (fwd_wants_long_sequence_tile(p.seqlen_q, p.seqlen_k, p.window_left, p.window_right)) {
      launch_fwd_sm90<Element, kHeadDim, kHeadDimV, kHasLocal, kHasSoftcap, true>(p, stream);
      return;
    }
  }
  launch_fwd_sm90<Element, kHeadDim, kHeadDimV, kHasLocal, kHasSoftcap, false>(p, stream);
}

}  // namespace flash3
