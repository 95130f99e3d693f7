// Tensor-level CPU wrapper of optics_labels: boundary checks, contiguity, output allocation; the work is done by the
// torch-free hetmm::optics_labels_cpu (optics_labels_cpu.cpp) with torch's intra-op thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "optics_labels.h"

namespace hetmm {
namespace {

at::Tensor optics_labels_cpu_torch(const at::Tensor& dist, int64_t min_samples, double xi) {
  TORCH_CHECK(dist.device().is_cpu(), "hetmm.optics_labels (cpu): dist must be a CPU tensor, got ", dist.device());
  TORCH_CHECK_TYPE(dist.scalar_type() == at::kDouble, "hetmm.optics_labels (cpu): dist must be float64, got ",
                   dist.scalar_type());
  TORCH_CHECK_VALUE(dist.dim() == 3 && dist.size(1) == dist.size(2),
                    "hetmm.optics_labels (cpu): dist must be [P, N, N] (P square distance matrices), got ",
                    dist.sizes());
  const int64_t P = dist.size(0), N = dist.size(1);
  TORCH_CHECK_VALUE(min_samples >= 2 && min_samples <= N, "hetmm.optics_labels (cpu): min_samples must be in [2, N=",
                    N, "], got ", min_samples);
  TORCH_CHECK_VALUE(xi > 0.0 && xi < 1.0, "hetmm.optics_labels (cpu): xi must be in (0, 1), got ", xi);

  const at::Tensor d = dist.contiguous();
  at::Tensor labels = at::empty({P, N}, dist.options().dtype(at::kLong));
  if (P == 0) return labels;
  const double* data = d.const_data_ptr<double>();
  const int64_t bad = optics_labels_cpu(data, P, N, min_samples, xi, labels.mutable_data_ptr<int64_t>(),
                                        at::get_num_threads());
  if (bad >= 0) {
    const int64_t p = bad / (N * N), i = bad / N % N, j = bad % N;
    TORCH_CHECK_VALUE(false, "hetmm.optics_labels (cpu): dist[", p, ", ", i, ", ", j, "] = ", data[bad],
                      " is not a finite non-negative distance");
  }
  return labels;
}

}  // namespace
}  // namespace hetmm

TORCH_LIBRARY_IMPL(hetmm, CPU, m) { m.impl("optics_labels", &hetmm::optics_labels_cpu_torch); }
