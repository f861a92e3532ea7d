// Host side of one sm90 backward variant: TMA descriptors, then preprocess -> main kernel -> postprocess on the
// caller's stream. Included by the generated kernel files (one variant each).
#pragma once

#include <cuda_runtime_api.h>

#include <cute/tensor.hpp>
#include <string>

#include "flash3/types.hpp"
#include "kernels/common/bwd_params.hpp"
#include "kernels/common/bwd_prepost.cuh"
#include "kernels/common/launch_helpers.hpp"
#include "kernels/sm90/bwd_kernel_sm90.hpp"
#include "kernels/sm90/bwd_postprocess_sm90.hpp"

namespace flash3 {

template <class Element, int kHeadDim, int kHeadDimV, bool kHasLocal, bool kHasSoftcap>
void run_bwd_sm90(BwdParams const& p, cudaStream_t stream) {
  using namespace cute;
  using Traits = BwdTraitsSm90<Element, kHeadDim, kHeadDimV, kHasLocal, kHasSoftcap>;
  using Kernel = BwdKernelSm90<Traits>;
  typename Kernel::Params params{};
  params.bwd = p;

  bool const varlen = p.cu_seqlens_q != nullptr;
  // A descriptor needs non-zero extents; with no keys (or queries) no load is ever issued, so 1 is safe.
  auto at_least_1 = [](int64_t x) { return int32_t(x > 0 ? x : 1); };
  int32_t const rows_q = at_least_1(varlen ? p.total_q : p.seqlen_q);
  int32_t const rows_k = at_least_1(varlen ? p.total_k : p.seqlen_k);
  int32_t const batch = varlen ? 1 : p.batch;
  params.shape_q = make_shape(rows_q, p.head_dim, p.num_heads, batch);
  params.shape_do = make_shape(rows_q, p.head_dim_v, p.num_heads, batch);
  params.shape_k = make_shape(rows_k, p.head_dim, p.num_heads_k, batch);
  params.shape_v = make_shape(rows_k, p.head_dim_v, p.num_heads_k, batch);

  auto const* q = static_cast<Element const*>(p.q);
  auto const* dout = static_cast<Element const*>(p.dout);
  // Empty k/v may come with null pointers; no load is issued then, but a descriptor needs a valid address.
  auto const* k = p.k != nullptr ? static_cast<Element const*>(p.k) : q;
  auto const* v = p.v != nullptr ? static_cast<Element const*>(p.v) : q;
  auto tensor = [&](Element const* ptr, auto shape, int64_t row, int64_t head, int64_t batch_stride) {
    return make_tensor(make_gmem_ptr(ptr), shape, make_stride(row, _1{}, head, varlen ? int64_t(0) : batch_stride));
  };
  params.tma_q = make_tma_copy(SM90_TMA_LOAD{}, tensor(q, params.shape_q, p.q_row_stride, p.q_head_stride, p.q_batch_stride),
                               take<0, 2>(typename Traits::SmemLayoutQ{}),
                               Shape<typename Traits::BlockM, typename Traits::HeadDim>{}, _1{});
  params.tma_do =
      make_tma_copy(SM90_TMA_LOAD{}, tensor(dout, params.shape_do, p.do_row_stride, p.do_head_stride, p.do_batch_stride),
                    take<0, 2>(typename Traits::SmemLayoutdO{}),
                    Shape<typename Traits::BlockM, typename Traits::HeadDimV>{}, _1{});
  params.tma_k = make_tma_copy(SM90_TMA_LOAD{}, tensor(k, params.shape_k, p.k_row_stride, p.k_head_stride, p.k_batch_stride),
                               take<0, 2>(typename Traits::SmemLayoutK{}),
                               Shape<typename Traits::BlockN, typename Traits::HeadDim>{}, _1{});
  params.tma_v = make_tma_copy(SM90_TMA_LOAD{}, tensor(v, params.shape_v, p.v_row_stride, p.v_head_stride, p.v_batch_stride),
                               take<0, 2>(typename Traits::SmemLayoutV{}),
                               Shape<typename Traits::BlockN, typename Traits::HeadDimV>{}, _1{});

  // Row statistics: scratch rows of every (batch, head) (varlen: of every head) side by side.
  params.shape_stat =
      make_shape(at_least_1(p.scratch_rows), at_least_1(varlen ? p.num_heads : int64_t(p.batch) * p.num_heads));
  auto stat = [&](float const* ptr) {
    // No query rows: no statistic is ever loaded, but the descriptor needs a valid address.
    float const* base = ptr != nullptr ? ptr : reinterpret_cast<float const*>(q);
    int64_t const column_stride = p.scratch_rows > 0 ? p.scratch_rows : kBwdScratchRowPad;  // the same "any valid"
    return make_tensor(make_gmem_ptr(base), params.shape_stat, make_stride(_1{}, column_stride));
  };
  params.tma_lse = make_tma_copy(SM90_TMA_LOAD{}, stat(p.lse_log2), take<0, 2>(typename Traits::SmemLayoutStat{}),
                                 Shape<typename Traits::BlockM, _1>{}, _1{});
  params.tma_dpsum = make_tma_copy(SM90_TMA_LOAD{}, stat(p.dpsum), take<0, 2>(typename Traits::SmemLayoutStat{}),
                                   Shape<typename Traits::BlockM, _1>{}, _1{});

  auto fail = [](cudaError_t err, const char* what) {
    throw Error(Status::kCudaError, std::string("flash3::backward: ") + what + " failed: " + cudaGetErrorString(err));
  };
  dim3 const prepost_grid = bwd_prepost_grid(p);
  cudaError_t err = cudaSuccess;
  if (p.deterministic) {
    err = cudaMemsetAsync(p.dq_semaphore, 0, sizeof(int32_t) * (p.scratch_rows / Traits::kBlockM) *
                                                 (varlen ? p.num_heads : int64_t(p.batch) * p.num_heads),
                          stream);
    if (err != cudaSuccess) { fail(err, "zeroing the dQ semaphores"); }
  }
  if (prepost_grid.x > 0) {
    if (bwd_preprocess_vectorizable<Element>(p)) {
      bwd_preprocess_kernel<Element, true><<<prepost_grid, kPrepostThreads, 0, stream>>>(p);
    } else {
      bwd_preprocess_kernel<Element, false><<<prepost_grid, kPrepostThreads, 0, stream>>>(p);
    }
    if ((err = cudaGetLastError()) != cudaSuccess) { fail(err, "preprocess launch"); }
  }

  dim3 const grid((p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN, p.num_heads_k, p.batch);
  if (grid.x > 0) {
    auto kernel = &bwd_kernel_sm90<Kernel>;
    constexpr int kSmemBytes = Traits::kSharedStorageBytes;
    err = ensure_dynamic_smem<Kernel>(kernel, kSmemBytes);
    // Deterministic mode: the key blocks of a head add dQ in an order that assumes chunks of this many consecutive
    // CTAs can be resident together (kernels/common/bwd_query_order.hpp).
    params.resident_ctas = 1;
    if (err == cudaSuccess && p.deterministic) {
      int per_sm = 0;  // p.num_sms: the device's SM count, from the plan
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, Traits::kNumThreads, kSmemBytes);
      int const fits = p.num_sms * per_sm > 1 ? p.num_sms * per_sm : 1;
      int const cap = deterministic_chunk_cap();
      params.resident_ctas = cap > 0 && cap < fits ? cap : fits;
    }
    if (err == cudaSuccess) {
      kernel<<<grid, Traits::kNumThreads, kSmemBytes, stream>>>(params);
      err = cudaGetLastError();
    }
    if (err != cudaSuccess) { fail(err, "main kernel launch"); }
  }

  dim3 const post_grid((p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM, p.num_heads, p.batch);
  if (post_grid.x > 0) {
    bwd_postprocess_sm90<Traits><<<post_grid, Traits::kNumMmaThreads, 0, stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess) { fail(err, "postprocess launch"); }
  }
}

}  // namespace flash3
