// Peripheral (grid-shared) depthwise convolution with summed-area tables.
//
// The KxK kernel is constant on each block (a, b) of a k'xk' grid (cell a
// covers kernel rows [s[a], s[a+1]) of the K), so one output pixel is
//     Y(y, x) = sum_{a,b} w[a][b] * (sum of X over the block's window).
// Per plane (one batch item, one channel):
//   1. prefix sums along each row give the k' column-box sums
//      B_b(y, x) = sum_{j in cell b} X(y, x + j - r) in two reads each;
//   2. Z_a(y, x) = sum_b w[a][b] * B_b(y, x)   (k'^2 multiply-adds / pixel);
//   3. prefix sums of each Z_a down the columns, and
//      Y(y, x) = sum_a [Q_a(y + s[a+1] - r) - Q_a(y + s[a] - r)](x).
// About k'^2 + 4k' operations per pixel instead of K^2 (k' = 13 at K = 51).
//
// Backward: the input gradient is the same operation on the output gradient
// with the kernel flipped (block weights reversed, grid reversed), which the
// caller runs as forward(); weight_grad() computes
// dw[a][b] = sum_{v,x} B_b(v, x) * D_a(v, x), where D_a is the box sum of
// the output gradient over the mirrored rows of cell a.
//
// The mix (step 2) and the weight gradient's k'^2 products are most of the
// work; they keep their accumulators in vector registers (GCC/Clang vector
// extensions, one register of the machine's width per accumulator): the
// mix adds up the k' cells a of a group per column vector, each box vector
// loaded once per group; the weight gradient sums a tile of (a, b) pairs
// over a block of rows before it stores its partial sums.
//
// Semantics: "same" zero-padded cross-correlation, as
// F.conv2d(x, dense[:, None], padding=K // 2, groups=C). Planes run in
// parallel on ATen's intra-op threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace {

inline int64_t clamp(int64_t v, int64_t lo, int64_t hi) {
  return std::min(std::max(v, lo), hi);
}

// Row prefix of one row of X, padded so that a box is two reads without
// clamping: pre[u] = sum of X(y, 0 .. u - r - 1), u in [0, W + extra].
template <typename T>
void padded_row_prefix(const T* row, int64_t W, int64_t r, int64_t extra,
                       T* pre) {
  // Zeros up to u = r, the running sum over the row, then its total.
  const int64_t end = W + extra;
  std::fill(pre, pre + std::min(r, end) + 1, T(0));
  T acc = 0;
  for (int64_t x = 0; x < W && r + x < end; ++x) {
    acc += row[x];
    pre[r + x + 1] = acc;
  }
  for (int64_t u = std::min(r + W, end) + 1; u <= end; ++u) pre[u] = acc;
}

// Buffers are padded to a multiple of kTile columns (at least one vector
// of any type on any machine).
constexpr int64_t kTile = 16;

inline int64_t padded(int64_t W) { return (W + kTile - 1) / kTile * kTile; }

// Register budgets: the mix holds kMixGroup accumulators and a box vector,
// a weight-gradient tile kGradTileA x kGradTileB accumulators and
// kGradTileA + kGradTileB operands.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;  // 32 registers
constexpr int kMixGroup = 13;
constexpr int kGradTileA = 5, kGradTileB = 4;
#else
constexpr int kVectorBytes = 32;  // 16 registers (AVX2, NEON: 32 of 16 B)
constexpr int kMixGroup = 8;
constexpr int kGradTileA = 3, kGradTileB = 3;
#endif

// One machine vector of T; loads and stores need no alignment.
template <typename T>
struct Vector {
  static constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(kVectorBytes)));
};

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void store(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// The cells a0 .. a0 + NA - 1 of one row y of the mix: from the row q of
// cell a0's Q (that of cell a0 + i is i * stride further),
//   Q_a(y + 1) = Q_a(y) + sum_{b in used} w[a][b] * box_b,
// NA accumulators per column vector, in registers; each column box is two
// reads of the row prefix pre (padded_row_prefix): B_b(x) =
// pre[x + s[b + 1]] - pre[x + s[b]].
template <typename T, int NA>
void mix_group(const T* w, int64_t kp, int64_t a0,
               const std::vector<int64_t>& used, const T* pre,
               const int64_t* starts, int64_t Wp, T* q, int64_t stride) {
  const T* prev = q;
  T* next = q + Wp;
  using V = typename Vector<T>::type;
  constexpr int L = Vector<T>::kLanes;
  const int64_t nb = static_cast<int64_t>(used.size());
  for (int64_t x = 0; x < Wp; x += L) {
    V acc[NA];
    for (int i = 0; i < NA; ++i) acc[i] = load<V>(prev + i * stride + x);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t b = used[j];
      const V bv = load<V>(pre + starts[b + 1] + x) -
                   load<V>(pre + starts[b] + x);
      for (int i = 0; i < NA; ++i) acc[i] += w[(a0 + i) * kp + b] * bv;
    }
    for (int i = 0; i < NA; ++i) store(next + i * stride + x, acc[i]);
  }
}

template <typename T>
using MixGroup = void (*)(const T*, int64_t, int64_t,
                          const std::vector<int64_t>&, const T*,
                          const int64_t*, int64_t, T*, int64_t);

template <typename T, int... N>
MixGroup<T> mix_group_for(int na, std::integer_sequence<int, N...>) {
  MixGroup<T> table[] = {mix_group<T, N + 1>...};
  return table[na - 1];
}

// A group of cells and the columns b its weights use (all of them but
// those whose weights are zero in every cell of the group: sparse, masked
// weights cost nothing).
template <typename T>
struct CellGroup {
  int64_t first;
  MixGroup<T> mix;
  std::vector<int64_t> used;
};

template <typename T>
std::vector<CellGroup<T>> cell_groups(const T* w, int64_t kp) {
  std::vector<CellGroup<T>> groups;
  for (int64_t a0 = 0; a0 < kp; a0 += kMixGroup) {
    const int na = static_cast<int>(std::min<int64_t>(kMixGroup, kp - a0));
    CellGroup<T> group{
        a0, mix_group_for<T>(na, std::make_integer_sequence<int, kMixGroup>{}),
        {}};
    for (int64_t b = 0; b < kp; ++b) {
      bool any = false;
      for (int i = 0; i < na; ++i) any |= w[(a0 + i) * kp + b] != T(0);
      if (any) group.used.push_back(b);
    }
    groups.push_back(std::move(group));
  }
  return groups;
}

template <typename T>
void plane_forward(const T* X, const T* w, const std::vector<int64_t>& s,
                   int64_t H, int64_t W, T* Y, std::vector<T>& pre,
                   std::vector<T>& Q) {
  using V = typename Vector<T>::type;
  constexpr int L = Vector<T>::kLanes;
  const int64_t kp = static_cast<int64_t>(s.size()) - 1;
  const int64_t K = s[kp], r = K / 2, Wp = padded(W);
  const int64_t stride = (H + 1) * Wp;  // from one cell's Q to the next
  const auto groups = cell_groups(w, kp);
  // Q[a][v][x]: sum of Z_a over rows < v, v in [0, H].
  for (int64_t a = 0; a < kp; ++a)
    std::fill(Q.begin() + a * stride, Q.begin() + a * stride + Wp, T(0));
  for (int64_t y = 0; y < H; ++y) {
    padded_row_prefix(X + y * W, W, r, Wp + K - W, pre.data());
    for (const auto& group : groups)
      group.mix(w, kp, group.first, group.used, pre.data(), s.data(), Wp,
                Q.data() + group.first * stride + y * Wp, stride);
  }
  // Y(y) = sum_a Q_a(hi_a(y)) - Q_a(lo_a(y)), a column vector at a time.
  std::vector<int64_t> lo(kp), hi(kp);
  T tail[L];
  for (int64_t y = 0; y < H; ++y) {
    int64_t n = 0;
    for (int64_t a = 0; a < kp; ++a) {
      const int64_t l = clamp(y + s[a] - r, 0, H);
      const int64_t h = clamp(y + s[a + 1] - r, 0, H);
      if (l == h) continue;
      lo[n] = a * stride + l * Wp;
      hi[n] = a * stride + h * Wp;
      ++n;
    }
    T* out = Y + y * W;
    for (int64_t x = 0; x < W; x += L) {
      V acc = {};
      for (int64_t i = 0; i < n; ++i)
        acc += load<V>(Q.data() + hi[i] + x) - load<V>(Q.data() + lo[i] + x);
      if (x + L <= W) {
        store(out + x, acc);
      } else {
        store(tail, acc);
        std::copy(tail, tail + (W - x), out + x);
      }
    }
  }
}

// Rows of D vectors and row prefixes the weight gradient holds at once:
// each tile of accumulators is loaded and stored once per block of rows.
constexpr int64_t kGradRows = 8;

// acc[(a, b)] += sum over the rows and columns of D_a * B_b, for the
// NA x NB pairs from (a0, b0); acc holds one vector of lanes per pair. B_b
// is two reads of the row prefix (pre, rows `pitch` apart), D_a one of D.
template <typename T, int NA, int NB>
void weight_grad_tile(const T* D, const T* pre, int64_t pitch,
                      const int64_t* starts, int64_t rows, int64_t Wp,
                      int64_t kp, int64_t a0, int64_t b0, T* acc) {
  using V = typename Vector<T>::type;
  constexpr int L = Vector<T>::kLanes;
  V sum[NA][NB];
  for (int i = 0; i < NA; ++i)
    for (int j = 0; j < NB; ++j)
      sum[i][j] = load<V>(acc + ((a0 + i) * kp + b0 + j) * L);
  for (int64_t v = 0; v < rows; ++v) {
    const T* d = D + v * kp * Wp;
    const T* row = pre + v * pitch;
    for (int64_t x = 0; x < Wp; x += L) {
      V dv[NA], bv[NB];
      for (int i = 0; i < NA; ++i) dv[i] = load<V>(d + (a0 + i) * Wp + x);
      for (int j = 0; j < NB; ++j)
        bv[j] = load<V>(row + starts[b0 + j + 1] + x) -
                load<V>(row + starts[b0 + j] + x);
      for (int i = 0; i < NA; ++i)
        for (int j = 0; j < NB; ++j) sum[i][j] += dv[i] * bv[j];
    }
  }
  for (int i = 0; i < NA; ++i)
    for (int j = 0; j < NB; ++j)
      store(acc + ((a0 + i) * kp + b0 + j) * L, sum[i][j]);
}

template <typename T>
using WeightGradTile = void (*)(const T*, const T*, int64_t, const int64_t*,
                                int64_t, int64_t, int64_t, int64_t, int64_t,
                                T*);

template <typename T, int NA, int... NB>
void fill_tiles(WeightGradTile<T>* row, std::integer_sequence<int, NB...>) {
  WeightGradTile<T> tiles[] = {weight_grad_tile<T, NA, NB + 1>...};
  for (int j = 0; j < kGradTileB; ++j) row[j] = tiles[j];
}

template <typename T, int... NA>
void fill_tile_table(WeightGradTile<T> (*table)[kGradTileB],
                     std::integer_sequence<int, NA...>) {
  (fill_tiles<T, NA + 1>(table[NA],
                         std::make_integer_sequence<int, kGradTileB>{}),
   ...);
}

// [0, n) in the fewest parts of at most `most`, their sizes within one.
std::vector<std::pair<int64_t, int64_t>> even_parts(int64_t n, int64_t most) {
  const int64_t parts = (n + most - 1) / most;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t i = 0, first = 0; i < parts; ++i) {
    const int64_t size = n / parts + (i < n % parts ? 1 : 0);
    out.emplace_back(first, size);
    first += size;
  }
  return out;
}

template <typename T>
void plane_weight_grad(const T* X, const T* G, const std::vector<int64_t>& s,
                       int64_t H, int64_t W, T* dw, std::vector<T>& pre,
                       std::vector<T>& Qg, std::vector<T>& D,
                       std::vector<T>& acc) {
  constexpr int L = Vector<T>::kLanes;
  const int64_t kp = static_cast<int64_t>(s.size()) - 1;
  const int64_t K = s[kp], r = K / 2, Wp = padded(W);
  const int64_t pitch = Wp + K + 1;  // of the row prefixes in pre
  WeightGradTile<T> tiles[kGradTileA][kGradTileB];
  fill_tile_table<T>(tiles, std::make_integer_sequence<int, kGradTileA>{});
  const auto a_parts = even_parts(kp, kGradTileA);
  const auto b_parts = even_parts(kp, kGradTileB);
  // Column prefix of the output gradient: Qg[v][x] = sum of G rows < v
  // (zero in the padding columns).
  std::fill(Qg.begin(), Qg.end(), T(0));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      Qg[(y + 1) * Wp + x] = Qg[y * Wp + x] + G[y * W + x];
  // acc[a][b][l]: lane-wise partial sums, reduced once at the end.
  std::fill(acc.begin(), acc.end(), T(0));
  for (int64_t v0 = 0; v0 < H; v0 += kGradRows) {
    const int64_t rows = std::min(kGradRows, H - v0);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t v = v0 + i;
      padded_row_prefix(X + v * W, W, r, Wp + K - W, pre.data() + i * pitch);
      // D_a(v, x): the output gradient summed over the rows y with
      // v = y + i - r for a tap i of cell a, i.e. y in
      // (v + r - s[a+1], v + r - s[a]].
      for (int64_t a = 0; a < kp; ++a) {
        const int64_t hi = clamp(v + r - s[a] + 1, 0, H);
        const int64_t lo = clamp(v + r - s[a + 1] + 1, 0, H);
        T* d = D.data() + (i * kp + a) * Wp;
        const T* qhi = Qg.data() + hi * Wp;
        const T* qlo = Qg.data() + lo * Wp;
        for (int64_t x = 0; x < Wp; ++x) d[x] = qhi[x] - qlo[x];
      }
    }
    for (const auto& a : a_parts)
      for (const auto& b : b_parts)
        tiles[a.second - 1][b.second - 1](D.data(), pre.data(), pitch,
                                          s.data(), rows, Wp, kp, a.first,
                                          b.first, acc.data());
  }
  for (int64_t i = 0; i < kp * kp; ++i) {
    T sum = 0;
    for (int64_t l = 0; l < L; ++l) sum += acc[i * L + l];
    dw[i] = sum;
  }
}

std::vector<int64_t> cell_starts(const at::Tensor& grid) {
  auto g = grid.to(at::kCPU, at::kLong).contiguous();
  std::vector<int64_t> s(g.numel() + 1, 0);
  const int64_t* p = g.data_ptr<int64_t>();
  for (int64_t i = 0; i < g.numel(); ++i) {
    TORCH_CHECK(p[i] > 0, "grid cells must be positive");
    s[i + 1] = s[i] + p[i];
  }
  TORCH_CHECK(s.back() % 2 == 1, "the kernel size (sum of the grid) must "
              "be odd, got ", s.back());
  return s;
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight,
                  const std::vector<int64_t>& s) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(),
              "the summed-area-table path runs on the CPU");
  TORCH_CHECK(x.dim() == 4, "input must be (B, C, H, W)");
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == x.size(1),
              "weight must be (C, k', k') with C = input channels");
  const int64_t kp = static_cast<int64_t>(s.size()) - 1;
  TORCH_CHECK(weight.size(1) == kp && weight.size(2) == kp,
              "weight must be (C, k', k') with k' = len(grid) = ", kp);
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(),
              "input and weight must have the same dtype");
}

// The input as the kernels read it: planes of H x W row-major values at
// b * stride(0) + c * stride(1). A channel slice of a larger map (a
// mixer's convolved channels) is such a tensor and is read where it lies;
// anything else is copied once.
at::Tensor row_major_planes(const at::Tensor& t) {
  if (t.stride(3) == 1 && t.stride(2) == t.size(3)) return t;
  return t.contiguous();
}

inline int64_t plane_offset(const at::Tensor& t, int64_t p) {
  const int64_t C = t.size(1);
  return (p / C) * t.stride(0) + (p % C) * t.stride(1);
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight_in,
                   const at::Tensor& grid) {
  const auto s = cell_starts(grid);
  check_inputs(input, weight_in, s);
  auto x = row_major_planes(input);
  auto weight = weight_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t kp = static_cast<int64_t>(s.size()) - 1, K = s[kp];
  auto y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "peripheral_sat_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      const int64_t Wp = padded(W);
      std::vector<scalar_t> pre(Wp + K + 1), Q(kp * (H + 1) * Wp);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % C;
        plane_forward<scalar_t>(xp + plane_offset(x, p), wp + c * kp * kp, s,
                                H, W, yp + p * H * W, pre, Q);
      }
    });
  });
  return y;
}

at::Tensor weight_grad(const at::Tensor& grad_out, const at::Tensor& input,
                       const at::Tensor& weight, const at::Tensor& grid) {
  const auto s = cell_starts(grid);
  check_inputs(input, weight, s);
  auto g = row_major_planes(grad_out);
  auto x = row_major_planes(input);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t kp = static_cast<int64_t>(s.size()) - 1, K = s[kp];
  auto partial = at::empty({B, C, kp, kp}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "peripheral_sat_wgrad", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dp = partial.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      const int64_t Wp = padded(W);
      std::vector<scalar_t> pre(kGradRows * (Wp + K + 1)), Qg((H + 1) * Wp),
          D(kGradRows * kp * Wp), acc(kp * kp * Vector<scalar_t>::kLanes);
      for (int64_t p = begin; p < end; ++p)
        plane_weight_grad<scalar_t>(xp + plane_offset(x, p),
                                    gp + plane_offset(g, p), s, H, W,
                                    dp + p * kp * kp, pre, Qg, D, acc);
    });
  });
  return partial.sum(0);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward,
        "Peripheral depthwise conv (summed-area tables): input (B, C, H, W), "
        "block weights (C, k', k'), grid (k',) -> (B, C, H, W)");
  m.def("weight_grad", &weight_grad,
        "Gradient w.r.t. the block weights (C, k', k'), summed over the "
        "batch; the input gradient is forward() with the kernel flipped");
}
