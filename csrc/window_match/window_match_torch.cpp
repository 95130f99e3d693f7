// Tensor-level CPU wrapper of window_match: boundary checks, dtype mapping, output allocation; the work is done by
// the torch-free hetmm::window_match_cpu (window_match_cpu.cpp). Strided inputs are passed as they are (no copy).
// The CPU kernel has one arithmetic: it computes exactly (IEEE float32, or float64 for float64 inputs) whichever
// precision the op is given, after checking that the value is one the schema allows.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <stdexcept>
#include <string>
#include <tuple>

#include "window_match.h"

namespace hetmm {
namespace {

FeatureDtype feature_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return FeatureDtype::kFloat32;
    case at::kHalf:
      return FeatureDtype::kFloat16;
    case at::kBFloat16:
      return FeatureDtype::kBFloat16;
    case at::kDouble:
      return FeatureDtype::kFloat64;
    default:
      TORCH_CHECK_TYPE(false, "hetmm.window_match (cpu): ", name,
                       " dtype must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  }
}

FeatureMap feature_map(const at::Tensor& t, FeatureDtype dtype) {
  FeatureMap m;
  m.data = t.data_ptr();
  m.dtype = dtype;
  m.count = t.size(0), m.channels = t.size(1), m.height = t.size(2), m.width = t.size(3);
  m.stride_n = t.stride(0), m.stride_c = t.stride(1), m.stride_h = t.stride(2), m.stride_w = t.stride(3);
  return m;
}

std::tuple<at::Tensor, at::Tensor> window_match_cpu_torch(const at::Tensor& query, const at::Tensor& templates,
                                                          int64_t fwd_window, int64_t bwd_window,
                                                          c10::string_view precision) {
  TORCH_CHECK_VALUE(precision == "exact" || precision == "tf32",
                    "hetmm.window_match (cpu): precision must be 'exact' or 'tf32', got '", std::string(precision),
                    "'");
  TORCH_CHECK(query.device().is_cpu() && templates.device().is_cpu(),
              "hetmm.window_match (cpu): query and templates must be CPU tensors, got ", query.device(), " and ",
              templates.device());
  TORCH_CHECK_VALUE(query.dim() == 4 && templates.dim() == 4,
                    "hetmm.window_match (cpu): query [B, C, H, W] and templates [N, C, H, W] must be 4-D, got ",
                    query.sizes(), " and ", templates.sizes());
  TORCH_CHECK_VALUE(query.size(1) == templates.size(1) && query.size(2) == templates.size(2) &&
                        query.size(3) == templates.size(3),
                    "hetmm.window_match (cpu): query ", query.sizes(), " and templates ", templates.sizes(),
                    " must have the same C, H, W");
  TORCH_CHECK_VALUE(query.numel() > 0 && templates.numel() > 0, "hetmm.window_match (cpu): empty input, query ",
                    query.sizes(), ", templates ", templates.sizes());
  TORCH_CHECK_TYPE(query.scalar_type() == templates.scalar_type(), "hetmm.window_match (cpu): query dtype ",
                   query.scalar_type(), " != templates dtype ", templates.scalar_type());
  TORCH_CHECK_VALUE(fwd_window > 0 && fwd_window % 2 == 1 && bwd_window > 0 && bwd_window % 2 == 1,
                    "hetmm.window_match (cpu): windows must be positive odd ints, got fwd_window=", fwd_window,
                    ", bwd_window=", bwd_window);
  const FeatureDtype dtype = feature_dtype(query, "query");

  const int64_t B = query.size(0), H = query.size(2), W = query.size(3);
  at::Tensor fwd = at::empty({B, H, W}, query.options().dtype(at::kFloat));
  at::Tensor bwd = at::empty({B, H, W}, query.options().dtype(at::kFloat));
  try {
    window_match_cpu(feature_map(query, dtype), feature_map(templates, dtype), fwd_window, bwd_window,
                     fwd.data_ptr<float>(), bwd.data_ptr<float>());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
  return {fwd, bwd};
}

}  // namespace
}  // namespace hetmm

TORCH_LIBRARY_IMPL(hetmm, CPU, m) { m.impl("window_match", &hetmm::window_match_cpu_torch); }
