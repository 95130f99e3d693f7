// Tensor-level CUDA wrapper of pts_select: boundary checks, device guard, current stream; runs the pixels in chunks
// (about 1 GiB of Gram matrices and workspace at a time) through the torch-free launchers: pack the chunk's features to
// [pixels][N][C] (float32, or float64 for float64 input; fp16/bf16 are converted exactly to float32), Gram
// (pts_select_cuda.cu), OPTICS from the Gram matrices (optics_labels_cuda.cu), choice of the K indices.
// Private op (CUDA builds only): _pts_select_cuda_max_points(int device) -> int, the largest N a device takes.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/cuda_torch_utils.h"
#include "../optics_labels/optics_labels_cuda.h"
#include "pts_select.h"
#include "pts_select_cuda.h"

namespace hetmm {
namespace {

constexpr int64_t kChunkBudgetBytes = int64_t(1) << 30;

int64_t max_points_for(const CudaDeviceLimits& lim) {
  return std::min(optics_labels_cuda_max_points(lim.max_smem_per_block),
                  pts_choose_cuda_max_points(lim.max_smem_per_block));
}

int64_t max_points(int64_t device) { return max_points_for(cuda_device_limits(static_cast<int>(device))); }

at::Tensor pts_select_cuda_torch(const at::Tensor& templates, int64_t size) {
  const char* op = "hetmm.pts_select (cuda)";
  TORCH_CHECK(templates.is_cuda(), op, ": templates must be a CUDA tensor, got ", templates.device());
  TORCH_CHECK_VALUE(templates.dim() == 4, op, ": templates must be 4-D [N, C, H, W], got ", templates.sizes());
  const at::ScalarType dt = templates.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16, op,
                   ": templates dtype must be float16, bfloat16, float32 or float64, got ", dt);
  TORCH_CHECK_VALUE(templates.numel() > 0, op, ": templates is empty, shape ", templates.sizes());
  const int64_t N = templates.size(0), C = templates.size(1), H = templates.size(2), W = templates.size(3);
  TORCH_CHECK_VALUE(size >= 1 && size <= N, op, ": size must be in [1, N=", N, "], got ", size);
  const c10::cuda::CUDAGuard guard(templates.device());
  const CudaDeviceLimits lim = cuda_device_limits(templates.get_device());
  const int64_t nmax = max_points_for(lim);
  TORCH_CHECK_VALUE(N <= nmax, op, ": N=", N, " templates exceed the ", nmax, " this device's shared memory allows");
  TORCH_CHECK_VALUE(N <= 0x7fffffffLL && C <= 0x7fffffffLL, op, ": sizes must fit in 32-bit ints, got ",
                    templates.sizes());
  TORCH_CHECK_VALUE(templates.isfinite().all().item<bool>(), op, ": templates contain NaN or infinite values");

  // One template: it is the only choice (min_samples = 2 would exceed N, which the OPTICS launcher refuses).
  if (N == 1) return at::zeros({1, H, W}, templates.options().dtype(at::kLong));

  const at::ScalarType cdt = dt == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t P = H * W, K = size, ms = pts_min_samples(N, K);
  const int64_t per_pixel = N * N * 8 + N * C * (cdt == at::kDouble ? 8 : 4) + N * 8 +
                            static_cast<int64_t>(optics_labels_cuda_workspace_bytes(1, N));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(P, kChunkBudgetBytes / per_pixel));
  const auto opts = templates.options();
  at::Tensor out = at::empty({P, K}, opts.dtype(at::kLong));
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(optics_labels_cuda_workspace_bytes(chunk, N))}, opts.dtype(at::kByte));
  at::Tensor gram = at::empty({chunk, N, N}, opts.dtype(at::kDouble));
  at::Tensor labels = at::empty({chunk, N}, opts.dtype(at::kLong));
  const at::Tensor flat = templates.reshape({N, C, P});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t n = std::min(chunk, P - p0);
    const at::Tensor x = flat.narrow(2, p0, n).permute({2, 0, 1}).to(cdt).contiguous();  // [n, N, C]
    double* g = gram.data_ptr<double>();
    if (cdt == at::kDouble)
      C10_CUDA_CHECK(pts_gram_cuda(x.data_ptr<double>(), n, N, C, g, stream));
    else
      C10_CUDA_CHECK(pts_gram_cuda(x.data_ptr<float>(), n, N, C, g, stream));
    C10_CUDA_CHECK(optics_labels_cuda(g, true, n, N, ms, 0.05, workspace.data_ptr(), labels.data_ptr<int64_t>(), lim,
                                      stream));
    C10_CUDA_CHECK(pts_choose_cuda(g, labels.data_ptr<int64_t>(), n, N, K, out.data_ptr<int64_t>() + p0 * K, lim,
                                   stream));
  }
  return out.t().reshape({K, H, W}).contiguous();
}

}  // namespace
}  // namespace hetmm

TORCH_LIBRARY_FRAGMENT(hetmm, m) { m.def("_pts_select_cuda_max_points(int device) -> int", &hetmm::max_points); }

TORCH_LIBRARY_IMPL(hetmm, CUDA, m) { m.impl("pts_select", &hetmm::pts_select_cuda_torch); }
