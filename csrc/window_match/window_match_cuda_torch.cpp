// Tensor-level CUDA wrapper of window_match: boundary checks, precision path, packing of the inputs into the
// pixel-major layout of window_match_cuda.h, output allocation, device guard and current stream; the work is done by
// the torch-free launchers of window_match_cuda.cu. Inputs already in the packed layout ([H][W][M][C] memory, C a
// multiple of 128 bytes, 16-byte aligned) are read in place, except on the TF32 path, which rounds a copy.
//
// Every setting that selects the arithmetic or the launch is an argument of the op (STYLE.md rule 12): precision
// ("exact" or "tf32", see bindings.cpp) picks the path of float32 inputs; this file keeps no state between calls.
// Also defines the CUDA engine's private ops (schemas here because they exist only in CUDA builds):
//   _window_match_cuda_tuned(Tensor query, Tensor templates, int fwd_window, int bwd_window, str precision,
//       int max_warps, int splits) -> (Tensor, Tensor)
//       window_match with the launch knobs of WindowMatchCudaProblem, for benchmarks and tests: max_warps 0
//       (automatic), 1, 2 or 4 caps the fused kernel's warps per block; splits 0 (automatic) or 1..1024 blocks share
//       each query tile's work. For finite inputs the results do not depend on either.
//   _window_match_cuda_max_channels(ScalarType dtype, str precision, int device) -> int   largest C the fused kernel
//       takes for that dtype and precision on a device (0: none)
//   _window_match_naive(Tensor query, Tensor templates, int fwd_window, int bwd_window) -> (Tensor, Tensor)
//       the published-structure baseline (window_match_naive_cuda.cu), for benchmarks only
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "../common/cuda_torch_utils.h"
#include "window_match_cuda.h"

namespace hetmm {
namespace {

// precision as the schema takes it: "exact" or "tf32" (bindings.cpp); anything else is refused, naming the op.
bool wants_tf32(const char* op, c10::string_view precision) {
  TORCH_CHECK_VALUE(precision == "exact" || precision == "tf32", op, ": precision must be 'exact' or 'tf32', got '",
                    std::string(precision), "'");
  return precision == "tf32";
}

// The kernel path of `dtype` inputs; `tf32` matters for float32 only (16-bit inputs always use tensor cores, float64
// inputs are always computed in float64).
WindowMatchCudaPath path_for(at::ScalarType dtype, bool tf32) {
  switch (dtype) {
    case at::kHalf:
      return WindowMatchCudaPath::kFloat16;
    case at::kBFloat16:
      return WindowMatchCudaPath::kBFloat16;
    case at::kFloat:
      return tf32 ? WindowMatchCudaPath::kTF32 : WindowMatchCudaPath::kExactFloat32;
    case at::kDouble:
      return WindowMatchCudaPath::kExactFloat64;
    default:
      TORCH_CHECK_TYPE(false, "hetmm.window_match (cuda): dtype must be float16, bfloat16, float32 or float64, got ",
                       dtype);
  }
}

int64_t max_channels(at::ScalarType dtype, c10::string_view precision, int64_t device) {
  const char* op = "hetmm._window_match_cuda_max_channels";
  return window_match_cuda_max_channels(path_for(dtype, wants_tf32(op, precision)),
                                        cuda_device_limits(static_cast<int>(device)).max_smem_per_block);
}

void check_inputs(const char* op, const at::Tensor& query, const at::Tensor& templates, int64_t fwd_window,
                  int64_t bwd_window) {
  TORCH_CHECK(query.is_cuda() && templates.is_cuda(), op, ": query and templates must be CUDA tensors, got ",
              query.device(), " and ", templates.device());
  TORCH_CHECK(query.device() == templates.device(), op, ": query is on ", query.device(), " but templates on ",
              templates.device());
  TORCH_CHECK_VALUE(query.dim() == 4 && templates.dim() == 4, op,
                    ": query [B, C, H, W] and templates [N, C, H, W] must be 4-D, got ", query.sizes(), " and ",
                    templates.sizes());
  TORCH_CHECK_VALUE(query.size(1) == templates.size(1) && query.size(2) == templates.size(2) &&
                        query.size(3) == templates.size(3),
                    op, ": query ", query.sizes(), " and templates ", templates.sizes(), " must have the same C, H, W");
  TORCH_CHECK_VALUE(query.numel() > 0 && templates.numel() > 0, op, ": empty input, query ", query.sizes(),
                    ", templates ", templates.sizes());
  TORCH_CHECK_TYPE(query.scalar_type() == templates.scalar_type(), op, ": query dtype ", query.scalar_type(),
                   " != templates dtype ", templates.scalar_type());
  TORCH_CHECK_VALUE(fwd_window > 0 && fwd_window % 2 == 1 && bwd_window > 0 && bwd_window % 2 == 1, op,
                    ": windows must be positive odd ints, got fwd_window=", fwd_window, ", bwd_window=", bwd_window);
  TORCH_CHECK_VALUE(query.size(0) * query.size(2) * query.size(3) <= 0x7fffffffLL &&
                        templates.size(0) <= 0x7fffffffLL,
                    op, ": B*H*W and N must fit in 32-bit ints, got query ", query.sizes(), ", templates ",
                    templates.sizes());
}

// Whether x [M, C, H, W] already has the kernel's layout: [H][W][M][C] memory (x.permute(2, 3, 0, 1) contiguous),
// no channel padding needed and 16-byte aligned for cp.async. A detector's stored templates are kept this way.
bool is_pixel_major(const at::Tensor& x, int64_t Cp) {
  return x.size(1) == Cp && x.permute({2, 3, 0, 1}).is_contiguous() &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
}

// x [M, C, H, W] (any strides) -> [H*W][M][Cp] contiguous, zero in channels C..Cp-1. With in_place_ok, an x that
// is_pixel_major is returned as it is (no copy): the caller must then not write to the result.
at::Tensor pack_pixel_major(const at::Tensor& x, int64_t Cp, bool in_place_ok) {
  if (in_place_ok && is_pixel_major(x, Cp)) return x;
  const int64_t M = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = Cp == C ? at::empty({H, W, M, Cp}, x.options()) : at::zeros({H, W, M, Cp}, x.options());
  out.narrow(3, 0, C).copy_(x.permute({2, 3, 0, 1}));
  return out;
}

std::tuple<at::Tensor, at::Tensor> run_window_match(const char* op, const at::Tensor& query,
                                                    const at::Tensor& templates, int64_t fwd_window,
                                                    int64_t bwd_window, c10::string_view precision, int64_t max_warps,
                                                    int64_t splits) {
  check_inputs(op, query, templates, fwd_window, bwd_window);
  const bool want_tf32 = wants_tf32(op, precision);
  TORCH_CHECK_VALUE(max_warps == 0 || max_warps == 1 || max_warps == 2 || max_warps == 4, op,
                    ": max_warps must be 0 (automatic), 1, 2 or 4, got ", max_warps);
  TORCH_CHECK_VALUE(splits >= 0 && splits <= kWindowMatchCudaMaxSplits, op,
                    ": splits must be 0 (automatic) or 1..", kWindowMatchCudaMaxSplits, ", got ", splits);
  const c10::cuda::CUDAGuard guard(query.device());
  const WindowMatchCudaPath path = path_for(query.scalar_type(), want_tf32);
  const CudaDeviceLimits lim = cuda_device_limits(query.get_device());
  const int64_t B = query.size(0), N = templates.size(0), C = query.size(1), H = query.size(2), W = query.size(3);
  const int64_t cmax = window_match_cuda_max_channels(path, lim.max_smem_per_block);
  TORCH_CHECK_VALUE(C <= cmax, op, ": C=", C, " channels exceed the ", cmax, " this device's shared memory allows for ",
                    query.scalar_type(), " inputs");

  const int64_t Cp = window_match_cuda_padded_channels(path, C);
  TORCH_CHECK_VALUE(N * Cp <= 0x7fffffffLL, op, ": the templates of one pixel (N=", N, " x ", Cp,
                    " padded channels) must number under 2^31 elements");
  // TF32 rounds the packed copies in place, so it always copies; the other paths read pixel-major inputs in place.
  const bool tf32 = path == WindowMatchCudaPath::kTF32;
  const at::Tensor qp = pack_pixel_major(query, Cp, !tf32);
  const at::Tensor tp = pack_pixel_major(templates, Cp, !tf32);
  if (tf32)  // the kernel takes TF32 values; rounding the packed copies costs one pass
    for (const at::Tensor& x : {qp, tp})
      C10_CUDA_CHECK(window_match_cuda_round_tf32(x.data_ptr<float>(), x.numel(), c10::cuda::getCurrentCUDAStream()));
  at::Tensor fwd = at::empty({B, H, W}, query.options().dtype(at::kFloat));
  at::Tensor bwd = at::empty({B, H, W}, query.options().dtype(at::kFloat));
  WindowMatchCudaProblem pr;
  pr.query = qp.data_ptr();
  pr.templates = tp.data_ptr();
  pr.B = B;
  pr.N = N;
  pr.C_padded = Cp;
  pr.H = H;
  pr.W = W;
  pr.fwd_window = fwd_window;
  pr.bwd_window = bwd_window;
  pr.fwd = fwd.data_ptr<float>();
  pr.bwd = bwd.data_ptr<float>();
  pr.max_warps = static_cast<int>(max_warps);
  pr.splits = static_cast<int>(splits);
  C10_CUDA_CHECK(window_match_cuda(pr, path, lim, c10::cuda::getCurrentCUDAStream()));
  return {fwd, bwd};
}

std::tuple<at::Tensor, at::Tensor> window_match_cuda_torch(const at::Tensor& query, const at::Tensor& templates,
                                                           int64_t fwd_window, int64_t bwd_window,
                                                           c10::string_view precision) {
  return run_window_match("hetmm.window_match (cuda)", query, templates, fwd_window, bwd_window, precision, 0, 0);
}

std::tuple<at::Tensor, at::Tensor> window_match_cuda_tuned_torch(const at::Tensor& query, const at::Tensor& templates,
                                                                 int64_t fwd_window, int64_t bwd_window,
                                                                 c10::string_view precision, int64_t max_warps,
                                                                 int64_t splits) {
  return run_window_match("hetmm._window_match_cuda_tuned", query, templates, fwd_window, bwd_window, precision,
                          max_warps, splits);
}

std::tuple<at::Tensor, at::Tensor> window_match_naive_torch(const at::Tensor& query, const at::Tensor& templates,
                                                            int64_t fwd_window, int64_t bwd_window) {
  const char* op = "hetmm._window_match_naive (cuda)";
  check_inputs(op, query, templates, fwd_window, bwd_window);
  const c10::cuda::CUDAGuard guard(query.device());
  FeatureDtype dtype;
  switch (query.scalar_type()) {
    case at::kFloat:
      dtype = FeatureDtype::kFloat32;
      break;
    case at::kHalf:
      dtype = FeatureDtype::kFloat16;
      break;
    case at::kBFloat16:
      dtype = FeatureDtype::kBFloat16;
      break;
    default:
      TORCH_CHECK_TYPE(false, op, ": dtype must be float32, float16 or bfloat16, got ", query.scalar_type());
  }
  const at::Tensor q = query.contiguous(), t = templates.contiguous();
  const int64_t B = q.size(0), N = t.size(0), C = q.size(1), H = q.size(2), W = q.size(3);
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor scratch_f = at::empty({B, N, H, W}, f32), scratch_b = at::empty({B, N, H, W}, f32);
  at::Tensor fwd = at::empty({B, H, W}, f32), bwd = at::empty({B, H, W}, f32);
  C10_CUDA_CHECK(window_match_naive_cuda(q.data_ptr(), t.data_ptr(), dtype, B, N, C, H, W, fwd_window, bwd_window,
                                         scratch_f.data_ptr<float>(), scratch_b.data_ptr<float>(),
                                         fwd.data_ptr<float>(), bwd.data_ptr<float>(),
                                         c10::cuda::getCurrentCUDAStream()));
  return {fwd, bwd};
}

}  // namespace
}  // namespace hetmm

TORCH_LIBRARY_FRAGMENT(hetmm, m) {
  m.def(
      "_window_match_cuda_tuned(Tensor query, Tensor templates, int fwd_window, int bwd_window, str precision, "
      "int max_warps, int splits) -> (Tensor, Tensor)");
  m.def("_window_match_cuda_max_channels(ScalarType dtype, str precision, int device) -> int", &hetmm::max_channels);
  m.def("_window_match_naive(Tensor query, Tensor templates, int fwd_window, int bwd_window) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(hetmm, CUDA, m) {
  m.impl("window_match", &hetmm::window_match_cuda_torch);
  m.impl("_window_match_cuda_tuned", &hetmm::window_match_cuda_tuned_torch);
  m.impl("_window_match_naive", &hetmm::window_match_naive_torch);
}
