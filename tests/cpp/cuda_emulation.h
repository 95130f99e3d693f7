// A small CUDA emulator for the torch-free kernels of hetmm: compiles csrc/<op>/<op>_cuda.cu as plain C++
// (define HETMM_CUDA_EMULATION, include the .cu) so their indexing, pipelines, reductions and tensor-core fragment
// handling can be checked on a machine without a GPU (tests/cpp/test_*_cuda_emulated.cpp).
//
// Model: every CUDA thread of a block is a cooperative fiber on one OS thread; blocks run one after the
// other. __syncthreads and the warp collectives (shuffles, mma.sync) suspend the fiber until every thread of the
// block / lane of the warp has arrived, so a divergent barrier or collective is reported as a deadlock instead of
// silently passing. mma.sync follows the fragment layouts of the PTX ISA ("Matrix Fragments for mma.m16n8k16 with
// floating point type", "Matrix Fragments for mma.m16n8k8"), written here independently of the kernels: the
// kernels scatter/gather fragments, this file reassembles whole matrices from all 32 lanes. cp.async copies are
// performed either when issued or only when waited for (CopyTiming), which exposes a missing wait or barrier.
// Shared memory starts filled with 0xff bytes (NaN floats) so reads of unwritten data show up.
//
// Built with AddressSanitizer (CMake builds each emulated test so too, *_asan), every byte of the block's shared
// memory allocation outside the launch's dynamic size is poisoned, and the tests poison the slack around their device
// buffers (poison_outside), so any read or write past a buffer or past the shared memory a launch asked for stops the
// test with the faulting line: compute-sanitizer's memcheck, for shared memory too, on the CPU. Built with
// ThreadSanitizer (*_tsan), the threads are TSan fibers ordered only by barriers (see IgnoreAccesses below), so two
// threads' conflicting accesses that no barrier orders are reported whatever order the fibers ran in: racecheck.
//
// Not modelled: timing, bank conflicts; races between threads that no barrier orders are found only by the
// ThreadSanitizer build.
#pragma once

#if !(defined(__x86_64__) && defined(__linux__))
#include <ucontext.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define HETMM_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HETMM_EMU_ASAN 1
#endif
#endif
#ifdef HETMM_EMU_ASAN
#include <sanitizer/asan_interface.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define HETMM_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HETMM_EMU_TSAN 1
#endif
#endif
#ifdef HETMM_EMU_TSAN
#include <sanitizer/tsan_interface.h>
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

using cudaStream_t = void*;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
inline const char* cudaGetErrorString(cudaError_t) { return "error (emulated)"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}

namespace hetmm_emu {

// Fiber contexts. On x86-64 Linux a 6-register switch (the signal mask is never touched, so no system call per
// switch; the emulated kernels switch millions of times); elsewhere ucontext.
#if defined(__x86_64__) && defined(__linux__)
extern "C" void hetmm_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl hetmm_emu_switch
.type hetmm_emu_switch, @function
hetmm_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size hetmm_emu_switch, .-hetmm_emu_switch
)");

struct Context {
  void* sp = nullptr;
};
// A fresh context whose first switch "returns" into entry() with the stack aligned as after a call.
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
  top -= 16;  // entry's return-address slot sits at a 16-byte boundary
  void** sp = reinterpret_cast<void**>(top);
  sp[0] = reinterpret_cast<void*>(entry);
  for (int i = 1; i <= 6; ++i) sp[-i] = nullptr;  // r15..rbp
  c.sp = sp - 6;
}
inline void switch_context(Context& from, Context& to) { hetmm_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Dim3 {
  unsigned x, y, z;
  Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum class CopyTiming { kAtIssue, kAtWait };

// ThreadSanitizer builds: every emulated thread is a TSan fiber, switched to without synchronisation, so TSan orders
// two threads' memory accesses only by what orders them on a GPU: __syncthreads (release before, acquire after the
// barrier), the start of a block after the host's writes and the blocks before it, and the host after the block.
// Warp collectives order nothing (on a GPU only __syncwarp or a barrier orders shared memory between lanes). The
// emulator's own bookkeeping (scheduler state, the shuffle exchange, the per-warp mma matrices) is not kernel
// memory and is excluded. A shared-memory access of one thread that no barrier orders against another thread's
// conflicting access is then reported as a data race: compute-sanitizer's racecheck, on the CPU.
struct IgnoreAccesses {
#ifdef HETMM_EMU_TSAN
  IgnoreAccesses() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~IgnoreAccesses() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
#else
  IgnoreAccesses() {}  // user-provided, so that a scope guard is not an "unused variable" in other builds
  ~IgnoreAccesses() {}
#endif
};
inline void hb_release(void* token) {
#ifdef HETMM_EMU_TSAN
  __tsan_release(token);
#else
  (void)token;
#endif
}
inline void hb_acquire(void* token) {
#ifdef HETMM_EMU_TSAN
  __tsan_acquire(token);
#else
  (void)token;
#endif
}
// Tell TSan which fiber runs next (no synchronisation implied); `fiber` is null in other builds.
inline void tsan_switch(void* fiber) {
#ifdef HETMM_EMU_TSAN
  __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync);
#else
  (void)fiber;
#endif
}
// The TSan fiber of an emulated thread slot, created once and reused by every block of every launch (TSan never
// reuses the ids of destroyed fibers and stops at 8128); null in other builds.
inline void* tsan_fiber(void* fiber) {
#ifdef HETMM_EMU_TSAN
  return fiber ? fiber : __tsan_create_fiber(0);
#else
  return fiber;
#endif
}
inline void* tsan_current_fiber() {
#ifdef HETMM_EMU_TSAN
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}

// Start of the dynamic shared memory in the block's allocation: 16-byte aligned, like the real one.
inline char* smem_start(char* alloc) {
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(alloc) + 15) & ~uintptr_t(15));
}

// Mark [base, base + bytes) inaccessible / accessible to AddressSanitizer (no-ops in other builds).
inline void poison(const void* base, size_t bytes) {
#ifdef HETMM_EMU_ASAN
  ASAN_POISON_MEMORY_REGION(base, bytes);
#else
  (void)base, (void)bytes;
#endif
}
inline void unpoison(const void* base, size_t bytes) {
#ifdef HETMM_EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(base, bytes);
#else
  (void)base, (void)bytes;
#endif
}
// Of the allocation [alloc, alloc + alloc_bytes), leave only [used, used + used_bytes) accessible.
inline void poison_outside(const void* alloc, size_t alloc_bytes, const void* used, size_t used_bytes) {
  const char* a = static_cast<const char*>(alloc);
  const char* u = static_cast<const char*>(used);
  poison(a, static_cast<size_t>(u - a));
  poison(u + used_bytes, alloc_bytes - static_cast<size_t>(u - a) - used_bytes);
}

struct Copy {
  void* dst;
  const void* src;
};

struct Fiber {
  enum State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };
  Context ctx;
  std::unique_ptr<char[]> stack;
  Dim3 thread;
  int index = 0, lane = 0, warp = 0;
  State state = kRunnable;
  unsigned collectives = 0;  // warp collectives completed: selects the exchange buffer
  std::vector<std::vector<Copy>> groups;
  std::vector<Copy> open;
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kSlots = 8;  // 64-bit exchange slots per lane and buffer

// Matrices of the current mma of a warp, rebuilt once per collective instead of once per lane.
struct MmaCache {
  unsigned seq = ~0u;
  int kind = -1;
  float A[16][16];
  float B[16][8];
};

struct Runtime {
  Context scheduler;
  std::vector<MmaCache> mma_cache;  // [warp]
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  Dim3 grid, block, block_index;
  std::vector<char> smem;
  std::vector<uint64_t> exchange;  // [warp][2 buffers][32 lanes][kSlots]
  std::function<void()> body;
  CopyTiming copy_timing = CopyTiming::kAtIssue;
  void* tsan_scheduler = nullptr;
  std::vector<void*> tsan_fibers;  // [thread slot]: outlives the Fiber objects, which follow the block size
  // Synchronisation tokens (ThreadSanitizer builds): __syncthreads; host and earlier blocks -> a block's start;
  // a block's end -> the host.
  char barrier_token = 0, block_start_token = 0, block_done_token = 0;
};

inline Runtime& runtime() {
  static Runtime r;
  return r;
}
inline Fiber& self() { return *runtime().current; }
inline void set_copy_timing(CopyTiming t) { runtime().copy_timing = t; }

inline void suspend(Fiber::State why) {
  Fiber& f = self();
  {
    IgnoreAccesses ignore;
    f.state = why;
  }
  tsan_switch(runtime().tsan_scheduler);
  switch_context(f.ctx, runtime().scheduler);
}

inline void run_group(std::vector<Copy>& group) {
  for (const Copy& c : group) std::memcpy(c.dst, c.src, 16);
  group.clear();
}

// Entry of every fiber; never returns (a finished fiber switches back to the scheduler for good). Not instrumented by
// ThreadSanitizer: a function entered once per block and never left would grow the reused fiber's shadow call stack.
#ifdef HETMM_EMU_TSAN
__attribute__((no_sanitize("thread")))
#endif
inline void trampoline() {
  hb_acquire(&runtime().block_start_token);
  runtime().body();
  Fiber& f = self();
  for (auto& g : f.groups) run_group(g);
  run_group(f.open);
  hb_release(&runtime().block_done_token);
  {
    IgnoreAccesses ignore;
    f.groups.clear();
    f.state = Fiber::kDone;
  }
  tsan_switch(runtime().tsan_scheduler);
  switch_context(f.ctx, runtime().scheduler);
  std::abort();
}

[[noreturn]] inline void deadlock(const char* what) {
  Runtime& r = runtime();
  std::fprintf(stderr, "cuda emulation: %s in block (%u, %u, %u); thread states:", what, r.block_index.x,
               r.block_index.y, r.block_index.z);
  for (const Fiber& f : r.fibers) std::fprintf(stderr, " %d", static_cast<int>(f.state));
  std::fprintf(stderr, "\n");
  std::abort();
}

// Runs `call` (which invokes the kernel) for every block of `grid` with `block` threads.
inline void launch(Dim3 grid, Dim3 block, size_t smem_bytes, std::function<void()> call) {
  Runtime& r = runtime();
  IgnoreAccesses ignore;  // the scheduler's accesses are bookkeeping, not kernel memory
  r.tsan_scheduler = tsan_current_fiber();
  const int n = static_cast<int>(block.x * block.y * block.z);
  const int warps = (n + 31) / 32;
  r.body = std::move(call);
  r.grid = grid;
  r.block = block;
  r.fibers.resize(static_cast<size_t>(n));
  if (r.tsan_fibers.size() < r.fibers.size()) r.tsan_fibers.resize(r.fibers.size(), nullptr);
  for (Fiber& f : r.fibers)
    if (!f.stack) f.stack.reset(new char[kStackBytes]);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        r.block_index = Dim3(bx, by, bz);
        unpoison(r.smem.data(), r.smem.size());
        r.smem.assign(smem_bytes + 16, static_cast<char>(0xff));
        poison_outside(r.smem.data(), r.smem.size(), smem_start(r.smem.data()), smem_bytes);
        r.exchange.assign(static_cast<size_t>(warps) * 2 * 32 * kSlots, 0);
        r.mma_cache.assign(static_cast<size_t>(warps), MmaCache());
        for (int i = 0; i < n; ++i) {
          Fiber& f = r.fibers[static_cast<size_t>(i)];
          f.index = i;
          f.thread = Dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
          f.lane = i % 32;
          f.warp = i / 32;
          f.state = Fiber::kRunnable;
          f.collectives = 0;
          f.groups.clear();
          f.open.clear();
          r.tsan_fibers[static_cast<size_t>(i)] = tsan_fiber(r.tsan_fibers[static_cast<size_t>(i)]);
          make_context(f.ctx, f.stack.get(), kStackBytes, trampoline);
        }
        hb_release(&r.block_start_token);
        for (;;) {
          for (Fiber& f : r.fibers) {
            if (f.state != Fiber::kRunnable) continue;
            r.current = &f;
            tsan_switch(r.tsan_fibers[static_cast<size_t>(f.index)]);
            switch_context(r.scheduler, f.ctx);
          }
          int done = 0, at_block = 0;
          for (const Fiber& f : r.fibers) {
            done += f.state == Fiber::kDone;
            at_block += f.state == Fiber::kAtBlockBarrier;
          }
          if (done == n) break;
          if (at_block == n) {
            for (Fiber& f : r.fibers) f.state = Fiber::kRunnable;
            continue;
          }
          if (done > 0 && done + at_block == n) deadlock("__syncthreads after some threads exited");
          bool released = false;
          for (int w = 0; w < warps; ++w) {
            const int lo = 32 * w, hi = std::min(n, lo + 32);
            bool all = true;
            for (int i = lo; i < hi; ++i) all &= r.fibers[static_cast<size_t>(i)].state == Fiber::kAtWarpBarrier;
            if (!all) continue;
            for (int i = lo; i < hi; ++i) r.fibers[static_cast<size_t>(i)].state = Fiber::kRunnable;
            released = true;
          }
          if (!released) deadlock("divergent barrier or warp collective");
        }
        hb_acquire(&r.block_done_token);
      }
  unpoison(r.smem.data(), r.smem.size());
}

// One warp collective: deposit `words` 64-bit values, wait for the warp, then `read` sees every lane's deposit.
template <typename Read>
inline void warp_collective(const uint64_t* words, int count, Read&& read) {
  Fiber& f = self();
  Runtime& r = runtime();
  uint64_t* buf = r.exchange.data() + (static_cast<size_t>(f.warp) * 2 + (f.collectives & 1)) * 32 * kSlots;
  {
    IgnoreAccesses ignore;
    std::memcpy(buf + f.lane * kSlots, words, sizeof(uint64_t) * static_cast<size_t>(count));
  }
  suspend(Fiber::kAtWarpBarrier);
#ifdef HETMM_EMU_TSAN
  uint64_t mine[32 * kSlots];  // the exchange is bookkeeping: `read` sees a private copy, its other accesses count
  {
    IgnoreAccesses ignore;
    std::memcpy(mine, buf, sizeof(mine));
  }
  read(static_cast<const uint64_t*>(mine));
#else
  read(static_cast<const uint64_t*>(buf));
#endif
  {
    IgnoreAccesses ignore;
    ++f.collectives;
  }
}

inline float half_to_float(uint16_t h) {
  const int sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float v;
  if (exponent == 0)
    v = std::ldexp(static_cast<float>(mantissa), -24);
  else if (exponent == 31)
    v = mantissa ? NAN : INFINITY;
  else
    v = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  return sign ? -v : v;
}
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}
inline float bits_to_float(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace hetmm_emu

#define HETMM_UNROLL
#define HETMM_UNROLL_4

#define threadIdx (::hetmm_emu::self().thread)
#define blockIdx (::hetmm_emu::runtime().block_index)
#define blockDim (::hetmm_emu::runtime().block)
#define gridDim (::hetmm_emu::runtime().grid)

#define HETMM_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  do {                                                              \
    (void)(stream);                                                 \
    ::hetmm_emu::launch((grid), (block), (smem_bytes), [&]() { kernel(__VA_ARGS__); }); \
  } while (0)

namespace hetmm {
namespace cu {

using dim3_t = ::hetmm_emu::Dim3;

inline char* dynamic_smem() { return ::hetmm_emu::smem_start(::hetmm_emu::runtime().smem.data()); }

inline void block_sync() {
  ::hetmm_emu::hb_release(&::hetmm_emu::runtime().barrier_token);
  ::hetmm_emu::suspend(::hetmm_emu::Fiber::kAtBlockBarrier);
  ::hetmm_emu::hb_acquire(&::hetmm_emu::runtime().barrier_token);
}

template <typename T>
inline T shfl(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 64 bits");
  uint64_t w = 0;
  std::memcpy(&w, &v, sizeof(T));
  T out;
  ::hetmm_emu::warp_collective(&w, 1, [&](const uint64_t* buf) {
    std::memcpy(&out, buf + (src_lane & 31) * ::hetmm_emu::kSlots, sizeof(T));
  });
  return out;
}

template <typename T>
inline T shfl_xor(T v, int lane_mask) {
  const int lane = ::hetmm_emu::self().lane;
  uint64_t w = 0;
  std::memcpy(&w, &v, sizeof(T));
  T out;
  ::hetmm_emu::warp_collective(&w, 1, [&](const uint64_t* buf) {
    std::memcpy(&out, buf + ((lane ^ lane_mask) & 31) * ::hetmm_emu::kSlots, sizeof(T));
  });
  return out;
}

inline int float_bits(float v) {
  int i;
  std::memcpy(&i, &v, 4);
  return i;
}
inline float bits_float(int i) {
  float v;
  std::memcpy(&v, &i, 4);
  return v;
}

inline void atomic_max_int(int* address, int value) {  // a real atomic, so that ThreadSanitizer sees one
  int old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (value > old && !__atomic_compare_exchange_n(address, &old, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

inline float half_bits_to_float(uint16_t bits) { return ::hetmm_emu::half_to_float(bits); }
inline float bf16_bits_to_float(uint16_t bits) { return ::hetmm_emu::bf16_to_float(bits); }

inline void cp_async16(void* smem_dst, const void* gmem_src) {
  auto& f = ::hetmm_emu::self();
  if (::hetmm_emu::runtime().copy_timing == ::hetmm_emu::CopyTiming::kAtIssue)
    std::memcpy(smem_dst, gmem_src, 16);
  else
    f.open.push_back({smem_dst, gmem_src});
}
inline void cp_async_commit() {
  auto& f = ::hetmm_emu::self();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
template <int Pending>
inline void cp_async_wait() {
  auto& f = ::hetmm_emu::self();
  while (f.groups.size() > static_cast<size_t>(Pending)) {
    ::hetmm_emu::run_group(f.groups.front());
    f.groups.erase(f.groups.begin());
  }
}

// mma.sync emulation: every lane deposits its A and B registers; the matrices are reassembled from all 32 lanes
// (once per warp and instruction) and every lane computes its own C/D elements.
template <bool kBf16>
inline void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ::hetmm_emu::IgnoreAccesses ignore;  // registers and the per-warp matrix cache only
  auto& f = ::hetmm_emu::self();
  const uint64_t w[6] = {a[0], a[1], a[2], a[3], b0, b1};
  ::hetmm_emu::MmaCache& mc = ::hetmm_emu::runtime().mma_cache[static_cast<size_t>(f.warp)];
  const int kind = kBf16 ? 1 : 0;
  ::hetmm_emu::warp_collective(w, 6, [&](const uint64_t* buf) {
    if (mc.seq == f.collectives && mc.kind == kind) return;
    mc.seq = f.collectives;
    mc.kind = kind;
    for (int l = 0; l < 32; ++l) {
      const uint64_t* s = buf + l * ::hetmm_emu::kSlots;
      const int g = l >> 2, q = l & 3;
      auto elem = [&](uint64_t reg, int half) {
        const uint16_t bits = static_cast<uint16_t>((reg >> (16 * half)) & 0xffff);
        return kBf16 ? ::hetmm_emu::bf16_to_float(bits) : ::hetmm_emu::half_to_float(bits);
      };
      for (int i = 0; i < 8; ++i) {  // a_i: register i / 2, half i % 2
        const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
        const int col = (i < 4) ? q * 2 + (i & 1) : q * 2 + (i & 1) + 8;
        mc.A[row][col] = elem(s[i / 2], i & 1);
      }
      for (int i = 0; i < 4; ++i) {  // b_i: register 4 + i / 2, half i % 2
        const int row = (i < 2) ? q * 2 + (i & 1) : q * 2 + (i & 1) + 8;
        mc.B[row][g] = elem(s[4 + i / 2], i & 1);
      }
    }
  });
  const int g = f.lane >> 2, q = f.lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? g : g + 8, col = q * 2 + (i & 1);
    float acc = c[i];
    for (int k = 0; k < 16; ++k) acc = std::fma(mc.A[row][k], mc.B[k][col], acc);
    c[i] = acc;
  }
}

inline void mma_1688_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ::hetmm_emu::IgnoreAccesses ignore;  // registers and the per-warp matrix cache only
  auto& f = ::hetmm_emu::self();
  const uint64_t w[6] = {a[0], a[1], a[2], a[3], b0, b1};
  ::hetmm_emu::MmaCache& mc = ::hetmm_emu::runtime().mma_cache[static_cast<size_t>(f.warp)];
  auto tf32 = [](uint64_t reg) {
    const uint32_t bits = static_cast<uint32_t>(reg);
    if (bits & 0x1fffu) {
      std::fprintf(stderr, "cuda emulation: mma tf32 operand with low mantissa bits set\n");
      std::abort();
    }
    return ::hetmm_emu::bits_to_float(bits);
  };
  ::hetmm_emu::warp_collective(w, 6, [&](const uint64_t* buf) {
    if (mc.seq == f.collectives && mc.kind == 2) return;
    mc.seq = f.collectives;
    mc.kind = 2;
    for (int l = 0; l < 32; ++l) {
      const uint64_t* s = buf + l * ::hetmm_emu::kSlots;
      const int g = l >> 2, q = l & 3;
      for (int i = 0; i < 4; ++i) {
        const int row = (i == 0 || i == 2) ? g : g + 8;
        const int col = (i < 2) ? q : q + 4;
        mc.A[row][col] = tf32(s[i]);
      }
      mc.B[q][g] = tf32(s[4]);
      mc.B[q + 4][g] = tf32(s[5]);
    }
  });
  const int g = f.lane >> 2, q = f.lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? g : g + 8, col = q * 2 + (i & 1);
    float acc = c[i];
    for (int k = 0; k < 8; ++k) acc = std::fma(mc.A[row][k], mc.B[k][col], acc);
    c[i] = acc;
  }
}

// ldmatrix.x4 (b16): lanes 8j..8j+7 address the rows of 8x8 matrix j; lane l gets row l / 4, columns 2 (l % 4) and
// 2 (l % 4) + 1 of matrix j in r[j] (PTX ISA, ldmatrix). Row addresses must be 16-byte aligned.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  const int lane = ::hetmm_emu::self().lane;
  if (reinterpret_cast<uintptr_t>(smem_row) & 15u) {
    std::fprintf(stderr, "cuda emulation: ldmatrix row address not 16-byte aligned\n");
    std::abort();
  }
  const uint64_t w = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(smem_row));
  ::hetmm_emu::warp_collective(&w, 1, [&](const uint64_t* buf) {
    for (int j = 0; j < 4; ++j) {
      const uint64_t address = buf[(8 * j + lane / 4) * ::hetmm_emu::kSlots];
      const char* row = reinterpret_cast<const char*>(static_cast<uintptr_t>(address));
      std::memcpy(&r[j], row + 4 * (lane % 4), 4);
    }
  });
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero (finite inputs).
inline uint32_t to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
  return (bits + 0x1000u) & 0xffffe000u;
}

}  // namespace cu
}  // namespace hetmm
