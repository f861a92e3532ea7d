// Epilogue of the sm90 backward: dK (times softmax_scale) and dV of the CTA's key block, from registers to global
// memory in the input dtype. Writes every row of the block inside the sequence's allocated rows: rows past the used
// length (seqused_k) and blocks that no query sees get 0, as the reference defines.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/bwd_params.hpp"
#include "kernels/common/layout_utils.hpp"
#include "kernels/sm90/bwd_kernel_traits_sm90.hpp"

namespace flash3 {

template <class Traits>
struct EpilogueBwdSm90 {
  using Element = typename Traits::Element;

  // Stores one accumulator (keys, dim) of the block: rows < num_rows, columns < num_cols, times `scale`.
  template <class TiledMma, class TensorAcc, class Dim>
  CUTLASS_DEVICE static void store_rows(TensorAcc& acc, int mma_thread_idx, Element* base, int64_t row_stride,
                                        int num_rows, int num_cols, float scale, Dim) {
    using namespace cute;
    TiledMma mma;
    auto thr = mma.get_thread_slice(mma_thread_idx);
    Tensor coord = thr.partition_C(make_identity_tensor(Shape<typename Traits::BlockN, Dim>{}));
    Tensor coord_rc = make_tensor(coord.data(), accumulator_rowcol_layout(coord.layout()));
    CUTE_UNROLL
    for (int i = 0; i < size(acc); ++i) { acc(i) *= scale; }
    Tensor converted = convert_fragment<Element>(acc);
    Tensor rc = make_tensor(converted.data(), accumulator_rowcol_layout(converted.layout()));
    CUTE_UNROLL
    for (int r = 0; r < size<0>(rc); ++r) {
      int const row = int(get<0>(coord_rc(r, 0)));
      if (row >= num_rows) { continue; }
      CUTE_UNROLL
      for (int c = 0; c < size<1>(rc); c += 2) {
        int const col = int(get<1>(coord_rc(r, c)));
        if (col < num_cols) {  // head dims are multiples of 8, so a pair is either inside or outside
          cutlass::Array<Element, 2> pair;
          pair[0] = rc(r, c);
          pair[1] = rc(r, c + 1);
          *reinterpret_cast<cutlass::Array<Element, 2>*>(base + row * row_stride + col) = pair;
        }
      }
    }
  }

  template <class Work, class TensordK, class TensordV>
  CUTLASS_DEVICE static void store(BwdParams const& p, int mma_thread_idx, Work const& work, TensordK& tdKrdK,
                                   TensordV& tdVrdV) {
    int64_t const row0 = work.seq.offset_k + int64_t(work.n_block) * Traits::kBlockN;
    int const rows = work.allocated_k - work.n_block * Traits::kBlockN;
    bool const varlen_k = p.cu_seqlens_k != nullptr;
    Element* dk = static_cast<Element*>(p.dk) + (varlen_k ? 0 : work.batch * p.dk_batch_stride) +
                  work.head_k * p.dk_head_stride + row0 * p.dk_row_stride;
    Element* dv = static_cast<Element*>(p.dv) + (varlen_k ? 0 : work.batch * p.dv_batch_stride) +
                  work.head_k * p.dv_head_stride + row0 * p.dv_row_stride;
    store_rows<typename Traits::TiledMmadK>(tdKrdK, mma_thread_idx, dk, p.dk_row_stride, rows, p.head_dim,
                                            p.softmax_scale, typename Traits::HeadDim{});
    store_rows<typename Traits::TiledMmadV>(tdVrdV, mma_thread_idx, dv, p.dv_row_stride, rows, p.head_dim_v, 1.f,
                                            typename Traits::HeadDimV{});
  }
};

}  // namespace flash3
