// Native CPU multiresolution hash encoding (Instant-NGP / tiny-cuda-nn layout), forward and the
// backward pass with respect to the feature table.
//
// Semantics are exactly those of gscomp/stages/hashgrid.py (`HashGrid`), which stays the test oracle:
//   pos = x * scale_l + 0.5, base = floor(pos), frac = pos - base;
//   corner c (x fastest: i = c & 1, j = (c >> 1) & 1, k = c >> 2) has weight
//   ((i ? fx : 1 - fx) * (j ? fy : 1 - fy)) * (k ? fz : 1 - fz);
//   row = dense ? (cx + cy * res + cz * res^2) mod size : (cx ^ cy * 2654435761 ^ cz * 805459861 mod 2^32) mod size,
//   plus the level's offset; the output is the 8 weighted rows added one by one in corner order.
// The float operations are written in the same order as the PyTorch exact path, so the forward
// output is bit-identical to `HashGrid.forward_exact`; fp contraction (FMA) is switched off below
// because it would change rounding on targets where FMA is part of the base ISA (aarch64).
//
// Determinism: the forward pass writes one output row per point (any thread split gives the same
// bytes). The backward pass gives each thread whole levels: a level's table rows are written only by
// the thread that owns that level, which walks the points in index order, so gradients are the same
// for any thread count and need no atomics or per-thread buffers.
#pragma GCC optimize("fp-contract=off")
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr uint32_t P1 = 2654435761u;
constexpr uint32_t P2 = 805459861u;

struct Level {
  float scale;
  int64_t res, size, offset;
  bool dense;
};

std::vector<Level> levels_from(const torch::Tensor& scales, const torch::Tensor& info) {
  // info: (L, 4) int64 rows (resolution, size, offset, dense)
  TORCH_CHECK(scales.dtype() == torch::kFloat32 && scales.dim() == 1, "scales must be float32 (L,)");
  TORCH_CHECK(info.dtype() == torch::kInt64 && info.dim() == 2 && info.size(1) == 4 && info.size(0) == scales.size(0),
              "level info must be int64 (L, 4)");
  auto s = scales.contiguous();
  auto in = info.contiguous();
  const float* sp = s.data_ptr<float>();
  const int64_t* ip = in.data_ptr<int64_t>();
  std::vector<Level> out((size_t)s.size(0));
  for (size_t l = 0; l < out.size(); ++l) {
    out[l] = Level{sp[l], ip[4 * l], ip[4 * l + 1], ip[4 * l + 2], ip[4 * l + 3] != 0};
    TORCH_CHECK(out[l].size > 0 && out[l].res > 0, "bad level size");
  }
  return out;
}

inline int64_t pymod(int64_t v, int64_t m) {
  int64_t r = v % m;
  return r < 0 ? r + m : r;
}

// The 8 table rows and trilinear weights of point p at one level.
inline void corners(const float* p, const Level& lv, int64_t rows[8], float w[8]) {
  float frac[3];
  int64_t base[3];
  for (int d = 0; d < 3; ++d) {
    float pos = p[d] * lv.scale;
    pos = pos + 0.5f;
    float b = std::floor(pos);
    frac[d] = pos - b;
    base[d] = (int64_t)b;
  }
  for (int c = 0; c < 8; ++c) {
    const int i = c & 1, j = (c >> 1) & 1, k = c >> 2;
    const int64_t cx = base[0] + i, cy = base[1] + j, cz = base[2] + k;
    int64_t idx;
    if (lv.dense) {
      idx = pymod(cx + cy * lv.res + cz * (lv.res * lv.res), lv.size);
    } else {
      // uint32 arithmetic == the int64 product masked to 32 bits (two's complement), as in PyTorch
      const uint32_t h = ((uint32_t)cx * 1u) ^ ((uint32_t)cy * P1) ^ ((uint32_t)cz * P2);
      idx = (int64_t)(h % (uint64_t)lv.size);
    }
    rows[c] = idx + lv.offset;
    const float wx = i ? frac[0] : 1.0f - frac[0];
    const float wy = j ? frac[1] : 1.0f - frac[1];
    const float wz = k ? frac[2] : 1.0f - frac[2];
    float wxy = wx * wy;
    w[c] = wxy * wz;
  }
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& table) {
  TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "hashgrid: CPU tensors expected");
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.size(1) == 3, "hashgrid: x must be float32 (N, 3)");
  TORCH_CHECK(table.dtype() == torch::kFloat32 && table.dim() == 2, "hashgrid: table must be float32 (T, F)");
}

void check_rows(const std::vector<Level>& lv, int64_t n_rows) {
  for (const auto& l : lv) TORCH_CHECK(l.offset >= 0 && l.offset + l.size <= n_rows, "hashgrid: level outside the table");
}

}  // namespace

// (N,3) points in [0,1] -> (N, L*F) features.
torch::Tensor hashgrid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor info) {
  check_inputs(x, table);
  const auto lv = levels_from(scales, info);
  x = x.contiguous();
  table = table.contiguous();
  check_rows(lv, table.size(0));
  const int64_t n = x.size(0), F = table.size(1), L = (int64_t)lv.size();
  auto out = torch::empty({n, L * F}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n; ++p) {
    int64_t rows[8];
    float w[8];
    for (int64_t l = 0; l < L; ++l) {
      corners(xp + 3 * p, lv[(size_t)l], rows, w);
      float* o = op + p * L * F + l * F;
      for (int64_t f = 0; f < F; ++f) o[f] = tp[rows[0] * F + f] * w[0];
      for (int c = 1; c < 8; ++c) {
        for (int64_t f = 0; f < F; ++f) {
          float t = tp[rows[c] * F + f] * w[c];
          o[f] = o[f] + t;
        }
      }
    }
  }
  return out;
}

// d loss / d table for grad_out = d loss / d features (N, L*F); the table has n_rows rows of F.
torch::Tensor hashgrid_backward(torch::Tensor x, torch::Tensor grad_out, int64_t n_rows, torch::Tensor scales,
                                torch::Tensor info) {
  const auto lv = levels_from(scales, info);
  x = x.contiguous();
  grad_out = grad_out.contiguous().to(torch::kFloat32);
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.size(1) == 3, "hashgrid: x must be float32 (N, 3)");
  const int64_t n = x.size(0), L = (int64_t)lv.size();
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == n && L > 0 && grad_out.size(1) % L == 0,
              "hashgrid: grad must be (N, L*F)");
  check_rows(lv, n_rows);
  const int64_t F = grad_out.size(1) / L;
  auto grad = torch::zeros({n_rows, F}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = grad_out.data_ptr<float>();
  float* tg = grad.data_ptr<float>();
  // one level per iteration: levels own disjoint table rows, points are visited in order
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t l = 0; l < L; ++l) {
    int64_t rows[8];
    float w[8];
    for (int64_t p = 0; p < n; ++p) {
      const float* g = gp + p * L * F + l * F;
      bool any = false;
      for (int64_t f = 0; f < F; ++f) any |= g[f] != 0.0f;
      if (!any) continue;  // culled / masked points: nothing to add
      corners(xp + 3 * p, lv[(size_t)l], rows, w);
      for (int c = 0; c < 8; ++c)
        for (int64_t f = 0; f < F; ++f) tg[rows[c] * F + f] += w[c] * g[f];
    }
  }
  return grad;
}

// Boolean (n_rows,) mask of the table rows any of the points reads.
torch::Tensor hashgrid_used_rows(torch::Tensor x, int64_t n_rows, torch::Tensor scales, torch::Tensor info) {
  const auto lv = levels_from(scales, info);
  x = x.contiguous();
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.size(1) == 3, "hashgrid: x must be float32 (N, 3)");
  check_rows(lv, n_rows);
  const int64_t n = x.size(0), L = (int64_t)lv.size();
  auto used = torch::zeros({n_rows}, x.options().dtype(torch::kBool));
  const float* xp = x.data_ptr<float>();
  bool* up = used.data_ptr<bool>();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t l = 0; l < L; ++l) {
    int64_t rows[8];
    float w[8];
    for (int64_t p = 0; p < n; ++p) {
      corners(xp + 3 * p, lv[(size_t)l], rows, w);
      for (int c = 0; c < 8; ++c) up[rows[c]] = true;
    }
  }
  return used;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &hashgrid_forward, "multiresolution hash encoding of (N,3) points");
  m.def("backward", &hashgrid_backward, "gradient of the encoding w.r.t. the feature table");
  m.def("used_rows", &hashgrid_used_rows, "table rows read by the points");
}
