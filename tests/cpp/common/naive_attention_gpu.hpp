// A naive attention forward on the GPU: the oracle for shapes too large for the CPU reference.
//
// Semantics, layouts and the rows it leaves untouched are those of ref::reference_forward (see
// src/reference/reference_attention.hpp): batch or varlen, seqused, causal / sliding window, softcap, GQA.
// Inputs are contiguous fp16/bf16 device arrays; outputs are device doubles.
//   kReference     fp64 accumulation and fp64 softmax (products of fp16/bf16 values are exact in fp32, so this
//                  agrees with the CPU reference to ~1e-15).
//   kLowPrecision  the PyTorch-style naive attention of ref::reference_forward_lowprec: S accumulated in fp32 and
//                  rounded to the dtype, softmax in fp32, P rounded, O accumulated in fp32 and rounded. It agrees
//                  with the CPU emulation up to fp32 summation order (which can flip a rounding now and then).
// One thread block per (query row, head, sequence); the row's scores are recomputed in chunks of keys three times
// (max, sum, output), so any seqlen_k works (tested to 16k). head_dim_v must be <= 512.
#pragma once

#include <cuda_runtime_api.h>

#include "reference/reference_attention.hpp"

namespace flash3_test {

enum class NaiveMode { kReference, kLowPrecision };

// q, k, v: device arrays in the problem's layouts. out: device doubles (p.out_elems()); lse: device doubles
// (p.lse_elems()) or null. Runs on `stream` and returns when it is done; throws std::runtime_error on a CUDA error.
void naive_attention_forward(const flash3::ref::ReferenceProblem& p, flash3::ref::Precision precision, NaiveMode mode,
                             const void* q, const void* k, const void* v, double* out, double* lse,
                             cudaStream_t stream = nullptr);

}  // namespace flash3_test
