// Consumer side of the sm90 FP8 forward: WGMMAs on e4m3 operands (fp32 accumulation) and the online softmax.
//
// Same schedule as the 16-bit mainloop (intra-warpgroup overlap of S_n with P_{n+1} V_{n+1}, pingpong between the
// two consumer warpgroups); what differs:
//  - Descaling. S from the e4m3 GEMM is (Q K^T) / (q_descale k_descale); the factor that turns it into the exp2
//    argument, c_n = softmax_scale * log2(e) * q_descale * k_descale(n), may change per key block (block
//    quantisation), so the running max is kept in the scaled (log2) domain: m = max(m, c_n * max_j s_j), which is
//    exact for c_n > 0 and costs one multiply per row, not per element.
//  - V's descale. O is accumulated in units of the current block's v descale: before adding P_n V_n, O is scaled by
//    v(n+1) / v(n), folded into the per-row softmax correction that multiplies O anyway. The epilogue multiplies by
//    the last block's v descale and 1/rowsum.
//  - P in e4m3. P = exp2(c s - m + 8) lies in (0, 256]: the offset of 8 in the exponent moves P away from e4m3's
//    subnormals (max normal 448). The row sum is taken over the same values, so the 256 cancels in O = acc / sum; the
//    LSE subtracts it.
//  - P's register order. Packed without shuffles in the order the transposed V expects (see the load side).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/common/layout_utils.hpp"
#include "kernels/common/mask.hpp"
#include "kernels/common/named_barriers.hpp"
#include "kernels/common/softmax.hpp"
#include "kernels/sm90/collective/mainloop_fwd_sm90_mma.hpp"
#include "kernels/sm90/fp8_fwd_traits_sm90.hpp"

namespace flash3 {

// One (batch, head)'s descales over its blocks: the batch and head offsets (and the head-group division) once per
// tile, so a key-block trip pays one load per factor (and nothing when the factor is absent).
struct Fp8DescaleRow {
  float const* ptr;  // null: no descale, the factor is 1
  int64_t block_stride;
  CUTLASS_DEVICE Fp8DescaleRow(Fp8Descale const& d, int batch, int head)
      : ptr(d.ptr == nullptr ? nullptr
                             : d.ptr + batch * d.batch_stride + int64_t(head / d.head_group) * d.head_stride),
        block_stride(d.block_stride) {}
  CUTLASS_DEVICE float operator()(int block) const {
    return ptr == nullptr ? 1.f : __ldg(ptr + block * block_stride);
  }
};

// Two fp32 values -> two e4m3 bytes (lo in the low byte), round to nearest, saturating.
CUTLASS_DEVICE uint32_t pack_e4m3x2(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}

// Online softmax with the running max in the log2-scaled domain (see above).
template <int kRows>
struct Fp8OnlineSoftmax {
  static constexpr float kPOffset = 8.f;  // P = 2^(x - m + 8): up to 256 in e4m3
  // The running max is only moved when it grows by more than this (log2 units): P then stays under
  // 2^(8 + 0.8) = 446 < 448 (e4m3's largest value), and a block that moves no row's max needs no O rescale (a warp
  // whose rows all kept theirs skips the multiply of its O accumulators).
  static constexpr float kRescaleSlack = 0.8f;
  float row_max[kRows];                   // max of c * s seen so far (exp2 domain)
  float row_sum[kRows];

  CUTLASS_DEVICE Fp8OnlineSoftmax() {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }

  template <bool kIsFirst, class TensorS>
  CUTLASS_DEVICE void step(TensorS& s, float c, float (&correction)[kRows]) {
    using namespace cute;
    constexpr int kCols = decltype(size<1>(s))::value;
    static_assert(kCols % 4 == 0);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float part[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
      CUTE_UNROLL
      for (int j = 0; j < kCols; ++j) { part[j % 4] = fmaxf(part[j % 4], s(r, j)); }
      float m = fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]));
      m = fmaxf(quad_allreduce_max(m) * c, row_max[r]);
      // Rows with only masked keys so far: max stays -inf; subtract 0 so exp2(-inf) = 0, not NaN.
      float const m_use = (m == -INFINITY) ? 0.f : m;
      if constexpr (kIsFirst) {
        correction[r] = 1.f;
        row_max[r] = m;
      } else {
        if (m - row_max[r] > kRescaleSlack) {  // false for -inf - -inf (NaN): such rows keep -inf
          correction[r] = fast_exp2(row_max[r] - m_use);
          row_sum[r] *= correction[r];
          row_max[r] = m;
        } else {
          correction[r] = 1.f;
        }
      }
      float const bias = kPOffset - ((row_max[r] == -INFINITY) ? 0.f : row_max[r]);
      float sum[4] = {0.f, 0.f, 0.f, 0.f};
      CUTE_UNROLL
      for (int j = 0; j < kCols; ++j) {
        s(r, j) = fast_exp2(fmaf(s(r, j), c, bias));
        sum[j % 4] += s(r, j);
      }
      row_sum[r] += (sum[0] + sum[1]) + (sum[2] + sum[3]);
    }
  }

  CUTLASS_DEVICE void finalize(float (&inv_sum)[kRows], float (&lse)[kRows]) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float const sum = quad_allreduce_sum(row_sum[r]);
      bool const empty = sum == 0.f || row_max[r] == -INFINITY;
      inv_sum[r] = empty ? 0.f : 1.f / sum;
      lse[r] = empty ? -INFINITY : (row_max[r] + __log2f(sum) - kPOffset) * float(M_LN2);
    }
  }
};

// Diagnostic only (default off; build with -DFLASH3_FP8_TIMELINE): per-trip clock stamps of the first tile of CTA 0,
// stored by each consumer warpgroup's first thread for key blocks 20..27 and printed after the tile (a printf inside
// the loop costs ~50k cycles). Marks: 0 trip start, 1 K and V^T landed, 2 turn taken, 3 S ready, 4 softmax done,
// 5 P V done, 6 O rescaled and P packed.
#if defined(FLASH3_FP8_TIMELINE)
__device__ long long g_fp8_timeline[2][8][7];  // (warpgroup, key block 20..27, mark); printed after the tile
#define FLASH3_TIMELINE_MARK(i) stamp[i] = clock64()
#define FLASH3_TIMELINE_PRINT(n)                                                                                      \
  if (blockIdx.x == 0 && threadIdx.x % 128 == 0 && timeline_tile && (n) >= 20 && (n) < 28) {                         \
    for (int i_ = 0; i_ < 7; ++i_) { g_fp8_timeline[threadIdx.x / 128 - 1][(n) - 20][i_] = stamp[i_] - timeline_base; } \
  }
#define FLASH3_TIMELINE_DUMP()                                                                                        \
  if (blockIdx.x == 0 && threadIdx.x % 128 == 0 && timeline_tile) {                                                  \
    for (int n_ = 27; n_ >= 20; --n_) {                                                                               \
      long long const* t_ = g_fp8_timeline[threadIdx.x / 128 - 1][n_ - 20];                                           \
      printf("TL wg %d n %d : %lld %lld %lld %lld %lld %lld %lld\n", int(threadIdx.x / 128) - 1, n_, t_[0], t_[1],   \
             t_[2], t_[3], t_[4], t_[5], t_[6]);                                                                      \
    }                                                                                                                 \
  }
#else
#define FLASH3_TIMELINE_MARK(i)
#define FLASH3_TIMELINE_PRINT(n)
#define FLASH3_TIMELINE_DUMP()
#endif

template <class Traits>
struct MainloopFwdSm90Fp8Mma {
  using Element = typename Traits::Element;
  using PipelineKV = typename Traits::PipelineKV;
  using PipelineVt = typename Traits::PipelineVt;
  using State = PipelineState<Traits::kStages>;
  using Mask = BlockMask<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;
  using TileShapeS = cute::Shape<typename Traits::BlockM, typename Traits::BlockN>;
  static constexpr int kRowsPerThread = 2;

  State state_kv;
  uint32_t phase_q = 0;

  // Runs the key-block loop of one tile. Leaves O (in units of the last visited block's v descale, returned in
  // *v_scale_out) in tOrO and the row statistics in softmax.
  template <class Params, class TensorO>
  CUTLASS_DEVICE void compute_tile(Params const& params, typename Traits::SharedStorage& smem,
                                   PipelineKV const& pipeline_k, PipelineVt const& pipeline_vt, int mma_thread_idx,
                                   TileCoord tile, Mask const& mask, typename Mask::Trips const& trips,
                                   TensorO& tOrO, Fp8OnlineSoftmax<kRowsPerThread>& softmax, float* v_scale_out) {
    using namespace cute;
    FwdParams const& p = params.fwd;
    bool const is_wg_leader = (threadIdx.x % cutlass::NumThreadsPerWarpGroup) == 0;
    int const head_k = tile.head / (p.num_heads / p.num_heads_k);

    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(smem.vt.data()), typename Traits::SmemLayoutVt{});

    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(mma_thread_idx);
    auto thr_pv = mma_pv.get_thread_slice(mma_thread_idx);
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_K) descriptors
    Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, PIPE)

    Tensor tSrS = partition_fragment_C(mma_qk, TileShapeS{});  // ((2, 2, N/8), 1, 1) fp32
    Tensor tSrS_rc = make_tensor(tSrS.data(), accumulator_rowcol_layout(tSrS.layout()));
    Tensor tScS = thr_qk.partition_C(make_identity_tensor(TileShapeS{}));
    Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rowcol_layout(tScS.layout()));
    Tensor tOrO_rc = make_tensor(tOrO.data(), accumulator_rowcol_layout(tOrO.layout()));
    // P in e4m3 as the register A operand: ((4, 2, 2), 1, N/32), i.e. 4 registers per 32-key step.
    // With 2 consumer warpgroups (240 registers), two register sets for P used alternately: trip n packs its P into
    // one while the P V WGMMA issued in the same trip still reads the other (see trip below). The 3-warpgroup hd64
    // kernel (160 registers) measured 5-7% slower with the second set, so it packs after the P V wait into one.
    constexpr bool kAlternateP = Traits::kNumMmaWarpgroups == 2;
    Tensor tOrP = cute::make_tensor<Element>(partition_shape_A(mma_pv, TileShapeS{}));
    Tensor tOrP_alt = make_fragment_like(tOrP);
    static_assert(decltype(size(tOrP))::value == decltype(size(tSrS))::value);

    float const scale_log2_q = p.softmax_scale_log2 * Fp8DescaleRow(p.q_descale, tile.batch, tile.head)(tile.m_block);
    Fp8DescaleRow const k_scale(p.k_descale, tile.batch, head_k);
    Fp8DescaleRow const v_scale(p.v_descale, tile.batch, head_k);

    auto score_transform = [&](auto& s_rc, int n_block, auto needs_mask) CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (decltype(needs_mask)::value) { mask.apply(s_rc, tScS_rc, tile.m_block, n_block); }
    };
    auto rescale_o = [&](float const (&correction)[kRowsPerThread], float ratio) CUTLASS_LAMBDA_FUNC_INLINE {
      bool const needed = correction[0] != 1.f || correction[1] != 1.f || ratio != 1.f;
      if (!__any_sync(0xffffffff, needed)) { return; }
      CUTE_UNROLL
      for (int r = 0; r < kRowsPerThread; ++r) {
        float const f = correction[r] * ratio;
        CUTE_UNROLL
        for (int c = 0; c < size<1>(tOrO_rc); ++c) { tOrO_rc(r, c) *= f; }
      }
    };
    // Accumulator value (c, h, g) (index c + 2h + 4g: column pair c of row half h in 8-key group g) -> A-operand
    // register (kb, h, q) of 32-key step kb holds groups g0 = 4 kb + 2 q and g0 + 1 of row half h.
    auto store_p = [&](auto& p_tensor) CUTLASS_LAMBDA_FUNC_INLINE {
      uint32_t* regs = reinterpret_cast<uint32_t*>(p_tensor.data());
      CUTE_UNROLL
      for (int kb = 0; kb < Traits::kBlockN / 32; ++kb) {
        CUTE_UNROLL
        for (int q = 0; q < 2; ++q) {
          CUTE_UNROLL
          for (int h = 0; h < 2; ++h) {
            int const g0 = 4 * kb + 2 * q;
            uint32_t const lo = pack_e4m3x2(tSrS(2 * h + 4 * g0), tSrS(1 + 2 * h + 4 * g0));
            uint32_t const hi = pack_e4m3x2(tSrS(2 * h + 4 * (g0 + 1)), tSrS(1 + 2 * h + 4 * (g0 + 1)));
            regs[4 * kb + h + 2 * q] = lo | (hi << 16);
          }
        }
      }
    };

    int const warpgroup = mma_thread_idx / cutlass::NumThreadsPerWarpGroup;
    auto begin_issue = [&]() CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (Traits::kPingpong) { pingpong_wait_turn(warpgroup); }
    };
    auto end_issue = [&]() CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (Traits::kPingpong) { pingpong_pass_turn(warpgroup); }
    };

    cutlass::arch::ClusterTransactionBarrier::wait(&smem.q_full, phase_q);
    phase_q ^= 1;
#if defined(FLASH3_FP8_TIMELINE)
    long long stamp[7];
    long long const timeline_base = clock64();
    bool const timeline_tile = tile.head == 0 && tile.batch == 0;  // with blockIdx.x == 0: its first tile
#endif

    int n_block = trips.n_end - 1;
    float correction[kRowsPerThread];
    float v_prev = v_scale(n_block);
    {
      float const c = scale_log2_q * k_scale(n_block);
      pipeline_k.consumer_wait(state_kv);
      begin_issue();
      wgmma_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, state_kv.index), tSrS);
      end_issue();
      warpgroup_wait<0>();
      pipeline_k.consumer_release(state_kv, is_wg_leader);
      if (n_block >= trips.n_masked_hi || n_block < trips.n_masked_lo) {
        score_transform(tSrS_rc, n_block, cute::true_type{});
      } else {
        score_transform(tSrS_rc, n_block, cute::false_type{});
      }
      softmax.template step<true>(tSrS_rc, c, correction);
      store_p(tOrP);
    }

    // Trip n: S_n = Q K_n^T and O += P_{n+1} V_{n+1} (P_{n+1} in p_in), then the softmax of S_n packed into p_out
    // before waiting for P V: in the softmax's basic block the e4m3 conversions interleave with its exps (a clock64
    // timeline on the H100 put the pack + rescale after the wait at ~300 of a ~2850-cycle trip).
    auto trip = [&](int n_block, auto needs_mask, auto& p_in, auto& p_out) CUTLASS_LAMBDA_FUNC_INLINE {
      float const c = scale_log2_q * k_scale(n_block);
      float const v_cur = v_scale(n_block);
      State const state_prev = state_kv;
      state_kv.advance();
      FLASH3_TIMELINE_MARK(0);
      pipeline_k.consumer_wait(state_kv);
      pipeline_vt.consumer_wait(state_prev);
      FLASH3_TIMELINE_MARK(1);
      begin_issue();
      FLASH3_TIMELINE_MARK(2);
      wgmma_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, state_kv.index), tSrS);
      wgmma_gemm<false>(mma_pv, p_in, tOrV(_, _, _, state_prev.index), tOrO);
      end_issue();
      warpgroup_wait<1>();
      FLASH3_TIMELINE_MARK(3);
      pipeline_k.consumer_release(state_kv, is_wg_leader);
#if defined(FLASH3_FP8_DIAG_NO_SOFTMAX)  // diagnostic only (wrong results): the GEMM pipeline without the softmax
      correction[0] = correction[1] = 1.f;
#else
      score_transform(tSrS_rc, n_block, needs_mask);
      softmax.template step<false>(tSrS_rc, c, correction);
#endif
      if constexpr (kAlternateP) { store_p(p_out); }
      FLASH3_TIMELINE_MARK(4);
      warpgroup_wait_after<0>(softmax.row_sum[kRowsPerThread - 1]);
      warpgroup_fence_operand(p_in);  // p_in is read by the P V WGMMA up to the wait
      FLASH3_TIMELINE_MARK(5);
      pipeline_vt.consumer_release(state_prev, is_wg_leader);
      rescale_o(correction, __fdividef(v_prev, v_cur));
      v_prev = v_cur;
      if constexpr (!kAlternateP) { store_p(p_out); }
      FLASH3_TIMELINE_MARK(6);
      FLASH3_TIMELINE_PRINT(n_block);
    };
    // The buffer roles alternate by trip; a branch per trip keeps each buffer in fixed registers (a register copy
    // instead let ptxas merge the two sets and serialise every WGMMA of the kernel).
    bool p_in_alt = false;
    auto trip_alternating = [&](int n_block, auto needs_mask) CUTLASS_LAMBDA_FUNC_INLINE {
      if constexpr (!kAlternateP) {
        trip(n_block, needs_mask, tOrP, tOrP);
        return;
      }
      if (p_in_alt) {
        trip(n_block, needs_mask, tOrP_alt, tOrP);
      } else {
        trip(n_block, needs_mask, tOrP, tOrP_alt);
      }
      p_in_alt = !p_in_alt;
    };

    --n_block;
    for (; n_block >= trips.n_masked_hi && n_block >= trips.n_begin; --n_block) {
      trip_alternating(n_block, cute::true_type{});
    }
    for (; n_block >= trips.n_masked_lo; --n_block) { trip_alternating(n_block, cute::false_type{}); }
    for (; n_block >= trips.n_begin; --n_block) { trip_alternating(n_block, cute::true_type{}); }

    if (is_wg_leader) { cutlass::arch::ClusterBarrier::arrive(&smem.q_empty); }

    pipeline_vt.consumer_wait(state_kv);
    begin_issue();
    if (p_in_alt) {
      wgmma_gemm<false>(mma_pv, tOrP_alt, tOrV(_, _, _, state_kv.index), tOrO);
    } else {
      wgmma_gemm<false>(mma_pv, tOrP, tOrV(_, _, _, state_kv.index), tOrO);
    }
    end_issue();
    warpgroup_wait<0>();
    pipeline_vt.consumer_release(state_kv, is_wg_leader);
    state_kv.advance();
    *v_scale_out = v_prev;
    FLASH3_TIMELINE_DUMP();
  }
};

}  // namespace flash3
