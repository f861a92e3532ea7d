// Views of WGMMA accumulator fragments: as (row, col) for the softmax, and as the A operand of a register-sourced
// WGMMA (so P never goes through shared memory).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

namespace flash3 {

// The same pointer, through an empty asm the compiler cannot see through. WGMMA descriptors built from it inside a
// loop are rebuilt there (a few integer ops on uniform data) instead of hoisted out of the loop: ptxas holds hoisted
// descriptors in ordinary registers, 2 per 64-bit descriptor, and at hdim 256 that pushed the consumers into spills
// (docs/perf-notes.md, forward row 22).
template <class T>
CUTLASS_DEVICE T* opaque_pointer(T* p) {
  asm volatile("" : "+l"(p));
  return p;
}

// An SM90 accumulator fragment has layout ((2, 2, N/8), MMA_M, MMA_N): per 8-column group a thread holds 2 adjacent
// columns of row r and the same 2 columns of row r + 8. Returns ((2, MMA_M), (2, N/8, MMA_N)) = (rows, cols).
template <class Layout>
CUTLASS_HOST_DEVICE auto accumulator_rowcol_layout(Layout const& acc) {
  using namespace cute;
  static_assert(rank(Layout{}) == 3 && rank<0>(Layout{}) == 3, "expects ((2, 2, N/8), MMA_M, MMA_N)");
  auto v = get<0>(acc);
  return make_layout(make_layout(get<1>(v), get<1>(acc)), make_layout(get<0>(v), get<2>(v), get<2>(acc)));
}

// The register A operand of an m64nNk16 RS WGMMA holds, per thread and 16-wide k block, ((2, 2, 2)): 2 adjacent k of
// row r, the same of row r + 8, then the same 8 k further on: exactly two consecutive 8-column groups of the
// accumulator layout. So ((2, 2, N/8), MMA_M, MMA_N) regroups into ((2, 2, 2), MMA_M, (N/16, MMA_N)) with no data
// movement (16-bit operands).
template <class Layout>
CUTLASS_HOST_DEVICE auto accumulator_as_a_operand_layout(Layout const& acc) {
  using namespace cute;
  auto v = get<0>(acc);
  constexpr int kGroups = decltype(size<2>(v))::value;
  static_assert(kGroups % 2 == 0, "the accumulator's N must be a multiple of 16");
  auto v_stride = stride(v);
  auto a_value = make_layout(make_shape(get<0>(shape(v)), get<1>(shape(v)), cute::_2{}),
                             make_stride(get<0>(v_stride), get<1>(v_stride), get<2>(v_stride)));
  auto k_mode = make_layout(make_shape(cute::Int<kGroups / 2>{}, get<2>(shape(acc))),
                            make_stride(get<2>(v_stride) * cute::_2{}, get<2>(stride(acc))));
  return make_layout(a_value, get<1>(acc), k_mode);
}

// Element-wise conversion of a compact register fragment (e.g. fp32 accumulators to bf16), keeping its layout.
// Goes through cutlass::NumericArrayConverter so pairs convert with one cvt.rn.bf16x2 / f16x2 instruction.
template <class To, class Engine, class Layout>
CUTLASS_DEVICE auto convert_fragment(cute::Tensor<Engine, Layout> const& src) {
  using From = typename Engine::value_type;
  constexpr int kN = decltype(cute::size(Layout{}))::value;
  static_assert(decltype(cute::cosize(Layout{}))::value == kN, "fragment must be compact");
  auto dst = cute::make_tensor<To>(Layout{});
  cutlass::NumericArrayConverter<To, From, kN> convert;
  *reinterpret_cast<cutlass::Array<To, kN>*>(dst.data()) =
      convert(*reinterpret_cast<cutlass::Array<From, kN> const*>(src.data()));
  return dst;
}

}  // namespace flash3
