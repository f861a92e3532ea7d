// Tiles of the sm90 FP8 forward (no CuTe here: the host side reads the block shape to size block-quantisation
// scales). One shape per head dim, independent of the mask, so the quantisation granularity (one scale per kBlockM
// query rows, per kBlockN key rows) is a function of the head dim alone.
// Shared memory (227 KB): Q kBlockM*d + stages * (K kBlockN*d + Vraw kBlockN*dv + Vt kBlockN*dv), 1 byte each.
// Registers (240 per consumer thread): O (dv / 2 fp32) + S (kBlockN / 2 fp32) + P (kBlockN / 8 words). d = 256 with
// kBlockN = 128 (FA3's FP8 tile; 224 KB of shared memory) spilled 850 bytes here: 128 + 64 + 32 = 224 registers of
// tiles leave too few for the rest (444-792 bytes again at 240 consumer registers), and kBlockN = 96 (200) spilled
// 124-228 bytes, so kBlockN = 64 (176; a multiple of 32, the FP8 WGMMA k step of P V). d = 128: 128 x 192 measured
// +6-9% without a mask and -5 to -8% causal on the H100 (docs/perf-notes.md F7); one shape serves both masks here.
#pragma once

namespace flash3 {

struct Fp8TileConfig {
  int block_m;
  int block_n;
  int stages;
};

constexpr Fp8TileConfig fp8_tile_config_sm90(int head_dim) {
  // d = 64: 3 consumer warpgroups on 192 query rows (FA3: 192 x 160): the softmax (exp-bound at d = 64) gets a third
  // warpgroup to overlap with, where 2 pingpong warpgroups measured 362-388 TFLOPS at 4k-16k.
  if (head_dim <= 64) return {192, 128, 2};
  if (head_dim <= 128) return {128, 128, 2};
  return {128, 64, 2};
}

}  // namespace flash3
