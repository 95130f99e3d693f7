// HETMM_HOST_DEVICE marks a function that both engines run: __host__ __device__ under nvcc, plain C++ elsewhere (the
// CPU engine, the torch bindings, and the emulated CUDA tests, which compile the .cu files with a host compiler).
// The core headers (csrc/<op>/<op>_core.h) use it for the semantic steps the CPU and CUDA engines share.
#pragma once

#ifdef __CUDACC__
#define HETMM_HOST_DEVICE __host__ __device__
#else
#define HETMM_HOST_DEVICE
#endif
