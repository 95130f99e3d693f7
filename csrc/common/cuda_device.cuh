// Device-side primitives shared by the CUDA kernels of hetmm (csrc/<op>/<op>_cuda.cu), torch-free.
//
// Every hardware-specific operation the kernels use goes through this header: warp shuffles, block barriers,
// dynamic shared memory, cp.async copies, mma.sync tensor-core instructions (fragment layouts of the PTX ISA,
// "Matrix Fragments for mma.m16n8k16 / mma.m16n8k8"), the ordered-int atomic max and bit casts. With
// HETMM_CUDA_EMULATION defined the same names come from tests/cpp/cuda_emulation.h, a thread-per-CUDA-thread
// emulator, so the kernels can be compiled as plain C++ and checked on a machine without a GPU.
//
// Tensor-core and cp.async instructions need sm_80 or newer; on older targets they trap (the build targets sm_80 and
// sm_90, and the Python engine refuses devices below 8.0).
#pragma once

#include <cstdint>
#include <limits>

#include "ordering.h"

#ifdef HETMM_CUDA_EMULATION
#include "cuda_emulation.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace hetmm {
namespace cu {

using dim3_t = dim3;

__device__ __forceinline__ char* dynamic_smem() {
  extern __shared__ __align__(16) char hetmm_dynamic_smem[];
  return hetmm_dynamic_smem;
}

__device__ __forceinline__ void block_sync() { __syncthreads(); }

template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
}

template <typename T>
__device__ __forceinline__ T shfl(T v, int src_lane) {
  return __shfl_sync(0xffffffffu, v, src_lane);
}

__device__ __forceinline__ int float_bits(float v) { return __float_as_int(v); }
__device__ __forceinline__ float bits_float(int v) { return __int_as_float(v); }

__device__ __forceinline__ void atomic_max_int(int* address, int value) { atomicMax(address, value); }

__device__ __forceinline__ float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}
__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// 16-byte global -> shared copy that bypasses registers (L2 only); completes at cp_async_wait.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src) : "memory");
#else
  *static_cast<uint4*>(smem_dst) = *static_cast<const uint4*>(gmem_src);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most `Pending` committed groups of this thread are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}

// ldmatrix.x4 (b16): lanes 8j..8j+7 give the 16-byte row addresses (shared memory, 16-byte aligned) of rows 0..7 of
// 8x8 matrix j; lane l receives in r[j] the elements (row l / 4, columns 2 (l % 4), 2 (l % 4) + 1) of matrix j, the
// fragment layout of mma.m16n8k16's A (matrices = the four 8x8 quadrants) and B (two k-halves of two n-tiles).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  __trap();
#endif
}

// D = A * B + C for one warp, m16n8k16, fp16 (kBf16 = false) or bf16 inputs, fp32 accumulation.
// a: 4 registers of 2 elements (rows g / g+8, columns 2q..2q+1 / +8), b: 2 registers (k = 2q..2q+1 / +8, n = g),
// c/d: rows g (c0, c1) and g+8 (c2, c3), columns 2q, 2q+1; g = lane / 4, q = lane % 4.
template <bool kBf16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  __trap();
#endif
}

// D = A * B + C for one warp, m16n8k8, tf32 inputs (float bit patterns from to_tf32), fp32 accumulation.
// a: a0 (row g, col q), a1 (g+8, q), a2 (g, q+4), a3 (g+8, q+4); b: b0 (k = q, n = g), b1 (k = q+4, n = g).
__device__ __forceinline__ void mma_1688_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// float -> tf32 (10 mantissa bits), round to nearest with ties away from zero (cvt.rna).
__device__ __forceinline__ uint32_t to_tf32(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
#else
  __trap();
  return 0;
#endif
}

}  // namespace cu
}  // namespace hetmm

#define HETMM_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)

// Loop unrolling hints (no-ops in the emulator).
#define HETMM_UNROLL _Pragma("unroll")
#define HETMM_UNROLL_4 _Pragma("unroll 4")

#endif  // HETMM_CUDA_EMULATION

namespace hetmm {
namespace cu {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr int kNoIndex = 0x7fffffff;  // "no candidate" in (value, index) reductions; loses every comparison

// All-reduce of (v, i) over the block (blockDim.x a multiple of 32, at most 1024): every thread ends with the winner
// under the order of `better` (ordering.h), the one the CPU engines scan with.
// scratch_v / scratch_i: shared arrays of 64 entries; `parity` must alternate between consecutive calls (one barrier
// per call: a buffer is rewritten only after the next call's barrier, when everyone has read it).
template <bool kMax>
__device__ __forceinline__ void block_arg_reduce(double& v, int& i, double* scratch_v, int* scratch_i, int parity) {
  for (int off = 16; off > 0; off >>= 1) {
    const double ov = shfl_xor(v, off);
    const int oi = shfl_xor(i, off);
    if (better<kMax>(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  const int nw = static_cast<int>(blockDim.x) / 32;
  if (nw == 1) return;
  double* bv = scratch_v + 32 * parity;
  int* bi = scratch_i + 32 * parity;
  if ((threadIdx.x & 31) == 0) {
    bv[threadIdx.x / 32] = v;
    bi[threadIdx.x / 32] = i;
  }
  block_sync();
  for (int w = 0; w < nw; ++w)
    if (better<kMax>(bv[w], bi[w], v, i)) {
      v = bv[w];
      i = bi[w];
    }
}

// Order-preserving map float -> int: a < b (no NaN) iff key(a) < key(b) as signed ints, so atomicMax on the keys is
// a float atomic max. Negative floats have their magnitude bits flipped.
__host__ __device__ __forceinline__ int ordered_key_from_bits(int bits) { return bits >= 0 ? bits : bits ^ 0x7fffffff; }
__host__ __device__ __forceinline__ int bits_from_ordered_key(int key) { return key >= 0 ? key : key ^ 0x7fffffff; }

}  // namespace cu
}  // namespace hetmm
