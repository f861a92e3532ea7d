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
// Transpose granule: one thread moves a 4 x 4-byte block: four 32-bit loads (keys sigma(4t + 0..3) of chunk c, 4
// consecutive dv columns), eight byte permutes, four 32-bit stores (4 dv rows of V^T, the 4 key positions 4t..4t+3).
// Lane = (a, t) with a = lane / 4: the key chunk is a ^ u and the dv group a + 8 w over the units (u, w), which keeps
// the 32 lanes of a store, and of each load, on distinct banks for 128-byte swizzled rows (dv = 128, kBlockN = 128).
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

// Byte offset of (r, c) in tile_to_shape(K-major 8-bit swizzle atom, (kRows, C)): atoms of 8 rows x kAtom bytes
// (kAtom = 128 / 64 / 32 for the 128 / 64 / 32-byte swizzles, as cutlass's ss_smem_selector picks them) laid out
// column-major, each XOR-ing the 16-byte chunk index with (row % 8) >> (3 - log2(kAtom / 16)). Written out (rather
// than evaluating the CuTe layout) so the transposer's per-thread constants hoist out of its loop; tests check it
// against the CuTe layouts (tests/cpp/kernel/test_fp8_gpu.cu, Fp8Transpose).
constexpr int kmajor_atom_bytes(int cols) { return cols % 128 == 0 ? 128 : cols % 64 == 0 ? 64 : 32; }

template <int kAtom, int kRows>
CUTLASS_HOST_DEVICE int kmajor_swizzled_offset(int r, int c) {
  constexpr int kShift = kAtom == 128 ? 0 : kAtom == 64 ? 1 : 2;
  return (r >> 3) * 8 * kAtom + (c / kAtom) * kRows * kAtom + (r & 7) * kAtom +
         ((c % kAtom) ^ (((r & 7) >> kShift) << 4));
}

// Warps 1..3 of the producer warpgroup: V (keys, dv) in sVraw -> V^T (dv, keys) in sVt, for each key block the tile
// visits, in the same order as the loads.
//
// Work: units (u, w) = (key chunk rotation, 32-column dv group), spread round-robin over the transposer warps; lane
// (a, t) of unit (u, w) moves keys 16 chunk + 2t + {0, 1, 8, 9} (chunk = (a mod kChunks) ^ u) at dv columns
// d0 = 4a + 32w .. d0 + 3. Every offset is a per-thread base (computed once per block) XOR a per-unit term (the chunk
// field is XOR-linear in u, the column field in w) plus a per-unit term: one LOP3 per shared-memory access. The
// first version evaluated the CuTe layouts in the loop (130 instructions a step; the transposer then paced the whole
// kernel).
template <class Traits>
struct Fp8VTransposer {
  using PipelineKV = typename Traits::PipelineKV;
  using PipelineVt = typename Traits::PipelineVt;
  using State = PipelineState<Traits::kStages>;
  static constexpr int kChunks = Traits::kBlockN / 16;  // 16-key chunks per tile
  static_assert(kChunks == 2 || kChunks == 4 || kChunks == 8, "kBlockN must be 32, 64 or 128");
  static constexpr int kChunkMask = kChunks - 1;
  static constexpr int kDvLoops = Traits::kHeadDimV / 32;  // w
  static constexpr int kUnits = kChunks * kDvLoops;
  static constexpr int kAtomRaw = kmajor_atom_bytes(Traits::kHeadDimV);  // sVraw: (kBlockN, dv)
  static constexpr int kAtomVt = kmajor_atom_bytes(Traits::kBlockN);     // sVt: (dv, kBlockN)
  // One atom spans the keys of V^T, so a key position's offset inside its row needs no atom-column term.
  static_assert(kAtomVt == Traits::kBlockN, "kBlockN must be 32, 64 or 128");
  static constexpr int kShiftRaw = kAtomRaw == 128 ? 0 : kAtomRaw == 64 ? 1 : 2;
  static constexpr int kShiftVt = kAtomVt == 128 ? 0 : kAtomVt == 64 ? 1 : 2;
  static constexpr int kLoadChunkShift = kAtomRaw == 128 ? 11 : kAtomRaw == 64 ? 10 : 9;  // log2(16 * kAtomRaw)
  static constexpr int kColGroups = kAtomRaw / 32;  // 32-column groups inside one atom column of sVraw

  State state_raw;
  State state_vt;

  // Per-thread offsets (bytes, inside one stage) of unit (u, w) = (0, 0): loads of keys key0 + {0, 1, 8, 9} at
  // columns d0..d0+3 (sVraw), stores of rows d0 + {0, 1, 2, 3} at key positions p0..p0+3 (sVt).
  CUTLASS_HOST_DEVICE static void thread_bases(int lane, uint32_t (&load)[4], uint32_t (&store)[4]) {
    int const a = lane / 4;
    int const t = lane % 4;
    int const chunk = a & kChunkMask;
    // Loads: row r = 16 chunk + 2t + e (e in {0, 1, 8, 9}): r >> 3 = 2 chunk + e / 8, r & 7 = 2t + e % 8; col 4a.
    CUTLASS_PRAGMA_UNROLL
    for (int e = 0; e < 4; ++e) {
      int const rl = 2 * t + (e & 1);
      load[e] = uint32_t(chunk * 16 * kAtomRaw + (e >> 1) * 8 * kAtomRaw + rl * kAtomRaw +
                         ((4 * a) ^ ((rl >> kShiftRaw) << 4)));
    }
    // Stores: row r = 4a + i: r >> 3 = a / 2, r & 7 = 4 (a % 2) + i; column p0 = 16 chunk + 4t < kBlockN.
    int const p0 = 16 * chunk + 4 * t;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < 4; ++i) {
      int const rl = 4 * (a & 1) + i;
      store[i] = uint32_t((a >> 1) * 8 * kAtomVt + rl * kAtomVt + (p0 ^ ((rl >> kShiftVt) << 4)));
    }
  }
  // Unit (u, w): the chunk field XORs with u; the column moves by 32 w (XOR inside an atom column, plus whole atom
  // columns); V^T rows move by 32 w.
  CUTLASS_HOST_DEVICE static uint32_t load_offset(uint32_t base, int u, int w) {
    return (base ^ (uint32_t(u) << kLoadChunkShift) ^ uint32_t(32 * (w % kColGroups))) +
           uint32_t((w / kColGroups) * Traits::kBlockN * kAtomRaw);
  }
  CUTLASS_HOST_DEVICE static uint32_t store_offset(uint32_t base, int u, int w) {
    return (base ^ (uint32_t(u) << 4)) + uint32_t(32 * w * kAtomVt);
  }

  CUTLASS_DEVICE static uint32_t ld_shared_u32(uint32_t addr) {
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
  }
  CUTLASS_DEVICE static void st_shared_u32(uint32_t addr, uint32_t v) {
    asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v));
  }

  // transpose_warp: 0 .. kNumTransposeWarps - 1.
  CUTLASS_DEVICE void transpose_block(typename Traits::SharedStorage& smem, PipelineKV const& pipeline_raw,
                                      PipelineVt const& pipeline_vt, int transpose_warp, int lane) {
    using namespace cute;
    uint32_t ld_base[4], st_base[4];
    thread_bases(lane, ld_base, st_base);
    pipeline_raw.consumer_wait(state_raw);
    pipeline_vt.writer_acquire(state_vt);
    // Stages are compact, kBlockN * dv bytes apart.
    uint32_t const raw_base = cast_smem_ptr_to_uint(smem.v_raw.data()) +
                              uint32_t(state_raw.index * Traits::kBlockN * Traits::kHeadDimV);
    uint32_t const vt_base = cast_smem_ptr_to_uint(smem.vt.data()) +
                             uint32_t(state_vt.index * Traits::kBlockN * Traits::kHeadDimV);
    // A run-time loop: unrolled, the compiler hoisted every unit's 8 offsets above the loads and spilled 620 bytes in
    // the producer's 40 registers. Per unit, the XOR and add terms are computed once and shared by the 8 accesses.
    CUTE_NO_UNROLL
    for (int unit = transpose_warp; unit < kUnits; unit += Traits::kNumTransposeWarps) {
      int const u = unit % kChunks;
      int const w = unit / kChunks;
      uint32_t const ld_xor = load_offset(0u, u, w) - uint32_t((w / kColGroups) * Traits::kBlockN * kAtomRaw);
      uint32_t const ld_add = raw_base + uint32_t((w / kColGroups) * Traits::kBlockN * kAtomRaw);
      uint32_t const st_xor = uint32_t(u) << 4;
      uint32_t const st_add = vt_base + uint32_t(32 * w * kAtomVt);
      uint32_t const r0 = ld_shared_u32(ld_add + (ld_base[0] ^ ld_xor));
      uint32_t const r1 = ld_shared_u32(ld_add + (ld_base[1] ^ ld_xor));
      uint32_t const r2 = ld_shared_u32(ld_add + (ld_base[2] ^ ld_xor));
      uint32_t const r3 = ld_shared_u32(ld_add + (ld_base[3] ^ ld_xor));
      // Byte i of output word j is byte j of r_i.
      uint32_t const lo01 = __byte_perm(r0, r1, 0x5140);  // r0.b0 r1.b0 r0.b1 r1.b1
      uint32_t const hi01 = __byte_perm(r0, r1, 0x7362);  // r0.b2 r1.b2 r0.b3 r1.b3
      uint32_t const lo23 = __byte_perm(r2, r3, 0x5140);
      uint32_t const hi23 = __byte_perm(r2, r3, 0x7362);
      st_shared_u32(st_add + (st_base[0] ^ st_xor), __byte_perm(lo01, lo23, 0x5410));
      st_shared_u32(st_add + (st_base[1] ^ st_xor), __byte_perm(lo01, lo23, 0x7632));
      st_shared_u32(st_add + (st_base[2] ^ st_xor), __byte_perm(hi01, hi23, 0x5410));
      st_shared_u32(st_add + (st_base[3] ^ st_xor), __byte_perm(hi01, hi23, 0x7632));
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
