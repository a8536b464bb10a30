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
//    contiguous). Cooperative kernels (BM = 256 or 384): both work on the same item; BN = 128:
//    consumer c owns features [64c, 64c + 64) x all BM tokens; BN = 64: both own the 64
//    features and split the tokens. Ping-pong kernels (BM = 128): the two take alternate
//    items, their main loops ordered by two "turn" mbarriers. Epilogue (bias,
//    activation, store through col_map) while the producer already fills the ring for
//    the next item, one of three ways (the host's store mode): bulk tensor stores of
//    whole tile blocks staged in shared memory (epilogue_tma), whole row segments of a
//    row-major out, pruned-away features included (epilogue_span), or straight from
//    the accumulator registers (epilogue).
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

// Diagnosis switches (bench/profile_tile.py builds variants with -D; never set in the
// shipped library): each removes one stage so its cost shows as a time difference.
// Results are WRONG with any of them set.
#ifndef SFX_DIAG_NO_FENCE
#define SFX_DIAG_NO_FENCE 0   // consumers skip fence.proxy.async after the full wait
#endif
#ifndef SFX_DIAG_NO_GATHER
#define SFX_DIAG_NO_GATHER 0  // producer issues no x cp.async (weights by TMA only)
#endif
#ifndef SFX_DIAG_NO_STORE
#define SFX_DIAG_NO_STORE 0   // epilogue computes but does not store (never true at run time)
#endif
#ifndef SFX_DIAG_NO_W
#define SFX_DIAG_NO_W 0       // producer issues no weight TMA (x gather only)
#endif
#ifndef SFX_DIAG_NO_MMA
#define SFX_DIAG_NO_MMA 0     // consumers issue no wgmma
#endif
#ifndef SFX_DIAG_NO_EPILOGUE
#define SFX_DIAG_NO_EPILOGUE 0  // consumers skip every epilogue (nothing is written)
#endif
#ifndef SFX_DIAG_FP16_ONLY
#define SFX_DIAG_FP16_ONLY 0  // instantiate only the fp16 kernels (faster variant builds)
#endif

namespace sfx_sm90 {

constexpr int BK = 64;                 // packed rows per K-step
constexpr int CHUNK_BYTES = BK * 128;  // one [64 rows x 64 elements] swizzled chunk: 8 KB
constexpr int THREADS = 384;           // producer warpgroup + 2 consumer warpgroups

struct Params {
  CUtensorMap w_map;        // values [R, G]: box 64 rows x 64 columns, 128B swizzle
  CUtensorMap out_map;      // tma_out == 1: out [n_out, M] (feature-major), box 64 rows x
                            // 64 tokens; == 2: out [M, n_out] (row-major), box 64 tokens
                            // x 64 features; 128B swizzle
  const uint16_t* x;        // [K, M], tokens contiguous, row stride stride_xk elements
  void* out;                // element (col, m) at col * stride_on + m * stride_om
  const void* bias;         // [N] of the element type, or null
  const int* row_idx;       // [R]
  const int* col_map;       // [N_kept]
  const int4* items;        // [n_items] (first packed row, k_t, t*G + n0, M-block)
  const int* progs;         // [num_progs, 2] (first item, total K-steps)
  long long stride_xk, stride_on, stride_om;
  const int* out_pos;       // [n_out] position of each output feature in col_map, -1
                            // for a pruned-away one (tma_out == 3 only)
  long long n_out;          // output features
  int n_items, num_progs, M, n_kept, G, act;
  int tma_out;              // epilogue through shared memory: bulk tensor stores of a
                            // 1 feature-major, 2 row-major out; 3 row-major out by row
                            // spans (epilogue_span); 0 direct stores
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

// Bulk tensor store of a [64 rows x 64 tokens] swizzled shared-memory box to (c0 = token,
// c1 = row) of the tensor map; coordinates past the tensor's extent are not written.
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, uint32_t src, int c0,
                                             int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(src), "r"(c0), "r"(c1)
      : "memory");
}

__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

// wait until at most N of this thread's bulk store groups still read shared memory
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

// barrier of the 128 threads of one consumer warpgroup (ids 1, 2; 0 is __syncthreads)
__device__ __forceinline__ void warpgroup_bar(int id) {
  asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory");
}

__device__ __forceinline__ void st_shared_b32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

__device__ __forceinline__ void st_shared_b16(uint32_t addr, uint16_t v) {
  asm volatile("st.shared.b16 [%0], %1;" ::"r"(addr), "h"(v) : "memory");
}

// No "memory" clobber: the compiler may overlap these loads with global stores; volatile
// keeps them in order with the other asm statements (the barriers and shared stores that
// fill the buffer).
__device__ __forceinline__ uint16_t ld_shared_b16(uint32_t addr) {
  uint16_t v;
  asm volatile("ld.shared.b16 %0, [%1];" : "=h"(v) : "r"(addr));
  return v;
}

// 16 bytes, or 16 zero bytes when `zero` (the source is then not read).
__device__ __forceinline__ void cp_async16_or_zero(uint32_t dst, const void* src, bool zero) {
  asm volatile(
      "{\n.reg .pred z;\nsetp.ne.b32 z, %2, 0;\n"
      "cp.async.cg.shared.global [%0], [%1], 16, z;\n}\n" ::"r"(dst),
      "l"(src), "r"(static_cast<int>(zero))
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

// GELU without erf (sparsefx/runtime/gelu_polynomial.py says why and how accurate:
// within 1.3e-5 of the exact erf form): Phi(-|y|) = 2^P(min(|y|, 9)) with P the degree-8
// fit kGeluLog2Phi, then y * Phi(y). About 13 instructions and one ex2, no branch, where
// erff took about 25; the epilogue applies it to every output element (round 19).
// Same operations in the same order as triton_tile._gelu.
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float gelu(float y) {
  constexpr float kGeluLog2Phi[9] = {-0.999996542930603f, -1.1512953042984009f,
                                     -0.45824098587036133f, -0.054305121302604675f,
                                     0.008751066401600838f, -0.001020095543935895f,
                                     7.944382377900183e-05f, -3.656212584246532e-06f,
                                     7.464503681831047e-08f};
  constexpr float kGeluClamp = 9.0f;
  const float a = fminf(fabsf(y), kGeluClamp);
  float p = kGeluLog2Phi[8];
#pragma unroll
  for (int i = 7; i >= 0; --i) p = fmaf(p, a, kGeluLog2Phi[i]);
  const float e = ex2_approx(p);  // Phi(-|y|)
  return y * (y >= 0.0f ? 1.0f - e : e);
}

template <int ACT>
__device__ __forceinline__ float activate(float y) {
  if constexpr (ACT == 1) return fmaxf(y, 0.0f);
  if constexpr (ACT == 2) return gelu(y);
  // fast division (rcp + mul): an IEEE division is a called subroutine; 1 + e^-y = inf
  // (y < -88) gives -0, as SiLU's limit
  if constexpr (ACT == 3) return __fdividef(y, 1.0f + __expf(-y));
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
  // diagnosis only: skip the whole epilogue (a run-time test, so the code still compiles)
  if (SFX_DIAG_NO_STORE && p.act != 99) return;
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

// Write sub-block s (tokens [64s, 64s + 64)) of a warpgroup's [64 features x WG_N
// tokens] accumulator, bias and activation applied, into an 8 KB shared-memory box laid
// out [token][feature] with the 128-byte swizzle of epilogue_tma's row-major boxes (a
// warp's 2-byte writes land in distinct 16-byte bank groups). b[i]: the bias of the
// thread's feature rows i = 0, 1.
template <typename T, int ACT>
__device__ __forceinline__ void stage_token_rows(const float* acc, const float* b, int s,
                                                 int warp, int lane, uint32_t buf) {
#pragma unroll
  for (int jj = 0; jj < 8; ++jj) {
    const int j = 8 * s + jj;
    const int t = 8 * jj + 2 * (lane & 3);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int fr = 16 * warp + (lane >> 2) + 8 * i;  // feature within the block
      const uint32_t pair = Cvt<T>::pack2(activate<ACT>(acc[4 * j + 2 * i] + b[i]),
                                          activate<ACT>(acc[4 * j + 2 * i + 1] + b[i]));
      const uint32_t col = 2 * (fr & 7);
      st_shared_b16(buf + t * 128 + (((fr >> 3) ^ (t & 7)) << 4) + col,
                    static_cast<uint16_t>(pair & 0xffffu));
      st_shared_b16(buf + (t + 1) * 128 + (((fr >> 3) ^ ((t + 1) & 7)) << 4) + col,
                    static_cast<uint16_t>(pair >> 16));
    }
  }
}

// Bias of the two feature rows a thread's accumulator holds in the 64-feature block
// starting at col_map position jb (0 past the kept features or without a bias).
template <typename T>
__device__ __forceinline__ void block_bias(const Params& p, int jb, int warp, int lane,
                                           float* b) {
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int jg = jb + 16 * warp + (lane >> 2) + 8 * i;
    b[i] = bias != nullptr && jg < p.n_kept ? Cvt<T>::to_f(bias[p.col_map[jg]]) : 0.0f;
  }
}

// Epilogue through shared memory (tma_out): the warpgroup's [64 features x WG_N tokens]
// block goes out as WG_N / 64 bulk tensor stores of 64 x 64 boxes, staged in two 8 KB
// buffers per warpgroup, 128B-swizzled like the tensor map's box: feature-major out
// (box [64 features][64 tokens]) takes 4-byte token pairs, row-major out (box [64
// tokens][64 features]) 2-byte elements; either way a warp's writes land in distinct
// 16-byte bank groups. The stores complete in the
// background while the warpgroup starts its next item: the direct-store epilogue held both
// cooperative warpgroups for its whole duration (bench/NOTES_tile.md round 4: 22% of the
// time at 75% sparsity, 44% at 90%). Requires (host): 16-byte aligned rows of out, each
// tile's features one contiguous run, and an edge tile's padding features past the last
// one, where the tensor map clips them (TilePlan.tma_store_ok); for a row-major out also
// 16-byte aligned tile starts (the box's innermost coordinate; an unaligned one faults
// with an illegal instruction).
template <typename T, int WG_N, int ACT>
__device__ __forceinline__ void epilogue_tma(const Params& p, const float* acc, int feat0,
                                             int tok0, int j0, int warp, int lane,
                                             uint32_t obuf, int& oring, int wg_tid, int bar) {
  const int jb = j0 + feat0;  // first feature (col_map position) of the 64-row block
  if (jb >= p.n_kept) return;  // block wholly in an edge tile's padding: nothing to store
  const T* bias = static_cast<const T*>(p.bias);
  const int row0 = p.col_map[jb];
  float b[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int jg = jb + 16 * warp + (lane >> 2) + 8 * i;
    b[i] = bias != nullptr && jg < p.n_kept ? Cvt<T>::to_f(bias[p.col_map[jg]]) : 0.0f;
  }
#pragma unroll
  for (int s = 0; s < WG_N / 64; ++s) {
    const uint32_t buf = obuf + (oring & 1) * 8192u;
    ++oring;
    if (wg_tid == 0) bulk_wait_read<1>();  // the store that last read `buf` is done with it
    warpgroup_bar(bar);
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const int j = 8 * s + jj;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int fr = 16 * warp + (lane >> 2) + 8 * i;  // feature within the block
        const float v0 = activate<ACT>(acc[4 * j + 2 * i] + b[i]);
        const float v1 = activate<ACT>(acc[4 * j + 2 * i + 1] + b[i]);
        if (p.tma_out == 1) {  // [feature][token]: chunk jj of row fr holds tokens 8jj..
          st_shared_b32(buf + fr * 128 + ((jj ^ (fr & 7)) << 4) + 4 * (lane & 3),
                        Cvt<T>::pack2(v0, v1));
        } else {               // [token][feature]: chunk fr / 8 of row t
          const int t = 8 * jj + 2 * (lane & 3);
          const uint32_t col = 2 * (fr & 7);
          const uint32_t pair = Cvt<T>::pack2(v0, v1);
          st_shared_b16(buf + t * 128 + (((fr >> 3) ^ (t & 7)) << 4) + col,
                        static_cast<uint16_t>(pair & 0xffffu));
          st_shared_b16(buf + (t + 1) * 128 + (((fr >> 3) ^ ((t + 1) & 7)) << 4) + col,
                        static_cast<uint16_t>(pair >> 16));
        }
      }
    }
    fence_proxy_async();  // generic-proxy writes, read next by the bulk copy (async proxy)
    warpgroup_bar(bar);
    if (wg_tid == 0) {
      if (p.tma_out == 1)
        tma_store_2d(&p.out_map, buf, tok0 + 64 * s, row0);
      else
        tma_store_2d(&p.out_map, buf, row0, tok0 + 64 * s);
      bulk_commit();
    }
  }
}

// What one lane writes of a 64-feature chunk of a row segment (epilogue_span): features
// f and f + 1. Returns their columns in the staged box, each + 2 in one byte (byte e:
// feature f + e; kNone outside the owned range [lo, hi), kFill for a pruned feature).
// Packed, so that two chunks' columns take one register while the accumulators are live.
constexpr int kNone = -2, kFill = -1;
__device__ __forceinline__ uint32_t lane_columns(const Params& p, int f, int lo, int hi,
                                                 int jb) {
  uint32_t cols = 0;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const bool in = f + e >= lo && f + e < hi;
    const int pos = in ? p.out_pos[f + e] : 0;
    const int col = !in ? kNone : pos >= 0 ? pos - jb : kFill;
    cols |= static_cast<uint32_t>(col + 2) << (8 * e);
  }
  return cols;
}

// The value of lane_columns' pruned features f + e: act(bias) (act(0) without a bias),
// its bits in half e.
template <typename T, int ACT>
__device__ __forceinline__ uint32_t lane_fill(const Params& p, int f, uint32_t cols) {
  const T* bias = static_cast<const T*>(p.bias);
  uint32_t fill = 0;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const bool pruned = static_cast<int>((cols >> (8 * e)) & 0xffu) - 2 == kFill;
    const float y = pruned && bias != nullptr ? Cvt<T>::to_f(bias[f + e]) : 0.0f;
    fill |= (Cvt<T>::pack2(activate<ACT>(y), 0.0f) & 0xffffu) << (16 * e);
  }
  return fill;
}

// Warp `warp`'s token rows (warp, warp + 4, ...) of the staged box `buf` (sub-block
// starting at token tok_s), features f and f + 1 of each (lane_columns, lane_fill).
__device__ __forceinline__ void store_lane_rows(const Params& p, uint32_t buf, int tok_s,
                                                int warp, int f, uint32_t cols,
                                                uint32_t fill, bool pairs) {
  uint16_t* out = static_cast<uint16_t*>(p.out);
  const int col[2] = {static_cast<int>(cols & 0xffu) - 2,
                      static_cast<int>((cols >> 8) & 0xffu) - 2};
  const bool both = pairs && col[0] != kNone && col[1] != kNone;
  // one row at a time: unrolled by 4 (several rows' loads in flight) measured 3-10%
  // slower (bench/NOTES_tile.md round 18)
#pragma unroll 1
  for (int q = 0; q < 16; ++q) {
    const int r = warp + 4 * q;  // token row of the box
    const int m = tok_s + r;
    if (m >= p.M) continue;
    uint32_t v = fill;
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (col[e] >= 0)
        v = (v & (0xffff0000u >> (16 * e))) |
            (static_cast<uint32_t>(ld_shared_b16(buf + r * 128 +
                                                 (((col[e] >> 3) ^ (r & 7)) << 4) +
                                                 2 * (col[e] & 7)))
             << (16 * e));
    uint16_t* orow = out + m * p.stride_om;
    if (both) {
      *reinterpret_cast<uint32_t*>(orow + f) = v;
    } else {
      if (col[0] != kNone) orow[f] = static_cast<uint16_t>(v & 0xffffu);
      if (col[1] != kNone) orow[f + 1] = static_cast<uint16_t>(v >> 16);
    }
  }
}

// Row-major out that bulk stores cannot write (tma_out == 3): a tile's features are not
// one run (column pruning removed features among them) or do not start 16-byte aligned.
// The direct epilogue wrote such an out with 2-byte stores scattered over 64 rows
// (bench/NOTES_tile.md round 17: row-major layers with 10% of their features pruned ran
// 30-41% slower than unpruned ones), and a second kernel wrote the pruned features.
//
// Here the 64-feature block at col_map position jb owns the output features from its
// first one, col_map[jb] (0 for the first block), up to the next block's first one
// (n_out for the last block): its own features and the pruned ones between them. The
// blocks' ranges partition [0, n_out), so the kernel writes every output feature and no
// second kernel is needed. Each 64-token sub-block is staged in shared memory as
// [token][feature] (stage_token_rows); then each warp writes whole token rows of the
// owned range in chunks of 64 features, a lane two neighbouring features (one 4-byte
// store when both are in the range and the row allows it): a kept feature from shared
// memory (out_pos[f] - jb is its column there), a pruned one act(bias[f]) (act(0)
// without a bias), computed in fp32 as the tile kernels' epilogues compute it. Where a
// lane's features of the first two chunks (ranges up to 126 features) sit in the box
// is looked up once per item, not per sub-block. Two buffers per warpgroup and one barrier per sub-block: a
// warp that passed sub-block s+1's barrier knows every warp has finished reading
// sub-block s's rows, so it may overwrite that buffer with sub-block s+2.
template <typename T, int WG_N, int ACT>
__device__ __forceinline__ void epilogue_span(const Params& p, const float* acc, int feat0,
                                              int tok0, int j0, int warp, int lane,
                                              uint32_t obuf, int& oring, int bar) {
  const int jb = j0 + feat0;  // first col_map position of the 64-feature block
  if (jb >= p.n_kept) return;  // block wholly in an edge tile's padding: owns nothing
  const int lo = jb == 0 ? 0 : p.col_map[jb];
  const int hi = jb + 64 < p.n_kept ? p.col_map[jb + 64] : static_cast<int>(p.n_out);
  const bool pairs = (p.stride_om & 1) == 0 && (reinterpret_cast<uintptr_t>(p.out) & 3) == 0;
  const int f0 = (lo & ~1) + 2 * lane;  // this lane's first feature pair
  const uint32_t cols = lane_columns(p, f0, lo, hi, jb) |
                        lane_columns(p, f0 + 64, lo, hi, jb) << 16;
  float b[2];
  block_bias<T>(p, jb, warp, lane, b);
#pragma unroll  // acc is indexed by s: unrolled, it stays in registers
  for (int s = 0; s < WG_N / 64; ++s) {
    const uint32_t buf = obuf + (oring & 1) * 8192u;
    ++oring;
    stage_token_rows<T, ACT>(acc, b, s, warp, lane, buf);
    warpgroup_bar(bar);
    const int tok_s = tok0 + 64 * s;
    store_lane_rows(p, buf, tok_s, warp, f0, cols, lane_fill<T, ACT>(p, f0, cols), pairs);
    if ((lo & ~1) + 64 < hi)
      store_lane_rows(p, buf, tok_s, warp, f0 + 64, cols >> 16,
                      lane_fill<T, ACT>(p, f0 + 64, cols >> 16), pairs);
#pragma unroll 1
    for (int f = f0 + 128; f - 2 * lane < hi; f += 64) {  // ranges wider than 128
      const uint32_t more = lane_columns(p, f, lo, hi, jb);
      store_lane_rows(p, buf, tok_s, warp, f, more, lane_fill<T, ACT>(p, f, more), pairs);
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
  static constexpr int OUT_BYTES = 2 * 2 * 8192;  // two 8 KB store buffers per consumer
  static constexpr int SMEM = STAGES * STAGE_BYTES + OUT_BYTES + 1024 + (2 * STAGES + 2) * 8;
  static constexpr int NH = PP ? BN / 64 : 1;                     // m64 blocks per warpgroup
  static constexpr int WG_N = PP || BN == 64 ? (PP ? BM : BM / 2) : BM;  // tokens per warpgroup
  // wgmma N is at most 256: a warpgroup's 384 tokens (BM = 384) are two m64n192 MMAs
  static constexpr int MMA_N = WG_N > 256 ? WG_N / 2 : WG_N;
  static constexpr int ACC = NH * WG_N / 2;                       // fp32 registers
  // the producer gathers x in token blocks of GATHER_M (its thread layout needs BM / 8
  // pieces per row to divide 128 threads: 384-token rows go as three 128-token blocks)
  static constexpr int GATHER_M = BM > 256 ? 128 : BM;
  static_assert(BM % GATHER_M == 0 && WG_N % MMA_N == 0, "block shape");
  // 192 accumulators per consumer thread (BM = 384) need 232 registers there, which
  // leaves the producer 40 (128 x 40 + 256 x 232 <= 64K); the others keep 56 / 224 (the
  // producer spilled in its gather loop at 40, bench/NOTES_tile.md round 3)
  static constexpr int PRODUCER_REGS = ACC > 128 ? 40 : 56;
  static constexpr int CONSUMER_REGS = ACC > 128 ? 232 : 224;
};

template <typename T, int BN, int BM, int STAGES, bool PP>
__global__ void __launch_bounds__(THREADS, 1)
    tile_linear_sm90_kernel(const __grid_constant__ Params p) {
  using C = Cfg<BN, BM, STAGES, PP>;
  constexpr bool BF16 = std::is_same<T, __nv_bfloat16>::value;

  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t obufs = base + STAGES * C::STAGE_BYTES;  // epilogue store buffers
  const uint32_t bars = obufs + C::OUT_BYTES;
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
    // registers: 128 x PRODUCER_REGS + 256 x CONSUMER_REGS <= 64K (Cfg)
    if constexpr (C::PRODUCER_REGS == 40)
      asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    else
      asm volatile("setmaxnreg.dec.sync.aligned.u32 56;");
    // Thread (warp w, lane l) copies 16-byte piece q of rows r0 + i * ROWS_PER_PASS,
    // i < PASSES, of every K-step. A warp's threads need only 16 distinct row indices per
    // step: lanes 0..15 load them with one coalesced load, a step AHEAD of their use (the
    // index load is a dependent global load: issued just before the copies, its latency
    // was the producer's cost per step, bench/NOTES_tile.md round 4), and each pass takes
    // its index from the owning lane with a shuffle.
    constexpr int GATHER_M = C::GATHER_M;
    constexpr int GATHERS = BM / GATHER_M;  // token blocks per gathered row
    constexpr int PIECES = GATHER_M / 8;    // 16-byte pieces per row of a token block
    constexpr int ROWS_PER_PASS = 128 / PIECES;
    constexpr int PASSES = BK / ROWS_PER_PASS;
    static_assert((32 / PIECES) * PASSES <= 32, "one index per lane and step");
    const int lane = tid & 31;
    const int q = tid % PIECES;
    const int r0 = tid / PIECES;
    const int warp_r0 = (tid & ~31) / PIECES;  // first row of this warp's threads
    // row (within a K-step) whose index lane `lane` loads; -1: this lane loads none
    const int my_row = lane < (32 / PIECES) * PASSES
                           ? warp_r0 + lane / PASSES + ROWS_PER_PASS * (lane % PASSES)
                           : -1;
    const int src_lane0 = (lane / PIECES) * PASSES;  // lane that holds pass 0's index
    // shared-memory offset of pass i = dst_off[i & 1] + i * ROWS_PER_PASS * 128: the
    // 128-byte swizzle XORs the piece with (row & 7), which alternates with the pass
    // parity when ROWS_PER_PASS = 4 and is constant when it is 8
    uint32_t dst_off[2];
#pragma unroll
    for (int par = 0; par < 2; ++par) {
      const int r = r0 + par * ROWS_PER_PASS;
      dst_off[par] = (q / 8) * CHUNK_BYTES + r0 * 128 + (((q & 7) ^ (r & 7)) << 4);
    }
    const char* xbytes = reinterpret_cast<const char*>(p.x);
    const uint32_t row_bytes = static_cast<uint32_t>(p.stride_xk) * 2u;  // launcher: < 2^32
    // index of row `my_row` of the K-step at packed row `first_row` of an item with k_t
    // rows left from there (-1 past the tile's kept rows)
    auto load_index = [&](int first_row, int rows_left) -> int {
      return my_row >= 0 && my_row < rows_left ? __ldg(p.row_idx + first_row + my_row) : -1;
    };
    if (tid == 0) asm volatile("prefetch.tensormap [%0];" ::"l"(&p.w_map) : "memory");
    int stage = 0;
    uint32_t phase = 0;
    int4 next_item = first < last ? p.items[first] : make_int4(0, 0, 0, 0);
    int ahead = load_index(next_item.x, next_item.y);  // indices of the next K-step
    for (int it = first; it < last; ++it) {
      const int4 item = next_item;
      next_item = it + 1 < last ? p.items[it + 1] : make_int4(0, 0, 0, 0);
      const int start = item.x, k_t = item.y;
      const int n0 = item.z % p.G;
      // per token block g: the thread's source column and bytes within M
      uint32_t m_bytes[GATHERS];
      const char* xcol[GATHERS];
#pragma unroll
      for (int g = 0; g < GATHERS; ++g) {
        const int m = item.w * BM + g * GATHER_M + 8 * q;
        const int left = p.M - m;
        m_bytes[g] = left >= 8 ? 16u : (left > 0 ? 2u * left : 0u);
        xcol[g] = xbytes + 2ll * (left > 0 ? m : 0);
      }
      for (int k0 = 0; k0 < k_t; k0 += BK) {
        const int idx = ahead;
        // prefetch the next K-step's indices: this item's, or the next item's first
        if (k0 + BK < k_t) {
          ahead = load_index(start + k0 + BK, k_t - k0 - BK);
        } else {
          ahead = load_index(next_item.x, next_item.y);
        }
        mbar_wait(empty(stage), phase ^ 1);
        const uint32_t sA = base + stage * C::STAGE_BYTES;
        const uint32_t sB = sA + C::A_BYTES;
        if (tid == 0) {
          mbar_arrive_expect_tx(full(stage), SFX_DIAG_NO_W ? 0 : C::A_BYTES);
#pragma unroll
          for (int c = 0; c < BN / 64; ++c)
            if (!SFX_DIAG_NO_W)
              tma_load_2d(sA + c * CHUNK_BYTES, &p.w_map, full(stage), n0 + 64 * c, start + k0);
        }
        // Rows past k_t (index -1) are zero-filled, their address clamped to row 0 (a
        // valid one). Pieces wholly inside M copy 16 bytes or zeros (predicate form);
        // only the M tail needs the byte-count form. Each pass's row index is shuffled
        // once and serves every token block of the row.
        if (SFX_DIAG_NO_GATHER) {
        } else if (m_bytes[GATHERS - 1] == 16u) {  // the last block's, so every block's
#pragma unroll
          for (int i = 0; i < PASSES; ++i) {
            const int row = __shfl_sync(0xffffffffu, idx, src_lane0 + i);
            const uint32_t src_off = static_cast<uint32_t>(max(row, 0)) * row_bytes;
            const uint32_t dst = sB + dst_off[i & 1] + i * ROWS_PER_PASS * 128;
#pragma unroll
            for (int g = 0; g < GATHERS; ++g)
              cp_async16_or_zero(dst + g * (GATHER_M / 64) * CHUNK_BYTES,
                                 xcol[0] + 2 * g * GATHER_M + src_off, row < 0);
          }
        } else {
#pragma unroll
          for (int i = 0; i < PASSES; ++i) {
            const int row = __shfl_sync(0xffffffffu, idx, src_lane0 + i);
            const uint32_t src_off = static_cast<uint32_t>(max(row, 0)) * row_bytes;
            const uint32_t dst = sB + dst_off[i & 1] + i * ROWS_PER_PASS * 128;
#pragma unroll
            for (int g = 0; g < GATHERS; ++g)
              cp_async16(dst + g * (GATHER_M / 64) * CHUNK_BYTES, xcol[g] + src_off,
                         row >= 0 ? m_bytes[g] : 0u);
          }
        }
        // the barrier counts this thread's arrival once all its copies above have landed
        cp_async_arrive_noinc(full(stage));
        if (++stage == STAGES) {
          stage = 0;
          phase ^= 1;
        }
      }
      // an empty item issues no K-step: the indices prefetched for it belong to the
      // item after it
      if (k_t == 0) ahead = load_index(next_item.x, next_item.y);
    }
    cp_async_wait<0>();
  } else {
    // ================================================================ consumers
    if constexpr (C::CONSUMER_REGS == 232)
      asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    else
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
    int oring = 0;  // tma_out: store buffers this warpgroup has filled
    const int wg_tid = tid % 128;
    for (int it = first + (PP ? ci : 0); it < last; it += PP ? 2 : 1) {
      const int4 item = p.items[it];
      const int nsteps = (item.y + BK - 1) / BK;
      // 16-row MMA slices that hold kept rows in the item's last K-step (1..BK/16): the
      // rest of that step is zero rows, whose wgmmas would add nothing but time and power
      // (under sustained load the board power limit sets the clock: bench/NOTES_tile.md
      // round 12). Uniform across the warpgroup, as the wgmma predicate must be (shfl
      // from lane 0, like ci). With the predicate ptxas injects a warpgroup.arrive before
      // the wgmmas (info C7519; a branch instead did the same); it reports no wgmma
      // serialization, and the kernel measured as fast or faster (round 12).
      const int last_slices =
          __shfl_sync(0xffffffffu, (item.y - (nsteps - 1) * BK + 15) / 16, 0);
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
        if (!SFX_DIAG_NO_FENCE) fence_proxy_async();
        const uint32_t s0 = base + stage * C::STAGE_BYTES;
        fence_regs<C::ACC>(acc);
        wgmma_fence();
        // the last K-step of an item issues only its slices with kept rows
        const int slices = ks + 1 < nsteps ? BK / 16 : last_slices;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
          for (int h = 0; h < NH; ++h) {
            // 16 K-rows = two 8-row groups of 1024 bytes
#pragma unroll
            for (int part = 0; part < WG_N / C::MMA_N; ++part)
              if (!SFX_DIAG_NO_MMA)
                Wgmma<C::MMA_N, BF16>::mma(
                    acc + h * (WG_N / 2) + part * (C::MMA_N / 2),
                    make_desc(s0 + a_off + h * CHUNK_BYTES + kk * 2048),
                    make_desc(s0 + b_off + part * (C::MMA_N / 64) * CHUNK_BYTES + kk * 2048),
                    (ks > 0 || kk > 0) ? 1 : 0, kk < slices);
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
      if (SFX_DIAG_NO_EPILOGUE) continue;
      const int tok0 = item.w * BM + (!PP && BN == 64 ? ci * WG_N : 0);
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        const float* a = acc + h * (WG_N / 2);
        const int f0 = feat0 + 64 * h;
        if (p.tma_out == 3) {
          const uint32_t ob = obufs + ci * 16384u;
          switch (p.act) {
            case 1: epilogue_span<T, WG_N, 1>(p, a, f0, tok0, item.z, warp, lane, ob, oring, 1 + ci); break;
            case 2: epilogue_span<T, WG_N, 2>(p, a, f0, tok0, item.z, warp, lane, ob, oring, 1 + ci); break;
            case 3: epilogue_span<T, WG_N, 3>(p, a, f0, tok0, item.z, warp, lane, ob, oring, 1 + ci); break;
            default: epilogue_span<T, WG_N, 0>(p, a, f0, tok0, item.z, warp, lane, ob, oring, 1 + ci); break;
          }
          continue;
        }
        if (p.tma_out) {
          const uint32_t ob = obufs + ci * 16384u;
          switch (p.act) {
            case 1: epilogue_tma<T, WG_N, 1>(p, a, f0, tok0, item.z, warp, lane, ob, oring, wg_tid, 1 + ci); break;
            case 2: epilogue_tma<T, WG_N, 2>(p, a, f0, tok0, item.z, warp, lane, ob, oring, wg_tid, 1 + ci); break;
            case 3: epilogue_tma<T, WG_N, 3>(p, a, f0, tok0, item.z, warp, lane, ob, oring, wg_tid, 1 + ci); break;
            default: epilogue_tma<T, WG_N, 0>(p, a, f0, tok0, item.z, warp, lane, ob, oring, wg_tid, 1 + ci); break;
          }
          continue;
        }
        switch (p.act) {
          case 1: epilogue<T, WG_N, 1>(p, a, f0, tok0, item.z, warp, lane); break;
          case 2: epilogue<T, WG_N, 2>(p, a, f0, tok0, item.z, warp, lane); break;
          case 3: epilogue<T, WG_N, 3>(p, a, f0, tok0, item.z, warp, lane); break;
          default: epilogue<T, WG_N, 0>(p, a, f0, tok0, item.z, warp, lane); break;
        }
      }
    }
    // the shared-memory buffers must outlive the bulk stores that read them
    if ((p.tma_out == 1 || p.tma_out == 2) && wg_tid == 0) bulk_wait_all();
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
  // cooperative [BN, 256] items, 4 stages (48 / 40 KB each); cooperative [128, 384]
  // items, 3 stages (64 KB each: a weight block serves 1.5x the tokens, so weights move
  // 2/3 of the L2 bytes, bench/NOTES_tile.md round 23); ping-pong [BN, 128] items, 6 / 8
  // stages (32 / 24 KB each); every kernel also holds 32 KB of store buffers
  if (block_n == 128 && block_m == 256) return launch<T, 128, 256, 4, false>(p, grid, stream);
  if (block_n == 128 && block_m == 384) return launch<T, 128, 384, 3, false>(p, grid, stream);
  if (block_n == 64 && block_m == 256) return launch<T, 64, 256, 4, false>(p, grid, stream);
  if (block_n == 128 && block_m == 128) return launch<T, 128, 128, 6, true>(p, grid, stream);
  if (block_n == 64 && block_m == 128) return launch<T, 64, 128, 8, true>(p, grid, stream);
  return -1;
}

}  // namespace sfx_sm90

// store: how the epilogue writes out. 0: straight from registers (features of col_map
// only); 1: bulk tensor stores of whole tile blocks where out's rows are 16-byte aligned
// (the host checked TilePlan.can_bulk_store), else as 0; 2: row-major out (stride_on
// == 1) by row spans, every output feature, pruned ones included (out_pos: [n_out] int32,
// each feature's position in col_map or -1).
// Error codes: 0 success; > 0 a cudaError_t; -1 unsupported arguments; -2 the driver
// has no cuTensorMapEncodeTiled; <= -1000: cuTensorMapEncodeTiled failed with
// CUresult (-code - 1000).
extern "C" int sfx_tile_linear_sm90(
    const void* x, long long stride_xk, const void* values, long long R, int G,
    const int* row_idx, const int* col_map, int n_kept, const void* bias, void* out,
    long long stride_on, long long stride_om, const int* items, const int* progs, int n_items,
    int num_progs, int M, int dtype, int act, int block_n, int block_m, long long n_out,
    int store, const int* out_pos, void* stream) {
  using namespace sfx_sm90;
  if (M <= 0 || n_items <= 0 || num_progs <= 0) return 0;
  if (G % 64 != 0 || G % block_n != 0 || (dtype != 0 && dtype != 1) || act < 0 || act > 3 ||
      stride_xk % 8 != 0 || (reinterpret_cast<uintptr_t>(x) & 15) != 0 ||
      (reinterpret_cast<uintptr_t>(values) & 15) != 0 || store < 0 || store > 2 ||
      (store == 2 && (stride_on != 1 || out_pos == nullptr || n_out <= 0 ||
                      n_out > 0x7fffffff)))
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
  // epilogue by bulk tensor stores: feature-major (tokens contiguous) or row-major
  // (features contiguous) out with 16-byte aligned rows
  const bool fm_out = stride_om == 1 && stride_on % 8 == 0;
  const bool rm_out = stride_on == 1 && stride_om % 8 == 0;
  if (store == 1 && (fm_out || rm_out) && n_out > 0 &&
      (reinterpret_cast<uintptr_t>(out) & 15) == 0) {
    int err = 0;
    EncodeFn encode = encode_fn(&err);
    if (err != 0) return err;
    // dims and strides innermost first: (tokens, features) or (features, tokens)
    cuuint64_t dims[2] = {static_cast<cuuint64_t>(fm_out ? M : n_out),
                          static_cast<cuuint64_t>(fm_out ? n_out : M)};
    cuuint64_t strides[1] = {static_cast<cuuint64_t>(fm_out ? stride_on : stride_om) * 2};
    cuuint32_t box[2] = {64, 64};
    cuuint32_t estr[2] = {1, 1};
    CUresult r = encode(&p.out_map, dt, 2, out, dims, strides, box, estr,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return -1000 - static_cast<int>(r);
    p.tma_out = fm_out ? 1 : 2;
  }
  p.x = static_cast<const uint16_t*>(x);
  p.out = out;
  p.bias = bias;
  p.row_idx = row_idx;
  p.col_map = col_map;
  p.out_pos = out_pos;
  p.n_out = n_out;
  if (store == 2) p.tma_out = 3;
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
#if SFX_DIAG_FP16_ONLY
  return dtype == 0 ? launch_typed<__half>(p, block_n, block_m, num_progs, s) : -1;
#else
  return dtype == 0 ? launch_typed<__half>(p, block_n, block_m, num_progs, s)
                    : launch_typed<__nv_bfloat16>(p, block_n, block_m, num_progs, s);
#endif
}

extern "C" const char* sfx_tile_linear_sm90_error(int code) {
  if (code == 0) return "no error";
  if (code == -1)
    return "unsupported arguments (G % 64, block sizes, alignment, dtype, store mode)";
  if (code == -2) return "the CUDA driver does not provide cuTensorMapEncodeTiled";
  if (code <= -1000) return "cuTensorMapEncodeTiled failed (CUresult = -code - 1000)";
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
