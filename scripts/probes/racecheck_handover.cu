// Stand-alone racecheck probe (not part of any build): the hand-over pattern of the forward's dynamic tile walk
// (kernels/common/tile_scheduler.hpp, DynamicTileWalk), without the kernel around it. Question it answers: does
// compute-sanitizer's racecheck flag this pattern by itself? If it does, the ~3000 "potential WAR hazards" it reports
// on the masked forward (docs/kernels.md, compute-sanitizer) come from how it models bar.arrive, not from the kernel.
//
//   nvcc -O2 -arch=sm_90a -o /tmp/race scripts/probes/racecheck_handover.cu
//   /tmp/race && compute-sanitizer --tool racecheck --racecheck-report hazard /tmp/race
//
// One producer warp writes an index into a shared slot and arrives on barrier 3; 256 consumer threads sync on 3,
// read the slot, arrive on barrier 4; the producer syncs on 4 before it writes the slot again. kSlots = 2 uses two
// slots alternately, so a slot is rewritten only two hand-overs after it was read.
#include <cstdio>
#include <cuda_runtime.h>
template <int kSlots>
__global__ void handover(int* out, int n) {
  __shared__ int slot[kSlots];
  int const warp = threadIdx.x / 32;
  int sum = 0;
  if (warp == 0) {
    for (int c = 0; c < n; ++c) {
      if (c >= kSlots) asm volatile("bar.sync 4, 288;" ::: "memory");
      if (threadIdx.x == 0) slot[c % kSlots] = c * 7 + blockIdx.x;
      asm volatile("bar.arrive 3, 288;" ::: "memory");
    }
    for (int c = n; c < n + kSlots && c >= kSlots; ++c) asm volatile("bar.sync 4, 288;" ::: "memory");
  } else {
    for (int c = 0; c < n; ++c) {
      asm volatile("bar.sync 3, 288;" ::: "memory");
      sum += slot[c % kSlots];
      asm volatile("bar.arrive 4, 288;" ::: "memory");
    }
    atomicAdd(out, sum);
  }
}
int main() {
  int* out; cudaMalloc(&out, 8); cudaMemset(out, 0, 8);
  int const n = 16;
  handover<1><<<4, 288>>>(out, n);
  handover<2><<<4, 288>>>(out + 1, n);
  int h[2]; cudaMemcpy(h, out, 8, cudaMemcpyDeviceToHost);
  long expect = 0; for (int b = 0; b < 4; ++b) for (int c = 0; c < n; ++c) expect += 256L * (c * 7 + b);
  printf("sums %d %d expect %ld (%s)\n", h[0], h[1], expect, cudaGetErrorString(cudaGetLastError()));
  return 0;
}
