// Native CPU 3D Gaussian Splatting rasterizer: projection, tile binning, alpha compositing and a
// hand-written backward pass, templated on the scalar type (float for speed, double for gradcheck).
//
// Semantics are exactly those documented in gscomp/render/__init__.py and implemented by the
// PyTorch reference gscomp/render/torch_ref.py; expressions are written in the same order as the
// reference so float32 results agree to the last bit wherever no library function (exp, matmul
// summation order) is involved. Built without -ffast-math / -march=native on purpose.
//
// Determinism: every parallel loop writes disjoint memory (pixels, per-Gaussian rows, or
// per-intersection rows); per-Gaussian gradients are reduced from per-intersection rows in a fixed
// serial order, so results do not depend on the thread count or the schedule.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int TILE = 16;
constexpr int TILE_PIX = TILE * TILE;
constexpr double NEAR = 0.01;

// Inside a parallel region: the calling thread's band [r0, r1) of `rows` tile rows (contiguous,
// in thread order), so each thread owns its rows and no atomics are needed.
inline void thread_row_band(int rows, int* r0, int* r1) {
  int nt = 1, tid = 0;
#ifdef _OPENMP
  nt = omp_get_num_threads();
  tid = omp_get_thread_num();
#endif
  *r0 = (int)((int64_t)rows * tid / nt);
  *r1 = (int)((int64_t)rows * (tid + 1) / nt);
}

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Real SH constants (same basis and signs as gscomp/render/sh.py).
constexpr double SH_C0 = 0.28209479177387814;
constexpr double SH_C1 = 0.4886025119029199;
constexpr double SH_C2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
                             0.5462742152960396};
constexpr double SH_C3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
                             -0.4570457994644658, 1.445305721320277, -0.5900435899266435};

// Basis values (up to 16) for a unit direction.
template <typename S>
inline void sh_basis(int degree, S x, S y, S z, S* b) {
  b[0] = S(SH_C0);
  if (degree < 1) return;
  b[1] = S(-SH_C1) * y;
  b[2] = S(SH_C1) * z;
  b[3] = S(-SH_C1) * x;
  if (degree < 2) return;
  S xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
  b[4] = S(SH_C2[0]) * xy;
  b[5] = S(SH_C2[1]) * yz;
  b[6] = S(SH_C2[2]) * (S(2) * zz - xx - yy);
  b[7] = S(SH_C2[3]) * xz;
  b[8] = S(SH_C2[4]) * (xx - yy);
  if (degree < 3) return;
  b[9] = S(SH_C3[0]) * y * (S(3) * xx - yy);
  b[10] = S(SH_C3[1]) * xy * z;
  b[11] = S(SH_C3[2]) * y * (S(4) * zz - xx - yy);
  b[12] = S(SH_C3[3]) * z * (S(2) * zz - S(3) * xx - S(3) * yy);
  b[13] = S(SH_C3[4]) * x * (S(4) * zz - xx - yy);
  b[14] = S(SH_C3[5]) * z * (xx - yy);
  b[15] = S(SH_C3[6]) * x * (xx - S(3) * yy);
}

// Partial derivatives of each basis function with respect to (x, y, z), treated as independent.
template <typename S>
inline void sh_basis_grad(int degree, S x, S y, S z, S (*g)[3]) {
  for (int k = 0; k < 16; ++k) g[k][0] = g[k][1] = g[k][2] = S(0);
  if (degree < 1) return;
  g[1][1] = S(-SH_C1);
  g[2][2] = S(SH_C1);
  g[3][0] = S(-SH_C1);
  if (degree < 2) return;
  S c;
  c = S(SH_C2[0]); g[4][0] = c * y; g[4][1] = c * x;
  c = S(SH_C2[1]); g[5][1] = c * z; g[5][2] = c * y;
  c = S(SH_C2[2]); g[6][0] = -2 * c * x; g[6][1] = -2 * c * y; g[6][2] = 4 * c * z;
  c = S(SH_C2[3]); g[7][0] = c * z; g[7][2] = c * x;
  c = S(SH_C2[4]); g[8][0] = 2 * c * x; g[8][1] = -2 * c * y;
  if (degree < 3) return;
  S xx = x * x, yy = y * y, zz = z * z;
  c = S(SH_C3[0]); g[9][0] = c * 6 * x * y; g[9][1] = c * (3 * xx - 3 * yy);
  c = S(SH_C3[1]); g[10][0] = c * y * z; g[10][1] = c * x * z; g[10][2] = c * x * y;
  c = S(SH_C3[2]); g[11][0] = -2 * c * x * y; g[11][1] = c * (4 * zz - xx - 3 * yy); g[11][2] = 8 * c * y * z;
  c = S(SH_C3[3]); g[12][0] = -6 * c * x * z; g[12][1] = -6 * c * y * z; g[12][2] = c * (6 * zz - 3 * xx - 3 * yy);
  c = S(SH_C3[4]); g[13][0] = c * (4 * zz - 3 * xx - yy); g[13][1] = -2 * c * x * y; g[13][2] = 8 * c * x * z;
  c = S(SH_C3[5]); g[14][0] = 2 * c * x * z; g[14][1] = -2 * c * y * z; g[14][2] = c * (xx - yy);
  c = S(SH_C3[6]); g[15][0] = c * (3 * xx - 3 * yy); g[15][1] = -6 * c * x * y;
}

// Rotation matrix (row-major) of the normalised quaternion wxyz; returns the normalised quaternion.
template <typename S>
inline void quat_to_rot(const S* q_raw, S* qn, S* R) {
  S n = std::sqrt(q_raw[0] * q_raw[0] + q_raw[1] * q_raw[1] + q_raw[2] * q_raw[2] + q_raw[3] * q_raw[3]);
  n = std::max(n, S(1e-12));
  for (int i = 0; i < 4; ++i) qn[i] = q_raw[i] / n;
  S w = qn[0], x = qn[1], y = qn[2], z = qn[3];
  R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - w * z); R[2] = 2 * (x * z + w * y);
  R[3] = 2 * (x * y + w * z); R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - w * x);
  R[6] = 2 * (x * z - w * y); R[7] = 2 * (y * z + w * x); R[8] = 1 - 2 * (x * x + y * y);
}

struct Intrinsics {
  double fx, fy, cx, cy;
  int W, H;
  // Tangent limits (1.3x the field of view per side), computed in double like the reference.
  double lim_xp() const { return (W - cx) / fx + 0.3 * (0.5 * W / fx); }
  double lim_xn() const { return cx / fx + 0.3 * (0.5 * W / fx); }
  double lim_yp() const { return (H - cy) / fy + 0.3 * (0.5 * H / fy); }
  double lim_yn() const { return cy / fy + 0.3 * (0.5 * H / fy); }
  int tiles_x() const { return (W + TILE - 1) / TILE; }
  int tiles_y() const { return (H + TILE - 1) / TILE; }
};

// Tile rectangle [x0, x1) x [y0, y1) for a screen mean and integer radius (the reference's rule).
template <typename S>
inline void tile_rect(S mx, S my, int64_t r, int tx, int ty, int* rect) {
  auto clampi = [](S v, int hi) { return (int)std::min<S>(std::max<S>(v, S(0)), S(hi)); };
  S rr = S(r);
  rect[0] = clampi(std::floor((mx - rr) / S(TILE)), tx);
  rect[1] = clampi(std::floor((my - rr) / S(TILE)), ty);
  rect[2] = clampi(std::ceil((mx + rr) / S(TILE)), tx);
  rect[3] = clampi(std::ceil((my + rr) / S(TILE)), ty);
}

// ------------------------------------------------------------------------------------------------
// Projection (one camera; parallel over Gaussians)
// ------------------------------------------------------------------------------------------------

// Everything the projection of one Gaussian computes that backward needs again.
template <typename S>
struct ProjLocal {
  S p[3];       // camera-space position
  S qn[4];      // normalised quaternion
  S Rq[9];      // its rotation
  S s[3];       // exp(log scales)
  S M[9];       // Rq diag(s)
  S cov3[6];    // xx xy xz yy yz zz
  S Tm[6];      // J @ W (2x3)
  S tx, ty;     // clamped tangent * z
  bool clamp_x, clamp_y;
  S a, b, c, det;
};

template <typename S>
inline bool project_one(const S* mean, const S* quat, const S* lscale, const S* Wv, const Intrinsics& K,
                        ProjLocal<S>& L) {
  const S* Rw = Wv;  // rows of the 4x4 view matrix: R = Wv[0..2][0..2], t = Wv[i][3]
  for (int i = 0; i < 3; ++i)
    L.p[i] = Rw[i * 4 + 0] * mean[0] + Rw[i * 4 + 1] * mean[1] + Rw[i * 4 + 2] * mean[2] + Rw[i * 4 + 3];
  S x = L.p[0], y = L.p[1], z = L.p[2];
  if (!(z > S(NEAR))) return false;
  quat_to_rot(quat, L.qn, L.Rq);
  for (int j = 0; j < 3; ++j) L.s[j] = std::exp(lscale[j]);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) L.M[i * 3 + j] = L.Rq[i * 3 + j] * L.s[j];
  const S* M = L.M;
  auto mm = [&](int i, int j) { return M[i * 3 + 0] * M[j * 3 + 0] + M[i * 3 + 1] * M[j * 3 + 1] + M[i * 3 + 2] * M[j * 3 + 2]; };
  L.cov3[0] = mm(0, 0); L.cov3[1] = mm(0, 1); L.cov3[2] = mm(0, 2);
  L.cov3[3] = mm(1, 1); L.cov3[4] = mm(1, 2); L.cov3[5] = mm(2, 2);

  S fx = S(K.fx), fy = S(K.fy);
  S lo_x = S(-K.lim_xn()), hi_x = S(K.lim_xp()), lo_y = S(-K.lim_yn()), hi_y = S(K.lim_yp());
  S rx = x / z, ry = y / z;
  L.clamp_x = !(rx >= lo_x && rx <= hi_x);
  L.clamp_y = !(ry >= lo_y && ry <= hi_y);
  L.tx = z * std::min(std::max(rx, lo_x), hi_x);
  L.ty = z * std::min(std::max(ry, lo_y), hi_y);
  S J00 = fx / z, J02 = -fx * L.tx / (z * z), J11 = fy / z, J12 = -fy * L.ty / (z * z);
  for (int j = 0; j < 3; ++j) {
    L.Tm[j] = J00 * Rw[0 * 4 + j] + J02 * Rw[2 * 4 + j];
    L.Tm[3 + j] = J11 * Rw[1 * 4 + j] + J12 * Rw[2 * 4 + j];
  }
  // cov2 = T cov3 T^T
  const S* C = L.cov3;
  S Cf[9] = {C[0], C[1], C[2], C[1], C[3], C[4], C[2], C[4], C[5]};
  S TC[6];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      TC[i * 3 + j] = L.Tm[i * 3 + 0] * Cf[0 * 3 + j] + L.Tm[i * 3 + 1] * Cf[1 * 3 + j] + L.Tm[i * 3 + 2] * Cf[2 * 3 + j];
  S c00 = TC[0] * L.Tm[0] + TC[1] * L.Tm[1] + TC[2] * L.Tm[2];
  S c01 = TC[0] * L.Tm[3] + TC[1] * L.Tm[4] + TC[2] * L.Tm[5];
  S c11 = TC[3] * L.Tm[3] + TC[4] * L.Tm[4] + TC[5] * L.Tm[5];
  L.a = c00 + S(0.3);
  L.b = c01;
  L.c = c11 + S(0.3);
  L.det = L.a * L.c - L.b * L.b;
  return L.det > S(0);
}

template <typename S>
void project_forward_impl(const S* means, const S* quats, const S* scales, const S* coeffs, int64_t N, int64_t Kc,
                          int sh_degree, const S* viewmat, const S* campos, const Intrinsics& K, S* means2d,
                          S* conics, S* colors, S* depths, int32_t* radii) {
  const int tx = K.tiles_x(), ty = K.tiles_y();
  const int nb = (sh_degree + 1) * (sh_degree + 1);
  const S fx = S(K.fx), fy = S(K.fy), cx = S(K.cx), cy = S(K.cy);
#pragma omp parallel for schedule(static, 1024)
  for (int64_t n = 0; n < N; ++n) {
    ProjLocal<S> L;
    bool ok = project_one(means + 3 * n, quats + 4 * n, scales + 3 * n, viewmat, K, L);
    S z = L.p[2];
    S zs = (z > S(NEAR)) ? z : S(1);  // the reference's placeholder depth for culled Gaussians
    means2d[2 * n] = fx * L.p[0] / zs + cx;
    means2d[2 * n + 1] = fy * L.p[1] / zs + cy;
    depths[n] = z;
    radii[n] = 0;
    conics[3 * n] = conics[3 * n + 1] = conics[3 * n + 2] = S(0);
    colors[3 * n] = colors[3 * n + 1] = colors[3 * n + 2] = S(0);
    if (!ok) continue;
    S det = L.det;
    S mid = S(0.5) * (L.a + L.c);
    S lam = mid + std::sqrt(std::max(mid * mid - det, S(0.1)));
    int64_t r = (int64_t)std::ceil(S(3) * std::sqrt(lam));
    int rect[4];
    tile_rect<S>(means2d[2 * n], means2d[2 * n + 1], r, tx, ty, rect);
    if ((rect[2] - rect[0]) * (rect[3] - rect[1]) <= 0) continue;
    radii[n] = (int32_t)std::min<int64_t>(r, INT32_MAX);  // absurdly large Gaussians stay visible
    conics[3 * n] = L.c / det;
    conics[3 * n + 1] = -L.b / det;
    conics[3 * n + 2] = L.a / det;
    // Colour from SH along the normalised camera-centre -> mean direction.
    const S* m = means + 3 * n;
    S d[3] = {m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]};
    S dn = std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), S(1e-12));
    S basis[16];
    sh_basis<S>(sh_degree, d[0] / dn, d[1] / dn, d[2] / dn, basis);
    const S* co = coeffs + n * Kc * 3;
    for (int ch = 0; ch < 3; ++ch) {
      S acc = S(0);
      for (int k = 0; k < nb; ++k) acc += basis[k] * co[k * 3 + ch];
      colors[3 * n + ch] = std::max(acc + S(0.5), S(0));
    }
  }
}

template <typename S>
void project_backward_impl(const S* means, const S* quats, const S* scales, const S* coeffs, int64_t N, int64_t Kc,
                           int sh_degree, const S* viewmat, const S* campos, const Intrinsics& K,
                           const int32_t* radii, const S* conics, const S* v_means2d, const S* v_conics,
                           const S* v_colors, const S* v_depths, S* v_means, S* v_quats, S* v_scales,
                           S* v_coeffs) {
  const int nb = (sh_degree + 1) * (sh_degree + 1);
  const S fx = S(K.fx), fy = S(K.fy);
  const S* Rw = viewmat;
#pragma omp parallel for schedule(static, 1024)
  for (int64_t n = 0; n < N; ++n) {
    if (radii[n] <= 0) continue;  // culled: no gradient (the reference only uses live Gaussians)
    ProjLocal<S> L;
    project_one(means + 3 * n, quats + 4 * n, scales + 3 * n, viewmat, K, L);
    S vp[3] = {S(0), S(0), v_depths[n]};
    S vmean[3] = {S(0), S(0), S(0)};

    // ---- colour -> SH coefficients and view direction
    const S* m = means + 3 * n;
    S d[3] = {m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]};
    S dn_raw = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    S dn = std::max(dn_raw, S(1e-12));
    S u[3] = {d[0] / dn, d[1] / dn, d[2] / dn};
    S basis[16];
    sh_basis<S>(sh_degree, u[0], u[1], u[2], basis);
    const S* co = coeffs + n * Kc * 3;
    S vcol[3];
    for (int ch = 0; ch < 3; ++ch) {
      S acc = S(0);
      for (int k = 0; k < nb; ++k) acc += basis[k] * co[k * 3 + ch];
      vcol[ch] = (acc + S(0.5) >= S(0)) ? v_colors[3 * n + ch] : S(0);
    }
    S* vco = v_coeffs + n * Kc * 3;
    for (int k = 0; k < nb; ++k)
      for (int ch = 0; ch < 3; ++ch) vco[k * 3 + ch] += basis[k] * vcol[ch];
    if (sh_degree > 0) {
      S gb[16][3];
      sh_basis_grad<S>(sh_degree, u[0], u[1], u[2], gb);
      S vu[3] = {S(0), S(0), S(0)};
      for (int k = 1; k < nb; ++k) {
        S wk = co[k * 3] * vcol[0] + co[k * 3 + 1] * vcol[1] + co[k * 3 + 2] * vcol[2];
        for (int i = 0; i < 3; ++i) vu[i] += wk * gb[k][i];
      }
      if (dn_raw >= S(1e-12)) {
        S dot = u[0] * vu[0] + u[1] * vu[1] + u[2] * vu[2];
        for (int i = 0; i < 3; ++i) vmean[i] += (vu[i] - u[i] * dot) / dn;
      } else {
        for (int i = 0; i < 3; ++i) vmean[i] += vu[i] / dn;
      }
    }

    // ---- screen mean
    S x = L.p[0], y = L.p[1], z = L.p[2];
    S vm0 = v_means2d[2 * n], vm1 = v_means2d[2 * n + 1];
    vp[0] += vm0 * fx / z;
    vp[1] += vm1 * fy / z;
    vp[2] += -(vm0 * fx * x + vm1 * fy * y) / (z * z);

    // ---- conic -> 2D covariance: dL/dSigma = -Q G Q with G the symmetric form of v_conic
    const S* q = conics + 3 * n;
    S QA = q[0], QB = q[1], QC = q[2];
    S gA = v_conics[3 * n], gB = S(0.5) * v_conics[3 * n + 1], gC = v_conics[3 * n + 2];
    // QG = Q @ G
    S QG00 = QA * gA + QB * gB, QG01 = QA * gB + QB * gC;
    S QG10 = QB * gA + QC * gB, QG11 = QB * gB + QC * gC;
    S V00 = -(QG00 * QA + QG01 * QB);
    S V01 = -(QG00 * QB + QG01 * QC);
    S V11 = -(QG10 * QB + QG11 * QC);
    // V is the gradient w.r.t. the symmetric matrix cov2 (off-diagonal carries half of dL/db each).
    S V[4] = {V00, V01, V01, V11};

    // ---- cov2 = T cov3 T^T
    const S* T = L.Tm;
    const S* C = L.cov3;
    S Cf[9] = {C[0], C[1], C[2], C[1], C[3], C[4], C[2], C[4], C[5]};
    // VT = V @ T (2x3)
    S VT[6];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) VT[i * 3 + j] = V[i * 2 + 0] * T[j] + V[i * 2 + 1] * T[3 + j];
    // v_cov3 = T^T V T (3x3)
    S vC[9];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) vC[i * 3 + j] = T[i] * VT[j] + T[3 + i] * VT[3 + j];
    // v_T = 2 V T cov3 (2x3)
    S vT[6];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        vT[i * 3 + j] = S(2) * (VT[i * 3 + 0] * Cf[0 * 3 + j] + VT[i * 3 + 1] * Cf[1 * 3 + j] + VT[i * 3 + 2] * Cf[2 * 3 + j]);
    // T = J W -> v_J = v_T W^T (only the 4 non-zero entries of J matter)
    auto vJ = [&](int i, int k) {
      return vT[i * 3 + 0] * Rw[k * 4 + 0] + vT[i * 3 + 1] * Rw[k * 4 + 1] + vT[i * 3 + 2] * Rw[k * 4 + 2];
    };
    S vJ00 = vJ(0, 0), vJ02 = vJ(0, 2), vJ11 = vJ(1, 1), vJ12 = vJ(1, 2);
    S z2 = z * z, z3 = z2 * z;
    vp[2] += -vJ00 * fx / z2 - vJ11 * fy / z2 + S(2) * (vJ02 * fx * L.tx + vJ12 * fy * L.ty) / z3;
    S vtx = -vJ02 * fx / z2, vty = -vJ12 * fy / z2;
    if (L.clamp_x) vp[2] += vtx * (L.tx / z); else vp[0] += vtx;
    if (L.clamp_y) vp[2] += vty * (L.ty / z); else vp[1] += vty;
    for (int j = 0; j < 3; ++j) vmean[j] += Rw[0 * 4 + j] * vp[0] + Rw[1 * 4 + j] * vp[1] + Rw[2 * 4 + j] * vp[2];

    // ---- cov3 = M M^T -> v_M = 2 v_cov3 M (v_cov3 symmetric)
    S vM[9];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        vM[i * 3 + j] = S(2) * (vC[i * 3 + 0] * L.M[0 * 3 + j] + vC[i * 3 + 1] * L.M[1 * 3 + j] + vC[i * 3 + 2] * L.M[2 * 3 + j]);
    S vR[9];
    for (int j = 0; j < 3; ++j) {
      S vs = S(0);
      for (int i = 0; i < 3; ++i) {
        vR[i * 3 + j] = vM[i * 3 + j] * L.s[j];
        vs += vM[i * 3 + j] * L.Rq[i * 3 + j];
      }
      v_scales[3 * n + j] += vs * L.s[j];
    }
    // ---- rotation -> normalised quaternion -> raw quaternion
    S w = L.qn[0], qx = L.qn[1], qy = L.qn[2], qz = L.qn[3];
    S vq[4];
    vq[0] = 2 * (-qz * vR[1] + qy * vR[2] + qz * vR[3] - qx * vR[5] - qy * vR[6] + qx * vR[7]);
    vq[1] = 2 * (qy * vR[1] + qz * vR[2] + qy * vR[3] - 2 * qx * vR[4] - w * vR[5] + qz * vR[6] + w * vR[7] - 2 * qx * vR[8]);
    vq[2] = 2 * (-2 * qy * vR[0] + qx * vR[1] + w * vR[2] + qx * vR[3] + qz * vR[5] - w * vR[6] + qz * vR[7] - 2 * qy * vR[8]);
    vq[3] = 2 * (-2 * qz * vR[0] - w * vR[1] + qx * vR[2] + w * vR[3] - 2 * qz * vR[4] + qy * vR[5] + qx * vR[6] + qy * vR[7]);
    const S* qr = quats + 4 * n;
    S qnorm = std::sqrt(qr[0] * qr[0] + qr[1] * qr[1] + qr[2] * qr[2] + qr[3] * qr[3]);
    if (qnorm >= S(1e-12)) {
      S dot = w * vq[0] + qx * vq[1] + qy * vq[2] + qz * vq[3];
      for (int i = 0; i < 4; ++i) v_quats[4 * n + i] += (vq[i] - L.qn[i] * dot) / qnorm;
    } else {
      for (int i = 0; i < 4; ++i) v_quats[4 * n + i] += vq[i] / S(1e-12);
    }
    for (int i = 0; i < 3; ++i) v_means[3 * n + i] += vmean[i];
  }
}

// ------------------------------------------------------------------------------------------------
// Rasterization (one camera)
// ------------------------------------------------------------------------------------------------

// Per-Gaussian record gathered once so the per-tile loops read contiguous memory.
template <typename S>
struct GRec {
  S mx, my, A, B, C, o, col[3], depth;
  S pmin;  // power below which alpha < 1/255 for sure (skip the exp); conservative by a margin
  int bx0, bx1, by0, by1;  // pixel box (inclusive) outside which alpha < 1/255 for sure
};

// exp for the compositing: only ever called on power in [pmin, 0] with pmin >= -5.55 (opacity <= 1).
// float: a branch-free Cody-Waite reduction + degree-7 Taylor polynomial (relative error ~1e-7,
// like glibc's expf) that the compiler can vectorise over a row of pixels; double: std::exp.
template <typename S>
inline S exp_small(S x) {
  return std::exp(x);
}
template <>
inline float exp_small<float>(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float fn = (x * 1.44269504088896341f + magic) - magic;
  float r = (x - fn * 0.693145751953125f) - fn * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = ((int32_t)fn + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// Power and exp(power) for pixels [px0, px0 + cnt) of one row (cnt <= TILE), without branches so
// the loop vectorises. Pixels outside [pmin, 0] get a dummy exp and are rejected by `alpha_of`.
template <typename S>
inline void row_eval(const GRec<S>& g, int px0, int cnt, S pyc, S* pw, S* ev) {
  const S dy = g.my - pyc;
  for (int k = 0; k < cnt; ++k) {
    const S dx = g.mx - (S(px0 + k) + S(0.5));
    pw[k] = S(-0.5) * (g.A * (dx * dx) + g.C * (dy * dy)) - g.B * dx * dy;
  }
  for (int k = 0; k < cnt; ++k) ev[k] = exp_small<S>(std::min(std::max(pw[k], g.pmin), S(0)));
}

// alpha from a row_eval result; false when skipped (power > 0 or alpha < 1/255). `clamped` tells
// whether the 0.99 clamp was active (no gradient then). Shared by forward and backward so both
// take exactly the same decisions.
template <typename S>
inline bool alpha_of(const GRec<S>& g, S power, S ex, S& alpha, bool& clamped) {
  if (power > S(0) || power < g.pmin) return false;
  const S a = g.o * ex;
  clamped = a > S(0.99);
  alpha = clamped ? S(0.99) : a;
  return alpha >= S(1.0 / 255.0);
}

// Radix sort of (positive) depth keys, stable, so ties keep ascending Gaussian index like the
// reference's stable argsort.
template <typename S>
void sort_by_depth(std::vector<int32_t>& ids, const S* depths) {
  using U = typename std::conditional<sizeof(S) == 4, uint32_t, uint64_t>::type;
  const size_t n = ids.size();
  std::vector<U> keys(n), keys2(n);
  std::vector<int32_t> ids2(n);
  for (size_t i = 0; i < n; ++i) {
    S d = depths[ids[i]];
    U k;
    std::memcpy(&k, &d, sizeof(U));  // positive floats order like their bit patterns
    keys[i] = k;
  }
  for (int shift = 0; shift < (int)(8 * sizeof(U)); shift += 8) {
    size_t count[257] = {0};
    bool all_same = true;
    U first = n ? ((keys[0] >> shift) & 0xFF) : 0;
    for (size_t i = 0; i < n; ++i) {
      U b = (keys[i] >> shift) & 0xFF;
      count[b + 1]++;
      all_same &= (b == first);
    }
    if (all_same) continue;
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (size_t i = 0; i < n; ++i) {
      U b = (keys[i] >> shift) & 0xFF;
      size_t dst = count[b]++;
      keys2[dst] = keys[i];
      ids2[dst] = ids[i];
    }
    keys.swap(keys2);
    ids.swap(ids2);
  }
}

struct Binning {
  std::vector<int64_t> offsets;  // per tile [offsets[t], offsets[t+1]) into ids
  std::vector<int32_t> ids;      // Gaussian ids, per tile sorted front to back
};

template <typename S>
Binning bin_tiles(const S* means2d, const S* depths, const int32_t* radii, int64_t N, const Intrinsics& K) {
  const int tx = K.tiles_x(), ty = K.tiles_y();
  const int ntiles = tx * ty;
  std::vector<int32_t> order;
  order.reserve(N);
  for (int64_t n = 0; n < N; ++n)
    if (radii[n] > 0) order.push_back((int32_t)n);
  sort_by_depth(order, depths);
  const int64_t V = (int64_t)order.size();
  std::vector<int32_t> rects(4 * V);
#pragma omp parallel for schedule(static, 4096)
  for (int64_t i = 0; i < V; ++i) {
    int32_t n = order[i];
    tile_rect<S>(means2d[2 * n], means2d[2 * n + 1], radii[n], tx, ty, &rects[4 * i]);
  }
  // Each thread owns a band of tile rows, so counting and filling need no atomics and the
  // per-tile order is the global depth order.
  Binning B;
  B.offsets.assign(ntiles + 1, 0);
  std::vector<int64_t> counts(ntiles, 0);
#pragma omp parallel
  {
    int r0, r1;
    thread_row_band(ty, &r0, &r1);
    for (int64_t i = 0; i < V; ++i) {
      const int32_t* r = &rects[4 * i];
      int y0 = std::max(r[1], r0), y1 = std::min(r[3], r1);
      for (int y = y0; y < y1; ++y)
        for (int x = r[0]; x < r[2]; ++x) counts[y * tx + x]++;
    }
  }
  for (int t = 0; t < ntiles; ++t) B.offsets[t + 1] = B.offsets[t] + counts[t];
  B.ids.resize(B.offsets[ntiles]);
#pragma omp parallel
  {
    int r0, r1;
    thread_row_band(ty, &r0, &r1);
    std::vector<int64_t> cursor(B.offsets.begin() + (int64_t)r0 * tx, B.offsets.begin() + (int64_t)r1 * tx);
    for (int64_t i = 0; i < V; ++i) {
      const int32_t* r = &rects[4 * i];
      int y0 = std::max(r[1], r0), y1 = std::min(r[3], r1);
      for (int y = y0; y < y1; ++y)
        for (int x = r[0]; x < r[2]; ++x) B.ids[cursor[(y - r0) * tx + x]++] = order[i];
    }
  }
  return B;
}

template <typename S>
std::vector<GRec<S>> gather_records(const S* means2d, const S* conics, const S* colors, const S* opac,
                                    const S* depths, const int32_t* radii, int64_t N) {
  std::vector<GRec<S>> recs(N);
#pragma omp parallel for schedule(static, 4096)
  for (int64_t n = 0; n < N; ++n) {
    GRec<S>& g = recs[n];
    g.bx0 = 1;
    g.bx1 = 0;  // empty box by default
    g.by0 = 1;
    g.by1 = 0;
    if (radii[n] <= 0) continue;
    g.mx = means2d[2 * n];
    g.my = means2d[2 * n + 1];
    g.A = conics[3 * n];
    g.B = conics[3 * n + 1];
    g.C = conics[3 * n + 2];
    g.o = opac[n];
    for (int c = 0; c < 3; ++c) g.col[c] = colors[3 * n + c];
    g.depth = depths[n];
    // alpha >= 1/255 needs power >= -t with t = log(255 o); the ellipse power >= -t has half-extents
    // sqrt(2 t Sigma_xx), sqrt(2 t Sigma_yy). A small margin (t + 1e-3, x(1 + 1e-4) + 0.01 px) absorbs
    // rounding, so every pixel outside the box is one the reference skips anyway: same result.
    double o = (double)g.o;
    if (!(o * 255.0 >= 0.999)) continue;  // alpha <= o < 1/255 everywhere
    double t = std::max(std::log(255.0 * o), 0.0) + 1e-3;
    g.pmin = S(-t);  // o exp(-t) < (1/255) exp(-1e-3): far below the threshold for any rounding
    double A = g.A, Bc = g.B, C = g.C;
    double detq = A * C - Bc * Bc;
    if (!(detq > 0)) {  // cannot happen for a valid conic; fall back to the whole image
      g.bx0 = 0; g.bx1 = 1 << 30; g.by0 = 0; g.by1 = 1 << 30;
      continue;
    }
    double ex = std::sqrt(2.0 * t * C / detq) * (1 + 1e-4) + 1e-2;
    double ey = std::sqrt(2.0 * t * A / detq) * (1 + 1e-4) + 1e-2;
    double mx = g.mx, my = g.my;
    // pixel i has centre i + 0.5
    double fx0 = std::ceil(mx - ex - 0.5), fx1 = std::floor(mx + ex - 0.5);
    double fy0 = std::ceil(my - ey - 0.5), fy1 = std::floor(my + ey - 0.5);
    const double BIG = 1 << 30;
    g.bx0 = (int)std::max(-BIG, std::min(BIG, fx0));
    g.bx1 = (int)std::max(-BIG, std::min(BIG, fx1));
    g.by0 = (int)std::max(-BIG, std::min(BIG, fy0));
    g.by1 = (int)std::max(-BIG, std::min(BIG, fy1));
  }
  return recs;
}

template <typename S>
void rasterize_forward_impl(const std::vector<GRec<S>>& recs, const Binning& B, const Intrinsics& K, const S* bg,
                            S* out_color, S* out_alpha, S* out_depth, S* T_final, int32_t* n_contrib) {
  const int tx = K.tiles_x(), ty = K.tiles_y(), W = K.W, H = K.H;
  const int ntiles = tx * ty;
  const S T_MIN = S(1e-4);
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < ntiles; ++t) {
    const int x0 = (t % tx) * TILE, y0 = (t / tx) * TILE;
    const int x1 = std::min(x0 + TILE, W), y1 = std::min(y0 + TILE, H);
    const int tw = x1 - x0, th = y1 - y0, np = tw * th;
    S T[TILE_PIX], acc[TILE_PIX][3], accd[TILE_PIX];
    int32_t last[TILE_PIX];
    bool done[TILE_PIX];
    for (int i = 0; i < np; ++i) {
      T[i] = S(1);
      acc[i][0] = acc[i][1] = acc[i][2] = accd[i] = S(0);
      last[i] = 0;
      done[i] = false;
    }
    int ndone = 0;
    const int64_t beg = B.offsets[t], end = B.offsets[t + 1];
    // Gaussian-outer order: each pixel still sees its Gaussians front to back, so the result is the
    // same as a per-pixel loop, but only the pixels inside a Gaussian's box are visited.
    for (int64_t j = beg; j < end && ndone < np; ++j) {
      if (j + 8 < end) __builtin_prefetch(&recs[B.ids[j + 8]]);  // records are visited in depth order
      const GRec<S>& g = recs[B.ids[j]];
      int gx0 = std::max(g.bx0, x0), gx1 = std::min(g.bx1, x1 - 1);
      int gy0 = std::max(g.by0, y0), gy1 = std::min(g.by1, y1 - 1);
      S pw[TILE], ev[TILE];
      const int rx0 = gx0, cnt = gx1 - gx0 + 1;
      for (int py = gy0; py <= gy1; ++py) {
        row_eval(g, rx0, cnt, S(py) + S(0.5), pw, ev);
        for (int k = 0; k < cnt; ++k) {
          const int i = (py - y0) * tw + (rx0 + k - x0);
          if (done[i]) continue;
          S alpha;
          bool clamped;
          if (!alpha_of(g, pw[k], ev[k], alpha, clamped)) continue;
          S test_T = T[i] * (S(1) - alpha);
          if (test_T < T_MIN) {
            done[i] = true;
            ++ndone;
            continue;
          }
          S w = alpha * T[i];
          acc[i][0] += w * g.col[0];
          acc[i][1] += w * g.col[1];
          acc[i][2] += w * g.col[2];
          accd[i] += w * g.depth;
          T[i] = test_T;
          last[i] = (int32_t)(j - beg + 1);
        }
      }
    }
    for (int r = 0; r < th; ++r)
      for (int c = 0; c < tw; ++c) {
        const int i = r * tw + c;
        const int64_t pix = (int64_t)(y0 + r) * W + (x0 + c);
        for (int ch = 0; ch < 3; ++ch) out_color[3 * pix + ch] = acc[i][ch] + T[i] * bg[ch];
        S a = S(1) - T[i];
        out_alpha[pix] = a;
        out_depth[pix] = a > S(0) ? accd[i] / std::max(a, S(1e-10)) : S(0);
        T_final[pix] = T[i];
        n_contrib[pix] = last[i];
      }
  }
}

// Per-intersection gradient row: means2d (2), conic (3), colour (3), opacity, depth.
constexpr int GROW = 10;

template <typename S>
void rasterize_backward_impl(const std::vector<GRec<S>>& recs, const Binning& B, const Intrinsics& K, const S* bg,
                             const S* out_depth, const S* T_final, const int32_t* n_contrib, const S* v_color,
                             const S* v_alpha, const S* v_depth, S* v_means2d, S* v_conics, S* v_colors, S* v_opac,
                             S* v_depths, S* v_bg) {
  const int tx = K.tiles_x(), ty = K.tiles_y(), W = K.W, H = K.H;
  const int ntiles = tx * ty;
  const int64_t I = (int64_t)B.ids.size();
  std::vector<S> rows((size_t)I * GROW, S(0));
  const int nthr = num_threads();
  std::vector<S> bg_part((size_t)ntiles * 3, S(0));
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < ntiles; ++t) {
    const int x0 = (t % tx) * TILE, y0 = (t / tx) * TILE;
    const int x1 = std::min(x0 + TILE, W), y1 = std::min(y0 + TILE, H);
    const int tw = x1 - x0, th = y1 - y0, np = tw * th;
    S T[TILE_PIX], R[TILE_PIX], gc[TILE_PIX][3], gs[TILE_PIX];
    int32_t last[TILE_PIX];
    int32_t maxlast = 0;
    for (int r = 0; r < th; ++r)
      for (int c = 0; c < tw; ++c) {
        const int i = r * tw + c;
        const int64_t pix = (int64_t)(y0 + r) * W + (x0 + c);
        const S Tf = T_final[pix];
        const S a = S(1) - Tf;
        S gA = v_alpha[pix];
        S gS = S(0);
        if (a > S(0)) {  // depth = S / max(a, 1e-10)
          const S am = std::max(a, S(1e-10));
          const S gD = v_depth[pix];
          gS = gD / am;
          if (a >= S(1e-10)) gA -= gD * out_depth[pix] / am;
        }
        for (int ch = 0; ch < 3; ++ch) gc[i][ch] = v_color[3 * pix + ch];
        gs[i] = gS;
        // R: suffix value of the loss behind the current Gaussian, per unit transmittance.
        R[i] = gc[i][0] * bg[0] + gc[i][1] * bg[1] + gc[i][2] * bg[2] - gA;
        T[i] = Tf;
        last[i] = n_contrib[pix];
        maxlast = std::max(maxlast, last[i]);
        for (int ch = 0; ch < 3; ++ch) bg_part[3 * (size_t)t + ch] += Tf * gc[i][ch];
      }
    const int64_t beg = B.offsets[t];
    for (int64_t jj = maxlast - 1; jj >= 0; --jj) {
      const int64_t j = beg + jj;
      if (jj >= 8) __builtin_prefetch(&recs[B.ids[j - 8]]);
      const GRec<S>& g = recs[B.ids[j]];
      int gx0 = std::max(g.bx0, x0), gx1 = std::min(g.bx1, x1 - 1);
      int gy0 = std::max(g.by0, y0), gy1 = std::min(g.by1, y1 - 1);
      S vmx = 0, vmy = 0, vA = 0, vB = 0, vC = 0, vc0 = 0, vc1 = 0, vc2 = 0, vo = 0, vd = 0;
      S pw[TILE], ev[TILE];
      const int rx0 = gx0, cnt = gx1 - gx0 + 1;
      for (int py = gy0; py <= gy1; ++py) {
        const S pyc = S(py) + S(0.5);
        row_eval(g, rx0, cnt, pyc, pw, ev);
        for (int k = 0; k < cnt; ++k) {
          const int i = (py - y0) * tw + (rx0 + k - x0);
          if (jj >= last[i]) continue;
          S alpha;
          bool clamped;
          if (!alpha_of(g, pw[k], ev[k], alpha, clamped)) continue;
          const S ex = ev[k], dx = g.mx - (S(rx0 + k) + S(0.5)), dy = g.my - pyc;
          const S om = S(1) - alpha;
          T[i] = T[i] / om;  // transmittance in front of this Gaussian
          const S Ti = T[i];
          const S gf = gc[i][0] * g.col[0] + gc[i][1] * g.col[1] + gc[i][2] * g.col[2] + gs[i] * g.depth;
          const S wt = alpha * Ti;
          vc0 += wt * gc[i][0];
          vc1 += wt * gc[i][1];
          vc2 += wt * gc[i][2];
          vd += wt * gs[i];
          const S dLda = Ti * (gf - R[i]);
          R[i] = alpha * gf + om * R[i];
          if (clamped) continue;
          vo += dLda * ex;
          const S vp = dLda * alpha;  // d alpha / d power = alpha
          vA += vp * S(-0.5) * dx * dx;
          vC += vp * S(-0.5) * dy * dy;
          vB += -vp * dx * dy;
          vmx += -vp * (g.A * dx + g.B * dy);
          vmy += -vp * (g.C * dy + g.B * dx);
        }
      }
      S* row = &rows[(size_t)j * GROW];
      row[0] = vmx; row[1] = vmy; row[2] = vA; row[3] = vB; row[4] = vC;
      row[5] = vc0; row[6] = vc1; row[7] = vc2; row[8] = vo; row[9] = vd;
    }
  }
  (void)nthr;
  // Fixed-order reduction (deterministic regardless of threads).
  for (int64_t j = 0; j < I; ++j) {
    const S* row = &rows[(size_t)j * GROW];
    const int32_t n = B.ids[j];
    v_means2d[2 * n] += row[0];
    v_means2d[2 * n + 1] += row[1];
    v_conics[3 * n] += row[2];
    v_conics[3 * n + 1] += row[3];
    v_conics[3 * n + 2] += row[4];
    v_colors[3 * n] += row[5];
    v_colors[3 * n + 1] += row[6];
    v_colors[3 * n + 2] += row[7];
    v_opac[n] += row[8];
    v_depths[n] += row[9];
  }
  for (int t = 0; t < ntiles; ++t)
    for (int ch = 0; ch < 3; ++ch) v_bg[ch] += bg_part[3 * (size_t)t + ch];
}

// ------------------------------------------------------------------------------------------------
// Torch bindings
// ------------------------------------------------------------------------------------------------

Intrinsics make_k(double fx, double fy, double cx, double cy, int64_t W, int64_t H) {
  return Intrinsics{fx, fy, cx, cy, (int)W, (int)H};
}

void check(const torch::Tensor& t, const char* name, torch::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dt, name, " has the wrong dtype");
}

// means (N,3) quats (N,4) scales (N,3) coeffs (N,K,3) viewmat (4,4) campos (3)
std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                           torch::Tensor coeffs, int64_t sh_degree, torch::Tensor viewmat,
                                           torch::Tensor campos, double fx, double fy, double cx, double cy,
                                           int64_t W, int64_t H) {
  auto dt = means.scalar_type();
  for (auto* p : {&means, &quats, &scales, &coeffs, &viewmat, &campos}) check(*p, "input", dt);
  const int64_t N = means.size(0), Kc = coeffs.size(1);
  TORCH_CHECK((sh_degree + 1) * (sh_degree + 1) <= Kc, "not enough SH coefficients");
  auto opts = means.options();
  auto means2d = torch::empty({N, 2}, opts), conics = torch::empty({N, 3}, opts);
  auto colors = torch::empty({N, 3}, opts), depths = torch::empty({N}, opts);
  auto radii = torch::empty({N}, opts.dtype(torch::kInt32));
  Intrinsics K = make_k(fx, fy, cx, cy, W, H);
  AT_DISPATCH_FLOATING_TYPES(dt, "project_forward", [&] {
    project_forward_impl<scalar_t>(means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                                   coeffs.data_ptr<scalar_t>(), N, Kc, (int)sh_degree, viewmat.data_ptr<scalar_t>(),
                                   campos.data_ptr<scalar_t>(), K, means2d.data_ptr<scalar_t>(),
                                   conics.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
                                   depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>());
  });
  return {means2d, conics, colors, depths, radii};
}

// Accumulates into v_means, v_quats, v_scales, v_coeffs (so several cameras add up).
void project_backward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales, torch::Tensor coeffs,
                      int64_t sh_degree, torch::Tensor viewmat, torch::Tensor campos, double fx, double fy, double cx,
                      double cy, int64_t W, int64_t H, torch::Tensor radii, torch::Tensor conics,
                      torch::Tensor v_means2d, torch::Tensor v_conics, torch::Tensor v_colors, torch::Tensor v_depths,
                      torch::Tensor v_means, torch::Tensor v_quats, torch::Tensor v_scales, torch::Tensor v_coeffs) {
  auto dt = means.scalar_type();
  for (auto* p : {&means, &quats, &scales, &coeffs, &viewmat, &campos, &conics, &v_means2d, &v_conics, &v_colors,
                  &v_depths, &v_means, &v_quats, &v_scales, &v_coeffs})
    check(*p, "input", dt);
  check(radii, "radii", torch::kInt32);
  const int64_t N = means.size(0), Kc = coeffs.size(1);
  Intrinsics K = make_k(fx, fy, cx, cy, W, H);
  AT_DISPATCH_FLOATING_TYPES(dt, "project_backward", [&] {
    project_backward_impl<scalar_t>(
        means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
        coeffs.data_ptr<scalar_t>(), N, Kc, (int)sh_degree, viewmat.data_ptr<scalar_t>(), campos.data_ptr<scalar_t>(),
        K, radii.data_ptr<int32_t>(), conics.data_ptr<scalar_t>(), v_means2d.data_ptr<scalar_t>(),
        v_conics.data_ptr<scalar_t>(), v_colors.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(),
        v_means.data_ptr<scalar_t>(), v_quats.data_ptr<scalar_t>(), v_scales.data_ptr<scalar_t>(),
        v_coeffs.data_ptr<scalar_t>());
  });
}

// Returns colour (H,W,3), alpha (H,W), depth (H,W), T_final (H,W), n_contrib (H,W) int32,
// tile offsets (ntiles+1) int64, ids (I) int32.
std::vector<torch::Tensor> rasterize_forward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors,
                                             torch::Tensor opac, torch::Tensor depths, torch::Tensor radii,
                                             torch::Tensor bg, int64_t W, int64_t H) {
  auto dt = means2d.scalar_type();
  for (auto* p : {&means2d, &conics, &colors, &opac, &depths, &bg}) check(*p, "input", dt);
  check(radii, "radii", torch::kInt32);
  const int64_t N = means2d.size(0);
  Intrinsics K = make_k(1, 1, 0, 0, W, H);
  auto opts = means2d.options();
  auto out_color = torch::empty({H, W, 3}, opts), out_alpha = torch::empty({H, W}, opts);
  auto out_depth = torch::empty({H, W}, opts), T_final = torch::empty({H, W}, opts);
  auto n_contrib = torch::empty({H, W}, opts.dtype(torch::kInt32));
  torch::Tensor offsets, ids;
  AT_DISPATCH_FLOATING_TYPES(dt, "rasterize_forward", [&] {
    Binning B = bin_tiles<scalar_t>(means2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                                    radii.data_ptr<int32_t>(), N, K);
    auto recs = gather_records<scalar_t>(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                         colors.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(),
                                         depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(), N);
    rasterize_forward_impl<scalar_t>(recs, B, K, bg.data_ptr<scalar_t>(), out_color.data_ptr<scalar_t>(),
                                     out_alpha.data_ptr<scalar_t>(), out_depth.data_ptr<scalar_t>(),
                                     T_final.data_ptr<scalar_t>(), n_contrib.data_ptr<int32_t>());
    offsets = torch::from_blob(B.offsets.data(), {(int64_t)B.offsets.size()}, torch::kInt64).clone();
    ids = torch::from_blob(B.ids.data(), {(int64_t)B.ids.size()}, torch::kInt32).clone();
  });
  return {out_color, out_alpha, out_depth, T_final, n_contrib, offsets, ids};
}

// Returns v_means2d (N,2), v_conics (N,3), v_colors (N,3), v_opac (N,), v_depths (N,), v_bg (3).
std::vector<torch::Tensor> rasterize_backward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors,
                                              torch::Tensor opac, torch::Tensor depths, torch::Tensor radii,
                                              torch::Tensor bg, int64_t W, int64_t H, torch::Tensor out_depth,
                                              torch::Tensor T_final, torch::Tensor n_contrib, torch::Tensor offsets,
                                              torch::Tensor ids, torch::Tensor v_color, torch::Tensor v_alpha,
                                              torch::Tensor v_depth) {
  auto dt = means2d.scalar_type();
  for (auto* p : {&means2d, &conics, &colors, &opac, &depths, &bg, &out_depth, &T_final, &v_color, &v_alpha, &v_depth})
    check(*p, "input", dt);
  check(radii, "radii", torch::kInt32);
  check(n_contrib, "n_contrib", torch::kInt32);
  check(offsets, "offsets", torch::kInt64);
  check(ids, "ids", torch::kInt32);
  const int64_t N = means2d.size(0);
  Intrinsics K = make_k(1, 1, 0, 0, W, H);
  auto opts = means2d.options();
  auto v_means2d = torch::zeros({N, 2}, opts), v_conics = torch::zeros({N, 3}, opts);
  auto v_colors = torch::zeros({N, 3}, opts), v_opac = torch::zeros({N}, opts), v_depths = torch::zeros({N}, opts);
  auto v_bg = torch::zeros({3}, opts);
  AT_DISPATCH_FLOATING_TYPES(dt, "rasterize_backward", [&] {
    Binning B;
    B.offsets.assign(offsets.data_ptr<int64_t>(), offsets.data_ptr<int64_t>() + offsets.numel());
    B.ids.assign(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
    auto recs = gather_records<scalar_t>(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                         colors.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(),
                                         depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(), N);
    rasterize_backward_impl<scalar_t>(recs, B, K, bg.data_ptr<scalar_t>(), out_depth.data_ptr<scalar_t>(),
                                      T_final.data_ptr<scalar_t>(), n_contrib.data_ptr<int32_t>(),
                                      v_color.data_ptr<scalar_t>(), v_alpha.data_ptr<scalar_t>(),
                                      v_depth.data_ptr<scalar_t>(), v_means2d.data_ptr<scalar_t>(),
                                      v_conics.data_ptr<scalar_t>(), v_colors.data_ptr<scalar_t>(),
                                      v_opac.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(),
                                      v_bg.data_ptr<scalar_t>());
  });
  return {v_means2d, v_conics, v_colors, v_opac, v_depths, v_bg};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("project_forward", &project_forward, "project Gaussians for one camera");
  m.def("project_backward", &project_backward, "backward of project_forward (accumulating)");
  m.def("rasterize_forward", &rasterize_forward, "tile-bin and alpha-composite one camera");
  m.def("rasterize_backward", &rasterize_backward, "backward of rasterize_forward");
}
