// Where one batch entry's rows live and how many of them count, for batch and varlen layouts alike.
#pragma once

#include <cutlass/cutlass.h>

#include "kernels/common/fwd_params.hpp"

namespace flash3 {

struct SeqlenInfo {
  int64_t offset_q;  // first row of this sequence in the (total, h, d) view; 0 in batch mode
  int64_t offset_k;
  int seqlen_q;      // rows that count (seqused when given)
  int seqlen_k;

  CUTLASS_DEVICE SeqlenInfo(FwdParams const& p, int batch) {
    bool const varlen = p.cu_seqlens_q != nullptr;
    if (varlen) {
      offset_q = p.cu_seqlens_q[batch];
      offset_k = p.cu_seqlens_k[batch];
      seqlen_q = p.seqused_q ? p.seqused_q[batch] : int(p.cu_seqlens_q[batch + 1] - offset_q);
      seqlen_k = p.seqused_k ? p.seqused_k[batch] : int(p.cu_seqlens_k[batch + 1] - offset_k);
    } else {
      offset_q = 0;
      offset_k = 0;
      seqlen_q = p.seqused_q ? p.seqused_q[batch] : p.seqlen_q;
      seqlen_k = p.seqused_k ? p.seqused_k[batch] : p.seqlen_k;
    }
  }
};

}  // namespace flash3
