// The one place that declares the hetmm operator schemas (TORCH_LIBRARY) and the Python module hetmm_fast._C.
//
// Kernels register themselves per dispatch key in csrc/<op>/<op>_torch.cpp (CPU) and <op>_cuda_torch.cpp (CUDA);
// fake (meta) kernels are registered in Python (hetmm_fast/_engine_cpu.py). Importing hetmm_fast._C loads this
// shared library, which runs the static registrations; the module itself has no functions.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(hetmm, m) {
  // query [B, C, H, W], templates [N, C, H, W] -> (forward [B, H, W] f32, backward [B, H, W] f32); SPEC §2.
  // precision, the arithmetic of float32 inputs (no other dtype is affected): "exact" = IEEE float32 products and
  // sums (float64 inputs in float64); "tf32" = float32 inputs may be multiplied on TF32 tensor cores with float32
  // accumulation. The CPU kernel computes exactly for either value; any other value is refused.
  m.def(
      "window_match(Tensor query, Tensor templates, int fwd_window, int bwd_window, str precision=\"exact\") -> "
      "(Tensor, Tensor)");
  // dist [P, N, N] f64 -> labels [P, N] int64; SPEC §4 step 1.
  m.def("optics_labels(Tensor dist, int min_samples, float xi) -> Tensor");
  // templates [N, C, H, W] -> indices [size, H, W] int64; SPEC §4.
  m.def("pts_select(Tensor templates, int size) -> Tensor");
  // templates [N, C, H, W] -> labels [N, H, W] int64: the OPTICS labels pts_select starts from at each pixel
  // (min_samples = max(2, N // size), xi = 0.05; -1 = noise); SPEC §4 step 1. CPU kernel only.
  m.def("pts_labels(Tensor templates, int size) -> Tensor");
  // templates [N, C, H, W], index [K, H, W] int64 -> sheets [K, C, H, W], out[k, c, y, x] = templates[index[k, y, x],
  // c, y, x] (the gather after pts_select; CPU kernel only, other devices use torch.gather).
  m.def("gather_sheets(Tensor templates, Tensor index) -> Tensor");
}

// The instruction-set features this translation unit was compiled for; setup.py gives every C++ file of the
// extension the same flags, so they are the CPU kernels' too. Which arithmetic the kernels run depends on them (the
// window_match micro-kernel uses FMA with AVX2 + FMA and a separate multiply and add otherwise), so results are
// bit-identical only between builds with the same features.
static const char* build_features() {
  return ""
#if defined(__AVX512F__)
         "avx512f "
#endif
#if defined(__AVX2__)
         "avx2 "
#endif
#if defined(__FMA__)
         "fma "
#endif
#if defined(__F16C__)
         "f16c "
#endif
#if defined(_OPENMP)
         "openmp "
#endif
      ;
}

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "hetmm_fast compiled engine (ops in torch.ops.hetmm)",
                               -1, nullptr};
  PyObject* m = PyModule_Create(&module);
  if (m != nullptr && PyModule_AddStringConstant(m, "build_features", build_features()) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
