// The element-wise middle of a backward step, shared by both sm90 backward tilings: scores S^T -> P^T and, once
// dP^T has landed, dS^T, in place in the two accumulator fragments (rows = keys, cols = queries).
//
//   P^T  = exp2(score * scale_log2 - lse_log2[query])
//   dS^T = P^T * (dP^T - D[query])            (times d score / d s = 1 - tanh^2 with softcap)
//
// Expects the S^T GEMM complete and the dP^T GEMM the only one in flight (waits for it itself).
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/softmax.hpp"

namespace flash3 {

template <class Traits, class Work, class TensorS, class TensordP, class TensorC>
CUTLASS_DEVICE void bwd_scores_to_p_ds(BwdParams const& p, Work const& work, int m_block, float const* lse_log2,
                                       float const* dpsum, TensorS& tSrS_rc, TensordP& tdPrdP_rc,
                                       TensorC const& tScS_rc) {
  using namespace cute;
  float const scale_log2 = p.softmax_scale_log2;
  if constexpr (Traits::kHasSoftcap) {
    CUTE_UNROLL
    for (int i = 0; i < size(tSrS_rc); ++i) { tSrS_rc(i) = fast_tanh(tSrS_rc(i) * p.softcap_inv_scaled); }
  }
  if (work.mask.tile_needs_mask(m_block, work.n_block)) {
    work.mask.apply_transposed(tSrS_rc, tScS_rc, m_block, work.n_block);
  }
  if constexpr (!Traits::kHasSoftcap) {
    // The exps run while the dP^T GEMM is still on the tensor cores.
    CUTE_UNROLL
    for (int c = 0; c < size<1>(tSrS_rc); ++c) {
      float const lse = lse_log2[int(get<1>(tScS_rc(0, c)))];
      CUTE_UNROLL
      for (int r = 0; r < size<0>(tSrS_rc); ++r) {
        tSrS_rc(r, c) = fast_exp2(tSrS_rc(r, c) * scale_log2 - lse);
      }
    }
    warpgroup_wait<0>();  // dP^T ready
    CUTE_UNROLL
    for (int c = 0; c < size<1>(tdPrdP_rc); ++c) {
      float const d = dpsum[int(get<1>(tScS_rc(0, c)))];
      CUTE_UNROLL
      for (int r = 0; r < size<0>(tdPrdP_rc); ++r) {
        tdPrdP_rc(r, c) = tSrS_rc(r, c) * (tdPrdP_rc(r, c) - d);
      }
    }
  } else {
    // With softcap the score is t = tanh(s * a) and d score / d s carries (1 - t^2): P and dS come in one pass
    // after dP^T, so t needs no second array of registers (it spilled). A masked t is -inf: the max() keeps
    // its factor 0 rather than -inf, so dS = 0 * ... stays 0.
    warpgroup_wait<0>();
    CUTE_UNROLL
    for (int c = 0; c < size<1>(tSrS_rc); ++c) {
      float const lse = lse_log2[int(get<1>(tScS_rc(0, c)))];
      float const d = dpsum[int(get<1>(tScS_rc(0, c)))];
      CUTE_UNROLL
      for (int r = 0; r < size<0>(tSrS_rc); ++r) {
        float const t = tSrS_rc(r, c);
        float const prob = fast_exp2(t * scale_log2 - lse);
        tSrS_rc(r, c) = prob;
        tdPrdP_rc(r, c) = prob * (tdPrdP_rc(r, c) - d) * fmaxf(1.f - t * t, 0.f);
      }
    }
  }
}

}  // namespace flash3
