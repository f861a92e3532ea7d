// Producer side of the sm90 backward: one thread of the producer warpgroup issues every load of the CTA.
//
// K and V of the CTA's key block once (one transaction barrier), then for every step (query head of the group,
// query block in the CTA's visiting order): Q with its lse_log2 slice into the Q pipeline and dO with its dpsum slice
// into the dO pipeline.
// The row statistics come by TMA on the same barrier as their tile, so one wait covers both.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/common/bwd_params.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"

namespace flash3 {

template <class Traits>
struct MainloopBwdSm90Load {
  using PipelineQ = typename Traits::PipelineQ;
  using State = PipelineState<Traits::kStages>;

  template <class Params, class Work>
  CUTLASS_DEVICE static void load_cta(Params const& params, typename Traits::SharedStorage& smem,
                                      PipelineQ const& pipeline_q, PipelineQ const& pipeline_do, Work const& work) {
    using namespace cute;
    BwdParams const& p = params.bwd;
    int const batch_coord = p.cu_seqlens_q != nullptr ? 0 : work.batch;
    int const batch_coord_k = p.cu_seqlens_k != nullptr ? 0 : work.batch;

    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutV{});
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(smem.dout.data()), typename Traits::SmemLayoutdO{});

    // K and V: the CTA's block, once.
    {
      Tensor mK = params.tma_k.get_tma_tensor(params.shape_k)(_, _, work.head_k, batch_coord_k);
      Tensor mV = params.tma_v.get_tma_tensor(params.shape_v)(_, _, work.head_k, batch_coord_k);
      Tensor gK = local_tile(domain_offset(make_coord(work.seq.offset_k, _0{}), mK),
                             Shape<typename Traits::BlockN, typename Traits::HeadDim>{}, make_coord(work.n_block, _0{}));
      Tensor gV = local_tile(domain_offset(make_coord(work.seq.offset_k, _0{}), mV),
                             Shape<typename Traits::BlockN, typename Traits::HeadDimV>{},
                             make_coord(work.n_block, _0{}));
      auto [tKgK, tKsK] = tma_partition(params.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK(_, _, _0{})),
                                        group_modes<0, 2>(gK));
      auto [tVgV, tVsV] = tma_partition(params.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV(_, _, _0{})),
                                        group_modes<0, 2>(gV));
      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&smem.kv_full, Traits::kTmaBytesKV);
      copy(params.tma_k.with(smem.kv_full), tKgK, tKsK);
      copy(params.tma_v.with(smem.kv_full), tVgV, tVsV);
    }

    Tensor sLse = make_tensor(make_smem_ptr(&smem.lse_log2[0][0]), typename Traits::SmemLayoutStat{});
    Tensor sDpsum = make_tensor(make_smem_ptr(&smem.dpsum[0][0]), typename Traits::SmemLayoutStat{});
    Tensor gLse = local_tile(params.tma_lse.get_tma_tensor(params.shape_stat), Shape<typename Traits::BlockM, _1>{},
                             make_coord(_, _));  // (BLK_M, 1, row tiles, columns)
    Tensor gDpsum = local_tile(params.tma_dpsum.get_tma_tensor(params.shape_stat),
                               Shape<typename Traits::BlockM, _1>{}, make_coord(_, _));
    auto [tLgL, tLsL] = tma_partition(params.tma_lse, _0{}, Layout<_1>{}, group_modes<0, 2>(sLse),
                                      group_modes<0, 2>(gLse));  // (TMA, tiles, columns), (TMA, PIPE)
    auto [tDgD, tDsD] = tma_partition(params.tma_dpsum, _0{}, Layout<_1>{}, group_modes<0, 2>(sDpsum),
                                      group_modes<0, 2>(gDpsum));

    State state;
    for (int g = 0; g < work.group; ++g) {
      int const head = work.head_k * work.group + g;
      Tensor mQ = params.tma_q.get_tma_tensor(params.shape_q)(_, _, head, batch_coord);
      Tensor mdO = params.tma_do.get_tma_tensor(params.shape_do)(_, _, head, batch_coord);
      Tensor gQ = local_tile(domain_offset(make_coord(work.seq.offset_q, _0{}), mQ),
                             Shape<typename Traits::BlockM, typename Traits::HeadDim>{}, make_coord(_, _0{}));
      Tensor gdO = local_tile(domain_offset(make_coord(work.seq.offset_q, _0{}), mdO),
                              Shape<typename Traits::BlockM, typename Traits::HeadDimV>{}, make_coord(_, _0{}));
      auto tQ = tma_partition(params.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      auto tdO = tma_partition(params.tma_do, _0{}, Layout<_1>{}, group_modes<0, 2>(sdO), group_modes<0, 2>(gdO));
      // This (batch, head)'s statistics: column stat_col of the scratch, rows from a whole block (scratch rows are
      // padded to 128 per sequence, and every kBlockM divides 128).
      int64_t const scratch_row = bwd_scratch_row(p, work.batch, head);
      int const stat_col = int(scratch_row / p.scratch_rows);
      int const stat_tile0 = int((scratch_row - int64_t(stat_col) * p.scratch_rows) / Traits::kBlockM);
      for (auto c = work.order.cursor(); work.order.valid(c); work.order.advance(c)) {
        int const m_block = c.m;
        pipeline_q.producer_acquire(state, Traits::kTmaBytesQ);
        copy(params.tma_q.with(*pipeline_q.full_barrier(state)), get<0>(tQ)(_, m_block), get<1>(tQ)(_, state.index));
        copy(params.tma_lse.with(*pipeline_q.full_barrier(state)), tLgL(_, stat_tile0 + m_block, stat_col),
             tLsL(_, state.index));
        pipeline_do.producer_acquire(state, Traits::kTmaBytesdO);
        copy(params.tma_do.with(*pipeline_do.full_barrier(state)), get<0>(tdO)(_, m_block),
             get<1>(tdO)(_, state.index));
        copy(params.tma_dpsum.with(*pipeline_do.full_barrier(state)), tDgD(_, stat_tile0 + m_block, stat_col),
             tDsD(_, state.index));
        state.advance();
      }
    }
  }
};

}  // namespace flash3
