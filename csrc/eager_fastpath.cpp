// Eager fast path of sparsefx::tile_linear on CUDA: the op's CUDA kernel in C++.
//
// Why: an eager call of a µs-size layer is host-bound. With the Python replay
// (sparsefx/runtime/cuda/dispatch.py, _EagerRunner) a call still cost 21-23 µs of host
// time against 13-18 µs for F.linear (bench/RESULTS.md run 13): the dispatcher's boxed
// call into Python, the Python checks, torch.empty and Triton's launcher (which asks
// the driver about every pointer argument). Here the dispatcher calls C++ directly;
// for a layer whose launch Python registered ("a record"), a call checks what the
// compiled kernel was specialised on, allocates the output and calls cuLaunchKernelEx
// with the parameter layout of Triton's own launcher
// (triton/backends/nvidia/driver.py: every non-constexpr argument, then the global and
// profile scratch pointers). Every other call goes to the Python implementation (the
// fallback), which decides, runs and, from a layer's second call on, registers records.
// A layer that kernel choice runs dense ("direct": cuBLAS through at::linear, or
// at::addmm for feature-major tensors) gets a record too: the same ATen calls on the
// unpacked weight that the Python path keeps; a feature-major layer it runs on the
// CUTLASS kernel (csrc/dense_fm_sm90.cu) calls that library's entry point, whose
// address Python passes in, and one on the dense Triton kernel launches it like a
// sparse record. A sparse layer on the sm90 tile kernel (csrc/tile_linear_sm90.cu)
// likewise calls that library's entry point, after the Triton transpose of a row-major x.
// Where column pruning removed output features, a sparse record ends with the Triton
// launch that writes them (sparsefx/runtime/cuda/missing_features.py), as Python does.
//
// What a record may assume (Python checks it before registering, see
// sparsefx/runtime/cuda/eager_fastpath.py): Triton kernels or one of the two libraries'
// entry points, no launch hooks, no scratch memory, a contiguous x for row-major layers,
// and for the libraries the tensors as they take them (16-byte aligned, int32 indices)
// without a copy.
//
// Built by sparsefx/runtime/cuda/build.py against the running torch (not nvcc device
// code: plain C++ with torch, pybind11 and the CUDA headers); loaded only where CUDA is.

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/silu.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cuda.h>
#include <dlfcn.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace py = pybind11;

namespace {

// ------------------------------------------------------------------ driver entry points
// Resolved from libcuda at first use, as Triton's launcher does: no -lcuda at link time.
using LaunchKernelEx = CUresult (*)(const CUlaunchConfig*, CUfunction, void**, void**);
using CtxGetCurrent = CUresult (*)(CUcontext*);
using GetErrorString = CUresult (*)(CUresult, const char**);

struct Driver {
  LaunchKernelEx launch = nullptr;
  CtxGetCurrent ctx_get_current = nullptr;
  GetErrorString error_string = nullptr;
};

const Driver& driver() {
  static const Driver d = [] {
    Driver r;
    void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    TORCH_CHECK(lib != nullptr, "sparsefx eager fast path: cannot open libcuda.so.1");
    r.launch = reinterpret_cast<LaunchKernelEx>(dlsym(lib, "cuLaunchKernelEx"));
    r.ctx_get_current = reinterpret_cast<CtxGetCurrent>(dlsym(lib, "cuCtxGetCurrent"));
    r.error_string = reinterpret_cast<GetErrorString>(dlsym(lib, "cuGetErrorString"));
    TORCH_CHECK(r.launch && r.ctx_get_current && r.error_string,
                "sparsefx eager fast path: libcuda lacks cuLaunchKernelEx");
    return r;
  }();
  return d;
}

// ------------------------------------------------------------------ records
// Tensors a launch reads or writes per call ("slots"), in this order.
enum Slot : int {
  kX2 = 0,         // what the tile kernel gathers from: x (feature-major) or its transpose
  kValues = 1,
  kRowIdx = 2,
  kColMap = 3,
  kBiasOrValues = 4,  // the bias, or values again when there is none (never read then)
  kOut = 5,
  kXRaw = 6,       // x itself, as the transpose kernel reads it (row-major layers)
  kWeight = 7,     // a dense record's unpacked weight (the dense Triton kernel reads it)
  kNumSlots = 8,
};

// Parameter kinds, as eager_fastpath.py encodes them.
enum Kind : int {
  kSlot = 0, kFixedPtr = 1, kI8 = 2, kI16 = 3, kI32 = 4, kI64 = 5,
  kU8 = 6, kU16 = 7, kU32 = 8, kU64 = 9, kF32 = 10, kF64 = 11,
};

struct Step {  // one kernel launch
  CUfunction function = nullptr;
  unsigned grid[3] = {1, 1, 1};
  unsigned num_warps = 4, num_ctas = 1, shared = 0;
  bool pdl = false, cooperative = false;
  std::vector<unsigned char> blob;      // every parameter's bytes, 8-byte aligned
  std::vector<size_t> offsets;          // parameter i starts at blob[offsets[i]]
  std::vector<std::pair<size_t, int>> slot_params;  // (parameter, slot) filled per call
};

struct Expect {  // what the kernels were specialised on, per input slot
  c10::ScalarType dtype;
  bool aligned16;
};

// The CUTLASS dense kernel's C entry point, sfx_dense_fm_sm90 (csrc/dense_fm_sm90.cu):
// (config, dtype, activation, w, x, bias, y, N, K, M, workspace, workspace bytes,
// SM count, stream) -> 0 or an error code.
using DenseFmSm90 = int (*)(int, int, int, const void*, const void*, const void*, void*,
                            int, int, int, void*, unsigned long long, int, void*);

struct NativeDense {
  DenseFmSm90 entry = nullptr;          // null: the record runs ATen
  int config = 0, dtype = 0, sm_count = 0;
};

// The sm90 tile kernel's C entry point, sfx_tile_linear_sm90 (csrc/tile_linear_sm90.cu):
// (x, x row stride, values, values rows, G, row_idx, col_map, kept features, bias, out,
// out strides along features and tokens, items, progs, item count, program count, M,
// dtype, activation, block_n, block_m, output features, store mode, out_pos, stream) -> 0
// or an error code.
using TileSm90 = int (*)(const void*, long long, const void*, long long, int, const int*,
                         const int*, int, const void*, void*, long long, long long,
                         const int*, const int*, int, int, int, int, int, int, int,
                         long long, int, const int*, void*);

struct NativeTile {
  TileSm90 entry = nullptr;             // null: every launch of the record is Triton's
  int64_t stride_xk = 0;                // x2's row stride (x's own, or M for a transpose)
  const int* items = nullptr;           // the schedule (held in Record::keep)
  const int* progs = nullptr;
  int n_items = 0, num_progs = 0;
  int dtype = 0, act = 0, block_n = 0, block_m = 0, store = 0;
  int64_t n_out = 0, stride_on = 0, stride_om = 0;
  const int* out_pos = nullptr;         // store "span": the plan's table (Record::keep)
};

// A weak reference keeps a TensorImpl's memory (not its data) allocated, so while a
// record lives no other tensor can take the address that keys it.
using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

struct Record {
  std::optional<WeakImpl> values, row_idx, row_ptr, col_map, bias;
  int64_t row_ptr_version = 0, col_map_version = 0;
  c10::DeviceIndex device = 0;
  bool feature_major = true;
  std::vector<int64_t> out_shape;
  int64_t M = 0, K = 0;                  // row-major: x2 = transpose of x as [K, M]
  Expect expect[kNumSlots];
  bool checked[kNumSlots] = {false};
  std::vector<at::Tensor> keep;          // plan tables and workspaces the launches read
  std::vector<Step> steps;
  std::vector<Step> after;               // after the sm90 tile kernel (or after steps)
  // dense records: the unpacked weight (weak: the Python cache owns it), valid only for
  // the version of values it was unpacked from; the activation to apply after
  std::optional<WeakImpl> dense_weight;
  int64_t values_version = 0;
  int activation = 0;                    // 0 none, 1 relu, 2 gelu, 3 silu
  NativeDense native;                    // feature-major dense on the CUTLASS kernel
  NativeTile tile;                       // a sparse layer on the sm90 tile kernel
};

struct KeyHash {
  size_t operator()(const std::vector<int64_t>& k) const noexcept {
    size_t h = 1469598103934665603ull;
    for (int64_t v : k) h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
    return h;
  }
};

constexpr size_t kMaxRecords = 4096;

std::mutex g_mutex;
std::unordered_map<std::vector<int64_t>, std::shared_ptr<const Record>, KeyHash> g_records;
py::object* g_fallback = nullptr;       // the Python implementation (never freed)
std::unique_ptr<torch::Library> g_library;
int64_t g_hits = 0, g_misses = 0;

int64_t impl_id(const at::Tensor& t) {
  return reinterpret_cast<int64_t>(t.unsafeGetTensorImpl());
}

int64_t activation_hash(c10::string_view s) {
  int64_t h = 0;
  for (char c : s) h = h * 131 + static_cast<unsigned char>(c);
  return h;
}

// Everything a call must share with the registered one to reuse its launches.
std::vector<int64_t> make_key(const at::Tensor& x, const at::Tensor& values,
                              const at::Tensor& row_idx, const at::Tensor& row_ptr,
                              const at::Tensor& col_map,
                              const std::optional<at::Tensor>& bias, int64_t out_features,
                              c10::string_view activation, bool feature_major) {
  std::vector<int64_t> key;
  key.reserve(16 + 2 * x.dim());
  key.push_back(impl_id(values));
  key.push_back(impl_id(row_idx));
  key.push_back(impl_id(row_ptr));
  key.push_back(impl_id(col_map));
  key.push_back(bias.has_value() ? impl_id(*bias) : 0);
  key.push_back(static_cast<int64_t>(x.scalar_type()));
  key.push_back(x.device().index());
  key.push_back(out_features);
  key.push_back(activation_hash(activation));
  key.push_back(feature_major ? 1 : 0);
  key.push_back(x.dim());
  for (int64_t s : x.sizes()) key.push_back(s);
  for (int64_t s : x.strides()) key.push_back(s);
  return key;
}

bool same_tensor(const std::optional<WeakImpl>& weak, const at::Tensor& t) {
  if (!weak.has_value()) return false;
  auto strong = weak->lock();   // the undefined-tensor singleton once that tensor is gone
  return strong.get() == t.unsafeGetTensorImpl();
}

WeakImpl weak_of(const at::Tensor& t) { return WeakImpl(t.getIntrusivePtr()); }

bool matches(const Expect& e, const at::Tensor& t) {
  return t.scalar_type() == e.dtype &&
         ((reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0) == e.aligned16);
}

// Record what the kernels were specialised on for the tensor in `slot` (its dtype and
// 16-byte alignment at registration); every call is checked against it.
void expect_like(Record& rec, int slot, const at::Tensor& t) {
  rec.expect[slot] = {t.scalar_type(), reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0};
  rec.checked[slot] = true;
}

// ------------------------------------------------------------------ launching
void launch_step(const Step& s, const at::Tensor* const slots[kNumSlots], CUstream stream) {
  unsigned char local[512];
  std::vector<unsigned char> heap;
  unsigned char* buf = local;
  if (s.blob.size() > sizeof(local)) {
    heap.resize(s.blob.size());
    buf = heap.data();
  }
  std::memcpy(buf, s.blob.data(), s.blob.size());
  for (const auto& [param, slot] : s.slot_params) {
    uint64_t ptr = reinterpret_cast<uint64_t>(slots[slot]->data_ptr());
    std::memcpy(buf + s.offsets[param], &ptr, sizeof(ptr));
  }
  void* params_local[64];
  std::vector<void*> params_heap;
  void** params = params_local;
  if (s.offsets.size() > 64) {
    params_heap.resize(s.offsets.size());
    params = params_heap.data();
  }
  for (size_t i = 0; i < s.offsets.size(); ++i) params[i] = buf + s.offsets[i];

  CUlaunchAttribute attrs[4];
  unsigned n_attrs = 0;
  if (s.pdl) {
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attrs[n_attrs].value.programmaticStreamSerializationAllowed = 1;
    ++n_attrs;
  }
  if (s.cooperative) {
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attrs[n_attrs].value.cooperative = 1;
    ++n_attrs;
  }
  if (s.num_ctas != 1) {
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attrs[n_attrs].value.clusterDim.x = s.num_ctas;
    attrs[n_attrs].value.clusterDim.y = 1;
    attrs[n_attrs].value.clusterDim.z = 1;
    ++n_attrs;
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE;
    attrs[n_attrs].value.clusterSchedulingPolicyPreference =
        CU_CLUSTER_SCHEDULING_POLICY_SPREAD;
    ++n_attrs;
  }
  CUlaunchConfig config;
  std::memset(&config, 0, sizeof(config));
  config.gridDimX = s.grid[0] * s.num_ctas;
  config.gridDimY = s.grid[1];
  config.gridDimZ = s.grid[2];
  config.blockDimX = 32 * s.num_warps;
  config.blockDimY = 1;
  config.blockDimZ = 1;
  config.sharedMemBytes = s.shared;
  config.hStream = stream;
  config.attrs = attrs;
  config.numAttrs = n_attrs;
  CUresult rc = driver().launch(&config, s.function, params, nullptr);
  if (rc != CUDA_SUCCESS) {
    const char* msg = "unknown error";
    driver().error_string(rc, &msg);
    TORCH_CHECK(false, "sparsefx eager fast path: cuLaunchKernelEx failed: ", msg);
  }
}

// The record's Triton launches on these tensors, in order, once every checked slot
// matches what the kernels were specialised on; false, with nothing launched, otherwise.
bool launch_checked(const Record& r, const at::Tensor* const slots[kNumSlots],
                    CUstream stream) {
  for (int i = 0; i < kNumSlots; ++i)
    if (r.checked[i] && !matches(r.expect[i], *slots[i])) return false;
  for (const Step& s : r.steps) launch_step(s, slots, stream);
  return true;
}

bool contiguous_aligned(const at::Tensor& t) {
  return t.is_contiguous() && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// A dense record on the CUTLASS kernel: dispatch.dense_forward's sm90_fm_<config>
// variant without Python (sm90_dense.dense_fm_linear_sm90 would copy an input that is
// not contiguous and 16-byte aligned; such a call takes the Python path instead).
at::Tensor run_native_dense(const Record& r, const at::Tensor& w, const at::Tensor& x,
                            const std::optional<at::Tensor>& bias) {
  if (!contiguous_aligned(x) || !contiguous_aligned(w) ||
      (bias.has_value() && !contiguous_aligned(*bias)))
    return at::Tensor();
  const int64_t N = w.size(0), K = w.size(1), M = x.size(1);
  at::Tensor y = at::empty({N, M}, x.options());
  CUstream stream = c10::cuda::getCurrentCUDAStream(r.device).stream();
  const int rc = r.native.entry(r.native.config, r.native.dtype, r.activation,
                                w.data_ptr(), x.data_ptr(),
                                bias.has_value() ? bias->data_ptr() : nullptr, y.data_ptr(),
                                static_cast<int>(N), static_cast<int>(K),
                                static_cast<int>(M), nullptr, 0, r.native.sm_count, stream);
  return rc == 0 ? y : at::Tensor();   // refused before launching: Python says why
}

// The sm90 tile kernel of a sparse record, after its Triton steps (the transpose of a
// row-major x): what sm90_tile.launch passes, without Python. False when the library
// refused the call (Python then runs it again and raises the library's message).
bool run_native_tile(const Record& r, const at::Tensor& x2, const at::Tensor& values,
                     const at::Tensor& row_idx, const at::Tensor& col_map,
                     const std::optional<at::Tensor>& bias, const at::Tensor& out,
                     CUstream stream) {
  if (bias.has_value() && !bias->is_contiguous()) return false;
  const NativeTile& t = r.tile;
  const int rc = t.entry(x2.data_ptr(), t.stride_xk, values.data_ptr(), values.size(0),
                         static_cast<int>(values.size(1)), row_idx.data_ptr<int>(),
                         col_map.data_ptr<int>(), static_cast<int>(col_map.numel()),
                         bias.has_value() ? bias->data_ptr() : nullptr, out.data_ptr(),
                         t.stride_on, t.stride_om, t.items, t.progs, t.n_items,
                         t.num_progs, static_cast<int>(r.M), t.dtype, t.act, t.block_n,
                         t.block_m, t.n_out, t.store, t.out_pos, stream);
  return rc == 0;
}

// A dense record on the dense Triton kernel (a pointer-load configuration of
// runtime/cuda/triton_dense.py): its one launch, with the tensors checked as a sparse
// record checks them (dtype and 16-byte alignment, what Triton specialised on).
at::Tensor run_triton_dense(const Record& r, const at::Tensor& w, const at::Tensor& x,
                            const at::Tensor& values, const std::optional<at::Tensor>& bias) {
  at::Tensor out = at::empty({w.size(0), x.size(1)}, x.options());
  const at::Tensor& bias_or_values = bias.has_value() ? *bias : values;
  const at::Tensor* slots[kNumSlots] = {&x, &values, &values, &values, &bias_or_values,
                                        &out, &x, &w};
  CUstream stream = c10::cuda::getCurrentCUDAStream(r.device).stream();
  return launch_checked(r, slots, stream) ? out : at::Tensor();
}

// A dense record: what dispatch.dense_forward's "direct" variant runs, in ATen.
at::Tensor run_dense(const Record& r, const at::Tensor& x, const at::Tensor& values,
                     const std::optional<at::Tensor>& bias, bool feature_major) {
  if (values._version() != r.values_version) return at::Tensor();
  auto impl = r.dense_weight->lock();
  if (!impl.defined()) return at::Tensor();     // the Python cache dropped it
  at::Tensor w(std::move(impl));
  if (w.scalar_type() != x.scalar_type() ||
      (bias.has_value() && bias->scalar_type() != x.scalar_type()))
    return at::Tensor();
  if (r.native.entry != nullptr) return run_native_dense(r, w, x, bias);
  if (!r.steps.empty()) return run_triton_dense(r, w, x, values, bias);
  at::Tensor y;
  if (feature_major)
    y = bias.has_value() ? at::addmm(bias->unsqueeze(1), w, x) : at::mm(w, x);
  else
    y = at::linear(x, w, bias);
  switch (r.activation) {
    case 1: y = at::relu(y); break;
    case 2: y = at::gelu(y); break;
    case 3: y = at::silu(y); break;
    default: break;
  }
  return y.contiguous();
}

// The launches of a record for this call, or an undefined tensor when the call must
// take the Python path (nothing registered, or something the kernels were specialised
// on differs).
at::Tensor try_record(const at::Tensor& x, const at::Tensor& values, const at::Tensor& row_idx,
                      const at::Tensor& row_ptr, const at::Tensor& col_map,
                      const std::optional<at::Tensor>& bias, int64_t out_features,
                      c10::string_view activation, bool feature_major) {
  if (!x.is_cuda()) return at::Tensor();
  std::shared_ptr<const Record> rec;
  {
    auto key = make_key(x, values, row_idx, row_ptr, col_map, bias, out_features,
                        activation, feature_major);
    std::lock_guard<std::mutex> guard(g_mutex);
    auto it = g_records.find(key);
    if (it == g_records.end()) return at::Tensor();
    rec = it->second;
  }
  const Record& r = *rec;
  if (!same_tensor(r.values, values) || !same_tensor(r.row_idx, row_idx) ||
      !same_tensor(r.row_ptr, row_ptr) || !same_tensor(r.col_map, col_map) ||
      (bias.has_value() && !same_tensor(r.bias, *bias)) ||
      row_ptr._version() != r.row_ptr_version || col_map._version() != r.col_map_version)
    return at::Tensor();
  if (!values.is_contiguous() || !row_idx.is_contiguous() || !col_map.is_contiguous())
    return at::Tensor();
  if (c10::cuda::current_device() != r.device) return at::Tensor();
  CUcontext ctx = nullptr;
  if (driver().ctx_get_current(&ctx) != CUDA_SUCCESS || ctx == nullptr) return at::Tensor();

  if (r.dense_weight.has_value()) return run_dense(r, x, values, bias, feature_major);
  at::Tensor out = at::empty(r.out_shape, x.options());
  at::Tensor x2 = feature_major ? x : at::empty({r.K, r.M}, x.options());
  const at::Tensor& bias_or_values = bias.has_value() ? *bias : values;
  // no weight slot: sparse records never register a kWeight parameter or check
  const at::Tensor* slots[kNumSlots] = {&x2, &values, &row_idx, &col_map, &bias_or_values,
                                        &out, &x, nullptr};
  CUstream stream = c10::cuda::getCurrentCUDAStream(r.device).stream();
  if (!launch_checked(r, slots, stream)) return at::Tensor();
  if (r.tile.entry != nullptr &&
      !run_native_tile(r, x2, values, row_idx, col_map, bias, out, stream))
    return at::Tensor();
  // the write of pruned-away output features, after the kernel as in Python; its
  // tensors (out, bias-or-values) are among the slots launch_checked checked
  for (const Step& s : r.after) launch_step(s, slots, stream);
  return out;
}

at::Tensor call_fallback(const at::Tensor& x, const at::Tensor& values,
                         const at::Tensor& row_idx, const at::Tensor& row_ptr,
                         const at::Tensor& col_map, const std::optional<at::Tensor>& bias,
                         int64_t out_features, c10::string_view activation,
                         bool feature_major) {
  py::gil_scoped_acquire gil;
  TORCH_CHECK(g_fallback != nullptr, "sparsefx eager fast path: no fallback installed");
  py::object bias_obj = bias.has_value() ? py::cast(*bias) : py::none();
  py::object out = (*g_fallback)(x, values, row_idx, row_ptr, col_map, bias_obj,
                                 out_features, std::string(activation.data(), activation.size()),
                                 feature_major);
  return out.cast<at::Tensor>();
}

// The CUDA kernel of sparsefx::tile_linear (and what the autograd shortcut calls).
// out_features is a SymInt in the op's schema; a CUDA call always has a concrete one.
at::Tensor tile_linear_cuda(const at::Tensor& x, const at::Tensor& values,
                            const at::Tensor& row_idx, const at::Tensor& row_ptr,
                            const at::Tensor& col_map, const std::optional<at::Tensor>& bias,
                            c10::SymInt out_features_sym, c10::string_view activation,
                            bool feature_major) {
  const int64_t out_features = out_features_sym.expect_int();
  at::Tensor out = try_record(x, values, row_idx, row_ptr, col_map, bias, out_features,
                              activation, feature_major);
  if (out.defined()) {
    ++g_hits;        // statistics only: a racy count is fine
    return out;
  }
  ++g_misses;
  return call_fallback(x, values, row_idx, row_ptr, col_map, bias, out_features,
                       activation, feature_major);
}

// ------------------------------------------------------------------ registration
Step make_step(const py::tuple& spec) {
  // (function, (gx, gy, gz), num_warps, num_ctas, shared, pdl, cooperative,
  //  [(kind, value), ...])
  TORCH_CHECK(spec.size() == 8, "step spec must have 8 fields");
  Step s;
  s.function = reinterpret_cast<CUfunction>(spec[0].cast<uint64_t>());
  auto grid = spec[1].cast<py::tuple>();
  TORCH_CHECK(grid.size() == 3, "grid must have 3 entries");
  for (int i = 0; i < 3; ++i) s.grid[i] = grid[i].cast<unsigned>();
  s.num_warps = spec[2].cast<unsigned>();
  s.num_ctas = spec[3].cast<unsigned>();
  s.shared = spec[4].cast<unsigned>();
  s.pdl = spec[5].cast<bool>();
  s.cooperative = spec[6].cast<bool>();
  auto params = spec[7].cast<py::list>();
  for (size_t i = 0; i < params.size(); ++i) {
    auto p = params[i].cast<py::tuple>();
    int kind = p[0].cast<int>();
    size_t at = (s.blob.size() + 7) / 8 * 8;
    s.offsets.push_back(at);
    s.blob.resize(at + 8, 0);
    unsigned char* dst = s.blob.data() + at;
    auto put = [&](const auto& v) { std::memcpy(dst, &v, sizeof(v)); };
    switch (kind) {
      case kSlot: {
        int slot = p[1].cast<int>();
        TORCH_CHECK(slot >= 0 && slot < kNumSlots, "bad slot ", slot);
        s.slot_params.emplace_back(i, slot);
        break;
      }
      case kFixedPtr: put(p[1].cast<uint64_t>()); break;
      case kI8: put(static_cast<int8_t>(p[1].cast<int64_t>())); break;
      case kI16: put(static_cast<int16_t>(p[1].cast<int64_t>())); break;
      case kI32: put(static_cast<int32_t>(p[1].cast<int64_t>())); break;
      case kI64: put(p[1].cast<int64_t>()); break;
      case kU8: put(static_cast<uint8_t>(p[1].cast<uint64_t>())); break;
      case kU16: put(static_cast<uint16_t>(p[1].cast<uint64_t>())); break;
      case kU32: put(static_cast<uint32_t>(p[1].cast<uint64_t>())); break;
      case kU64: put(p[1].cast<uint64_t>()); break;
      case kF32: put(static_cast<float>(p[1].cast<double>())); break;
      case kF64: put(p[1].cast<double>()); break;
      default: TORCH_CHECK(false, "unknown parameter kind ", kind);
    }
  }
  return s;
}

// What every record holds: the layer's tensors (weakly) and the call's device and layout.
std::shared_ptr<Record> new_record(const at::Tensor& x, const at::Tensor& values,
                                   const at::Tensor& row_idx, const at::Tensor& row_ptr,
                                   const at::Tensor& col_map,
                                   const std::optional<at::Tensor>& bias, bool feature_major) {
  TORCH_CHECK(x.is_cuda(), "records are for CUDA tensors");
  auto rec = std::make_shared<Record>();
  rec->values = weak_of(values);
  rec->row_idx = weak_of(row_idx);
  rec->row_ptr = weak_of(row_ptr);
  rec->col_map = weak_of(col_map);
  if (bias.has_value()) rec->bias = weak_of(*bias);
  rec->row_ptr_version = row_ptr._version();
  rec->col_map_version = col_map._version();
  rec->device = x.device().index();
  rec->feature_major = feature_major;
  return rec;
}

void store(std::vector<int64_t> key, std::shared_ptr<Record> rec) {
  std::lock_guard<std::mutex> guard(g_mutex);
  if (g_records.size() >= kMaxRecords) g_records.clear();
  g_records[std::move(key)] = std::move(rec);
}

// The sm90 tile kernel's fixed arguments, as sm90_tile.native_entry lists them.
NativeTile make_native_tile(const py::tuple& spec) {
  // (entry, stride_xk, items, progs, n_items, num_progs, dtype, act, block_n, block_m,
  //  n_out, stride_on, stride_om, store, out_pos)
  TORCH_CHECK(spec.size() == 15, "sm90 tile spec must have 15 fields");
  NativeTile t;
  t.entry = reinterpret_cast<TileSm90>(spec[0].cast<uint64_t>());
  t.stride_xk = spec[1].cast<int64_t>();
  t.items = reinterpret_cast<const int*>(spec[2].cast<uint64_t>());
  t.progs = reinterpret_cast<const int*>(spec[3].cast<uint64_t>());
  t.n_items = spec[4].cast<int>();
  t.num_progs = spec[5].cast<int>();
  t.dtype = spec[6].cast<int>();
  t.act = spec[7].cast<int>();
  t.block_n = spec[8].cast<int>();
  t.block_m = spec[9].cast<int>();
  t.n_out = spec[10].cast<int64_t>();
  t.stride_on = spec[11].cast<int64_t>();
  t.stride_om = spec[12].cast<int64_t>();
  t.store = spec[13].cast<int>();
  t.out_pos = reinterpret_cast<const int*>(spec[14].cast<uint64_t>());
  TORCH_CHECK(t.entry != nullptr && t.items != nullptr && t.progs != nullptr,
              "sm90 tile spec: null entry point or schedule");
  return t;
}

// Register the launches that run calls like this one (same layer tensors, x shape,
// strides, dtype, device and epilogue). `steps` run in order on the current stream;
// then, with `native_tile` (sm90_tile.native_entry), the sm90 tile kernel, its schedule
// tensors in `keep`; then `after_steps` (the write of pruned-away output features).
void register_record(const at::Tensor& x, const at::Tensor& values, const at::Tensor& row_idx,
                     const at::Tensor& row_ptr, const at::Tensor& col_map,
                     const std::optional<at::Tensor>& bias, int64_t out_features,
                     const std::string& activation, bool feature_major,
                     std::vector<int64_t> out_shape, int64_t M, int64_t K,
                     std::vector<at::Tensor> keep, const py::list& steps,
                     const py::tuple& native_tile, const py::list& after_steps) {
  auto rec = new_record(x, values, row_idx, row_ptr, col_map, bias, feature_major);
  rec->out_shape = std::move(out_shape);
  rec->M = M;
  rec->K = K;
  const at::Tensor& bias_or_values = bias.has_value() ? *bias : values;
  expect_like(*rec, kValues, values);
  expect_like(*rec, kRowIdx, row_idx);
  expect_like(*rec, kColMap, col_map);
  expect_like(*rec, kBiasOrValues, bias_or_values);
  expect_like(*rec, kXRaw, x);
  if (feature_major) expect_like(*rec, kX2, x);   // x is what the tile kernel gathers from
  rec->keep = std::move(keep);
  for (const auto& step : steps) rec->steps.push_back(make_step(step.cast<py::tuple>()));
  for (const auto& step : after_steps)
    rec->after.push_back(make_step(step.cast<py::tuple>()));
  if (native_tile.size() > 0) {
    // what the library requires of the tensors it reads (sfx_tile_linear_sm90 returns
    // -1 otherwise), so that a call that differs fails the slot checks instead
    TORCH_CHECK(rec->expect[kValues].aligned16 && row_idx.scalar_type() == at::kInt &&
                    col_map.scalar_type() == at::kInt &&
                    (!feature_major || rec->expect[kX2].aligned16),
                "sm90 tile record: values and x must be 16-byte aligned, row_idx and "
                "col_map int32");
    rec->tile = make_native_tile(native_tile);
  }
  store(make_key(x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
                 feature_major),
        std::move(rec));
}

// Register a dense layer: calls like this one run `weight` through ATen; with
// `native_entry` set (the address of sfx_dense_fm_sm90) through the CUTLASS kernel's
// configuration `native_config`; with `steps` (one launch of the dense Triton kernel,
// its tensors in the slots x2, bias-or-values / weight, out and weight) through that
// kernel (see run_dense).
void register_dense(const at::Tensor& x, const at::Tensor& values, const at::Tensor& row_idx,
                    const at::Tensor& row_ptr, const at::Tensor& col_map,
                    const std::optional<at::Tensor>& bias, int64_t out_features,
                    const std::string& activation, bool feature_major,
                    const at::Tensor& weight, uint64_t native_entry, int native_config,
                    int native_dtype, int native_sm_count, std::vector<at::Tensor> keep,
                    const py::list& steps) {
  TORCH_CHECK(weight.is_cuda(), "records are for CUDA tensors");
  TORCH_CHECK((native_entry == 0 && steps.size() == 0) ||
                  (feature_major && weight.dim() == 2 && x.dim() == 2),
              "the CUTLASS and Triton dense kernels run feature-major [K, M] inputs only");
  TORCH_CHECK(native_entry == 0 || steps.size() == 0,
              "a dense record runs either the CUTLASS kernel or Triton launches");
  static const char* const kActivations[] = {"none", "relu", "gelu", "silu"};
  auto rec = new_record(x, values, row_idx, row_ptr, col_map, bias, feature_major);
  rec->activation = -1;
  for (int i = 0; i < 4; ++i)
    if (activation == kActivations[i]) rec->activation = i;
  TORCH_CHECK(rec->activation >= 0, "unknown activation ", activation);
  rec->values_version = values._version();
  rec->dense_weight = weak_of(weight);
  rec->native.entry = reinterpret_cast<DenseFmSm90>(native_entry);
  rec->native.config = native_config;
  rec->native.dtype = native_dtype;
  rec->native.sm_count = native_sm_count;
  if (steps.size() > 0) {   // what the Triton kernel was specialised on, per input
    expect_like(*rec, kX2, x);
    expect_like(*rec, kBiasOrValues, bias.has_value() ? *bias : values);
    expect_like(*rec, kWeight, weight);
    rec->keep = std::move(keep);
    for (const auto& step : steps) rec->steps.push_back(make_step(step.cast<py::tuple>()));
  }
  store(make_key(x, values, row_idx, row_ptr, col_map, bias, out_features, activation,
                 feature_major),
        std::move(rec));
}

// Drops warnings while the kernel is registered: the op's Python CUDA kernel stays
// registered underneath (sparsefx/runtime/cuda/autograd_shortcut.py,
// hand_backend_to_native) and the dispatcher warns that a newer kernel shadows it.
struct QuietWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

void install(py::object fallback) {
  std::lock_guard<std::mutex> guard(g_mutex);
  if (g_fallback == nullptr) g_fallback = new py::object(std::move(fallback));
  else *g_fallback = std::move(fallback);
  if (!g_library) {
    QuietWarnings quiet;
    c10::WarningUtils::WarningHandlerGuard quiet_guard(&quiet);
    g_library = std::make_unique<torch::Library>(
        torch::Library::IMPL, "sparsefx", std::make_optional(c10::DispatchKey::CUDA),
        __FILE__, __LINE__);
    g_library->impl("tile_linear", TORCH_FN(tile_linear_cuda));
  }
}

}  // namespace

PYBIND11_MODULE(sparsefx_eager_fastpath, m) {
  m.doc() = "C++ eager path of sparsefx::tile_linear (see csrc/eager_fastpath.cpp)";
  m.def("install", &install, "register the C++ CUDA kernel; fallback = the Python one");
  m.def("call", [](const at::Tensor& x, const at::Tensor& values, const at::Tensor& row_idx,
                   const at::Tensor& row_ptr, const at::Tensor& col_map,
                   const std::optional<at::Tensor>& bias, int64_t out_features,
                   const std::string& activation, bool feature_major) {
    return tile_linear_cuda(x, values, row_idx, row_ptr, col_map, bias,
                            c10::SymInt(out_features), activation, feature_major);
  }, "the op's CUDA kernel, for the autograd shortcut (the dispatcher drops defaults)",
        py::arg("x"), py::arg("values"), py::arg("row_idx"), py::arg("row_ptr"),
        py::arg("col_map"), py::arg("bias"), py::arg("out_features"),
        py::arg("activation") = "none", py::arg("feature_major") = false);
  m.def("register_record", &register_record, py::arg("x"), py::arg("values"),
        py::arg("row_idx"), py::arg("row_ptr"), py::arg("col_map"), py::arg("bias"),
        py::arg("out_features"), py::arg("activation"), py::arg("feature_major"),
        py::arg("out_shape"), py::arg("M"), py::arg("K"), py::arg("keep"), py::arg("steps"),
        py::arg("native_tile") = py::tuple(), py::arg("after_steps") = py::list());
  m.def("register_dense", &register_dense, py::arg("x"), py::arg("values"),
        py::arg("row_idx"), py::arg("row_ptr"), py::arg("col_map"), py::arg("bias"),
        py::arg("out_features"), py::arg("activation"), py::arg("feature_major"),
        py::arg("weight"), py::arg("native_entry") = 0, py::arg("native_config") = 0,
        py::arg("native_dtype") = 0, py::arg("native_sm_count") = 0,
        py::arg("keep") = std::vector<at::Tensor>(), py::arg("steps") = py::list());
  m.def("clear", [] {
    std::lock_guard<std::mutex> guard(g_mutex);
    g_records.clear();
  });
  m.def("stats", [] {
    std::lock_guard<std::mutex> guard(g_mutex);
    return py::make_tuple(g_hits, g_misses, g_records.size());
  });
  m.def("reset_stats", [] { g_hits = g_misses = 0; });
}
