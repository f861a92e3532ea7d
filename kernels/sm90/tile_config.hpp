// Tile shapes of the sm90 forward, chosen per head dim. Constexpr data, not template pyramids.
//
// Shared memory is the binding limit (227 KB per CTA on H100): Q (kBlockM x d) + kStages x (K: kBlockN x d,
// V: kBlockN x dv), 16-bit. E.g. d = 256: 64 KB + 2 x (40 + 40) KB = 224 KB, hence kBlockN = 80.
// Registers are the other: each consumer thread of a 2-warpgroup CTA holds S (kBlockN/2 floats), P (kBlockN/4
// words) and O (dv/2 floats) within 240 registers.
#pragma once

// FLASH3_FWD_EXP: bit mask of forward experiments (docs/perf-notes.md, forward rows 12-22), 0 (none) unless a build
// passes -DFLASH3_FWD_EXP=N. Tile bits: 1 = 3 stages (hdim 128), 8 = no pingpong, 16 / 32 / 256 = kBlockN 176 / 160 /
// 192 (hdim 128, unmasked), 2048 = one Q buffer (fwd_kernel_traits_sm90.hpp, kQStages). Mainloop / softmax bits:
// 2 = DIAGNOSTIC no softmax (P = S: wrong results, for timing), 4 = DIAGNOSTIC no O rescale (wrong results), 64 = O
// rescale after the P V wait (the old order), 128 = eager rescale (no lazy max), 512 = non-volatile ex2 asm,
// 8192 / 16384 = Q descriptors rebuilt per trip on / off (fwd_kernel_traits_sm90.hpp, kRebuildQDescriptors).
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

constexpr FwdTileConfig fwd_tile_config_sm90(int head_dim, int head_dim_v, bool has_local) {
  // hdim 64, no mask: 3 consumer warpgroups on 192-row tiles (FA3's shape; no pingpong with 3). Measured on the
  // H100 against 2 pingpong warpgroups on 128 x 192: +5-10% at every seqlen (e.g. 8k 457 -> 502 TFLOPS).
  // With a causal mask the 192-row tiles lost 20% at 512-1k (more masked work per tile, fewer tiles) and won 10% at
  // 8k-16k; the masked kernel keeps 128 x 128 with pingpong, where flash3 is ahead of FA3's ratio to cuDNN.
  if (head_dim <= 64) return has_local ? FwdTileConfig{128, 128, 2, true} : FwdTileConfig{192, 128, 2, false};
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

}  // namespace flash3
