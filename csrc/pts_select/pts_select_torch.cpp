// Tensor-level CPU wrappers of pts_select, pts_labels and gather_sheets. pts_select / pts_labels: boundary checks,
// dtype handling, output allocation; the work is done by the torch-free hetmm::pts_select_cpu / pts_labels_cpu
// (pts_select_cpu.cpp) with torch's intra-op thread count (labels == true: pts_labels). float32 and float64
// inputs are passed as they are (any strides, no copy); float16 and bfloat16 inputs are converted exactly to float32
// in bands of image rows (at most ~64 MiB at a time), so the result is the float32 kernel's on the same values.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "pts_select.h"

namespace hetmm {
namespace {

constexpr int64_t kConvertBudget = int64_t(64) << 20;  // bytes of float32 copy per band (float16/bfloat16 input)

// labels == false: pts_select's K choices per pixel; true: pts_labels' N labels per pixel.
template <typename T>
int64_t run_kernel(const at::Tensor& t, int64_t size, bool labels, int64_t* out) {
  const T* x = t.const_data_ptr<T>();
  const int64_t n = t.size(0), c = t.size(1), h = t.size(2), w = t.size(3);
  const int64_t s0 = t.stride(0), s1 = t.stride(1), s2 = t.stride(2), s3 = t.stride(3);
  const int threads = at::get_num_threads();
  return labels ? pts_labels_cpu(x, n, c, h, w, s0, s1, s2, s3, size, out, threads)
                : pts_select_cpu(x, n, c, h, w, s0, s1, s2, s3, size, out, threads);
}

void check_finite(const char* op, int64_t bad_pixel, int64_t y0, int64_t W) {
  TORCH_CHECK_VALUE(bad_pixel < 0, "hetmm.", op, " (cpu): templates has a non-finite value (NaN or inf) at pixel ",
                    "(y, x) = (", y0 + bad_pixel / W, ", ", bad_pixel % W, ")");
}

// The shared boundary of pts_select and pts_labels: checks, dtype handling, output [rows, H, W] int64 with
// rows = size (choices) or N (labels).
at::Tensor pts_cpu_torch(const char* op, const at::Tensor& templates, int64_t size, bool labels) {
  TORCH_CHECK(templates.device().is_cpu(), "hetmm.", op, " (cpu): templates must be a CPU tensor, got ",
              templates.device());
  TORCH_CHECK_VALUE(templates.dim() == 4, "hetmm.", op, " (cpu): templates must be 4-D [N, C, H, W], got ",
                    templates.sizes());
  const at::ScalarType dtype = templates.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                   "hetmm.", op, " (cpu): templates dtype must be float32, float64, float16 or bfloat16, got ",
                   dtype);
  const int64_t N = templates.size(0), C = templates.size(1), H = templates.size(2), W = templates.size(3);
  TORCH_CHECK_VALUE(N > 0 && C > 0, "hetmm.", op, " (cpu): templates [N, C, H, W] needs N, C >= 1, got ",
                    templates.sizes());
  TORCH_CHECK_VALUE(size >= 1 && size <= N, "hetmm.", op, " (cpu): size must be in [1, N=", N, "], got ", size);

  const int64_t rows_out = labels ? N : size;
  at::Tensor out = at::empty({rows_out, H, W}, templates.options().dtype(at::kLong));
  if (H * W == 0) return out;
  int64_t* o = out.mutable_data_ptr<int64_t>();
  if (dtype == at::kFloat) {
    check_finite(op, run_kernel<float>(templates, size, labels, o), 0, W);
  } else if (dtype == at::kDouble) {
    check_finite(op, run_kernel<double>(templates, size, labels, o), 0, W);
  } else {
    const int64_t row_bytes = N * C * W * static_cast<int64_t>(sizeof(float));
    const int64_t band = std::clamp<int64_t>(kConvertBudget / std::max<int64_t>(row_bytes, 1), 1, H);
    for (int64_t y0 = 0; y0 < H; y0 += band) {
      const int64_t rows = std::min(band, H - y0);
      const at::Tensor chunk = templates.narrow(2, y0, rows).to(at::kFloat);
      if (rows == H) {
        check_finite(op, run_kernel<float>(chunk, size, labels, o), 0, W);
        break;
      }
      at::Tensor part = at::empty({rows_out, rows * W}, out.options());
      check_finite(op, run_kernel<float>(chunk, size, labels, part.mutable_data_ptr<int64_t>()), y0, W);
      const int64_t* src = part.const_data_ptr<int64_t>();
      for (int64_t k = 0; k < rows_out; ++k)
        std::memcpy(o + k * H * W + y0 * W, src + k * rows * W, sizeof(int64_t) * static_cast<size_t>(rows * W));
    }
  }
  return out;
}

at::Tensor pts_select_cpu_torch(const at::Tensor& templates, int64_t size) {
  return pts_cpu_torch("pts_select", templates, size, false);
}

at::Tensor pts_labels_cpu_torch(const at::Tensor& templates, int64_t size) {
  return pts_cpu_torch("pts_labels", templates, size, true);
}

at::Tensor gather_sheets_cpu_torch(const at::Tensor& templates, const at::Tensor& index) {
  TORCH_CHECK(templates.device().is_cpu() && index.device().is_cpu(),
              "hetmm.gather_sheets (cpu): templates and index must be CPU tensors, got ", templates.device(), " and ",
              index.device());
  TORCH_CHECK_VALUE(templates.dim() == 4, "hetmm.gather_sheets (cpu): templates must be 4-D [N, C, H, W], got ",
                    templates.sizes());
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "hetmm.gather_sheets (cpu): index must be int64, got ",
                   index.scalar_type());
  const int64_t N = templates.size(0), C = templates.size(1), H = templates.size(2), W = templates.size(3);
  TORCH_CHECK_VALUE(index.dim() == 3 && index.size(1) == H && index.size(2) == W,
                    "hetmm.gather_sheets (cpu): index must be [K, H, W] = [K, ", H, ", ", W, "], got ", index.sizes());
  const int64_t elem = static_cast<int64_t>(templates.element_size());
  TORCH_CHECK_TYPE(templates.is_floating_point() && (elem == 2 || elem == 4 || elem == 8),
                   "hetmm.gather_sheets (cpu): templates dtype must be float16, bfloat16, float32 or float64, got ",
                   templates.scalar_type());
  const int64_t K = index.size(0);
  at::Tensor out = at::empty({K, C, H, W}, templates.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const at::Tensor idx = index.contiguous();
  const int64_t* ip = idx.const_data_ptr<int64_t>();
  int64_t lo = ip[0], hi = ip[0];
  for (int64_t i = 1; i < idx.numel(); ++i) lo = std::min(lo, ip[i]), hi = std::max(hi, ip[i]);
  TORCH_CHECK_INDEX(lo >= 0 && hi < N, "hetmm.gather_sheets (cpu): index values must be in [0, N=", N, "), got [",
                    lo, ", ", hi, "]");
  gather_sheets_cpu(templates.const_data_ptr(), elem, N, C, H, W, templates.stride(0), templates.stride(1),
                    templates.stride(2), templates.stride(3), ip, K, out.mutable_data_ptr(), at::get_num_threads());
  return out;
}

}  // namespace
}  // namespace hetmm

TORCH_LIBRARY_IMPL(hetmm, CPU, m) {
  m.impl("pts_select", &hetmm::pts_select_cpu_torch);
  m.impl("pts_labels", &hetmm::pts_labels_cpu_torch);
  m.impl("gather_sheets", &hetmm::gather_sheets_cpu_torch);
}
