// Host tests of forward and backward dispatch: head-dim rounding, the flat kernel parameters planned from API
// arguments (strides, scales, mask), the kernel key, and the workspace rules. No GPU: pointers are fake, nothing runs.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "api/validate.hpp"
#include "dispatch/bwd_dispatch.hpp"
#include "dispatch/fwd_dispatch.hpp"

namespace {

using flash3::DType;

void* fake(uintptr_t a) { return reinterpret_cast<void*>(a); }

flash3::ForwardArgs batch_args(int b, int sq, int sk, int h, int hk, int d) {
  flash3::ForwardArgs a;
  a.q = flash3::make_tensor(fake(0x10000), DType::kBFloat16, {b, sq, h, d});
  a.k = flash3::make_tensor(fake(0x20000), DType::kBFloat16, {b, sk, hk, d});
  a.v = flash3::make_tensor(fake(0x30000), DType::kBFloat16, {b, sk, hk, d});
  a.out = flash3::make_tensor(fake(0x40000), DType::kBFloat16, {b, sq, h, d});
  a.lse = flash3::make_tensor(fake(0x50000), DType::kFloat32, {b, h, sq});
  return a;
}

TEST(Dispatch, HeadDimsRoundUpToCompiledSizes) {
  struct Case { int d, dv, want_d, want_dv; };
  for (Case c : {Case{8, 8, 64, 64}, Case{64, 64, 64, 64}, Case{72, 72, 96, 96}, Case{128, 128, 128, 128},
                 Case{136, 136, 192, 192}, Case{192, 128, 192, 128}, Case{192, 192, 192, 192},
                 Case{248, 248, 256, 256}}) {
    int32_t d = 0, dv = 0;
    ASSERT_TRUE(flash3::round_up_head_dims(c.d, c.dv, &d, &dv)) << c.d << "x" << c.dv;
    EXPECT_EQ(d, c.want_d) << c.d << "x" << c.dv;
    EXPECT_EQ(dv, c.want_dv) << c.d << "x" << c.dv;
  }
  int32_t d = 0, dv = 0;
  EXPECT_FALSE(flash3::round_up_head_dims(264, 264, &d, &dv));
}

TEST(Dispatch, BatchModePlanCarriesStridesScaleAndKey) {
  flash3::ForwardArgs a = batch_args(2, 100, 300, 8, 2, 72);
  flash3::validate_forward(a, 90);
  auto const shape = flash3::forward_problem_shape(a);
  auto const plan = flash3::plan_forward(a, shape, 90, 132);
  flash3::FwdParams const& p = plan.params;
  EXPECT_EQ(p.q_batch_stride, 100 * 8 * 72);
  EXPECT_EQ(p.q_row_stride, 8 * 72);
  EXPECT_EQ(p.q_head_stride, 72);
  EXPECT_EQ(p.k_batch_stride, 300 * 2 * 72);
  EXPECT_EQ(p.k_row_stride, 2 * 72);
  EXPECT_EQ(p.lse_batch_stride, 8 * 100);
  EXPECT_EQ(p.lse_head_stride, 100);
  EXPECT_EQ(p.num_heads, 8);
  EXPECT_EQ(p.num_heads_k, 2);
  EXPECT_EQ(p.head_dim, 72);
  EXPECT_FLOAT_EQ(p.softmax_scale, 1.f / std::sqrt(72.f));
  EXPECT_FLOAT_EQ(p.softmax_scale_log2, p.softmax_scale * 1.4426950408889634f);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(p.window_right, -1);
  EXPECT_EQ(plan.key.head_dim, 96);  // 72 runs on the hdim-96 kernel (TMA zero-fills the padding)
  EXPECT_FALSE(plan.key.local_mask);
  EXPECT_FALSE(plan.key.softcap);
  EXPECT_EQ(plan.key.dtype, DType::kBFloat16);
  // Unmasked: no workspace is required, 256 bytes are asked for (the fixed-offset softmax's repair state).
  EXPECT_EQ(flash3::forward_workspace_required_bytes(a.options), 0);
  EXPECT_EQ(flash3::forward_workspace_bytes(a.options), 256);
  EXPECT_EQ(p.repair, nullptr);  // no workspace given
  EXPECT_EQ(p.softmax_mode, int32_t(flash3::FwdSoftmaxMode::kExact));
}

// The softmax choice: fixed offsets only with the repair state in the workspace, and (kAuto) only for calls with
// enough key-block trips per SM; the process-wide override forces either path.
TEST(Dispatch, FixedOffsetSoftmaxNeedsTheWorkspaceAndEnoughTrips) {
  struct ChoiceScope {
    flash3::FwdSoftmaxChoice saved = flash3::forward_softmax_choice();
    ~ChoiceScope() { flash3::set_forward_softmax_choice(saved); }
  } scope;
  flash3::set_forward_softmax_choice(flash3::FwdSoftmaxChoice::kAuto);
  auto plan_mode = [](int b, int s, int h, bool with_workspace, int64_t bytes) {
    flash3::ForwardArgs a = batch_args(b, s, s, h, h, 128);
    if (with_workspace) {
      a.workspace = fake(0x60000);
      a.workspace_bytes = bytes;
    }
    flash3::validate_forward(a, 90);
    auto const plan = flash3::plan_forward(a, flash3::forward_problem_shape(a), 90, 132);
    return std::make_pair(plan.params.softmax_mode, plan.params.repair);
  };
  // 4 x 16 heads x 4k: 32 query blocks x 32 key blocks x 64 = 65536 trips, ~500 per SM.
  auto const big = plan_mode(4, 4096, 16, true, 256);
  EXPECT_EQ(big.first, int32_t(flash3::FwdSoftmaxMode::kFixedOffset));
  EXPECT_EQ(reinterpret_cast<char*>(big.second), static_cast<char*>(fake(0x60000)) + flash3::kFwdRepairStateOffset);
  // The same call without a workspace, or one too small for the repair state: exact.
  EXPECT_EQ(plan_mode(4, 4096, 16, false, 0).first, int32_t(flash3::FwdSoftmaxMode::kExact));
  EXPECT_EQ(plan_mode(4, 4096, 16, true, flash3::kFwdRepairStateOffset).first,
            int32_t(flash3::FwdSoftmaxMode::kExact));
  // Too few trips (1 x 2 heads x 2k: 16 x 16 x 2 = 512 for 132 SMs), or too few key blocks (128 x 16 heads x 384:
  // 18432 trips, 3 key blocks each); 32 x 16 heads x 512 (4 key blocks) takes them.
  EXPECT_EQ(plan_mode(1, 2048, 2, true, 256).first, int32_t(flash3::FwdSoftmaxMode::kExact));
  EXPECT_EQ(plan_mode(128, 384, 16, true, 256).first, int32_t(flash3::FwdSoftmaxMode::kExact));
  EXPECT_EQ(plan_mode(32, 512, 16, true, 256).first, int32_t(flash3::FwdSoftmaxMode::kFixedOffset));
  EXPECT_EQ(plan_mode(16, 1024, 16, true, 256).first, int32_t(flash3::FwdSoftmaxMode::kFixedOffset));
  // The override.
  flash3::set_forward_softmax_choice(flash3::FwdSoftmaxChoice::kFixedOffset);
  EXPECT_EQ(plan_mode(1, 512, 2, true, 256).first, int32_t(flash3::FwdSoftmaxMode::kFixedOffset));
  EXPECT_EQ(plan_mode(1, 512, 2, false, 0).first, int32_t(flash3::FwdSoftmaxMode::kExact));
  flash3::set_forward_softmax_choice(flash3::FwdSoftmaxChoice::kExact);
  EXPECT_EQ(plan_mode(4, 4096, 16, true, 256).first, int32_t(flash3::FwdSoftmaxMode::kExact));
}

TEST(Dispatch, CausalSoftcapAndWindowSelectTheMaskedKernel) {
  flash3::ForwardArgs a = batch_args(1, 64, 64, 4, 4, 128);
  a.options.causal = true;
  a.options.window_left = 16;
  a.options.softcap = 30.f;
  a.options.softmax_scale = 0.25f;
  a.workspace = fake(0x60000);
  a.workspace_bytes = flash3::forward_workspace_bytes(a.options);
  EXPECT_GT(a.workspace_bytes, 0);  // the dynamic tile walk's counter
  flash3::validate_forward(a, 90);
  auto const plan = flash3::plan_forward(a, flash3::forward_problem_shape(a), 90, 132);
  EXPECT_TRUE(plan.key.local_mask);
  EXPECT_TRUE(plan.key.softcap);
  EXPECT_EQ(plan.params.window_left, 16);
  EXPECT_EQ(plan.params.window_right, 0);  // causal is the window (left, 0)
  // Softcap: the kernel stores tanh(s * scale / softcap), so the exp2 factor is softcap * log2(e).
  EXPECT_FLOAT_EQ(plan.params.softcap_inv_scaled, 0.25f / 30.f);
  EXPECT_FLOAT_EQ(plan.params.softmax_scale_log2, 30.f * 1.4426950408889634f);
  EXPECT_EQ(plan.params.tile_counter, static_cast<int32_t*>(a.workspace));
}

TEST(Dispatch, VarlenPlanHasNoBatchStrides) {
  flash3::ForwardArgs a;
  a.q = flash3::make_tensor(fake(0x10000), DType::kFloat16, {500, 8, 64});
  a.k = flash3::make_tensor(fake(0x20000), DType::kFloat16, {700, 8, 64});
  a.v = flash3::make_tensor(fake(0x30000), DType::kFloat16, {700, 8, 64});
  a.out = flash3::make_tensor(fake(0x40000), DType::kFloat16, {500, 8, 64});
  a.lse = flash3::make_tensor(fake(0x50000), DType::kFloat32, {8, 500});
  a.varlen.cu_seqlens_q = static_cast<const int32_t*>(fake(0x70000));
  a.varlen.cu_seqlens_k = static_cast<const int32_t*>(fake(0x71000));
  a.varlen.batch = 3;
  a.varlen.max_seqlen_q = 300;
  a.varlen.max_seqlen_k = 400;
  flash3::validate_forward(a, 90);
  auto const shape = flash3::forward_problem_shape(a);
  auto const plan = flash3::plan_forward(a, shape, 90, 132);
  EXPECT_EQ(plan.params.q_batch_stride, 0);
  EXPECT_EQ(plan.params.o_batch_stride, 0);
  EXPECT_EQ(plan.params.q_row_stride, 8 * 64);
  EXPECT_EQ(plan.params.q_head_stride, 64);
  EXPECT_EQ(plan.params.lse_batch_stride, 0);
  EXPECT_EQ(plan.params.lse_head_stride, 500);
  EXPECT_EQ(plan.params.seqlen_q, 300);
  EXPECT_EQ(plan.params.total_q, 500);
  EXPECT_EQ(plan.params.total_k, 700);
  EXPECT_EQ(plan.params.batch, 3);
  EXPECT_EQ(plan.key.dtype, DType::kFloat16);
}

TEST(Dispatch, UncompiledKeyIsNotSupported) {
  flash3::ForwardArgs a = batch_args(1, 16, 16, 2, 2, 64);
  auto plan = flash3::plan_forward(a, flash3::forward_problem_shape(a), 90, 132);
  plan.key.arch = 80;  // no sm_80 kernels exist
  try {
    flash3::run_forward(plan, nullptr);
    FAIL() << "expected flash3::Error";
  } catch (const flash3::Error& e) {
    EXPECT_EQ(e.status(), flash3::Status::kNotSupported);
    EXPECT_NE(std::string(e.what()).find("fwd_sm80_"), std::string::npos) << e.what();
  }
}

}  // namespace

// ---- backward dispatch -----------------------------------------------------------------------------------------------

namespace {

flash3::BackwardArgs backward_args(int b, int sq, int sk, int h, int hk, int d) {
  flash3::ForwardArgs f = batch_args(b, sq, sk, h, hk, d);
  flash3::BackwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.out = f.out;
  a.lse = f.lse;
  a.dout = flash3::make_tensor(fake(0x60000), DType::kBFloat16, {b, sq, h, d});
  a.dq = flash3::make_tensor(fake(0x70000), DType::kBFloat16, {b, sq, h, d});
  a.dk = flash3::make_tensor(fake(0x80000), DType::kBFloat16, {b, sk, hk, d});
  a.dv = flash3::make_tensor(fake(0x90000), DType::kBFloat16, {b, sk, hk, d});
  return a;
}

}  // namespace

TEST(BackwardDispatch, WorkspaceIsLinearInRowsAndCarvedWithoutOverlap) {
  flash3::BackwardArgs a = backward_args(3, 1000, 700, 8, 2, 72);
  flash3::validate_backward(a, 90);
  auto const shape = flash3::backward_problem_shape(a);
  int64_t const bytes = flash3::backward_workspace_bytes(a, shape);
  // Scratch rows: 1000 rounded up to 1024 per (batch, head); dQ accumulator rows are the padded head dim (96).
  int64_t const rows = 3 * 8 * 1024;
  EXPECT_GE(bytes, rows * 96 * 4 + 2 * rows * 4 + rows / 64 * 4);
  EXPECT_LE(bytes, rows * 96 * 4 + 2 * rows * 4 + rows / 64 * 4 + 4 * 256);
  a.workspace = fake(0x100000);
  a.workspace_bytes = bytes;
  auto const plan = flash3::plan_backward(a, shape, 90, 132);
  auto const* base = static_cast<char*>(a.workspace);
  auto const off = [&](const void* p) { return static_cast<const char*>(p) - base; };
  EXPECT_EQ(off(plan.params.dq_accum), 0);
  EXPECT_GE(off(plan.params.lse_log2), rows * 96 * 4);
  EXPECT_GE(off(plan.params.dpsum), off(plan.params.lse_log2) + rows * 4);
  EXPECT_GE(off(plan.params.dq_semaphore), off(plan.params.dpsum) + rows * 4);
  EXPECT_LE(off(plan.params.dq_semaphore) + rows / 64 * 4, bytes);
  EXPECT_EQ(plan.params.scratch_rows, 1024);
  EXPECT_EQ(plan.params.head_dim_rounded, 96);
  EXPECT_EQ(plan.params.dk_row_stride, 2 * 72);
  EXPECT_EQ(plan.key.direction, flash3::Direction::kBackward);
  EXPECT_EQ(plan.key.head_dim, 96);
  EXPECT_EQ(plan.params.tile_counter, nullptr);  // the forward's scheduler counter is not the backward's business
}

TEST(BackwardDispatch, VarlenScratchLeavesEachSequenceItsPaddedRows) {
  // Per head, sequence b starts at (cu[b] + 128 b) rounded down to 128: room for its length rounded up to 128.
  flash3::BwdParams p{};
  std::vector<int32_t> cu = {0, 1, 130, 130, 500, 757};
  p.cu_seqlens_q = cu.data();
  p.num_heads = 3;
  p.scratch_rows = (757 + 128 * 6 + 127) / 128 * 128;
  for (int head = 0; head < 3; ++head) {
    for (int b = 0; b + 1 < int(cu.size()) - 1; ++b) {
      int64_t const len = cu[b + 1] - cu[b];
      int64_t const end = flash3::bwd_scratch_row(p, b, head) + (len + 127) / 128 * 128;
      EXPECT_LE(end, flash3::bwd_scratch_row(p, b + 1, head)) << "b=" << b;
      EXPECT_EQ(flash3::bwd_scratch_row(p, b, head) % 128, 0);
    }
    int const last = int(cu.size()) - 2;
    EXPECT_LE(flash3::bwd_scratch_row(p, last, head) + (cu[last + 1] - cu[last] + 127) / 128 * 128,
              (head + 1) * p.scratch_rows);
  }
}

TEST(BackwardDispatch, HeadDimsBeyond256AreNotSupported) {
  flash3::BackwardArgs a = backward_args(1, 64, 64, 2, 2, 64);
  auto shape = flash3::backward_problem_shape(a);
  shape.head_dim = shape.head_dim_v = 264;  // validation would reject it first; the dispatcher must too
  try {
    (void)flash3::backward_workspace_bytes(a, shape);
    FAIL() << "expected kNotSupported";
  } catch (const flash3::Error& e) {
    EXPECT_EQ(e.status(), flash3::Status::kNotSupported);
    EXPECT_NE(std::string(e.what()).find("head_dim = 264"), std::string::npos) << e.what();
  }
}
