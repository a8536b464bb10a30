// Hopper (sm_90a) dense GEMM for feature-major layers, built from CUTLASS 3 collectives:
//
//     y[N, M] = act(W[N, K] @ x[K, M] + bias[N, None])      (fp32 accumulation)
//
// Why it exists: kernel choice runs a layer dense when sparse is not faster, and for a
// feature-major layer the bias runs along y's first dimension. cuBLAS(Lt) fuses a bias
// only along the last one (NOTES_tile round 8: the heuristic rejects every other form),
// so `addmm(b[:, None], W, x)` writes the broadcast bias and reads it back; with that and
// the dense Triton kernel (bias fused) the feature-major dense fallback ran at 0.91-0.99x
// of row-major `F.linear` at 0% sparsity (RESULTS run 13).
// CUTLASS's epilogue visitor tree broadcasts a per-row bias in the epilogue (column
// broadcast of a [N] vector), so this is one GEMM with the bias and activation fused.
//
// In CUTLASS's terms: problem (M, N, K) = (features, tokens, in_features); A = W,
// K-major ("row-major"); B = x, MN-major ("row-major" K x N); D = y row-major; no C.
// Each configuration below is one kernel per dtype (the activation is a run-time
// argument of the epilogue); the launcher picks one by index (`sfx_dense_fm_sm90_config_name` lists them), kernel choice times them.
//
// Requirements (checked here, returned as error codes): M, K multiples of 8 (16-byte TMA
// rows), 16-byte aligned pointers.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace {

using namespace cute;

enum Error : int {
  kOk = 0,
  kBadConfig = 1,
  kBadDtype = 2,
  kBadActivation = 3,
  kUnaligned = 4,
  kCannotImplement = 5,
  kInitFailed = 6,
  kRunFailed = 7,
  kWorkspaceTooSmall = 8,
};

const char* error_text(int code) {
  switch (code) {
    case kOk: return "ok";
    case kBadConfig: return "unknown configuration index";
    case kBadDtype: return "dtype code must be 0 (float16) or 1 (bfloat16)";
    case kBadActivation: return "activation code must be 0..3 (none, relu, gelu, silu)";
    case kUnaligned: return "M and K must be multiples of 8 and pointers 16-byte aligned";
    case kCannotImplement: return "CUTLASS cannot implement this problem with this config";
    case kInitFailed: return "CUTLASS initialize() failed";
    case kRunFailed: return "CUTLASS kernel launch failed";
    case kWorkspaceTooSmall: return "workspace smaller than sfx_dense_fm_sm90_workspace says";
    default: return "unknown error";
  }
}

// The epilogue's activation, chosen at run time (one kernel per configuration and dtype
// instead of four): 0 none, 1 relu, 2 gelu (erf form, as torch.nn.functional.gelu),
// 3 silu. The code is uniform across the grid, so the switch costs no divergence.
template <class T>
struct RuntimeActivation {
  struct Arguments {
    int code = 0;
  };
  CUTLASS_HOST_DEVICE T operator()(T v, Arguments const& args) const {
    switch (args.code) {
      case 1: return v > T(0) ? v : T(0);
      case 2: return T(0.5f) * v * (T(1) + erff(v * T(0.70710678118654752f)));
      case 3: return v / (T(1) + expf(-v));
      default: return v;
    }
  }
};

template <class T, int N>
struct RuntimeActivation<cutlass::Array<T, N>> {
  using Arguments = typename RuntimeActivation<T>::Arguments;
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& v,
                                                      Arguments const& args) const {
    if (args.code == 0) return v;
    cutlass::Array<T, N> out;
    RuntimeActivation<T> scalar;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = scalar(v[i], args);
    return out;
  }
};

// One GEMM kernel: element type, activation, CTA tile (features x tokens x K), cluster,
// mainloop schedule, epilogue schedule, tile scheduler.
template <class Element, class TileShape,
          class ClusterShape, class MainloopSchedule, class EpilogueSchedule,
          class TileScheduler>
struct DenseFmGemm {
  using LayoutA = cutlass::layout::RowMajor;   // W [N, K]: K contiguous
  using LayoutB = cutlass::layout::RowMajor;   // x [K, M]: tokens contiguous
  using LayoutD = cutlass::layout::RowMajor;   // y [N, M]
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<Element>::value;

  using Fusion = cutlass::epilogue::fusion::LinCombPerRowBiasEltAct<
      RuntimeActivation, Element, float, Element, Element, float>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, LayoutD, kAlign,          // no C operand
      Element, LayoutD, kAlign, EpilogueSchedule, Fusion>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, LayoutA, kAlign,
      Element, LayoutB, kAlign, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop,
                                                      Epilogue, TileScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const void* w, const void* x, const void* bias,
                                            void* y, int N, int K, int M, int act,
                                            int sm_count) {
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    using StrideD = typename Kernel::StrideD;
    auto stride_a = cutlass::make_cute_packed_stride(StrideA{}, make_shape(N, K, 1));
    auto stride_b = cutlass::make_cute_packed_stride(StrideB{}, make_shape(M, K, 1));
    auto stride_d = cutlass::make_cute_packed_stride(StrideD{}, make_shape(N, M, 1));
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = sm_count;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {N, M, K, 1},
        {static_cast<const Element*>(w), stride_a, static_cast<const Element*>(x), stride_b},
        {{}, nullptr, stride_d, static_cast<Element*>(y), stride_d},
        hw};
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = 0.0f;
    args.epilogue.thread.bias_ptr = static_cast<const Element*>(bias);  // null: no bias
    args.epilogue.thread.activation.code = act;
    return args;
  }

  static size_t workspace(int N, int K, int M, int sm_count) {
    auto args = arguments(nullptr, nullptr, nullptr, nullptr, N, K, M, 0, sm_count);
    return Gemm::get_workspace_size(args);
  }

  static int run(const void* w, const void* x, const void* bias, void* y, int N, int K,
                 int M, int act, void* workspace, size_t workspace_bytes, int sm_count,
                 cudaStream_t stream) {
    auto args = arguments(w, x, bias, y, N, K, M, act, sm_count);
    if (Gemm::get_workspace_size(args) > workspace_bytes) return kWorkspaceTooSmall;
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return kCannotImplement;
    if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess)
      return kInitFailed;
    if (gemm.run(stream) != cutlass::Status::kSuccess) return kRunFailed;
    return kOk;
  }
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Pingpong = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingpongEpi = cutlass::epilogue::TmaWarpSpecialized;
using Persistent = cutlass::gemm::PersistentScheduler;

// The configurations: (name, tile, cluster, schedules). Names follow
// <features>x<tokens>x<k>/<schedule>[/c<CTAs per cluster along the features>]; they are
// stored in kernel choice's on-disk decisions, so a changed list needs a new
// KERNEL_VERSION in dispatch.py. Kept by measurement (H200, bench/NOTES_tile.md
// round 15): each was fastest on at least one bench_tile shape. 128x192 tiles make 132
// work items (one per SM) at N = 768, M = 4096; 192x128 ping-pong fits N = 3072, K = 768;
// the 2-CTA cluster (weight tile multicast) the large shapes. Tried and dropped there:
// 128x256 and 256x128 without a cluster, 128x128 cooperative, stream-K 128x128,
// 64x256 and 64x192 and 128x192 ping-pong, 128x192 in 2-CTA clusters (0.54-1.00x of
// F.linear, never the fastest).
#define SFX_DENSE_FM_CONFIGS(X)                                                           \
  X("128x256x64/coop/c2", Shape<_128 COMMA _256 COMMA _64>, Shape<_2 COMMA _1 COMMA _1>,  \
    Coop, CoopEpi, Persistent)                                                            \
  X("128x192x64/coop", Shape<_128 COMMA _192 COMMA _64>, Shape<_1 COMMA _1 COMMA _1>,     \
    Coop, CoopEpi, Persistent)                                                            \
  X("192x128x64/pingpong", Shape<_192 COMMA _128 COMMA _64>, Shape<_1 COMMA _1 COMMA _1>, \
    Pingpong, PingpongEpi, Persistent)                                                    \
  X("128x128x64/pingpong", Shape<_128 COMMA _128 COMMA _64>, Shape<_1 COMMA _1 COMMA _1>, \
    Pingpong, PingpongEpi, Persistent)

#define COMMA ,

template <class Element>
int run_config(int config, const void* w, const void* x, const void* bias, void* y, int N,
               int K, int M, int act, void* workspace, size_t workspace_bytes, int sm_count,
               cudaStream_t stream, size_t* workspace_query) {
  int index = 0;
#define SFX_RUN(NAME, TILE, CLUSTER, MAIN, EPI, SCHED)                                    \
  if (config == index++) {                                                                \
    using G = DenseFmGemm<Element, TILE, CLUSTER, MAIN, EPI, SCHED>;                      \
    if (workspace_query) {                                                                \
      *workspace_query = G::workspace(N, K, M, sm_count);                                 \
      return kOk;                                                                         \
    }                                                                                     \
    return G::run(w, x, bias, y, N, K, M, act, workspace, workspace_bytes, sm_count,      \
                  stream);                                                                \
  }
  SFX_DENSE_FM_CONFIGS(SFX_RUN)
#undef SFX_RUN
  return kBadConfig;
}

const char* const kConfigNames[] = {
#define SFX_NAME(NAME, ...) NAME,
    SFX_DENSE_FM_CONFIGS(SFX_NAME)
#undef SFX_NAME
};
constexpr int kConfigCount = sizeof(kConfigNames) / sizeof(kConfigNames[0]);

int dispatch(int config, int dtype, int act, const void* w, const void* x, const void* bias,
             void* y, int N, int K, int M, void* workspace, size_t workspace_bytes,
             int sm_count, cudaStream_t stream, size_t* workspace_query) {
  if (config < 0 || config >= kConfigCount) return kBadConfig;
  if (act < 0 || act > 3) return kBadActivation;
  if (M % 8 != 0 || K % 8 != 0) return kUnaligned;
  for (const void* p : {w, x, bias, static_cast<const void*>(y)})
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return kUnaligned;
  switch (dtype) {
    case 0: return run_config<cutlass::half_t>(config, w, x, bias, y, N, K, M, act,
                                               workspace, workspace_bytes, sm_count, stream,
                                               workspace_query);
    case 1: return run_config<cutlass::bfloat16_t>(config, w, x, bias, y, N, K, M, act,
                                                   workspace, workspace_bytes, sm_count,
                                                   stream, workspace_query);
    default: return kBadDtype;
  }
}

}  // namespace

extern "C" {

int sfx_dense_fm_sm90_config_count() { return kConfigCount; }

const char* sfx_dense_fm_sm90_config_name(int config) {
  return (config >= 0 && config < kConfigCount) ? kConfigNames[config] : nullptr;
}

const char* sfx_dense_fm_sm90_error(int code) { return error_text(code); }

// Bytes of device workspace the configuration needs for this problem (0 for most).
int sfx_dense_fm_sm90_workspace(int config, int dtype, int act, int N, int K, int M,
                                int sm_count, unsigned long long* bytes) {
  size_t query = 0;
  int rc = dispatch(config, dtype, act, nullptr, nullptr, nullptr, nullptr, N, K, M,
                    nullptr, 0, sm_count, nullptr, &query);
  *bytes = query;
  return rc;
}

// y = act(w @ x + bias) on `stream`; bias may be null. Returns 0 or an error code.
int sfx_dense_fm_sm90(int config, int dtype, int act, const void* w, const void* x,
                      const void* bias, void* y, int N, int K, int M, void* workspace,
                      unsigned long long workspace_bytes, int sm_count, void* stream) {
  return dispatch(config, dtype, act, w, x, bias, y, N, K, M, workspace, workspace_bytes,
                  sm_count, static_cast<cudaStream_t>(stream), nullptr);
}

}  // extern "C"
