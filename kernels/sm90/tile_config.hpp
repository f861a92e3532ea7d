// Tile shapes of the sm90 forward, chosen per head dim. Constexpr data, not template pyramids.
//
// Shared memory is the binding limit (227 KB per CTA on H100): Q (kBlockM x d) + kStages x (K: kBlockN x d,
// V: kBlockN x dv), 16-bit. E.g. d = 256: 64 KB + 2 x (40 + 40) KB = 224 KB, hence kBlockN = 80.
// Registers are the other: each consumer thread of a 2-warpgroup CTA holds S (kBlockN/2 floats), P (kBlockN/4
// words) and O (dv/2 floats) within 240 registers.
#pragma once

#include <cstdint>

// FLASH3_FWD_EXP: bit mask of forward experiments (docs/perf-notes.md, forward rows 12-22), 0 (none) unless a build
// passes -DFLASH3_FWD_EXP=N. Tile bits: 1 = 3 stages (hdim 128), 8 = no pingpong, 16 / 32 / 256 = kBlockN 176 / 160 /
// 192 (hdim 128, unmasked), 2048 = one Q buffer (fwd_kernel_traits_sm90.hpp, kQStages). Mainloop / softmax bits:
// 2 = DIAGNOSTIC no softmax (P = S: wrong results, for timing), 4 = DIAGNOSTIC no O rescale (wrong results), 64 = O
// rescale after the P V wait (the old order), 128 = eager rescale (no lazy max), 512 = non-volatile ex2 asm,
// 8192 / 16384 = Q descriptors rebuilt per trip on / off (fwd_kernel_traits_sm90.hpp, kRebuildQDescriptors),
// 32768 = no long-sequence tile (fwd_has_long_sequence_tile), 65536 = no fixed-offset softmax (exact max only;
// fwd_kernel_traits_sm90.hpp, kFixedOffsetSoftmax), 131072 = DIAGNOSTIC fixed offsets without the rebase and the
// repair launch (wrong on score jumps: checks that the tests catch it), 262144 = no TMA-store epilogue
// (fwd_kernel_traits_sm90.hpp, kTmaStoreO), 524288 = the long-sequence tile at every length (A/B), 1048576 = no O
// staging in V's shared memory (hdim 192 / 256 keep the register stores; kOStagingInV), 2097152 = DIAGNOSTIC the
// producer does not wait for those stores before refilling V (wrong results: checks that the tests catch it).
// (4194304 was "no chained tiles", an experiment in commit 7fc8d89, reverted: perf-notes forward row 35.)
// 8388608 = the dynamic tile walk's shared named-barrier hand-over in every kernel (kernels/common/tile_scheduler.hpp).
#ifndef FLASH3_FWD_EXP
#define FLASH3_FWD_EXP 0
#endif

namespace flash3 {

struct FwdTileConfig {
  int block_m;
  int block_n;
  int stages;
  bool pingpong;
};

// `long_sequence` picks the variant for long rows of keys where a kernel has one (fwd_has_long_sequence_tile).
constexpr FwdTileConfig fwd_tile_config_sm90(int head_dim, int head_dim_v, bool has_local, bool long_sequence = false) {
  // hdim 64, no mask: 3 consumer warpgroups on 192-row tiles (FA3's shape; no pingpong with 3). Measured on the
  // H100 against 2 pingpong warpgroups on 128 x 192: +5-10% at every seqlen (e.g. 8k 457 -> 502 TFLOPS).
  // With a causal mask the 192-row tiles lose 15-20% at 512-1k (more masked work per tile, fewer tiles), tie at 2k
  // and win 4-10% at 4k-16k (perf-notes forward row 25), so the masked kernel has both: 128 x 128 with pingpong,
  // and the 192 x 128 tiles for long sequences.
  if (head_dim <= 64) {
    return has_local && !long_sequence ? FwdTileConfig{128, 128, 2, true} : FwdTileConfig{192, 128, 2, false};
  }
  if (head_dim <= 96) return {128, 128, 2, true};
  // 128 x 176 (FA3's non-causal choice) measured slower here at 4k (592 vs 624 TFLOPS) and spilled 52 bytes.
  constexpr bool kPingpong = (FLASH3_FWD_EXP & 8) == 0;
  if (head_dim <= 128) {
    int const n = has_local ? 128
                  : (FLASH3_FWD_EXP & 16) ? 176
                  : (FLASH3_FWD_EXP & 32) ? 160
                  : (FLASH3_FWD_EXP & 256) ? 192
                                           : 128;
    return {128, n, (FLASH3_FWD_EXP & 1) ? 3 : 2, kPingpong};
  }
  if (head_dim <= 192) return {128, 112, 2, kPingpong};
  return {128, 80, 2, kPingpong};
}

// Whether the kernel for (head_dim, head_dim_v, has_local) also has a long-sequence tile (then both are compiled
// into its file and run_fwd_sm90 picks one per call with fwd_wants_long_sequence_tile).
constexpr bool fwd_has_long_sequence_tile(int head_dim, int head_dim_v, bool has_local) {
  if ((FLASH3_FWD_EXP & 32768) != 0) return false;
  FwdTileConfig const a = fwd_tile_config_sm90(head_dim, head_dim_v, has_local, false);
  FwdTileConfig const b = fwd_tile_config_sm90(head_dim, head_dim_v, has_local, true);
  return a.block_m != b.block_m || a.block_n != b.block_n || a.stages != b.stages || a.pingpong != b.pingpong;
}

// The fixed-offset softmax (softmax.hpp) needs a second, repair launch of the kernel (exits at once unless a row
// overflowed), and gains nothing on a tile's first key block (which sets the offsets): taken when the call has at
// least this many key-block trips per SM and key blocks per query block (src/dispatch/fwd_dispatch.cpp,
// forward_uses_fixed_offsets; blocks of 128 keys). Measured with the TMA-store epilogue (perf-notes forward row 33):
// 512 keys tie to +9%, 768 +0.5-12%, 1k and up +4-18%. (Before that epilogue, 512 tied or lost up to 3%.)
constexpr int kFwdFixedOffsetMinTripsPerSm = 16;
constexpr int kFwdFixedOffsetMinKeyBlocks = 4;

// Rows of keys long enough for the long-sequence tile: at least 3072 queries, each seeing up to 3072 keys or more
// (the window, when there is one, bounds the keys a query block sees). Measured (causal, perf-notes forward rows 25
// and 32): 1k -14%, 2k ties, 3k +8%, 4k +0-10%.
constexpr bool fwd_wants_long_sequence_tile(int64_t seqlen_q, int64_t seqlen_k, int64_t window_left,
                                            int64_t window_right) {
  if ((FLASH3_FWD_EXP & 524288) != 0) return true;  // A/B: the long-sequence tile at every length
  constexpr int64_t kMinRows = 3072;
  int64_t keys = seqlen_k;
  if (window_left >= 0) {
    int64_t const span = window_left + 1 + (window_right > 0 ? window_right : 0);
    keys = span < keys ? span : keys;
  }
  return seqlen_q >= kMinRows && keys >= kMinRows;
}

}  // namespace flash3
