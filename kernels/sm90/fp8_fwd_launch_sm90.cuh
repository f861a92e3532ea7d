// Host side of one sm90 FP8 forward variant: its TMA descriptors; the launch itself is launch_persistent_forward.
// Included by the generated FP8 kernel files (one variant each).
#pragma once

#include <cuda_runtime_api.h>

#include <cute/tensor.hpp>

#include "kernels/common/fwd_params.hpp"
#include "kernels/sm90/fwd_launch_common.cuh"
#include "kernels/sm90/fp8_fwd_kernel_sm90.hpp"

namespace flash3 {

template <int kHeadDim, bool kHasLocal, bool kHasSoftcap>
void run_fp8_fwd_sm90(FwdParams const& p, cudaStream_t stream) {
  using namespace cute;
  using Traits = Fp8FwdTraitsSm90<kHeadDim, kHasLocal, kHasSoftcap>;
  using Element = typename Traits::Element;
  using Kernel = Fp8FwdKernelSm90<Traits>;
  typename Kernel::Params params{};
  params.fwd = p;

  bool const varlen = p.cu_seqlens_q != nullptr;
  auto at_least_1 = [](int64_t x) { return int32_t(x > 0 ? x : 1); };
  int32_t const rows_q = at_least_1(varlen ? p.total_q : p.seqlen_q);
  int32_t const rows_k = at_least_1(varlen ? p.total_k : p.seqlen_k);
  int32_t const batch = varlen ? 1 : p.batch;
  params.shape_q = make_shape(rows_q, p.head_dim, p.num_heads, batch);
  params.shape_k = make_shape(rows_k, p.head_dim, p.num_heads_k, batch);
  params.shape_v = make_shape(rows_k, p.head_dim_v, p.num_heads_k, batch);

  auto const* q = static_cast<Element const*>(p.q);
  auto const* k = p.k != nullptr ? static_cast<Element const*>(p.k) : q;
  auto const* v = p.v != nullptr ? static_cast<Element const*>(p.v) : q;
  Tensor mQ = make_tensor(make_gmem_ptr(q), params.shape_q,
                          make_stride(p.q_row_stride, _1{}, p.q_head_stride, varlen ? int64_t(0) : p.q_batch_stride));
  Tensor mK = make_tensor(make_gmem_ptr(k), params.shape_k,
                          make_stride(p.k_row_stride, _1{}, p.k_head_stride, varlen ? int64_t(0) : p.k_batch_stride));
  Tensor mV = make_tensor(make_gmem_ptr(v), params.shape_v,
                          make_stride(p.v_row_stride, _1{}, p.v_head_stride, varlen ? int64_t(0) : p.v_batch_stride));
  params.tma_q = make_tma_copy(SM90_TMA_LOAD{}, mQ, typename Traits::SmemLayoutQ{},
                               Shape<typename Traits::BlockM, typename Traits::HeadDim>{}, _1{});
  params.tma_k = make_tma_copy(SM90_TMA_LOAD{}, mK, take<0, 2>(typename Traits::SmemLayoutK{}),
                               Shape<typename Traits::BlockN, typename Traits::HeadDim>{}, _1{});
  params.tma_v = make_tma_copy(SM90_TMA_LOAD{}, mV, take<0, 2>(typename Traits::SmemLayoutVraw{}),
                               Shape<typename Traits::BlockN, typename Traits::HeadDimV>{}, _1{});

  if constexpr (Traits::kStagedO) { params.o_staging = Traits::OStaging::make_params(p, rows_q, batch); }

  launch_persistent_forward<Traits, Kernel>(&fp8_fwd_kernel_sm90<Kernel>, params, p, stream,
                                            "flash3::forward (FP8)");
}

}  // namespace flash3
