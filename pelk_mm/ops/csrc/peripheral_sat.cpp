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
// with the kernel flipped (block weights reversed, grid reversed); the weight
// gradient is dw[a][b] = sum_{v,x} B_b(v, x) * D_a(v, x), where D_a is the
// box sum of the output gradient over the mirrored rows of cell a.
//
// Semantics: "same" zero-padded cross-correlation, as
// F.conv2d(x, dense[:, None], padding=K // 2, groups=C). Planes run in
// parallel on ATen's intra-op threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
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
  T acc = 0;
  for (int64_t u = 0; u <= W + extra; ++u) {
    pre[u] = acc;
    const int64_t x = u - r;
    if (x >= 0 && x < W) acc += row[x];
  }
}

// Buffers are padded to a multiple of kTile columns; the weight gradient
// keeps kTile lane-wise partial sums per block weight.
constexpr int64_t kTile = 16;

inline int64_t padded(int64_t W) { return (W + kTile - 1) / kTile * kTile; }

template <typename T>
void column_boxes(const T* row, int64_t W, int64_t Wp,
                  const std::vector<int64_t>& s, std::vector<T>& pre,
                  T* box) {
  const int64_t kp = static_cast<int64_t>(s.size()) - 1;
  const int64_t K = s[kp], r = K / 2;
  padded_row_prefix(row, W, r, Wp + K - W, pre.data());
  for (int64_t b = 0; b < kp; ++b) {
    T* out = box + b * Wp;
    const T* hi = pre.data() + s[b + 1];
    const T* lo = pre.data() + s[b];
    for (int64_t x = 0; x < Wp; ++x) out[x] = hi[x] - lo[x];
  }
}

template <typename T>
void plane_forward(const T* X, const T* w, const std::vector<int64_t>& s,
                   int64_t H, int64_t W, T* Y, std::vector<T>& pre,
                   std::vector<T>& box, std::vector<T>& Q) {
  const int64_t kp = static_cast<int64_t>(s.size()) - 1;
  const int64_t K = s[kp], r = K / 2, Wp = padded(W);
  // Q[a][v][x]: sum of Z_a over rows < v, v in [0, H].
  for (int64_t a = 0; a < kp; ++a)
    std::fill(Q.begin() + a * (H + 1) * Wp,
              Q.begin() + a * (H + 1) * Wp + Wp, T(0));
  for (int64_t y = 0; y < H; ++y) {
    column_boxes(X + y * W, W, Wp, s, pre, box.data());
    for (int64_t a = 0; a < kp; ++a) {
      const T* prev = Q.data() + (a * (H + 1) + y) * Wp;
      T* next = Q.data() + (a * (H + 1) + y + 1) * Wp;
      for (int64_t x = 0; x < Wp; ++x) next[x] = prev[x];
      for (int64_t b = 0; b < kp; ++b) {
        const T wab = w[a * kp + b];
        if (wab == T(0)) continue;  // sparse (masked) weights cost nothing
        const T* bb = box.data() + b * Wp;
        for (int64_t x = 0; x < Wp; ++x) next[x] += wab * bb[x];
      }
    }
  }
  for (int64_t y = 0; y < H; ++y) {
    T* out = Y + y * W;
    std::fill(out, out + W, T(0));
    for (int64_t a = 0; a < kp; ++a) {
      const int64_t lo = clamp(y + s[a] - r, 0, H);
      const int64_t hi = clamp(y + s[a + 1] - r, 0, H);
      if (lo == hi) continue;
      const T* qhi = Q.data() + (a * (H + 1) + hi) * Wp;
      const T* qlo = Q.data() + (a * (H + 1) + lo) * Wp;
      for (int64_t x = 0; x < W; ++x) out[x] += qhi[x] - qlo[x];
    }
  }
}

template <typename T>
void plane_weight_grad(const T* X, const T* G, const std::vector<int64_t>& s,
                       int64_t H, int64_t W, T* dw, std::vector<T>& pre,
                       std::vector<T>& box, std::vector<T>& Qg,
                       std::vector<T>& D, std::vector<T>& acc) {
  const int64_t kp = static_cast<int64_t>(s.size()) - 1;
  const int64_t K = s[kp], r = K / 2, Wp = padded(W);
  // Column prefix of the output gradient: Qg[v][x] = sum of G rows < v
  // (zero in the padding columns).
  std::fill(Qg.begin(), Qg.end(), T(0));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      Qg[(y + 1) * Wp + x] = Qg[y * Wp + x] + G[y * W + x];
  // acc[a][b][l]: lane-wise partial sums, reduced once at the end.
  std::fill(acc.begin(), acc.end(), T(0));
  for (int64_t v = 0; v < H; ++v) {
    column_boxes(X + v * W, W, Wp, s, pre, box.data());
    // D_a(v, x): the output gradient summed over the rows y with
    // v = y + i - r for a tap i of cell a, i.e. y in
    // (v + r - s[a+1], v + r - s[a]].
    for (int64_t a = 0; a < kp; ++a) {
      const int64_t hi = clamp(v + r - s[a] + 1, 0, H);
      const int64_t lo = clamp(v + r - s[a + 1] + 1, 0, H);
      T* d = D.data() + a * Wp;
      const T* qhi = Qg.data() + hi * Wp;
      const T* qlo = Qg.data() + lo * Wp;
      for (int64_t x = 0; x < Wp; ++x) d[x] = qhi[x] - qlo[x];
    }
    for (int64_t a = 0; a < kp; ++a) {
      const T* d = D.data() + a * Wp;
      for (int64_t b = 0; b < kp; ++b) {
        const T* bb = box.data() + b * Wp;
        T* lanes = acc.data() + (a * kp + b) * kTile;
        for (int64_t x0 = 0; x0 < Wp; x0 += kTile)
          for (int64_t l = 0; l < kTile; ++l)
            lanes[l] += d[x0 + l] * bb[x0 + l];
      }
    }
  }
  for (int64_t i = 0; i < kp * kp; ++i) {
    T sum = 0;
    for (int64_t l = 0; l < kTile; ++l) sum += acc[i * kTile + l];
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

at::Tensor forward_with_starts(const at::Tensor& input,
                               const at::Tensor& weight_in,
                               const std::vector<int64_t>& s) {
  check_inputs(input, weight_in, s);
  auto x = input.contiguous();
  auto weight = weight_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t kp = static_cast<int64_t>(s.size()) - 1, K = s[kp];
  auto y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "peripheral_sat_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      const int64_t Wp = padded(W);
      std::vector<scalar_t> pre(Wp + K + 1), box(kp * Wp),
          Q(kp * (H + 1) * Wp);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % C;
        plane_forward<scalar_t>(xp + p * H * W, wp + c * kp * kp, s, H, W,
                                yp + p * H * W, pre, box, Q);
      }
    });
  });
  return y;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight,
                   const at::Tensor& grid) {
  return forward_with_starts(input, weight, cell_starts(grid));
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out,
                                 const at::Tensor& input,
                                 const at::Tensor& weight_in,
                                 const at::Tensor& grid, bool input_grad,
                                 bool weight_grad) {
  const auto s = cell_starts(grid);
  check_inputs(input, weight_in, s);
  auto g = grad_out.contiguous();
  at::Tensor grad_input, grad_weight;
  if (input_grad) {
    // Adjoint: correlation with the flipped kernel (reversed grid and block
    // weights), same padding.
    const int64_t kp = static_cast<int64_t>(s.size()) - 1;
    std::vector<int64_t> flipped(kp + 1, 0);
    for (int64_t i = 0; i < kp; ++i)
      flipped[i + 1] = flipped[i] + (s[kp - i] - s[kp - i - 1]);
    grad_input = forward_with_starts(g, weight_in.flip({1, 2}), flipped);
  }
  if (weight_grad) {
    auto x = input.contiguous();
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2),
                  W = x.size(3);
    const int64_t kp = static_cast<int64_t>(s.size()) - 1, K = s[kp];
    auto partial = at::empty({B, C, kp, kp}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "peripheral_sat_wgrad", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      scalar_t* dp = partial.data_ptr<scalar_t>();
      at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
        const int64_t Wp = padded(W);
        std::vector<scalar_t> pre(Wp + K + 1), box(kp * Wp),
            Qg((H + 1) * Wp), D(kp * Wp), acc(kp * kp * kTile);
        for (int64_t p = begin; p < end; ++p)
          plane_weight_grad<scalar_t>(xp + p * H * W, gp + p * H * W, s, H,
                                      W, dp + p * kp * kp, pre, box, Qg, D,
                                      acc);
      });
    });
    grad_weight = partial.sum(0);
  }
  return {grad_input, grad_weight};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward,
        "Peripheral depthwise conv (summed-area tables): input (B, C, H, W), "
        "block weights (C, k', k'), grid (k',) -> (B, C, H, W)");
  m.def("backward", &backward,
        "Gradients w.r.t. input and block weights");
}
