// Hopper (sm_90a) kernel for sparsefx::tile_linear, feature-major layout.
//
// For every work item (column block [n0, n0 + BN) of tile t, M-block mb) one CTA
// computes
//
//     acc[BN features, BM tokens] = values[rows of t, n0:n0+BN]^T @ x[row_idx[rows of t], mb]
//
// and stores act(acc + bias) into out[col_map[t*G + n0 + f], m] (fp32 accumulation).
//
// Structure (one CTA = 3 warpgroups, persistent):
//  * warpgroup 0, producer (setmaxnreg.dec): per K-step of 64 packed rows it
//    - loads the weight block values[start + k0 : +64, n0 : n0 + BN] with TMA (box 64x64,
//      128-byte swizzle; rows past R are zero-filled by TMA, rows past k_t belong to the
//      next tile and are cancelled by zero x rows, below);
//    - gathers the 64 kept x rows (each a contiguous M-vector) with 16-byte cp.async into
//      the same 128-byte-swizzled layout; rows past k_t and tokens past M are zero-filled
//      (cp.async src-size 0);
//    - signals the stage's full barrier with cp.async.mbarrier.arrive.noinc (the arrival
//      lands when the thread's copies have), so it never waits for its own copies; the
//      consumers fence the generic->async proxy (wgmma reads smem through the async
//      proxy) after the barrier wait.
//  * warpgroups 1 and 2, consumers (setmaxnreg.inc): wgmma m64nNk16 with both operands
//    MN-major from shared memory (A = W^T: features contiguous; B = x rows: tokens
//    contiguous). Cooperative kernels (BM = 256): both work on the same item; BN = 128:
//    consumer c owns features [64c, 64c + 64) x all BM tokens; BN = 64: both own the 64
//    features and split the tokens. Ping-pong kernels (BM = 128): the two take alternate
//    items, their main loops ordered by two "turn" mbarriers. Epilogue (bias,
//    activation, store through col_map) straight from the accumulator registers, while
//    the producer already fills the ring for the next item.
//  * STAGES-deep ring of (full, empty) mbarrier pairs; the work list is the host's static
//    longest-first list schedule (TilePlan.schedule_for): items = (first packed row, k_t,
//    t*G + n0, M-block), progs[b] = (first item of CTA b, total K-steps).
//
// Empty tiles (k_t = 0) run only the epilogue: their columns get act(bias) (or act(0)).
// Requirements checked by the Python launcher: x row stride a multiple of 8 elements and
// x, values 16-byte aligned; G a multiple of 64.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "sm90_wgmma.cuh"

namespace sfx_sm90 {

constexpr int BK = 64;                 // packed rows per K-step
constexpr int CHUNK_BYTES = BK * 128;  // one [64 rows x 64 elements] swizzled chunk: 8 KB
constexpr int THREADS = 384;           // producer warpgroup + 2 consumer warpgroups

struct Params {
  CUtensorMap w_map;        // values [R, G]: box 64 rows x 64 columns, 128B swizzle
  const uint16_t* x;        // [K, M], tokens contiguous, row stride stride_xk elements
  void* out;                // element (col, m) at col * stride_on + m * stride_om
  const void* bias;         // [N] of the element type, or null
  const int* row_idx;       // [R]
  const int* col_map;       // [N_kept]
  const int4* items;        // [n_items] (first packed row, k_t, t*G + n0, M-block)
  const int* progs;         // [num_progs, 2] (first item, total K-steps)
  long long stride_xk, stride_on, stride_om;
  int n_items, num_progs, M, n_kept, G, act;
};

// ------------------------------------------------------------------ PTX helpers
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                            int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}

// Arrive on the mbarrier when all of this thread's prior cp.async have completed; noinc:
// the arrival is one of those the barrier was initialised to expect.
__device__ __forceinline__ void cp_async_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

template <int R>
__device__ __forceinline__ void fence_regs(float* acc) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}

// Matrix descriptor of an MN-major operand in 128B-swizzled [64 rows x 64 elements]
// chunks: LBO = distance between 64-element chunks along MN, SBO = between 8-row groups
// along K; layout type 1 = 128B swizzle.
__device__ __forceinline__ uint64_t make_desc(uint32_t saddr) {
  uint64_t d = static_cast<uint64_t>((saddr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(CHUNK_BYTES >> 4) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

template <typename T>
struct Cvt;
template <>
struct Cvt<__half> {
  static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ uint32_t pack2(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ __half from_f(float a) { return __float2half_rn(a); }
};
template <>
struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ uint32_t pack2(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ __nv_bfloat16 from_f(float a) {
    return __float2bfloat16_rn(a);
  }
};

template <int ACT>
__device__ __forceinline__ float activate(float y) {
  if constexpr (ACT == 1) return fmaxf(y, 0.0f);
  if constexpr (ACT == 2) return 0.5f * y * (1.0f + erff(y * 0.7071067811865476f));
  if constexpr (ACT == 3) return y / (1.0f + __expf(-y));
  return y;
}

// ------------------------------------------------------------------ epilogue
// Accumulator layout of wgmma m64nN (per warpgroup): thread (warp w, lane l) holds rows
// 16w + l/4 + 8i and columns 8j + 2(l%4) + {0, 1} in acc[4j + 2i + {0, 1}].
template <typename T, int WG_N, int ACT>
__device__ __forceinline__ void epilogue(const Params& p, const float* acc, int feat0, int tok0,
                                         int j0, int warp, int lane) {
  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  const bool vec = p.stride_om == 1 && (p.stride_on & 1) == 0 &&
                   (reinterpret_cast<uintptr_t>(out) & 3) == 0;
  const int tok_base = tok0 + 2 * (lane & 3);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int jg = j0 + feat0 + 16 * warp + (lane >> 2) + 8 * i;
    if (jg >= p.n_kept) continue;  // padding column of the edge tile
    const long long col = p.col_map[jg];
    const float b = bias != nullptr ? Cvt<T>::to_f(bias[col]) : 0.0f;
    T* orow = out + col * p.stride_on;
    if (vec) {
#pragma unroll
      for (int j = 0; j < WG_N / 8; ++j) {
        const int m = tok_base + 8 * j;
        const float v0 = activate<ACT>(acc[4 * j + 2 * i] + b);
        const float v1 = activate<ACT>(acc[4 * j + 2 * i + 1] + b);
        if (m + 1 < p.M) {
          *reinterpret_cast<uint32_t*>(orow + m) = Cvt<T>::pack2(v0, v1);
        } else if (m < p.M) {
          orow[m] = Cvt<T>::from_f(v0);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < WG_N / 8; ++j) {
        const int m = tok_base + 8 * j;
        if (m < p.M)
          orow[m * p.stride_om] = Cvt<T>::from_f(activate<ACT>(acc[4 * j + 2 * i] + b));
        if (m + 1 < p.M)
          orow[(m + 1) * p.stride_om] =
              Cvt<T>::from_f(activate<ACT>(acc[4 * j + 2 * i + 1] + b));
      }
    }
  }
}

// ------------------------------------------------------------------ kernel
// PP = false (cooperative): both consumer warpgroups work on the same item; BN = 128:
// warpgroup c owns features [64c, 64c + 64) and all BM tokens, BN = 64: both own the 64
// features and split the tokens. PP = true (ping-pong): the two consumer warpgroups take
// alternate items of the CTA's list and each computes a whole [BN, BM] item, so one
// warpgroup's epilogue overlaps the other's tensor-core work.
template <int BN, int BM, int STAGES, bool PP>
struct Cfg {
  static constexpr int A_BYTES = BN / 64 * CHUNK_BYTES;
  static constexpr int B_BYTES = BM / 64 * CHUNK_BYTES;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int SMEM = STAGES * STAGE_BYTES + 1024 + (2 * STAGES + 2) * 8;
  static constexpr int NH = PP ? BN / 64 : 1;                     // m64 blocks per warpgroup
  static constexpr int WG_N = PP || BN == 64 ? (PP ? BM : BM / 2) : BM;  // tokens per wgmma
  static constexpr int ACC = NH * WG_N / 2;                       // fp32 registers
};

template <typename T, int BN, int BM, int STAGES, bool PP>
__global__ void __launch_bounds__(THREADS, 1)
    tile_linear_sm90_kernel(const __grid_constant__ Params p) {
  using C = Cfg<BN, BM, STAGES, PP>;
  constexpr bool BF16 = std::is_same<T, __nv_bfloat16>::value;

  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t bars = base + STAGES * C::STAGE_BYTES;
  auto full = [&](int s) { return bars + 8u * s; };
  auto empty = [&](int s) { return bars + 8u * (STAGES + s); };
  // ping-pong: turn(c) lets consumer warpgroup c start its next item's main loop
  auto turn = [&](int c) { return bars + 8u * (2 * STAGES + c); };

  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full(s), 128 + 1);  // 128 producer threads + the TMA expect_tx arrive
      mbar_init(empty(s), PP ? 4 : 8);  // one arrive per consuming warp
    }
    mbar_init(turn(0), 4);  // one arrive per warp of the other consumer warpgroup
    mbar_init(turn(1), 4);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  const int first = p.progs[2 * blockIdx.x];
  const int last = blockIdx.x + 1 < p.num_progs ? p.progs[2 * blockIdx.x + 2] : p.n_items;

  if (tid < 128) {
    // ================================================================ producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 56;");
    constexpr int PIECES = BM / 8;  // 16-byte pieces per gathered x row
    constexpr int ROWS_PER_PASS = 128 / PIECES;
    constexpr int PASSES = BK / ROWS_PER_PASS;
    const int q = tid % PIECES;
    const int r0 = tid / PIECES;
    const uint32_t piece_off = (q / 8) * CHUNK_BYTES;
    const int pc = q & 7;
    if (tid == 0) asm volatile("prefetch.tensormap [%0];" ::"l"(&p.w_map) : "memory");
    int stage = 0;
    uint32_t phase = 0;
    for (int it = first; it < last; ++it) {
      const int4 item = p.items[it];
      const int start = item.x, k_t = item.y;
      const int n0 = item.z % p.G;
      const int m = item.w * BM + 8 * q;
      const int left = p.M - m;
      const uint32_t m_bytes = left >= 8 ? 16u : (left > 0 ? 2u * left : 0u);
      const uint16_t* xcol = p.x + (left > 0 ? m : 0);
      const int* ridx = p.row_idx + start;
      for (int k0 = 0; k0 < k_t; k0 += BK) {
        // row indices first: their load latency overlaps the wait for a free stage
        int rows[PASSES];
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
          const int kk = k0 + r0 + i * ROWS_PER_PASS;
          rows[i] = kk < k_t ? __ldg(ridx + kk) : -1;
        }
        mbar_wait(empty(stage), phase ^ 1);
        const uint32_t sA = base + stage * C::STAGE_BYTES;
        const uint32_t sB = sA + C::A_BYTES;
        if (tid == 0) {
          mbar_arrive_expect_tx(full(stage), C::A_BYTES);
#pragma unroll
          for (int c = 0; c < BN / 64; ++c)
            tma_load_2d(sA + c * CHUNK_BYTES, &p.w_map, full(stage), n0 + 64 * c, start + k0);
        }
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
          const int r = r0 + i * ROWS_PER_PASS;
          const bool ok = rows[i] >= 0 && m_bytes != 0;
          const void* src = ok ? static_cast<const void*>(xcol + rows[i] * p.stride_xk)
                               : static_cast<const void*>(p.x);
          cp_async16(sB + piece_off + r * 128 + ((pc ^ (r & 7)) << 4), src, ok ? m_bytes : 0u);
        }
        // the barrier counts this thread's arrival once all its copies above have landed
        cp_async_arrive_noinc(full(stage));
        if (++stage == STAGES) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    cp_async_wait<0>();
  } else {
    // ================================================================ consumers
    asm volatile("setmaxnreg.inc.sync.aligned.u32 224;");
    constexpr int WG_N = C::WG_N;
    constexpr int NH = C::NH;
    // warp-uniform by construction (shfl from lane 0), so that ptxas sees the item loop
    // of a ping-pong warpgroup as non-divergent and does not serialize its wgmmas
    const int ci = __shfl_sync(0xffffffffu, tid / 128 - 1, 0);
    const int warp = (tid / 32) & 3;
    const int lane = tid & 31;
    // shared-memory offsets (within a stage) of this warpgroup's A and B operands
    const uint32_t a_off = (!PP && BN == 128 ? ci : 0) * CHUNK_BYTES;
    const uint32_t b_off = C::A_BYTES + (!PP && BN == 64 ? ci * (WG_N / 64) : 0) * CHUNK_BYTES;
    const int feat0 = !PP && BN == 128 ? 64 * ci : 0;
    float acc[C::ACC];
    // ring position: counts the K-steps of every item of the CTA's list in list order,
    // including (ping-pong) the partner warpgroup's items, which are skipped
    int step = 0;
    if (PP && ci == 1 && first < last) step = (p.items[first].y + BK - 1) / BK;
    int turns = 0;  // ping-pong: main loops this warpgroup has started
    for (int it = first + (PP ? ci : 0); it < last; it += PP ? 2 : 1) {
      const int4 item = p.items[it];
      const int nsteps = (item.y + BK - 1) / BK;
      if (nsteps == 0) {
#pragma unroll
        for (int i = 0; i < C::ACC; ++i) acc[i] = 0.0f;
      }
      // Ping-pong: the main loops of the two warpgroups alternate in list order. Without
      // this a warpgroup could wait on a full barrier for a K-step several ring laps
      // ahead of the producer, and the barrier's phase parity cannot tell laps apart.
      if (PP && (ci == 1 || turns > 0)) mbar_wait(turn(ci), (turns - (ci == 0)) & 1);
      ++turns;
      int prev = 0;
      for (int ks = 0; ks < nsteps; ++ks, ++step) {
        const int stage = step % STAGES;
        mbar_wait(full(stage), (step / STAGES) & 1);
        // the x rows were written by cp.async (generic proxy), wgmma reads through the
        // async proxy: order them after the barrier's acquire
        fence_proxy_async();
        const uint32_t s0 = base + stage * C::STAGE_BYTES;
        fence_regs<C::ACC>(acc);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
          for (int h = 0; h < NH; ++h) {
            // 16 K-rows = two 8-row groups of 1024 bytes
            Wgmma<WG_N, BF16>::mma(acc + h * (WG_N / 2),
                                   make_desc(s0 + a_off + h * CHUNK_BYTES + kk * 2048),
                                   make_desc(s0 + b_off + kk * 2048), (ks > 0 || kk > 0) ? 1 : 0);
          }
        }
        wgmma_commit();
        fence_regs<C::ACC>(acc);
        if (ks > 0) {
          wgmma_wait<1>();
          fence_regs<C::ACC>(acc);
          __syncwarp();
          if (lane == 0) mbar_arrive(empty(prev));
        }
        prev = stage;
      }
      if (PP) {  // every K-step of this item is issued: the partner may start its item
        __syncwarp();
        if (lane == 0) mbar_arrive(turn(ci ^ 1));
      }
      if (nsteps > 0) {
        wgmma_wait<0>();
        fence_regs<C::ACC>(acc);
        __syncwarp();
        if (lane == 0) mbar_arrive(empty(prev));
      }
      if (PP && it + 1 < last) step += (p.items[it + 1].y + BK - 1) / BK;  // partner's item
      const int tok0 = item.w * BM + (!PP && BN == 64 ? ci * WG_N : 0);
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        const float* a = acc + h * (WG_N / 2);
        const int f0 = feat0 + 64 * h;
        switch (p.act) {
          case 1: epilogue<T, WG_N, 1>(p, a, f0, tok0, item.z, warp, lane); break;
          case 2: epilogue<T, WG_N, 2>(p, a, f0, tok0, item.z, warp, lane); break;
          case 3: epilogue<T, WG_N, 3>(p, a, f0, tok0, item.z, warp, lane); break;
          default: epilogue<T, WG_N, 0>(p, a, f0, tok0, item.z, warp, lane); break;
        }
      }
    }
  }
}

// ------------------------------------------------------------------ host side
using EncodeFn = PFN_cuTensorMapEncodeTiled_v12000;

static EncodeFn encode_fn(int* err) {
  static EncodeFn fn = nullptr;
  static int status = 1;  // 1: not looked up yet
  if (status == 1) {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult q;
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000,
                                                     cudaEnableDefault, &q);
    if (e != cudaSuccess) {
      status = static_cast<int>(e);
    } else if (q != cudaDriverEntryPointSuccess || ptr == nullptr) {
      status = -2;
    } else {
      fn = reinterpret_cast<EncodeFn>(ptr);
      status = 0;
    }
  }
  *err = status;
  return fn;
}

template <typename T, int BN, int BM, int STAGES, bool PP>
static int launch(const Params& p, int grid, cudaStream_t stream) {
  using C = Cfg<BN, BM, STAGES, PP>;
  auto kernel = tile_linear_sm90_kernel<T, BN, BM, STAGES, PP>;
  static bool attr_done = false;  // one per instantiation
  if (!attr_done) {
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
    if (e != cudaSuccess) return static_cast<int>(e);
    attr_done = true;
  }
  kernel<<<grid, THREADS, C::SMEM, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
static int launch_typed(const Params& p, int block_n, int block_m, int grid,
                        cudaStream_t stream) {
  // cooperative [BN, 256] items, 4 stages (48 / 40 KB each); ping-pong [BN, 128] items,
  // 6 stages (32 / 24 KB each)
  if (block_n == 128 && block_m == 256) return launch<T, 128, 256, 4, false>(p, grid, stream);
  if (block_n == 64 && block_m == 256) return launch<T, 64, 256, 5, false>(p, grid, stream);
  if (block_n == 128 && block_m == 128) return launch<T, 128, 128, 6, true>(p, grid, stream);
  if (block_n == 64 && block_m == 128) return launch<T, 64, 128, 8, true>(p, grid, stream);
  return -1;
}

}  // namespace sfx_sm90

// Error codes: 0 success; > 0 a cudaError_t; -1 unsupported arguments; -2 the driver
// has no cuTensorMapEncodeTiled; <= -1000: cuTensorMapEncodeTiled failed with
// CUresult (-code - 1000).
extern "C" int sfx_tile_linear_sm90(
    const void* x, long long stride_xk, const void* values, long long R, int G,
    const int* row_idx, const int* col_map, int n_kept, const void* bias, void* out,
    long long stride_on, long long stride_om, const int* items, const int* progs, int n_items,
    int num_progs, int M, int dtype, int act, int block_n, int block_m, void* stream) {
  using namespace sfx_sm90;
  if (M <= 0 || n_items <= 0 || num_progs <= 0) return 0;
  if (G % 64 != 0 || G % block_n != 0 || (dtype != 0 && dtype != 1) || act < 0 || act > 3 ||
      stride_xk % 8 != 0 || (reinterpret_cast<uintptr_t>(x) & 15) != 0 ||
      (reinterpret_cast<uintptr_t>(values) & 15) != 0)
    return -1;
  Params p;
  memset(&p, 0, sizeof(p));
  const auto dt = dtype == 0 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  if (R > 0) {
    int err = 0;
    EncodeFn encode = encode_fn(&err);
    if (err != 0) return err;
    cuuint64_t dims[2] = {static_cast<cuuint64_t>(G), static_cast<cuuint64_t>(R)};
    cuuint64_t strides[1] = {static_cast<cuuint64_t>(G) * 2};
    cuuint32_t box[2] = {64, static_cast<cuuint32_t>(BK)};
    cuuint32_t estr[2] = {1, 1};
    CUresult r = encode(&p.w_map, dt, 2, const_cast<void*>(values), dims, strides, box, estr,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return -1000 - static_cast<int>(r);
  }
  p.x = static_cast<const uint16_t*>(x);
  p.out = out;
  p.bias = bias;
  p.row_idx = row_idx;
  p.col_map = col_map;
  p.items = reinterpret_cast<const int4*>(items);
  p.progs = progs;
  p.stride_xk = stride_xk;
  p.stride_on = stride_on;
  p.stride_om = stride_om;
  p.n_items = n_items;
  p.num_progs = num_progs;
  p.M = M;
  p.n_kept = n_kept;
  p.G = G;
  p.act = act;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return dtype == 0 ? launch_typed<__half>(p, block_n, block_m, num_progs, s)
                    : launch_typed<__nv_bfloat16>(p, block_n, block_m, num_progs, s);
}

extern "C" const char* sfx_tile_linear_sm90_error(int code) {
  if (code == 0) return "no error";
  if (code == -1) return "unsupported arguments (G % 64, block sizes, alignment, dtype)";
  if (code == -2) return "the CUDA driver does not provide cuTensorMapEncodeTiled";
  if (code <= -1000) return "cuTensorMapEncodeTiled failed (CUresult = -code - 1000)";
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
