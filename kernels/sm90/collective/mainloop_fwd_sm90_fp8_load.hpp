// Producer side of the sm90 FP8 forward: warp 0 issues the TMA loads of Q, K and V (V into a staging buffer);
// warps 1..3 transpose each V tile from the staging buffer into the K-major V^T tile the P V WGMMA reads.
//
// The transpose and P's register layout. The FP8 WGMMA's register A operand holds, per thread and 32-key step,
// keys {4t..4t+3} and {16+4t..16+4t+3} of rows r and r+8 (t = lane % 4), four consecutive keys per 32-bit register.
// The fp32 accumulator of S holds keys {2t, 2t+1} of every 8-key group instead. Rather than shuffling P between
// threads, each thread packs its own values (keys 2t, 2t+1, 8+2t, 9+2t of a 16-key chunk) into the register that
// the WGMMA reads as keys 4t..4t+3, and the transpose stores V's rows in the same order: position p of each 16-key
// chunk of V^T holds key sigma(p) = 8 * ((p / 2) % 2) + 2 * (p / 4) + p % 2. Then (P Pi)(Pi^T V) = P V, and O's
// columns (dv) are untouched.
//
// Transpose granule (after FA3 paper sec. 3.3: ldmatrix / stmatrix do the transpose): one warp step moves 16 keys x
// 32 dv bytes (512 bytes) with one ldmatrix.x4.trans, four byte permutes and one stmatrix.x4. ldmatrix.trans on 16-bit
// elements hands lane (a, t) = (lane / 4, lane % 4) the 2 x 2 byte block (keys 2t, 2t+1) x (dv 2a, 2a+1) of each 8-key
// x 16-byte matrix; two such blocks (keys 0..7 and 8..15 of the chunk) permute into the words "dv row 2a, keys 2t,
// 2t+1, 8+2t, 9+2t" and "dv row 2a+1, same keys", which are exactly positions 4t..4t+3 of sigma above; stmatrix then
// writes lane (a, t)'s word as bytes 4t..4t+3 of the row whose address lane 8m + a gives. The previous granule (4 x
// 4-byte blocks through 32-bit loads and stores) took ~45 instructions per 512 bytes; this one takes ~10.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/common/mask.hpp"
#include "kernels/common/seqlen_info.hpp"
#include "kernels/common/tile_scheduler.hpp"
#include "kernels/sm90/fp8_fwd_traits_sm90.hpp"

namespace flash3 {

template <class Traits>
struct MainloopFwdSm90Fp8Load {
  using Element = typename Traits::Element;
  using PipelineKV = typename Traits::PipelineKV;
  using PipelineVt = typename Traits::PipelineVt;
  using State = PipelineState<Traits::kStages>;
  using Mask = BlockMask<Traits::kBlockM, Traits::kBlockN, Traits::kHasLocal>;

  State state_k;
  State state_v;
  uint32_t phase_q = 0;

  // Warp 0's elected thread: Q once per tile, then K (one block ahead) and V for every visited key block.
  template <class Params>
  CUTLASS_DEVICE void load_tile(Params const& params, typename Traits::SharedStorage& smem,
                                PipelineKV const& pipeline_k, PipelineKV const& pipeline_v, TileCoord tile,
                                SeqlenInfo const& seq, typename Mask::Trips const& trips) {
    using namespace cute;
    FwdParams const& p = params.fwd;
    bool const varlen = p.cu_seqlens_q != nullptr;
    int const batch_coord = varlen ? 0 : tile.batch;
    int const head_k = tile.head / (p.num_heads / p.num_heads_k);

    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(smem.v_raw.data()), typename Traits::SmemLayoutVraw{});

    Tensor mQ = params.tma_q.get_tma_tensor(params.shape_q)(_, _, tile.head, batch_coord);  // (rows, d)
    Tensor mK = params.tma_k.get_tma_tensor(params.shape_k)(_, _, head_k, batch_coord);     // (rows, d)
    Tensor mV = params.tma_v.get_tma_tensor(params.shape_v)(_, _, head_k, batch_coord);     // (rows, dv)
    Tensor gQ = local_tile(domain_offset(make_coord(seq.offset_q, _0{}), mQ),
                           Shape<typename Traits::BlockM, typename Traits::HeadDim>{},
                           make_coord(tile.m_block, _0{}));  // (BLK_M, d)
    Tensor gK = local_tile(domain_offset(make_coord(seq.offset_k, _0{}), mK),
                           Shape<typename Traits::BlockN, typename Traits::HeadDim>{},
                           make_coord(_, _0{}));  // (BLK_N, d, n)
    Tensor gV = local_tile(domain_offset(make_coord(seq.offset_k, _0{}), mV),
                           Shape<typename Traits::BlockN, typename Traits::HeadDimV>{},
                           make_coord(_, _0{}));  // (BLK_N, dv, n)

    auto [tQgQ, tQsQ] = tma_partition(params.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
    auto tK = tma_partition(params.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
    auto tV = tma_partition(params.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
    Tensor tKgK = get<0>(tK);  // (TMA, n)
    Tensor tKsK = get<1>(tK);  // (TMA, PIPE)
    Tensor tVgV = get<0>(tV);
    Tensor tVsV = get<1>(tV);

    cutlass::arch::ClusterBarrier::wait(&smem.q_empty, phase_q ^ 1);
    cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&smem.q_full, Traits::kTmaBytesQ);
    copy(params.tma_q.with(smem.q_full), tQgQ, tQsQ);
    phase_q ^= 1;

    auto load_k = [&](int n_block) {
      pipeline_k.producer_acquire(state_k, Traits::kTmaBytesK);
      copy(params.tma_k.with(*pipeline_k.full_barrier(state_k)), tKgK(_, n_block), tKsK(_, state_k.index));
      state_k.advance();
    };
    auto load_v = [&](int n_block) {
      pipeline_v.producer_acquire(state_v, Traits::kTmaBytesV);
      copy(params.tma_v.with(*pipeline_v.full_barrier(state_v)), tVgV(_, n_block), tVsV(_, state_v.index));
      state_v.advance();
    };
    load_k(trips.n_end - 1);
    for (int n_block = trips.n_end - 1; n_block >= trips.n_begin; --n_block) {
      if (n_block > trips.n_begin) { load_k(n_block - 1); }
      load_v(n_block);
    }
  }
};

// The K-major 8-bit tiles (tile_to_shape of the swizzle atom cutlass's ss_smem_selector picks, as in the traits):
// atoms of 8 rows x kAtom bytes (kAtom = 128 / 64 / 32 for the 128 / 64 / 32-byte swizzles) laid out column-major,
// each XOR-ing the 16-byte chunk index with (row % 8) >> shift. The transposer writes these offsets out (rather than
// evaluating the CuTe layouts) so its per-lane constants hoist out of its loop; tests/cpp/kernel/test_fp8_gpu.cu
// (Fp8Transpose) checks them against the CuTe layouts.
constexpr int kmajor_atom_bytes(int cols) { return cols % 128 == 0 ? 128 : cols % 64 == 0 ? 64 : 32; }
constexpr int kmajor_swizzle_shift(int atom_bytes) { return atom_bytes == 128 ? 0 : atom_bytes == 64 ? 1 : 2; }

// Warps 1..3 of the producer warpgroup: V (keys, dv) in sVraw -> V^T (dv, keys) in sVt, for each key block the tile
// visits, in the same order as the loads.
//
// Work: units (c, g) = (16-key chunk, 32-byte dv group), spread round-robin over the transposer warps. In a unit:
//   ldmatrix.x4.trans: lane l gives the address of key 16c + (l & 15) at dv bytes 32g + 16 (l >> 4) .. +15
//     (matrices: keys 0-7 / 8-15 of the chunk x dv bytes 0-15 / 16-31 of the group);
//   stmatrix.x4: lane l = 8m + j gives the address of V^T row 32g + 16 (m >> 1) + 2j + ((m & 1) ^ (j >> 2)) at key
//     positions 16c .. 16c + 15. Matrix m's eight rows are then dv rows with distinct (row mod 8) - rows 0, 2, 4, 6,
//     9, 11, 13, 15 for m = 0 - so the eight 16-byte row pieces of a matrix fall on distinct bank groups in the
//     swizzled V^T (a plain "rows 2j" choice would put rows j and j + 4 on the same banks: two-way conflicts). Lane
//     (a, t) feeds matrix 0 its dv row 2a + (a >> 2): a per-lane byte-permute selector picks that word.
// Every offset is a per-lane base XOR a per-unit term plus a per-unit term (the swizzle is XOR-linear in the unit's
// column bits, which do not overlap the base's row bits): one LOP3 and one add per shared-memory access.
template <class Traits>
struct Fp8VTransposer {
  using PipelineKV = typename Traits::PipelineKV;
  using PipelineVt = typename Traits::PipelineVt;
  using State = PipelineState<Traits::kStages>;
  static_assert(Traits::kBlockN % 16 == 0 && Traits::kHeadDimV % 32 == 0, "units are 16 keys x 32 dv bytes");
  static constexpr int kChunks = Traits::kBlockN / 16;  // c
  static constexpr int kDvGroups = Traits::kHeadDimV / 32;  // g
  static constexpr int kUnits = kChunks * kDvGroups;
  static constexpr int kAtomRaw = kmajor_atom_bytes(Traits::kHeadDimV);  // sVraw: (kBlockN, dv)
  static constexpr int kAtomVt = kmajor_atom_bytes(Traits::kBlockN);     // sVt: (dv, kBlockN)
  static constexpr int kShiftRaw = kmajor_swizzle_shift(kAtomRaw);
  static constexpr int kShiftVt = kmajor_swizzle_shift(kAtomVt);
  static constexpr int kColGroups = kAtomRaw / 32;  // 32-byte dv groups inside one atom column of sVraw
  // Byte permutes: word for dv row 2a (keys 2t, 2t+1 from the first block, 8+2t, 9+2t from the second) and 2a + 1.
  static constexpr uint32_t kSelEvenRow = 0x6420;
  static constexpr uint32_t kSelOddRow = 0x7531;

  State state_raw;
  State state_vt;

  // Per-lane parts of the offsets (bytes inside one stage) for unit (0, 0).
  CUTLASS_HOST_DEVICE static uint32_t load_base(int lane) {
    int const row8 = lane & 7;  // key mod 8
    return uint32_t(((lane & 15) >> 3) * 8 * kAtomRaw + row8 * kAtomRaw + ((16 * (lane >> 4)) ^ ((row8 >> kShiftRaw) << 4)));
  }
  CUTLASS_HOST_DEVICE static int store_row(int lane) {  // V^T row (dv) inside the unit's 32 rows
    int const m = lane >> 3, j = lane & 7;
    return 16 * (m >> 1) + 2 * j + ((m & 1) ^ (j >> 2));
  }
  CUTLASS_HOST_DEVICE static uint32_t store_base(int lane) {
    int const row = store_row(lane);
    return uint32_t((row >> 3) * 8 * kAtomVt + (row & 7) * kAtomVt + (((row & 7) >> kShiftVt) << 4));
  }
  CUTLASS_HOST_DEVICE static uint32_t load_offset(uint32_t base, int c, int g) {
    return (base ^ uint32_t(32 * (g % kColGroups))) +
           uint32_t(c * 16 * kAtomRaw + (g / kColGroups) * Traits::kBlockN * kAtomRaw);
  }
  CUTLASS_HOST_DEVICE static uint32_t store_offset(uint32_t base, int c, int g) {
    return (base ^ uint32_t((16 * c) % kAtomVt)) +
           uint32_t((16 * c / kAtomVt) * Traits::kHeadDimV * kAtomVt + 32 * g * kAtomVt);
  }
  // Lane (a, t)'s four stmatrix words from its four ldmatrix registers (r[0], r[1]: dv bytes 0-15 of the group, keys
  // 0-7 / 8-15; r[2], r[3]: dv bytes 16-31). Matrix 0 gets dv row 2a for a < 4 and 2a + 1 for a >= 4, matrix 1 the
  // other (see store_row).
  CUTLASS_HOST_DEVICE static void permute(uint32_t const (&r)[4], int lane, uint32_t (&w)[4]) {
    bool const upper = (lane >> 2) >= 4;
    uint32_t const sel0 = upper ? kSelOddRow : kSelEvenRow;
    uint32_t const sel1 = upper ? kSelEvenRow : kSelOddRow;
    w[0] = byte_perm(r[0], r[1], sel0);
    w[1] = byte_perm(r[0], r[1], sel1);
    w[2] = byte_perm(r[2], r[3], sel0);
    w[3] = byte_perm(r[2], r[3], sel1);
  }
  CUTLASS_HOST_DEVICE static uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t sel) {
#if defined(__CUDA_ARCH__)
    return __byte_perm(x, y, sel);
#else
    uint64_t const both = (uint64_t(y) << 32) | x;
    uint32_t out = 0;
    for (int i = 0; i < 4; ++i) { out |= uint32_t((both >> (8 * ((sel >> (4 * i)) & 7))) & 0xff) << (8 * i); }
    return out;
#endif
  }

  CUTLASS_DEVICE static void ldmatrix_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  }
  CUTLASS_DEVICE static void stmatrix_x4(uint32_t addr, uint32_t const (&w)[4]) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(w[0]),
                 "r"(w[1]), "r"(w[2]), "r"(w[3]));
  }

  // transpose_warp: 0 .. kNumTransposeWarps - 1.
  CUTLASS_DEVICE void transpose_block(typename Traits::SharedStorage& smem, PipelineKV const& pipeline_raw,
                                      PipelineVt const& pipeline_vt, int transpose_warp, int lane) {
    using namespace cute;
    uint32_t const ld_base = load_base(lane);
    uint32_t const st_base = store_base(lane);
    pipeline_raw.consumer_wait(state_raw);
    pipeline_vt.writer_acquire(state_vt);
    // Stages are compact, kBlockN * dv bytes apart.
    uint32_t const raw_stage = cast_smem_ptr_to_uint(smem.v_raw.data()) +
                               uint32_t(state_raw.index * Traits::kBlockN * Traits::kHeadDimV);
    uint32_t const vt_stage = cast_smem_ptr_to_uint(smem.vt.data()) +
                              uint32_t(state_vt.index * Traits::kBlockN * Traits::kHeadDimV);
    // Two steps in flight per warp: a step is a dependent ldmatrix -> permute -> stmatrix chain.
#pragma unroll 2
    for (int unit = transpose_warp; unit < kUnits; unit += Traits::kNumTransposeWarps) {
      int const c = unit % kChunks;
      int const g = unit / kChunks;
      uint32_t r[4], w[4];
      ldmatrix_x4_trans(raw_stage + load_offset(ld_base, c, g), r);
      permute(r, lane, w);
      stmatrix_x4(vt_stage + store_offset(st_base, c, g), w);
    }
    // The WGMMAs read sVt through the async proxy: make the generic-proxy stores visible to it before signalling.
    cutlass::arch::fence_view_async_shared();
    __syncwarp();
    bool const leader = lane == 0;
    pipeline_vt.writer_commit(state_vt, leader);
    pipeline_raw.consumer_release(state_raw, leader);
    state_raw.advance();
    state_vt.advance();
  }
};

}  // namespace flash3
