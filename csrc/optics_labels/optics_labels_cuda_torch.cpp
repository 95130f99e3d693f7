// Tensor-level CUDA wrapper of optics_labels: boundary checks (shape, dtype, every distance finite and >= 0),
// device guard, current stream, workspace; the work is done by the torch-free launchers of optics_labels_cuda.cu.
// Private op (CUDA builds only): _optics_labels_cuda_max_points(int device) -> int, the largest N a device takes.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../common/cuda_torch_utils.h"
#include "optics_labels_cuda.h"

namespace hetmm {
namespace {

int64_t max_points(int64_t device) {
  return optics_labels_cuda_max_points(cuda_device_limits(static_cast<int>(device)).max_smem_per_block);
}

at::Tensor optics_labels_cuda_torch(const at::Tensor& dist, int64_t min_samples, double xi) {
  const char* op = "hetmm.optics_labels (cuda)";
  TORCH_CHECK(dist.is_cuda(), op, ": dist must be a CUDA tensor, got ", dist.device());
  TORCH_CHECK_VALUE(dist.dim() == 3 && dist.size(1) == dist.size(2), op,
                    ": dist must be [P, N, N] (P square distance matrices), got ", dist.sizes());
  TORCH_CHECK_TYPE(dist.scalar_type() == at::kDouble, op, ": dist must be float64, got ", dist.scalar_type());
  TORCH_CHECK_VALUE(dist.numel() > 0, op, ": dist is empty, shape ", dist.sizes());
  const int64_t P = dist.size(0), N = dist.size(1);
  TORCH_CHECK_VALUE(min_samples >= 2 && min_samples <= N, op, ": min_samples must be in [2, N=", N, "], got ",
                    min_samples);
  TORCH_CHECK_VALUE(xi > 0.0 && xi < 1.0, op, ": xi must be in (0, 1), got ", xi);
  const c10::cuda::CUDAGuard guard(dist.device());
  const CudaDeviceLimits lim = cuda_device_limits(dist.get_device());
  const int64_t nmax = optics_labels_cuda_max_points(lim.max_smem_per_block);
  TORCH_CHECK_VALUE(N <= nmax, op, ": N=", N, " points exceed the ", nmax, " this device's shared memory allows");
  TORCH_CHECK_VALUE(P <= 0x7fffffffLL, op, ": too many problems, P=", P);

  const at::Tensor d = dist.contiguous();
  const at::Tensor bad = d.lt(0.0).logical_or_(d.isfinite().logical_not());
  if (bad.any().item<bool>()) {
    const int64_t k = bad.flatten().nonzero().select(0, 0).item<int64_t>();
    TORCH_CHECK_VALUE(false, op, ": every distance must be finite and >= 0, got dist[", k / (N * N), ", ",
                      (k / N) % N, ", ", k % N, "] = ", d.flatten()[k].item<double>());
  }
  at::Tensor labels = at::empty({P, N}, d.options().dtype(at::kLong));
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(optics_labels_cuda_workspace_bytes(P, N))}, d.options().dtype(at::kByte));
  C10_CUDA_CHECK(optics_labels_cuda(d.data_ptr<double>(), false, P, N, min_samples, xi, workspace.data_ptr(),
                                    labels.data_ptr<int64_t>(), lim, c10::cuda::getCurrentCUDAStream()));
  return labels;
}

}  // namespace
}  // namespace hetmm

TORCH_LIBRARY_FRAGMENT(hetmm, m) { m.def("_optics_labels_cuda_max_points(int device) -> int", &hetmm::max_points); }

TORCH_LIBRARY_IMPL(hetmm, CUDA, m) { m.impl("optics_labels", &hetmm::optics_labels_cuda_torch); }
