// window_match CUDA kernels (SPEC §2), torch-free; contract in window_match_cuda.h.
//
// Work split. A block owns NQ "query columns" = TP query pixels (a TY x TX tile) x BI query images, pixel-major
// (column j is image b0 + j % BI at tile pixel j / BI), and computes their forward maps completely and their
// contributions to the backward maps. Its 1..4 warps own 8*NT consecutive columns each. For every template chunk of
// 64 templates (tc), every template pixel p' of the tile's neighbourhood (the tile grown by d = max(kf, kb) / 2,
// clipped) and every channel chunk (cc, 128 bytes of channels), one pipeline stage holds T[tc*64 .. +64, p', cc]
// in shared memory; each warp whose pixels have p' within d multiplies it with its columns:
//   S[t, j] += sum_c T[t, c, p'] * q[b_j, c, p_j]      (64 x 8*NT per warp, M = templates, N = query columns)
// with mma.sync (fp16/bf16: m16n8k16, TF32: m16n8k8) or, on the exact paths, with the same fragment ownership in
// plain FMA. After the last channel chunk the lane reduces its 8 rows (templates) per column, folds the value into
// a running forward maximum if |p_j - p'| <= kf/2 (per lane; the 8 lanes holding the other rows are reduced with
// shuffles once at the end) and, if |p_j - p'| <= kb/2, reduces over the lanes at once and does an atomic max
// (float as order-preserving int) into bwd[b_j, p']. Templates beyond N repeat template N-1 (a duplicate cannot
// change a maximum); columns outside the map or the batch are computed on zeros and never written. Nothing of size
// B*N*H*W is stored.
//
// Shared memory: the block's query columns stay resident ([NQ][Cp + pad]); template stages stream through a
// 4-deep cp.async ring ([4][64][128 B + 16 B pad]); the padding makes every fragment load conflict-free. Issue slots
// are scarce next to mma.sync (a warp's stage is 64 HMMA + 24 LDSM), so the stage bookkeeping is kept small: two
// cursors step through the stages instead of dividing a stage index, and each thread copies a fixed 16-byte column
// of every (threads / 8)-th row with 32-bit offsets (N * Cp < 2^31 is checked). Measured in the sm_90 SASS of the
// fp16 kernel: 174 instructions per stage before the first HMMA, down from about 360 with per-copy index division.
// Bytes moved per block: NQ*Cp*e (query, once) + ceil(N/64)*|neighbourhood|*64*Cp*e (templates, from L2);
// FLOPs: 2 * 64*ceil(N/64) * NQ * Cp * (active stages), of which 2*B*N*C*sum_p |window(p)| are useful.
// Launch: grid = splits * ceil(B/BI) * ceil(H/TY) * ceil(W/TX) blocks of 32..128 threads; the largest NQ whose shared
// memory fits is taken unless it leaves fewer blocks than multiprocessors (WindowMatchCudaProblem::max_warps caps it,
// so that a benchmark can compare tile sizes in one run). Small problems (batch 1: the 16x16 layer gives 8 tiles)
// would still leave most multiprocessors idle, so each tile's units (template chunk, neighbourhood pixel; n_cc
// stages each) are then shared among `splits` blocks, contiguous ranges of the stage order, for about two blocks per
// multiprocessor; each block loads the tile's query columns, and the forward maxima are combined by the same atomic
// max as the backward ones (fwd holds int keys during the launch). Maxima are exact, so for finite inputs the bits do
// not depend on the split.
// Windows are runtime values for every size: they only decide which template pixels are staged and two integer
// comparisons per column in the epilogue, so no per-window instantiation (issue 4 suggested 1..15 at compile time)
// is made: there is no window loop to unroll, so no gain is expected (the build cost would be small: this file
// compiles in about 9 s for sm_80 + sm_90 + PTX). Checked in the sm_90 SASS of the fp16 kernel: with 13x7 as
// compile-time constants, the 174 instructions per stage before the first HMMA and the registers (214 at the time)
// stay the same; only the epilogue shrinks (3056 -> 2984 instructions in the whole kernel).
#include "window_match_cuda.h"

#include <algorithm>
#include <type_traits>

#include "../common/cuda_device.cuh"

namespace hetmm {
namespace {

constexpr int kChunkRows = 64;  // templates per stage: 4 m-tiles of 16
constexpr int kMTiles = 4;
constexpr int kStages = 4;
constexpr int kRowBytes = 128;  // channels per stage row, in bytes
constexpr int kMaxWarps = 4;

struct alignas(16) Vec16 {
  uint32_t w[4];
};

struct F16Path {
  using Elem = uint16_t;
  using Acc = float;
  static constexpr int kNTiles = 4;
};
struct BF16Path {
  using Elem = uint16_t;
  using Acc = float;
  static constexpr int kNTiles = 4;
};
struct TF32Path {
  using Elem = float;
  using Acc = float;
  static constexpr int kNTiles = 4;
};
struct ExactF32Path {
  using Elem = float;
  using Acc = float;
  static constexpr int kNTiles = 4;
};
struct ExactF64Path {
  using Elem = double;
  using Acc = double;
  static constexpr int kNTiles = 1;
};

template <class P>
struct Layout {
  using Elem = typename P::Elem;
  static constexpr int kChunk = kRowBytes / static_cast<int>(sizeof(Elem));  // channels per stage
  static constexpr int kPad = 16 / static_cast<int>(sizeof(Elem));           // one 16-byte vector per row
  static constexpr int kStageStride = kChunk + kPad;                         // elements per stage row
  static constexpr int kColumnsPerWarp = 8 * P::kNTiles;
  static constexpr int kVecPerElemRow = 16 / static_cast<int>(sizeof(Elem));
};

struct Params {
  const void* q;
  const void* t;
  int B, N, H, W, Cp;
  int df, db, d;
  int NQ, BI, TX, TY, tiles_x, tiles_y;
  int splits;     // blocks per tile, each taking a contiguous share of the tile's (template chunk, pixel) units
  float* fwd;     // written directly when fwd_keys is null
  int* fwd_keys;  // splits > 1: fwd's memory as ordered int keys (atomic max), converted after the kernel; else null
  int* bwd_keys;
};

template <typename T>
__device__ __forceinline__ T max_of(T a, T b) {
  return a > b ? a : b;
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int iabs(int a) { return a < 0 ? -a : a; }

__device__ __forceinline__ float fma_acc(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) { return fma(a, b, c); }

// One stage (64 templates x 64 channels) of fp16/bf16 tensor-core products for one warp, fragments loaded with
// ldmatrix.x4 (A: the four quadrants of a 16x16 template tile; B: both k-halves of two query n-tiles).
// a_row / b_row: the stage base [64][72] / the warp's first column at the stage's channel offset (row stride
// q_stride), each plus this lane's LaneOffsets.
template <bool kBf16, int NT>
__device__ __forceinline__ void stage_mma16(float (&acc)[kMTiles][NT][4], const uint16_t* a_row,
                                            const uint16_t* b_row, int q_stride) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
  constexpr int TS = Layout<F16Path>::kStageStride;
HETMM_UNROLL
  for (int k0 = 0; k0 < Layout<F16Path>::kChunk; k0 += 16) {
    uint32_t a[kMTiles][4];
HETMM_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) cu::ldmatrix_x4(a[mt], a_row + 16 * mt * TS + k0);
HETMM_UNROLL
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      cu::ldmatrix_x4(b, b_row + 16 * np * q_stride + k0);
HETMM_UNROLL
      for (int mt = 0; mt < kMTiles; ++mt) {
        cu::mma_16816<kBf16>(acc[mt][2 * np], a[mt], b[0], b[1]);
        cu::mma_16816<kBf16>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// One stage (64 templates x 32 channels) of TF32 tensor-core products for one warp; ts: [64][36]. The packed inputs
// are TF32 values already (window_match_cuda_round_tf32), so fragments are loaded with ldmatrix.x4 as for 16-bit
// data: viewed as 8 x 4 words, matrix j gives lane l the word (row l / 4, column l % 4), which is mma.m16n8k8's tf32
// layout. A: matrices (rows 0-7 | 8-15) x (k 0-3 | 4-7) = a0..a3; B: (k 0-3 | 4-7) x (n-tile 2np | 2np + 1).
template <int NT>
__device__ __forceinline__ void stage_tf32(float (&acc)[kMTiles][NT][4], const float* a_row, const float* b_row,
                                           int q_stride) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
  constexpr int TS = Layout<TF32Path>::kStageStride;
HETMM_UNROLL
  for (int k0 = 0; k0 < Layout<TF32Path>::kChunk; k0 += 8) {
    uint32_t a[kMTiles][4];
HETMM_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) cu::ldmatrix_x4(a[mt], a_row + 16 * mt * TS + k0);
HETMM_UNROLL
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      cu::ldmatrix_x4(b, b_row + 16 * np * q_stride + k0);
HETMM_UNROLL
      for (int mt = 0; mt < kMTiles; ++mt) {
        cu::mma_1688_tf32(acc[mt][2 * np], a[mt], b[0], b[1]);
        cu::mma_1688_tf32(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// One stage of exact products for one warp, with the accumulator ownership of the mma paths: lane (g, q) owns
// rows 16*mt + g + 8*h and columns 8*nt + 2*q + e in acc[mt][nt][2*h + e]; channels in ascending order.
// a_row = stage base + row g, b_row = the warp's first column + column 2q (LaneOffsets).
template <typename T, int NT>
__device__ __forceinline__ void stage_exact(T (&acc)[kMTiles][NT][4], const T* a_row, const T* b_row, int q_stride) {
  constexpr int CK = kRowBytes / static_cast<int>(sizeof(T));
  constexpr int TS = CK + 16 / static_cast<int>(sizeof(T));
HETMM_UNROLL_4
  for (int k = 0; k < CK; ++k) {
    T tv[kMTiles][2], qv[NT][2];
HETMM_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
      tv[mt][0] = a_row[16 * mt * TS + k];
      tv[mt][1] = a_row[(16 * mt + 8) * TS + k];
    }
HETMM_UNROLL
    for (int nt = 0; nt < NT; ++nt) {
      qv[nt][0] = b_row[8 * nt * q_stride + k];
      qv[nt][1] = b_row[(8 * nt + 1) * q_stride + k];
    }
HETMM_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt)
HETMM_UNROLL
      for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
        for (int h = 0; h < 2; ++h)
HETMM_UNROLL
          for (int e = 0; e < 2; ++e)
            acc[mt][nt][2 * h + e] = fma_acc(tv[mt][h], qv[nt][e], acc[mt][nt][2 * h + e]);
  }
}

// Where a lane's fragment loads start, in elements from the stage base (a) and from the warp's first query column
// (b); computed once per kernel instead of once per stage.
struct LaneOffsets {
  int a, b;
};

template <class P>
__device__ __forceinline__ LaneOffsets lane_offsets(int lane, int q_stride) {
  constexpr int TS = Layout<P>::kStageStride;
  if constexpr (std::is_same<P, F16Path>::value || std::is_same<P, BF16Path>::value)  // ldmatrix rows, 16-bit
    return {(lane & 15) * TS + (lane >> 4) * 8, ((lane >> 4) * 8 + (lane & 7)) * q_stride + ((lane >> 3) & 1) * 8};
  else if constexpr (std::is_same<P, TF32Path>::value)  // ldmatrix rows of 4 words
    return {((lane & 7) + ((lane >> 3) & 1) * 8) * TS + (lane >> 4) * 4,
            ((lane & 7) + (lane >> 4) * 8) * q_stride + ((lane >> 3) & 1) * 4};
  else  // exact: row g, column 2q
    return {(lane >> 2) * TS, 2 * (lane & 3) * q_stride};
}

template <class P, int NT>
__device__ __forceinline__ void stage_products(typename P::Acc (&acc)[kMTiles][NT][4], const typename P::Elem* a_row,
                                               const typename P::Elem* b_row, int q_stride) {
  if constexpr (std::is_same<P, F16Path>::value)
    stage_mma16<false>(acc, a_row, b_row, q_stride);
  else if constexpr (std::is_same<P, BF16Path>::value)
    stage_mma16<true>(acc, a_row, b_row, q_stride);
  else if constexpr (std::is_same<P, TF32Path>::value)
    stage_tf32(acc, a_row, b_row, q_stride);
  else
    stage_exact(acc, a_row, b_row, q_stride);
}

template <class P>
__global__ void __launch_bounds__(32 * kMaxWarps) window_match_kernel(const Params p) {
  using E = typename P::Elem;
  using A = typename P::Acc;
  using L = Layout<P>;
  constexpr int NT = P::kNTiles;

  const int q_stride = p.Cp + L::kPad;
  E* qs = reinterpret_cast<E*>(cu::dynamic_smem());
  E* ts = qs + static_cast<size_t>(p.NQ) * q_stride;

  const int tid = static_cast<int>(threadIdx.x), nthreads = static_cast<int>(blockDim.x);
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, qd = lane & 3;

  int blk = static_cast<int>(blockIdx.x);
  const int split = blk % p.splits;
  blk /= p.splits;
  const int bx = blk % p.tiles_x;
  blk /= p.tiles_x;
  const int by = blk % p.tiles_y;
  blk /= p.tiles_y;
  const int x0 = bx * p.TX, y0 = by * p.TY, b0 = blk * p.BI;
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;

  // The block's query columns, resident for the whole kernel (zeros outside the map or the batch).
  {
    const E* q = static_cast<const E*>(p.q);
    const int vecs = p.Cp / L::kVecPerElemRow;
    for (int i = tid; i < p.NQ * vecs; i += nthreads) {
      const int col = i / vecs, v = i % vecs;
      const int pl = col / p.BI, b = b0 + col % p.BI;
      const int y = y0 + pl / p.TX, x = x0 + pl % p.TX;
      Vec16 val = {{0u, 0u, 0u, 0u}};
      if (b < p.B && y < p.H && x < p.W)
        val = reinterpret_cast<const Vec16*>(q + ((static_cast<int64_t>(y) * p.W + x) * p.B + b) * p.Cp)[v];
      reinterpret_cast<Vec16*>(qs + static_cast<size_t>(col) * q_stride)[v] = val;
    }
  }

  // The columns whose accumulators this lane holds (c0/c1 of every n-tile).
  int cy[NT][2], cx[NT][2], cb[NT][2];
  bool cok[NT][2];
HETMM_UNROLL
  for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
    for (int e = 0; e < 2; ++e) {
      const int col = warp * L::kColumnsPerWarp + 8 * nt + 2 * qd + e;
      const int pl = col / p.BI;
      cb[nt][e] = b0 + col % p.BI;
      cy[nt][e] = y0 + pl / p.TX;
      cx[nt][e] = x0 + pl % p.TX;
      cok[nt][e] = cb[nt][e] < p.B && cy[nt][e] < p.H && cx[nt][e] < p.W;
    }

  // Bounding box of the warp's pixels (columns are pixel-major, so they cover a contiguous run of tile pixels).
  const int pl_first = warp * L::kColumnsPerWarp / p.BI;
  const int pl_last = (warp * L::kColumnsPerWarp + L::kColumnsPerWarp - 1) / p.BI;
  const int wy0 = y0 + pl_first / p.TX, wy1 = y0 + pl_last / p.TX;
  const bool one_row = pl_first / p.TX == pl_last / p.TX;
  const int wx0 = one_row ? x0 + pl_first % p.TX : x0;
  const int wx1 = one_row ? x0 + pl_last % p.TX : x0 + p.TX - 1;

  // Neighbourhood of the tile: the template pixels any of its query pixels can meet.
  const int d = p.d;
  const int ya = imax(0, y0 - d), yb = imin(p.H - 1, y0 + p.TY - 1 + d);
  const int xa = imax(0, x0 - d), xb = imin(p.W - 1, x0 + p.TX - 1 + d);
  const int nx = xb - xa + 1;
  const int n_pix = (yb - ya + 1) * nx;
  const int n_cc = p.Cp / L::kChunk;
  const int n_tc = (p.N + kChunkRows - 1) / kChunkRows;
  const int ny = yb - ya + 1;
  // This block's share of the units (template chunk, neighbourhood pixel), n_cc stages each: all of them unless
  // the tile is split across blocks (small problems, to occupy every multiprocessor).
  const int n_units = n_tc * n_pix;
  const int u_begin = static_cast<int>(static_cast<int64_t>(n_units) * split / p.splits);
  const int u_end = static_cast<int>(static_cast<int64_t>(n_units) * (split + 1) / p.splits);
  const int n_stages = (u_end - u_begin) * n_cc;

  // Stages run in the order (template chunk, neighbourhood row, column, channel chunk), innermost last; two cursors
  // walk them (the loads kStages - 1 ahead of the products), so no stage index is ever divided.
  struct Cursor {
    int cc, px, py, tc;
    __device__ __forceinline__ void start(int unit, int n_pix_, int nx_) {
      cc = 0;
      tc = unit / n_pix_;
      py = unit % n_pix_ / nx_;
      px = unit % n_pix_ % nx_;
    }
    __device__ __forceinline__ void advance(int n_cc_, int nx_, int ny_) {
      if (++cc < n_cc_) return;
      cc = 0;
      if (++px < nx_) return;
      px = 0;
      if (++py < ny_) return;
      py = 0;
      ++tc;
    }
  };

  // Each thread copies one fixed 16-byte column (v) of every (nthreads / 8)-th row of a 64-row stage.
  constexpr int kVecPerRow = kRowBytes / 16;
  constexpr int kStageElems = kChunkRows * L::kStageStride;
  static_assert((kStages & (kStages - 1)) == 0, "stage ring index is a mask");
  const int row0 = tid / kVecPerRow, row_step = nthreads / kVecPerRow;
  const int lane_dst = row0 * L::kStageStride + (tid % kVecPerRow) * L::kVecPerElemRow;
  const E* tg = static_cast<const E*>(p.t) + (tid % kVecPerRow) * L::kVecPerElemRow;
  const int64_t pixel_elems = static_cast<int64_t>(p.N) * p.Cp;
  auto load_stage = [&](const Cursor& c, int buf) {
    const E* src = tg + (static_cast<int64_t>(ya + c.py) * p.W + (xa + c.px)) * pixel_elems + c.cc * L::kChunk;
    E* dst = ts + buf * kStageElems + lane_dst;
    const int t0 = c.tc * kChunkRows + row0;
HETMM_UNROLL_4
    for (int r = 0; r + row0 < kChunkRows; r += row_step)  // templates beyond N repeat template N - 1
      cu::cp_async16(dst + r * L::kStageStride, src + imin(t0 + r, p.N - 1) * p.Cp);  // N * Cp < 2^31: checked
  };

  A acc[kMTiles][NT][4];
  A fwd_run[NT][2];
HETMM_UNROLL
  for (int mt = 0; mt < kMTiles; ++mt)
HETMM_UNROLL
    for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = A(0);
HETMM_UNROLL
  for (int nt = 0; nt < NT; ++nt) fwd_run[nt][0] = fwd_run[nt][1] = A(-1);

  const LaneOffsets lo = lane_offsets<P>(lane, q_stride);
  const E* const ts_lane = ts + lo.a;
  const E* const qs_lane = qs + static_cast<size_t>(warp) * L::kColumnsPerWarp * q_stride + lo.b;
  Cursor loading, computing;
  loading.start(u_begin, n_pix, nx);
  computing = loading;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_stages) {
      load_stage(loading, s);
      loading.advance(n_cc, nx, ny);
    }
    cu::cp_async_commit();
  }
  for (int s = 0; s < n_stages; ++s) {
    cu::cp_async_wait<kStages - 2>();
    cu::block_sync();  // stage s is visible to all; every warp is done with stage s - 1, whose buffer refills next
    if (s + kStages - 1 < n_stages) {
      load_stage(loading, (s + kStages - 1) & (kStages - 1));
      loading.advance(n_cc, nx, ny);
    }
    cu::cp_async_commit();

    const int cc = computing.cc, yy = ya + computing.py, xx = xa + computing.px;
    computing.advance(n_cc, nx, ny);
    if (yy < wy0 - d || yy > wy1 + d || xx < wx0 - d || xx > wx1 + d) continue;  // warp-uniform

    stage_products<P, NT>(acc, ts_lane + (s & (kStages - 1)) * kStageElems, qs_lane + cc * L::kChunk, q_stride);
    if (cc != n_cc - 1) continue;

    // Dot products of this template chunk with p' are complete: max over the lane's 8 rows per column.
    A v[NT][2];
HETMM_UNROLL
    for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
      for (int e = 0; e < 2; ++e) {
        A m = max_of(acc[0][nt][e], acc[0][nt][2 + e]);
HETMM_UNROLL
        for (int mt = 1; mt < kMTiles; ++mt) m = max_of(m, max_of(acc[mt][nt][e], acc[mt][nt][2 + e]));
        v[nt][e] = m;
        const int ady = iabs(yy - cy[nt][e]), adx = iabs(xx - cx[nt][e]);
        if (ady <= p.df && adx <= p.df) fwd_run[nt][e] = max_of(fwd_run[nt][e], m);
      }
HETMM_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt)
HETMM_UNROLL
      for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
        for (int i = 0; i < 4; ++i) acc[mt][nt][i] = A(0);

    if (yy < wy0 - p.db || yy > wy1 + p.db || xx < wx0 - p.db || xx > wx1 + p.db) continue;  // warp-uniform
HETMM_UNROLL
    for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
      for (int e = 0; e < 2; ++e) {
        A m = v[nt][e];
        m = max_of(m, cu::shfl_xor(m, 4));
        m = max_of(m, cu::shfl_xor(m, 8));
        m = max_of(m, cu::shfl_xor(m, 16));
        const int ady = iabs(yy - cy[nt][e]), adx = iabs(xx - cx[nt][e]);
        if (g == 0 && cok[nt][e] && ady <= p.db && adx <= p.db)
          cu::atomic_max_int(p.bwd_keys + cb[nt][e] * HW + static_cast<int64_t>(yy) * p.W + xx,
                             cu::ordered_key_from_bits(cu::float_bits(static_cast<float>(m))));
      }
  }
  cu::cp_async_wait<0>();

HETMM_UNROLL
  for (int nt = 0; nt < NT; ++nt)
HETMM_UNROLL
    for (int e = 0; e < 2; ++e) {
      A m = fwd_run[nt][e];
      m = max_of(m, cu::shfl_xor(m, 4));
      m = max_of(m, cu::shfl_xor(m, 8));
      m = max_of(m, cu::shfl_xor(m, 16));
      const int64_t at = cb[nt][e] * HW + static_cast<int64_t>(cy[nt][e]) * p.W + cx[nt][e];
      if (g == 0 && cok[nt][e]) {
        if (!p.fwd_keys)
          p.fwd[at] = static_cast<float>(m);
        else
          cu::atomic_max_int(p.fwd_keys + at, cu::ordered_key_from_bits(cu::float_bits(static_cast<float>(m))));
      }
    }
}

// Grid of the element-wise grid-stride kernels below (blocks of kElementwiseThreads).
constexpr int kElementwiseThreads = 256;
unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kElementwiseThreads - 1) / kElementwiseThreads, 65535));
}

__global__ void round_tf32_kernel(uint32_t* data, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    data[i] = cu::to_tf32(cu::bits_float(static_cast<int>(data[i])));
}

// keys0 and, when not null, keys1.
__global__ void fill_keys_kernel(int* keys0, int* keys1, int64_t n, int key) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys0[i] = key;
    if (keys1) keys1[i] = key;
  }
}

// keys0 and, when not null, keys1.
__global__ void keys_to_float_kernel(int* keys0, int* keys1, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys0[i] = cu::bits_from_ordered_key(keys0[i]);
    if (keys1) keys1[i] = cu::bits_from_ordered_key(keys1[i]);
  }
}

int64_t next_pow2(int64_t v) {
  int64_t r = 1;
  while (r < v) r *= 2;
  return r;
}

constexpr int kMaxSplits = 64;  // blocks per tile, chosen automatically; WindowMatchCudaProblem::splits may ask more

struct Config {
  int warps = 0, NQ = 0, BI = 0, TX = 0, TY = 0, tiles_x = 0, tiles_y = 0, splits = 1;
  int64_t blocks = 0;
  size_t smem = 0;
};

template <class P>
size_t smem_bytes(int NQ, int64_t Cp) {
  using L = Layout<P>;
  return (static_cast<size_t>(NQ) * static_cast<size_t>(Cp + L::kPad) +
          static_cast<size_t>(kStages) * kChunkRows * L::kStageStride) *
         sizeof(typename P::Elem);
}

// Largest tile whose shared memory fits, unless a smaller one is needed to give every multiprocessor a block. When
// even the smallest tile leaves multiprocessors idle (small batches: batch-1 latency), each tile's units (template
// chunk, neighbourhood pixel) are shared among `splits` blocks, for about two blocks per multiprocessor, at most
// kMaxSplits and at most the units of an interior tile.
template <class P>
bool choose_config(const WindowMatchCudaProblem& pr, const CudaDeviceLimits& lim, Config& out) {
  using L = Layout<P>;
  bool found = false;
  for (int warps = pr.max_warps > 0 ? pr.max_warps : kMaxWarps; warps >= 1; warps /= 2) {
    Config c;
    c.warps = warps;
    c.NQ = warps * L::kColumnsPerWarp;
    c.smem = smem_bytes<P>(c.NQ, pr.C_padded);
    if (c.smem > static_cast<size_t>(lim.max_smem_per_block)) continue;
    c.BI = static_cast<int>(std::min<int64_t>(next_pow2(pr.B), c.NQ));
    const int tp = c.NQ / c.BI;
    int tx = 1;
    while (tx * tx < tp) tx *= 2;
    while (tx > 1 && tx / 2 >= pr.W) tx /= 2;  // no wider than the map
    int ty = tp / tx;
    while (ty > 1 && ty / 2 >= pr.H && tx < pr.W) {  // no taller than the map while it can grow in x
      ty /= 2;
      tx *= 2;
    }
    c.TX = tx;
    c.TY = ty;
    c.tiles_x = static_cast<int>((pr.W + tx - 1) / tx);
    c.tiles_y = static_cast<int>((pr.H + ty - 1) / ty);
    c.blocks = ((pr.B + c.BI - 1) / c.BI) * c.tiles_x * c.tiles_y;
    out = c;
    found = true;
    if (c.blocks >= lim.sm_count) break;
  }
  if (!found) return false;
  // Stage counts are 32-bit in the kernel: a tile's stages (template chunks x neighbourhood x channel chunks) must fit.
  const int64_t span = std::max(pr.fwd_window, pr.bwd_window) / 2 * 2;
  const int64_t units = (pr.N + kChunkRows - 1) / kChunkRows * std::min<int64_t>(pr.H, out.TY + span) *
                        std::min<int64_t>(pr.W, out.TX + span);
  if (units * (pr.C_padded / L::kChunk) > 0x7fffffffLL - kStages) return false;
  if (pr.splits > 0) {
    out.splits = pr.splits;
  } else if (out.blocks < lim.sm_count) {
    const int64_t want = (2 * static_cast<int64_t>(lim.sm_count) + out.blocks - 1) / out.blocks;
    out.splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, units, kMaxSplits})));
  }
  out.blocks *= out.splits;
  return true;
}

template <class P>
cudaError_t launch(const WindowMatchCudaProblem& pr, const CudaDeviceLimits& lim, cudaStream_t stream) {
  Config c;
  if (!choose_config<P>(pr, lim, c) || c.blocks > 0x7fffffff) return cudaErrorInvalidValue;
  Params prm;
  prm.q = pr.query;
  prm.t = pr.templates;
  prm.B = static_cast<int>(pr.B);
  prm.N = static_cast<int>(pr.N);
  prm.H = static_cast<int>(pr.H);
  prm.W = static_cast<int>(pr.W);
  prm.Cp = static_cast<int>(pr.C_padded);
  prm.df = static_cast<int>(pr.fwd_window / 2);
  prm.db = static_cast<int>(pr.bwd_window / 2);
  prm.d = std::max(prm.df, prm.db);
  prm.NQ = c.NQ;
  prm.BI = c.BI;
  prm.TX = c.TX;
  prm.TY = c.TY;
  prm.tiles_x = c.tiles_x;
  prm.tiles_y = c.tiles_y;
  prm.splits = c.splits;
  prm.fwd = pr.fwd;
  prm.fwd_keys = c.splits > 1 ? reinterpret_cast<int*>(pr.fwd) : nullptr;
  prm.bwd_keys = reinterpret_cast<int*>(pr.bwd);

  const int64_t n_out = pr.B * pr.H * pr.W;
  const unsigned fill_blocks = elementwise_blocks(n_out);
  const int minus_one_key = cu::ordered_key_from_bits(static_cast<int>(0xbf800000u));  // -1.0f
  HETMM_LAUNCH(fill_keys_kernel, cu::dim3_t(fill_blocks), cu::dim3_t(kElementwiseThreads), 0, stream, prm.bwd_keys,
               prm.fwd_keys, n_out, minus_one_key);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  auto kernel = window_match_kernel<P>;
  err = allow_max_dynamic_smem(kernel, lim);
  if (err != cudaSuccess) return err;
  HETMM_LAUNCH(kernel, cu::dim3_t(static_cast<unsigned>(c.blocks)), cu::dim3_t(32 * c.warps), c.smem, stream, prm);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  HETMM_LAUNCH(keys_to_float_kernel, cu::dim3_t(fill_blocks), cu::dim3_t(kElementwiseThreads), 0, stream,
               prm.bwd_keys, prm.fwd_keys, n_out);
  return cudaGetLastError();
}

template <class P>
int64_t max_channels_for(int max_smem) {
  using L = Layout<P>;
  const int64_t stages = static_cast<int64_t>(kStages) * kChunkRows * L::kStageStride * sizeof(typename P::Elem);
  const int64_t per_channel_row = static_cast<int64_t>(L::kColumnsPerWarp) * sizeof(typename P::Elem);
  const int64_t free_bytes = static_cast<int64_t>(max_smem) - stages;
  if (free_bytes <= 0) return 0;
  int64_t cp = free_bytes / per_channel_row - L::kPad;  // one warp's columns resident
  cp = cp / L::kChunk * L::kChunk;
  return cp > 0 ? cp : 0;
}

}  // namespace

int64_t window_match_cuda_element_bytes(WindowMatchCudaPath path) {
  switch (path) {
    case WindowMatchCudaPath::kFloat16:
    case WindowMatchCudaPath::kBFloat16:
      return 2;
    case WindowMatchCudaPath::kTF32:
    case WindowMatchCudaPath::kExactFloat32:
      return 4;
    case WindowMatchCudaPath::kExactFloat64:
      return 8;
  }
  return 0;
}

int64_t window_match_cuda_padded_channels(WindowMatchCudaPath path, int64_t channels) {
  const int64_t chunk = kRowBytes / window_match_cuda_element_bytes(path);
  return (channels + chunk - 1) / chunk * chunk;
}

int64_t window_match_cuda_max_channels(WindowMatchCudaPath path, int max_smem_per_block) {
  switch (path) {
    case WindowMatchCudaPath::kFloat16:
      return max_channels_for<F16Path>(max_smem_per_block);
    case WindowMatchCudaPath::kBFloat16:
      return max_channels_for<BF16Path>(max_smem_per_block);
    case WindowMatchCudaPath::kTF32:
      return max_channels_for<TF32Path>(max_smem_per_block);
    case WindowMatchCudaPath::kExactFloat32:
      return max_channels_for<ExactF32Path>(max_smem_per_block);
    case WindowMatchCudaPath::kExactFloat64:
      return max_channels_for<ExactF64Path>(max_smem_per_block);
  }
  return 0;
}

cudaError_t window_match_cuda_round_tf32(float* data, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && !data)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  HETMM_LAUNCH(round_tf32_kernel, cu::dim3_t(elementwise_blocks(n)), cu::dim3_t(kElementwiseThreads), 0, stream,
               reinterpret_cast<uint32_t*>(data), n);
  return cudaGetLastError();
}

cudaError_t window_match_cuda(const WindowMatchCudaProblem& pr, WindowMatchCudaPath path,
                              const CudaDeviceLimits& limits, cudaStream_t stream) {
  if (pr.B <= 0 || pr.N <= 0 || pr.H <= 0 || pr.W <= 0 || pr.C_padded <= 0 || pr.fwd_window < 1 ||
      pr.bwd_window < 1 || pr.fwd_window % 2 == 0 || pr.bwd_window % 2 == 0 || !pr.query || !pr.templates ||
      !pr.fwd || !pr.bwd || pr.C_padded != window_match_cuda_padded_channels(path, pr.C_padded) ||
      pr.B * pr.H * pr.W > 0x7fffffffLL || pr.N * pr.C_padded > 0x7fffffffLL || pr.fwd_window > 0x7fffffffLL ||
      pr.bwd_window > 0x7fffffffLL || !(pr.max_warps == 0 || pr.max_warps == 1 || pr.max_warps == 2 ||
                                         pr.max_warps == kMaxWarps) ||
      pr.splits < 0 || pr.splits > kWindowMatchCudaMaxSplits)
    return cudaErrorInvalidValue;
  switch (path) {
    case WindowMatchCudaPath::kFloat16:
      return launch<F16Path>(pr, limits, stream);
    case WindowMatchCudaPath::kBFloat16:
      return launch<BF16Path>(pr, limits, stream);
    case WindowMatchCudaPath::kTF32:
      return launch<TF32Path>(pr, limits, stream);
    case WindowMatchCudaPath::kExactFloat32:
      return launch<ExactF32Path>(pr, limits, stream);
    case WindowMatchCudaPath::kExactFloat64:
      return launch<ExactF64Path>(pr, limits, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace hetmm
