// sparsefx::bias_residual_layernorm — y = LayerNorm((x + bias) + residual) in one pass.
//
// Layouts (sparsefx convention): row-major x, residual [M, N] normalise each row of N
// features; feature-major x, residual [N, M] (M tokens contiguous) normalise each column.
// The output layout may differ from the input layout (in_fm / out_fm): the transposed
// cases go through a swizzled shared-memory tile, so every global access stays coalesced.
//
// Kernels (statistics in fp32, output in the input dtype):
//   rows_warp_kernel   row-major input, N <= 2048 (N <= 512 when rows cannot be read as
//                      16-byte vectors): one warp per token row, the row in registers,
//                      two-pass mean / variance with warp shuffles. out_fm: a CTA owns BM
//                      tokens and writes [N, BM] through the tile.
//   rows_block_kernel  row-major input and output, longer rows: one CTA per row, block
//                      reductions; N <= 32768 (fp16/bf16) / 16384 (fp32) as 16-byte
//                      vectors, N <= 8192 element-wise.
//   cols_kernel        feature-major input: a CTA owns BM consecutive tokens (64 bytes of
//                      each feature row: 32 half / 16 float), reads [N, BM] with 16-byte
//                      vectors along M, reduces over N (per-thread partial sums, warp
//                      shuffles, then shared memory). RESIDENT: the whole [N, BM] block
//                      stays in registers (x and residual read once, exact two-pass
//                      statistics; N <= 1024 vectorised). Otherwise N is walked in tiles
//                      twice (shifted sums for the statistics, then normalise; the second
//                      read mostly hits L2).
//
// Plain C interface (no torch headers): raw pointers, sizes, a dtype code, flags, eps and
// a cudaStream_t. Inputs must be contiguous in their layout. Returns 0 (cudaSuccess), a
// CUDA error code, or BRLN_UNSUPPORTED when no kernel here covers the shape (the caller
// falls back to another implementation; nothing is launched then).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#define BRLN_UNSUPPORTED 10000

namespace brln {

enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

constexpr int kThreads = 256;   // CTA size of rows_warp_kernel and cols_kernel
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {   // exact: bf16 is fp32's top half
  return __uint_as_float(static_cast<unsigned>(__bfloat16_as_ushort(v)) << 16);
}
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// VEC elements moved as one access (16 bytes when VEC * sizeof(T) == 16). st() is for
// global memory only.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> ld(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}
template <typename T, int VEC>
__device__ __forceinline__ void st(T* p, const Pack<T, VEC>& v) {
  if constexpr (sizeof(Pack<T, VEC>) == 16) {   // one 16-byte store, never split
    union {
      Pack<T, VEC> pk;
      uint4 u;
    } cv;
    cv.pk = v;
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(cv.u.x), "r"(cv.u.y),
                 "r"(cv.u.z), "r"(cv.u.w));
  } else {
    *reinterpret_cast<Pack<T, VEC>*>(p) = v;
  }
}
// 16 bytes into shared memory (the transpose tile).
template <typename T>
__device__ __forceinline__ void st_shared16(T* p, const Pack<T, 16 / sizeof(T)>& v) {
  union {
    Pack<T, 16 / sizeof(T)> pk;
    uint4 u;
  } cv;
  cv.pk = v;
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(cv.u.x), "r"(cv.u.y),
               "r"(cv.u.z), "r"(cv.u.w)
               : "memory");
}

struct Params {
  const void* x;
  const void* r;
  const void* b;    // bias    [N] or null
  const void* w;    // weight  [N] or null
  const void* lb;   // ln_bias [N] or null
  void* y;
  long long tokens;  // M
  int n;             // N (features)
  int rs;            // row stride (elements) of the shared-memory transpose tile
  float eps;
  int out_vec;       // the transposed store phase may use 16-byte accesses
  int out_fm;        // output layout differs from the row-major input: [N, M]
};

// Geometry shared by every kernel for a dtype: E elements make 16 bytes; a CTA of the
// transposing / feature-major kernels owns BM = 4 * E tokens (64 bytes of a feature row).
template <typename T>
struct Geo {
  static constexpr int E = 16 / sizeof(T);
  static constexpr int BM = 4 * E;
  static constexpr int G = sizeof(T) / 2;   // 16-byte chunks spanned by 8 elements
};

// Transpose tile: [BM tokens][rs elements] of T in shared memory, tokens as rows. Rows are
// a multiple of 32 elements (so every row starts on the same bank, modulo a half-row for
// 16-bit types), and 16-byte chunks are XOR-swizzled by the token group: the column
// gathers (8 consecutive features x 4 token groups per warp) and the row-wise 16-byte
// accesses are both free of bank conflicts.
template <typename T>
__device__ __forceinline__ int tile_idx(int t, int j, int rs) {
  constexpr int E = Geo<T>::E;
  const int key = ((t / E) & 3) * Geo<T>::G;
  return t * rs + (((j / E) ^ key) * E) + (j % E);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the whole CTA, returned to every thread. red: >= 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();   // a previous call's readers are done with red
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : 0.f;
  return warp_sum(v);
}

// ------------------------------------------------------------------ row-major input
// x + bias + residual of one row-major token row, held as h[NV][VEC] (element
// (j * nthreads + tid) * VEC + k): nthreads threads share the row (32 for a warp, a
// compile-time constant once inlined; blockDim.x for a CTA). Masked entries are 0.
template <typename T, int VEC, int NV>
__device__ __forceinline__ void load_row(const Params& p, long long row, int tid,
                                         int nthreads, float (&h)[NV][VEC]) {
  const int n = p.n;
  const T* xr = static_cast<const T*>(p.x) + row * n;
  const T* rr = static_cast<const T*>(p.r) + row * n;
  const T* b = static_cast<const T*>(p.b);
  Pack<T, VEC> rx[NV], rres[NV];
#pragma unroll
  for (int j = 0; j < NV; ++j) {   // every load in flight before the first use
    const int e = (j * nthreads + tid) * VEC;
    if (e < n) {
      rx[j] = ld<T, VEC>(xr + e);
      rres[j] = ld<T, VEC>(rr + e);
    }
  }
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int e = (j * nthreads + tid) * VEC;
    if (e < n) {
      Pack<T, VEC> bv;
      if (b) bv = ld<T, VEC>(b + e);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        float v = to_f(rx[j].v[k]);
        if (b) v += to_f(bv.v[k]);
        h[j][k] = v + to_f(rres[j].v[k]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) h[j][k] = 0.f;
    }
  }
}

template <int VEC, int NV>
__device__ __forceinline__ float row_partial_sum(const float (&h)[NV][VEC]) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < NV; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) s += h[j][k];   // masked entries are 0
  return s;
}

template <int VEC, int NV>
__device__ __forceinline__ float row_partial_m2(const Params& p, int tid, int nthreads,
                                                const float (&h)[NV][VEC], float mean) {
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    if ((j * nthreads + tid) * VEC < p.n) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float d = h[j][k] - mean;
        q += d * d;
      }
    }
  }
  return q;
}

// y for vector j of the row (weight / ln_bias applied).
template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> row_out(const Params& p, int e, const float (&hj)[VEC],
                                                float mean, float rstd) {
  const T* w = static_cast<const T*>(p.w);
  const T* lb = static_cast<const T*>(p.lb);
  Pack<T, VEC> wv, lv, out;
  if (w) wv = ld<T, VEC>(w + e);
  if (lb) lv = ld<T, VEC>(lb + e);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    float v = (hj[k] - mean) * rstd;
    if (w) v *= to_f(wv.v[k]);
    if (lb) v += to_f(lv.v[k]);
    out.v[k] = from_f<T>(v);
  }
  return out;
}

// One warp per row. Row-major output: a CTA does 8 rows. Feature-major output (out_fm):
// a CTA does BM rows (4 per warp) into the transpose tile, then writes [N, BM] of [N, M].
template <typename T, int VEC, int NV>
__global__ void __launch_bounds__(kThreads) rows_warp_kernel(Params p) {
  constexpr int E = Geo<T>::E, BM = Geo<T>::BM;
  const bool out_fm = p.out_fm != 0;
  const int rows = out_fm ? BM : kWarps;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* tile = reinterpret_cast<T*>(smem_raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n = p.n;
  const float inv_n = 1.f / n;
  const long long m0 = (long long)blockIdx.x * rows;
  for (int t = warp; t < rows; t += kWarps) {
    const long long row = m0 + t;
    if (row >= p.tokens) break;
    float h[NV][VEC];
    load_row<T, VEC, NV>(p, row, lane, 32, h);
    const float mean = warp_sum(row_partial_sum<VEC, NV>(h)) * inv_n;
    const float var = warp_sum(row_partial_m2<VEC, NV>(p, lane, 32, h, mean)) * inv_n;
    const float rstd = rsqrtf(var + p.eps);
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int e = (j * 32 + lane) * VEC;
      if (e < n) {
        const Pack<T, VEC> out = row_out<T, VEC>(p, e, h[j], mean, rstd);
        if (!out_fm) {
          st<T, VEC>(static_cast<T*>(p.y) + row * n + e, out);
        } else if constexpr (VEC == E) {
          st_shared16<T>(tile + tile_idx<T>(t, e, p.rs), out);
        } else {
#pragma unroll
          for (int k = 0; k < VEC; ++k) tile[tile_idx<T>(t, e + k, p.rs)] = out.v[k];
        }
      }
    }
  }
  if (out_fm) {
    __syncthreads();
    T* y = static_cast<T*>(p.y);
    const long long M = p.tokens;
    const int valid_t = (int)((M - m0) < BM ? (M - m0) : BM);
    if (p.out_vec) {   // M % E == 0: a vector of E tokens is wholly in range or out
      for (int idx = threadIdx.x; idx < n * 4; idx += kThreads) {
        const int f = idx >> 2, c = idx & 3;
        if (c * E >= valid_t) continue;
        Pack<T, E> out;
#pragma unroll
        for (int k = 0; k < E; ++k) out.v[k] = tile[tile_idx<T>(c * E + k, f, p.rs)];
        st<T, E>(y + (long long)f * M + m0 + c * E, out);
      }
    } else {
      for (int idx = threadIdx.x; idx < n * BM; idx += kThreads) {
        const int f = idx / BM, t = idx % BM;
        if (t < valid_t) y[(long long)f * M + m0 + t] = tile[tile_idx<T>(t, f, p.rs)];
      }
    }
  }
}

// One CTA (blockDim.x threads, a multiple of 32) per row, row-major in and out.
template <typename T, int VEC, int NV>
__global__ void __launch_bounds__(1024) rows_block_kernel(Params p) {
  __shared__ float red[32];
  const long long row = blockIdx.x;
  const int tid = threadIdx.x, tpr = blockDim.x, n = p.n;
  const float inv_n = 1.f / n;
  float h[NV][VEC];
  load_row<T, VEC, NV>(p, row, tid, tpr, h);
  const float mean = block_sum(row_partial_sum<VEC, NV>(h), red) * inv_n;
  const float q = row_partial_m2<VEC, NV>(p, tid, tpr, h, mean);
  const float rstd = rsqrtf(block_sum(q, red) * inv_n + p.eps);
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int e = (j * tpr + tid) * VEC;
    if (e < n)
      st<T, VEC>(static_cast<T*>(p.y) + row * n + e, row_out<T, VEC>(p, e, h[j], mean, rstd));
  }
}

// -------------------------------------------------------------- feature-major input
// Sum v[K][VEC] over all threads of the CTA that hold the same columns (same c), giving
// out[K][BM] (per column of the CTA's BM tokens). Ends with a barrier: out is readable.
template <int K, int VEC, int CPR, int BM>
__device__ __forceinline__ void col_reduce(float (&v)[K][VEC], float (*red)[kWarps][BM],
                                           float (*out)[BM]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < VEC; ++k)
#pragma unroll
      for (int o = CPR; o < 32; o <<= 1) v[i][k] += __shfl_xor_sync(0xffffffffu, v[i][k], o);
  if (lane < CPR) {   // lane == c here
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int k = 0; k < VEC; ++k) red[i][warp][lane * VEC + k] = v[i][k];
  }
  __syncthreads();
  if (threadIdx.x < BM) {
#pragma unroll
    for (int i = 0; i < K; ++i) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += red[i][w][threadIdx.x];
      out[i][threadIdx.x] = s;
    }
  }
  __syncthreads();
}

// A CTA owns tokens [m0, m0 + BM): CPR = BM / VEC threads cover a feature row's BM tokens
// (VEC each), RPP = 256 / CPR feature rows per pass, NP passes per tile of TILE rows.
template <typename T, int VEC, int NP>
struct ColCfg {
  static constexpr int BM = Geo<T>::BM;
  static constexpr int CPR = BM / VEC;
  static constexpr int RPP = kThreads / CPR;
  static constexpr int TILE = NP * RPP;
};

// Load the raw x / residual of this thread's rows of one tile; h = (x + b) + r (0 outside).
template <typename T, int VEC, int NP>
__device__ __forceinline__ void load_cols(const Params& p, int tile0, int rg, long long col,
                                          bool valid, float (&h)[NP][VEC]) {
  using C = ColCfg<T, VEC, NP>;
  const T* x = static_cast<const T*>(p.x);
  const T* r = static_cast<const T*>(p.r);
  const T* b = static_cast<const T*>(p.b);
  const long long M = p.tokens;
  Pack<T, VEC> rx[NP], rres[NP];
  float bb[NP];
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const int row = tile0 + i * C::RPP + rg;
    if (valid && row < p.n) {
      rx[i] = ld<T, VEC>(x + (long long)row * M + col);
      rres[i] = ld<T, VEC>(r + (long long)row * M + col);
      bb[i] = b ? to_f(b[row]) : 0.f;
    }
  }
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const int row = tile0 + i * C::RPP + rg;
    const bool ok = valid && row < p.n;
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      h[i][k] = ok ? (to_f(rx[i].v[k]) + bb[i]) + to_f(rres[i].v[k]) : 0.f;
  }
}

// Normalise this thread's rows of one tile (d = h - mean) and store them: straight to the
// [N, M] output (p.out_fm) or into the transpose tile (rows relative to tile0). sw / slb: weight and
// ln_bias staged in shared memory (RESIDENT) or null (read from global).
template <typename T, int VEC, int NP>
__device__ __forceinline__ void store_cols(const Params& p, int tile0, int rg, int c,
                                           long long col, bool valid,
                                           const float (&d)[NP][VEC], const float (&rstd)[VEC],
                                           const float* sw,
                                           const float* slb, T* tile) {
  using C = ColCfg<T, VEC, NP>;
  const T* w = static_cast<const T*>(p.w);
  const T* lb = static_cast<const T*>(p.lb);
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const int row = tile0 + i * C::RPP + rg;
    if (!(valid && row < p.n)) continue;
    const float wv = sw ? sw[row] : (w ? to_f(w[row]) : 1.f);
    const float lv = slb ? slb[row] : (lb ? to_f(lb[row]) : 0.f);
    Pack<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) out.v[k] = from_f<T>(d[i][k] * rstd[k] * wv + lv);
    if (p.out_fm) {
      st<T, VEC>(static_cast<T*>(p.y) + (long long)row * p.tokens + col, out);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) tile[tile_idx<T>(c * VEC + k, row - tile0, p.rs)] = out.v[k];
    }
  }
}

// Write rows [tile0, tile0 + len) of the CTA's BM tokens from the tile to the row-major
// [M, N] output (contiguous runs of len elements per token).
template <typename T>
__device__ __forceinline__ void tile_to_rows(const Params& p, long long m0, int tile0, int len,
                                             const T* tile) {
  constexpr int E = Geo<T>::E, BM = Geo<T>::BM;
  T* y = static_cast<T*>(p.y);
  const int n = p.n;
  const int valid_t = (int)((p.tokens - m0) < BM ? (p.tokens - m0) : BM);
  if (p.out_vec) {   // N % E == 0, so len % E == 0
    const int chunks = len / E;
    for (int idx = threadIdx.x; idx < valid_t * chunks; idx += kThreads) {
      const int t = idx / chunks, v = idx % chunks;
      st<T, E>(y + (m0 + t) * n + tile0 + v * E, ld<T, E>(tile + tile_idx<T>(t, v * E, p.rs)));
    }
  } else {
    for (int idx = threadIdx.x; idx < valid_t * len; idx += kThreads) {
      const int t = idx / len, j = idx % len;
      y[(m0 + t) * n + tile0 + j] = tile[tile_idx<T>(t, j, p.rs)];
    }
  }
}

template <typename T, int VEC, int NP, bool RESIDENT>
__global__ void __launch_bounds__(kThreads, (RESIDENT && NP * VEC <= 96) ? 2 : 1) cols_kernel(Params p) {
  using C = ColCfg<T, VEC, NP>;
  constexpr int BM = C::BM, CPR = C::CPR, TILE = C::TILE;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* tile = reinterpret_cast<T*>(smem_raw);
  __shared__ float red[2][kWarps][BM];
  __shared__ float stat[2][BM];
  __shared__ float s_vec[RESIDENT ? 3 * TILE : 1];   // bias, weight, ln_bias as fp32

  const int tid = threadIdx.x, c = tid % CPR, rg = tid / CPR;
  const int n = p.n;
  const float inv_n = 1.f / n;
  const long long M = p.tokens;
  const long long m0 = (long long)blockIdx.x * BM;
  const long long col = m0 + c * VEC;
  const bool valid = col < M;   // VEC > 1 only when M % VEC == 0
  float rstd[VEC];
  float h[NP][VEC];

  if constexpr (RESIDENT) {   // n <= TILE: the CTA's [N, BM] block stays in registers
    {
      const long long off = (long long)rg * M + col, step = (long long)C::RPP * M;
      const T* x = static_cast<const T*>(p.x) + off;
      const T* r = static_cast<const T*>(p.r) + off;
      Pack<T, VEC> rx[NP], rres[NP];
#pragma unroll
      for (int i = 0; i < NP; ++i) {   // all loads in flight before the first use
        if (valid && i * C::RPP + rg < n) {
          rx[i] = ld<T, VEC>(x);
          rres[i] = ld<T, VEC>(r);
        }
        x += step;
        r += step;
      }
      const T* b = static_cast<const T*>(p.b);
      const T* w = static_cast<const T*>(p.w);
      const T* lb = static_cast<const T*>(p.lb);
      for (int i = tid; i < n; i += kThreads) {   // the [N] vectors, staged once per CTA
        s_vec[i] = b ? to_f(b[i]) : 0.f;
        s_vec[TILE + i] = w ? to_f(w[i]) : 1.f;
        s_vec[2 * TILE + i] = lb ? to_f(lb[i]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        const int row = i * C::RPP + rg;
        const bool ok = valid && row < n;
#pragma unroll
        for (int k = 0; k < VEC; ++k)
          h[i][k] = ok ? (to_f(rx[i].v[k]) + s_vec[row]) + to_f(rres[i].v[k]) : 0.f;
      }
    }
    float acc[1][VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      acc[0][k] = 0.f;
#pragma unroll
      for (int i = 0; i < NP; ++i) acc[0][k] += h[i][k];
    }
    col_reduce<1, VEC, CPR, BM>(acc, red, stat);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {   // h becomes h - mean in place (fewer live registers)
      const float mean = stat[0][c * VEC + k] * inv_n;
      acc[0][k] = 0.f;
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        h[i][k] -= mean;
        if (i * C::RPP + rg < n) acc[0][k] += h[i][k] * h[i][k];
      }
    }
    col_reduce<1, VEC, CPR, BM>(acc, red, stat + 1);
#pragma unroll
    for (int k = 0; k < VEC; ++k) rstd[k] = rsqrtf(stat[1][c * VEC + k] * inv_n + p.eps);
    store_cols<T, VEC, NP>(p, 0, rg, c, col, valid, h, rstd, s_vec + TILE, s_vec + 2 * TILE,
                           tile);
    if (!p.out_fm) {
      __syncthreads();
      tile_to_rows<T>(p, m0, 0, n, tile);
    }
  } else {
    // Sweep 1: sums of (h - K) and (h - K)^2 with K = h[0, column] (shifted sums: no
    // cancellation for large means, since |mean - K| is of the order of the spread).
    float shift[VEC];
    {
      const T* b = static_cast<const T*>(p.b);
      const float b0 = b ? to_f(b[0]) : 0.f;
      Pack<T, VEC> x0, r0;
      if (valid) {
        x0 = ld<T, VEC>(static_cast<const T*>(p.x) + col);
        r0 = ld<T, VEC>(static_cast<const T*>(p.r) + col);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) shift[k] = valid ? (to_f(x0.v[k]) + b0) + to_f(r0.v[k]) : 0.f;
    }
    float acc[2][VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[0][k] = acc[1][k] = 0.f;
    for (int tile0 = 0; tile0 < n; tile0 += TILE) {
      load_cols<T, VEC, NP>(p, tile0, rg, col, valid, h);
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        if (tile0 + i * C::RPP + rg < n) {
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            const float d = h[i][k] - shift[k];
            acc[0][k] += d;
            acc[1][k] += d * d;
          }
        }
      }
    }
    col_reduce<2, VEC, CPR, BM>(acc, red, stat);
    float mean[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float d = stat[0][c * VEC + k] * inv_n;
      const float var = fmaxf(stat[1][c * VEC + k] * inv_n - d * d, 0.f);
      mean[k] = shift[k] + d;
      rstd[k] = rsqrtf(var + p.eps);
    }
    // Sweep 2: normalise and write, tile by tile.
    for (int tile0 = 0; tile0 < n; tile0 += TILE) {
      load_cols<T, VEC, NP>(p, tile0, rg, col, valid, h);
#pragma unroll
      for (int i = 0; i < NP; ++i)
#pragma unroll
        for (int k = 0; k < VEC; ++k) h[i][k] -= mean[k];
      if (!p.out_fm) __syncthreads();   // the previous tile has been written out
      store_cols<T, VEC, NP>(p, tile0, rg, c, col, valid, h, rstd, nullptr, nullptr, tile);
      if (!p.out_fm) {
        __syncthreads();
        tile_to_rows<T>(p, m0, tile0, (n - tile0) < TILE ? (n - tile0) : TILE, tile);
      }
    }
  }
}

// ------------------------------------------------------------------------ dispatch
inline bool aligned16(const void* ptr) {
  return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
}

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Static + dynamic shared memory above 48 KB needs the kernel's opt-in attribute; it is set
// once per (kernel, device) and size (host-side calls only: safe under graph capture).
template <typename K>
cudaError_t allow_smem(K kernel, size_t smem) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> allowed;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), dev);
  const auto it = allowed.find(key);
  if (it != allowed.end() && it->second >= smem) return cudaSuccess;
  int optin = 0;
  e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  cudaFuncAttributes attr;
  e = cudaFuncGetAttributes(&attr, kernel);
  if (e != cudaSuccess) return e;
  if (smem + attr.sharedSizeBytes > (size_t)optin) return (cudaError_t)BRLN_UNSUPPORTED;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  allowed[key] = smem;
  return cudaSuccess;
}

template <typename K>
cudaError_t launch(K kernel, unsigned grid, unsigned block, size_t smem, cudaStream_t stream,
                   const Params& p) {
  if (smem > 0) {
    const cudaError_t e = allow_smem(kernel, smem);
    if (e != cudaSuccess) return e;
  }
  kernel<<<grid, block, smem, stream>>>(p);
  return cudaGetLastError();
}

// Row-major input, one warp per row: NV vectors per lane, smallest that covers the row.
template <typename T, int VEC, int... NVS>
struct RowsWarp;
template <typename T, int VEC>
struct RowsWarp<T, VEC> {
  static cudaError_t go(int, bool, unsigned, size_t, cudaStream_t, const Params&) {
    return (cudaError_t)BRLN_UNSUPPORTED;
  }
};
template <typename T, int VEC, int NV, int... REST>
struct RowsWarp<T, VEC, NV, REST...> {
  static cudaError_t go(int nvec, bool out_fm, unsigned grid, size_t smem, cudaStream_t s,
                        const Params& p) {
    if (nvec > 32 * NV) return RowsWarp<T, VEC, REST...>::go(nvec, out_fm, grid, smem, s, p);
    return launch(rows_warp_kernel<T, VEC, NV>, grid, kThreads, smem, s, p);
  }
};

template <typename T>
cudaError_t launch_rows(Params p, bool out_fm, cudaStream_t s) {
  constexpr int E = Geo<T>::E, BM = Geo<T>::BM;
  const int n = p.n;
  const long long M = p.tokens;
  const bool vec = n % E == 0 && aligned16(p.x) && aligned16(p.r) && aligned16(p.b) &&
                   aligned16(p.w) && aligned16(p.lb) && (out_fm || aligned16(p.y));
  const int nvec = vec ? n / E : n;
  p.out_fm = out_fm;
  if (n <= (vec ? 2048 : 512)) {   // one warp per row: at most 64 (16 scalar) values a lane
    size_t smem = 0;
    unsigned grid;
    if (out_fm) {
      p.rs = round_up(n, 32);
      p.out_vec = M % E == 0 && aligned16(p.y);
      smem = (size_t)BM * p.rs * sizeof(T);
      grid = (unsigned)((M + BM - 1) / BM);
    } else {
      grid = (unsigned)((M + kWarps - 1) / kWarps);
    }
    if (vec) {
      if constexpr (E == 8) return RowsWarp<T, 8, 2, 4, 8>::go(nvec, out_fm, grid, smem, s, p);
      else return RowsWarp<T, 4, 2, 4, 8, 16>::go(nvec, out_fm, grid, smem, s, p);
    }
    return RowsWarp<T, 1, 1, 2, 4, 8, 16>::go(nvec, out_fm, grid, smem, s, p);
  }
  if (out_fm) return (cudaError_t)BRLN_UNSUPPORTED;
  // one CTA per row: NV vectors per thread, up to 1024 threads
  const int nv = vec ? 4 : 8;
  const int threads = round_up((nvec + nv - 1) / nv, 32);
  if (threads > 1024) return (cudaError_t)BRLN_UNSUPPORTED;
  if (vec) return launch(rows_block_kernel<T, E, 4>, (unsigned)M, threads, 0, s, p);
  return launch(rows_block_kernel<T, 1, 8>, (unsigned)M, threads, 0, s, p);
}

template <typename T, int VEC, int NP, bool RESIDENT>
cudaError_t launch_cols_cfg(Params p, bool out_fm, cudaStream_t s) {
  using C = ColCfg<T, VEC, NP>;
  const unsigned grid = (unsigned)((p.tokens + C::BM - 1) / C::BM);
  p.out_fm = out_fm;
  size_t smem = 0;
  if (!out_fm) {
    p.rs = round_up(p.n < C::TILE ? p.n : C::TILE, 32);
    p.out_vec = p.n % Geo<T>::E == 0 && aligned16(p.y);
    smem = (size_t)C::BM * p.rs * sizeof(T);
  }
  return launch(cols_kernel<T, VEC, NP, RESIDENT>, grid, kThreads, smem, s, p);
}

template <typename T>
cudaError_t launch_cols(const Params& p, bool out_fm, cudaStream_t s) {
  constexpr int E = Geo<T>::E;
  const int n = p.n;
  const bool vec = p.tokens % E == 0 && aligned16(p.x) && aligned16(p.r) &&
                   (!out_fm || aligned16(p.y));
  if (vec) {
    constexpr int RPP = ColCfg<T, E, 1>::RPP;   // 64
    if (n <= 2 * RPP) return launch_cols_cfg<T, E, 2, true>(p, out_fm, s);
    if (n <= 4 * RPP) return launch_cols_cfg<T, E, 4, true>(p, out_fm, s);
    if (n <= 8 * RPP) return launch_cols_cfg<T, E, 8, true>(p, out_fm, s);
    if (n <= 12 * RPP) return launch_cols_cfg<T, E, 12, true>(p, out_fm, s);
    if (n <= 16 * RPP) return launch_cols_cfg<T, E, 16, true>(p, out_fm, s);
    return launch_cols_cfg<T, E, 4, false>(p, out_fm, s);
  }
  if (n <= ColCfg<T, 1, 32>::TILE) return launch_cols_cfg<T, 1, 32, true>(p, out_fm, s);
  return launch_cols_cfg<T, 1, 32, false>(p, out_fm, s);
}

template <typename T>
cudaError_t launch_typed(const Params& p, bool in_fm, bool out_fm, cudaStream_t s) {
  return in_fm ? launch_cols<T>(p, out_fm, s) : launch_rows<T>(p, out_fm, s);
}

}  // namespace brln

extern "C" {

// y = LayerNorm((x + bias) + residual) over the N features of each of the M tokens.
// in_feature_major: x, residual are [N, M] (else [M, N]); out_feature_major: y is [N, M]
// (else [M, N]). bias / weight / ln_bias: [N] or null, same dtype as x. dtype: 0 float32,
// 1 float16, 2 bfloat16. Returns 0, a cudaError_t, or BRLN_UNSUPPORTED (nothing launched).
int sfx_bias_residual_layernorm(const void* x, const void* residual, const void* bias,
                                const void* weight, const void* ln_bias, void* y,
                                long long tokens, long long features, int dtype,
                                int in_feature_major, int out_feature_major, float eps,
                                void* stream) {
  if (tokens < 0 || features < 0 || features > (1 << 30)) return BRLN_UNSUPPORTED;
  if (tokens == 0 || features == 0) return 0;
  if (tokens > 0x7fffffffLL) return BRLN_UNSUPPORTED;   // grid.x limit of rows_block_kernel
  brln::Params p{x, residual, bias, weight, ln_bias, y, tokens, (int)features, 0, eps, 0, 0};
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool in_fm = in_feature_major != 0, out_fm = out_feature_major != 0;
  switch (dtype) {
    case brln::kF32: return (int)brln::launch_typed<float>(p, in_fm, out_fm, s);
    case brln::kF16: return (int)brln::launch_typed<__half>(p, in_fm, out_fm, s);
    case brln::kBF16: return (int)brln::launch_typed<__nv_bfloat16>(p, in_fm, out_fm, s);
    default: return BRLN_UNSUPPORTED;
  }
}

// Text for a return code of sfx_bias_residual_layernorm.
const char* sfx_brln_error_string(int code) {
  if (code == BRLN_UNSUPPORTED) return "shape, layout or dtype not covered by the CUDA kernel";
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // extern "C"
