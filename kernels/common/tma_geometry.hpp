// The global-memory geometry the sm90 launchers hand to the TMA: every tensor is viewed as (rows, d, heads, batch)
// with 64-bit strides. Varlen folds all sequences into the rows of one batch entry (the kernels offset rows by
// cu_seqlens). A descriptor needs non-zero extents: with no keys (or queries) no load is ever issued, so 1 is safe.
#pragma once

#include <cute/tensor.hpp>

#include "kernels/common/fwd_params.hpp"

namespace flash3 {

struct TmaGeometry {
  bool varlen;
  int32_t rows_q, rows_k, batch;

  explicit TmaGeometry(FwdParams const& p)
      : varlen(p.cu_seqlens_q != nullptr),
        rows_q(at_least_1(varlen ? p.total_q : p.seqlen_q)),
        rows_k(at_least_1(varlen ? p.total_k : p.seqlen_k)),
        batch(varlen ? 1 : p.batch) {}

  // (rows, d, heads, batch) over `data`; the batch stride is dropped in varlen mode.
  template <class Element, class Shape>
  auto tensor(Element const* data, Shape const& shape, int64_t row_stride, int64_t head_stride,
              int64_t batch_stride) const {
    return cute::make_tensor(cute::make_gmem_ptr(data), shape,
                             cute::make_stride(row_stride, cute::_1{}, head_stride, varlen ? int64_t(0) : batch_stride));
  }

  static int32_t at_least_1(int64_t x) { return int32_t(x > 0 ? x : 1); }
};

}  // namespace flash3
