// Native CPU 3D Gaussian Splatting rasterizer: projection, tile binning, alpha compositing and a
// hand-written backward pass, templated on the scalar type (float for speed, double for gradcheck).
//
// Semantics are exactly those documented in gscomp/render/__init__.py and implemented by the
// PyTorch reference gscomp/render/torch_ref.py; expressions are written in the same order as the
// reference so float32 forward values agree to the last bit wherever no library function (exp,
// matmul summation order) is involved. Built without -ffast-math / -march=native on purpose.
//
// Determinism: every parallel loop writes disjoint memory (pixels, per-Gaussian rows, or
// per-intersection rows); per-Gaussian gradients are reduced from per-intersection rows in list
// order (each thread owning a range of Gaussians), so results do not depend on the thread count or
// the schedule.
//
// Speed (the compositing loops dominate): tiles are composited Gaussian by Gaussian over only the
// pixels of each row that the Gaussian can reach (exact ellipse spans with a safety margin), L
// pixels at a time with GCC/Clang vector extensions (masks instead of branches), and on x86-64 in
// an AVX build picked at run time; the backward reuses the forward's tile lists.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int TILE = 16;
constexpr int TILE_PIX = TILE * TILE;
constexpr double NEAR = 0.01;

// The compositing kernels are compiled twice on x86-64: for the baseline (SSE2) and, through a
// target attribute, with AVX's VEX encoding (3-operand forms, blends: ~15% fewer instructions),
// picked at run time. Both run the same lane-wise IEEE operations (no FMA contraction: FMA is not
// enabled), so their results are bit-identical; GSCOMP_RASTER_SIMD=sse2 forces the baseline.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX__)
#define GS_AVX_DISPATCH 1
#else
#define GS_AVX_DISPATCH 0
#endif
// Helpers of the compositing kernels: always inlined, so they take the caller's instruction set.
#define GS_INLINE inline __attribute__((always_inline))

inline bool use_avx() {
#if GS_AVX_DISPATCH
  const char* e = std::getenv("GSCOMP_RASTER_SIMD");
  if (e && std::strcmp(e, "sse2") == 0) return false;
  return __builtin_cpu_supports("avx");
#else
  return false;
#endif
}

// Inside a parallel region: the calling thread's share [*lo, *hi) of n items (contiguous, in thread
// order), so each thread owns its items and no atomics are needed.
inline void thread_share(int64_t n, int64_t* lo, int64_t* hi) {
  int64_t nt = 1, tid = 0;
#ifdef _OPENMP
  nt = omp_get_num_threads();
  tid = omp_get_thread_num();
#endif
  *lo = n * tid / nt;
  *hi = n * (tid + 1) / nt;
}

// The calling thread's band [r0, r1) of `rows` tile rows.
inline void thread_row_band(int rows, int* r0, int* r1) {
  int64_t lo, hi;
  thread_share(rows, &lo, &hi);
  *r0 = (int)lo;
  *r1 = (int)hi;
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
  // Tangent limits (1.3x the field of view per side), computed once in double like the reference.
  double lim_xp = 0, lim_xn = 0, lim_yp = 0, lim_yn = 0;
  Intrinsics(double fx_, double fy_, double cx_, double cy_, int W_, int H_)
      : fx(fx_), fy(fy_), cx(cx_), cy(cy_), W(W_), H(H_) {
    lim_xp = (W - cx) / fx + 0.3 * (0.5 * W / fx);
    lim_xn = cx / fx + 0.3 * (0.5 * W / fx);
    lim_yp = (H - cy) / fy + 0.3 * (0.5 * H / fy);
    lim_yn = cy / fy + 0.3 * (0.5 * H / fy);
  }
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
  S det_raw;    // det of cov2 before the 0.3 px^2 dilation (the antialiased mode's factor)
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
  S lo_x = S(-K.lim_xn), hi_x = S(K.lim_xp), lo_y = S(-K.lim_yn), hi_y = S(K.lim_yp);
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
  L.det_raw = c00 * c11 - c01 * c01;
  return L.det > S(0);
}

// The first nb SH coefficients (3 channels each) of Gaussian n: sh0 (N,1,3) then shN (N,KN,3).
// sh0 and shN come separately, so no (N,K,3) concatenated copy is made per render.
template <typename S>
inline void gather_sh(const S* sh0, const S* shN, int64_t KN, int64_t n, int nb, S* co) {
  for (int ch = 0; ch < 3; ++ch) co[ch] = sh0[3 * n + ch];
  const S* src = shN + 3 * KN * n;
  for (int i = 0; i < 3 * (nb - 1); ++i) co[3 + i] = src[i];
}

template <typename S>
void project_forward_impl(const S* means, const S* quats, const S* scales, const S* sh0, const S* shN, int64_t N,
                          int64_t KN,
                          int sh_degree, const S* viewmat, const S* campos, const Intrinsics& K, S* means2d,
                          S* conics, S* colors, S* depths, int32_t* radii, S* aa) {
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
    if (aa) aa[n] = S(1);
    conics[3 * n] = conics[3 * n + 1] = conics[3 * n + 2] = S(0);
    colors[3 * n] = colors[3 * n + 1] = colors[3 * n + 2] = S(0);
    if (!ok) continue;
    S det = L.det;
    S mid = S(0.5) * (L.a + L.c);
    S lam = mid + std::sqrt(std::max(mid * mid - det, S(0.1)));
    const S reach = std::ceil(S(3) * std::sqrt(lam));
    if (!std::isfinite(reach)) continue;  // a covariance overflowed to inf: no finite footprint, culled
    int64_t r = reach < S(4e18) ? (int64_t)reach : INT64_C(4000000000000000000);
    int rect[4];
    tile_rect<S>(means2d[2 * n], means2d[2 * n + 1], r, tx, ty, rect);
    if ((rect[2] - rect[0]) * (rect[3] - rect[1]) <= 0) continue;
    radii[n] = (int32_t)std::min<int64_t>(r, INT32_MAX);  // absurdly large Gaussians stay visible
    // antialiased mode: sqrt(det cov2 / det(cov2 + 0.3 I)), from the undilated cov2 (what is left
    // of it after the dilation is added loses the digits a sub-pixel Gaussian's factor is made of)
    if (aa) aa[n] = std::sqrt(std::max(L.det_raw / det, S(1e-30)));
    conics[3 * n] = L.c / det;
    conics[3 * n + 1] = -L.b / det;
    conics[3 * n + 2] = L.a / det;
    // Colour from SH along the normalised camera-centre -> mean direction.
    const S* m = means + 3 * n;
    S d[3] = {m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]};
    S dn = std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), S(1e-12));
    S basis[16];
    sh_basis<S>(sh_degree, d[0] / dn, d[1] / dn, d[2] / dn, basis);
    S co[16 * 3];
    gather_sh(sh0, shN, KN, n, nb, co);
    for (int ch = 0; ch < 3; ++ch) {
      S acc = S(0);
      for (int k = 0; k < nb; ++k) acc += basis[k] * co[k * 3 + ch];
      colors[3 * n + ch] = std::max(acc + S(0.5), S(0));
    }
  }
}

// Vector-Jacobian product of the geometric part of one Gaussian's projection: the gradients of
// its screen mean (vm0, vm1), conic (vcon, the forward's (A, B, C) parametrisation) and, through
// vp[2] on entry, its depth, taken back to the raw quaternion (v_quat, written), the log scales
// (v_scale, written) and the world mean (added to vmean). Shared by project_backward and the
// Fisher pass (fisher_project), so both apply exactly the same Jacobian.
// T, the type of the cotangents and of every value derived from them, is S, or a vector of S
// carrying several cotangents in its lanes (fisher_project's columns): lane-wise IEEE operations
// in the same order, so each lane gets exactly the bits of the scalar call. (Tm is the matrix
// called T in the comments below.)
template <typename S, typename T = S>
GS_INLINE void project_vjp_geom(const S* quat, const ProjLocal<S>& L, const S* viewmat, const Intrinsics& K,
                                const S* q, T vm0, T vm1, const T* vcon, T* vp, T* vmean, T* v_quat, T* v_scale) {
  const S fx = S(K.fx), fy = S(K.fy);
  const S* Rw = viewmat;
  // ---- screen mean
  S x = L.p[0], y = L.p[1], z = L.p[2];
  vp[0] += vm0 * fx / z;
  vp[1] += vm1 * fy / z;
  vp[2] += -(vm0 * fx * x + vm1 * fy * y) / (z * z);

  // ---- conic -> 2D covariance: dL/dSigma = -Q G Q with G the symmetric form of v_conic
  S QA = q[0], QB = q[1], QC = q[2];
  T gA = vcon[0], gB = S(0.5) * vcon[1], gC = vcon[2];
  // QG = Q @ G
  T QG00 = QA * gA + QB * gB, QG01 = QA * gB + QB * gC;
  T QG10 = QB * gA + QC * gB, QG11 = QB * gB + QC * gC;
  T V00 = -(QG00 * QA + QG01 * QB);
  T V01 = -(QG00 * QB + QG01 * QC);
  T V11 = -(QG10 * QB + QG11 * QC);
  // V is the gradient w.r.t. the symmetric matrix cov2 (off-diagonal carries half of dL/db each).
  T V[4] = {V00, V01, V01, V11};

  // ---- cov2 = T cov3 T^T
  const S* Tm = L.Tm;
  const S* C = L.cov3;
  S Cf[9] = {C[0], C[1], C[2], C[1], C[3], C[4], C[2], C[4], C[5]};
  // VT = V @ T (2x3)
  T VT[6];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) VT[i * 3 + j] = V[i * 2 + 0] * Tm[j] + V[i * 2 + 1] * Tm[3 + j];
  // v_cov3 = T^T V T (3x3)
  T vC[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) vC[i * 3 + j] = Tm[i] * VT[j] + Tm[3 + i] * VT[3 + j];
  // v_T = 2 V T cov3 (2x3)
  T vT[6];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      vT[i * 3 + j] = S(2) * (VT[i * 3 + 0] * Cf[0 * 3 + j] + VT[i * 3 + 1] * Cf[1 * 3 + j] + VT[i * 3 + 2] * Cf[2 * 3 + j]);
  // T = J W -> v_J = v_T W^T (only the 4 non-zero entries of J matter)
  auto vJ = [&](int i, int k) -> T {
    return vT[i * 3 + 0] * Rw[k * 4 + 0] + vT[i * 3 + 1] * Rw[k * 4 + 1] + vT[i * 3 + 2] * Rw[k * 4 + 2];
  };
  T vJ00 = vJ(0, 0), vJ02 = vJ(0, 2), vJ11 = vJ(1, 1), vJ12 = vJ(1, 2);
  S z2 = z * z, z3 = z2 * z;
  vp[2] += -vJ00 * fx / z2 - vJ11 * fy / z2 + S(2) * (vJ02 * fx * L.tx + vJ12 * fy * L.ty) / z3;
  T vtx = -vJ02 * fx / z2, vty = -vJ12 * fy / z2;
  if (L.clamp_x) vp[2] += vtx * (L.tx / z); else vp[0] += vtx;
  if (L.clamp_y) vp[2] += vty * (L.ty / z); else vp[1] += vty;
  for (int j = 0; j < 3; ++j) vmean[j] += Rw[0 * 4 + j] * vp[0] + Rw[1 * 4 + j] * vp[1] + Rw[2 * 4 + j] * vp[2];

  // ---- cov3 = M M^T -> v_M = 2 v_cov3 M (v_cov3 symmetric)
  T vM[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      vM[i * 3 + j] = S(2) * (vC[i * 3 + 0] * L.M[0 * 3 + j] + vC[i * 3 + 1] * L.M[1 * 3 + j] + vC[i * 3 + 2] * L.M[2 * 3 + j]);
  T vR[9];
  for (int j = 0; j < 3; ++j) {
    T vs{};
    for (int i = 0; i < 3; ++i) {
      vR[i * 3 + j] = vM[i * 3 + j] * L.s[j];
      vs += vM[i * 3 + j] * L.Rq[i * 3 + j];
    }
    v_scale[j] = vs * L.s[j];
  }
  // ---- rotation -> normalised quaternion -> raw quaternion
  S w = L.qn[0], qx = L.qn[1], qy = L.qn[2], qz = L.qn[3];
  T vq[4];
  vq[0] = S(2) * (-qz * vR[1] + qy * vR[2] + qz * vR[3] - qx * vR[5] - qy * vR[6] + qx * vR[7]);
  vq[1] = S(2) * (qy * vR[1] + qz * vR[2] + qy * vR[3] - S(2) * qx * vR[4] - w * vR[5] + qz * vR[6] + w * vR[7] - S(2) * qx * vR[8]);
  vq[2] = S(2) * (-S(2) * qy * vR[0] + qx * vR[1] + w * vR[2] + qx * vR[3] + qz * vR[5] - w * vR[6] + qz * vR[7] - S(2) * qy * vR[8]);
  vq[3] = S(2) * (-S(2) * qz * vR[0] - w * vR[1] + qx * vR[2] + w * vR[3] - S(2) * qz * vR[4] + qy * vR[5] + qx * vR[6] + qy * vR[7]);
  const S* qr = quat;
  S qnorm = std::sqrt(qr[0] * qr[0] + qr[1] * qr[1] + qr[2] * qr[2] + qr[3] * qr[3]);
  if (qnorm >= S(1e-12)) {
    T dot = w * vq[0] + qx * vq[1] + qy * vq[2] + qz * vq[3];
    for (int i = 0; i < 4; ++i) v_quat[i] = (vq[i] - L.qn[i] * dot) / qnorm;
  } else {
    for (int i = 0; i < 4; ++i) v_quat[i] = vq[i] / S(1e-12);
  }
}

template <typename S>
void project_backward_impl(const S* means, const S* quats, const S* scales, const S* sh0, const S* shN, int64_t N,
                           int64_t KN, int sh_degree, const S* viewmat, const S* campos, const Intrinsics& K,
                           const int32_t* radii, const S* conics, const S* v_means2d, const S* v_conics,
                           const S* v_colors, const S* v_depths, bool overwrite, S* v_means, S* v_quats,
                           S* v_scales, S* v_sh0, S* v_shN) {
  const int nb = (sh_degree + 1) * (sh_degree + 1);
#pragma omp parallel for schedule(static, 1024)
  for (int64_t n = 0; n < N; ++n) {
    if (overwrite) {  // first camera: the outputs start uninitialised (no separate zero-fill pass)
      std::fill(v_means + 3 * n, v_means + 3 * n + 3, S(0));
      std::fill(v_quats + 4 * n, v_quats + 4 * n + 4, S(0));
      std::fill(v_scales + 3 * n, v_scales + 3 * n + 3, S(0));
      std::fill(v_sh0 + 3 * n, v_sh0 + 3 * n + 3, S(0));
      std::fill(v_shN + 3 * KN * n, v_shN + 3 * KN * (n + 1), S(0));
    }
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
    S co[16 * 3];
    gather_sh(sh0, shN, KN, n, nb, co);
    S vcol[3];
    for (int ch = 0; ch < 3; ++ch) {
      S acc = S(0);
      for (int k = 0; k < nb; ++k) acc += basis[k] * co[k * 3 + ch];
      vcol[ch] = (acc + S(0.5) >= S(0)) ? v_colors[3 * n + ch] : S(0);
    }
    for (int ch = 0; ch < 3; ++ch) v_sh0[3 * n + ch] += basis[0] * vcol[ch];
    S* vco = v_shN + 3 * KN * n - 3;  // coefficient k >= 1 is shN row k - 1
    for (int k = 1; k < nb; ++k)
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

    S vq[4], vs[3];
    project_vjp_geom<S>(quats + 4 * n, L, viewmat, K, conics + 3 * n, v_means2d[2 * n], v_means2d[2 * n + 1],
                        v_conics + 3 * n, vp, vmean, vq, vs);
    for (int j = 0; j < 3; ++j) v_scales[3 * n + j] += vs[j];
    for (int i = 0; i < 4; ++i) v_quats[4 * n + i] += vq[i];
    for (int i = 0; i < 3; ++i) v_means[3 * n + i] += vmean[i];
  }
}

// ------------------------------------------------------------------------------------------------
// Rasterization (one camera)
// ------------------------------------------------------------------------------------------------

// Per-Gaussian record gathered once so the per-tile loops read contiguous memory (64 bytes for
// float: one cache line).
template <typename S>
struct GRec {
  S mx, my, A, B, C, o, col[3], depth;
  S pmin;  // power below which alpha < 1/255 for sure (skip the exp); conservative by a margin
  // Row spans of the ellipse power >= pmin: in the row at vertical offset dy = my - (y + 0.5) the
  // pixel centres px with power >= pmin satisfy |px - (mx - kc dy)| <= sqrt(h0 - h1 dy^2), with
  // h0 inflated by a margin; pixels outside have alpha < 1/255 (the reference skips them too).
  S kc, h0, h1;
  int by0, by1;  // rows (inclusive) outside which alpha < 1/255 for sure
};

// ---- SIMD over the pixels of a tile row
// The compositing loops work on L adjacent pixels at once through GCC/Clang vector extensions:
// lane-wise IEEE arithmetic in the same order as scalar code, lowered to plain SSE2 on any x86-64
// (NEON on arm64) without -march flags. Branches become lane masks (0 / -1), which removes the
// data-dependent branch mispredictions that dominated scalar per-pixel loops. Per-pixel values
// keep the reference's operation order; only the backward's sums over a Gaussian's pixels are
// regrouped (lane-wise partial sums, then lanes in order: still a fixed order). A tile row of 16
// pixels is CH = 16 / L vectors.
template <typename S>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(16)));
  typedef int32_t M __attribute__((vector_size(16)));  // what a comparison of two V returns
  static constexpr int L = 4;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(16)));
  typedef int64_t M __attribute__((vector_size(16)));
  static constexpr int L = 2;
};

template <typename Vec, typename E>
GS_INLINE Vec splat(E e) {
  Vec v;
  for (int k = 0; k < (int)(sizeof(Vec) / sizeof(v[0])); ++k) v[k] = e;
  return v;
}

// Sum of the lanes, in lane order (a fixed order: results do not depend on threads).
template <typename Vec>
GS_INLINE auto hsum(Vec v) -> typename std::remove_reference<decltype(v[0])>::type {
  typename std::remove_reference<decltype(v[0])>::type s = v[0];
  for (int k = 1; k < (int)(sizeof(Vec) / sizeof(v[0])); ++k) s += v[k];
  return s;
}

// exp for the compositing: only ever called on power in [pmin, 0] with pmin >= -5.55 (opacity <= 1).
// float: a branch-free Cody-Waite reduction to r in [-ln2/2, ln2/2] and the degree-7 Taylor
// polynomial of exp(r) (relative error < 2e-7, like glibc's expf) on whole vectors, evaluated with
// Estrin's scheme: a short dependency chain, which is what bounds the compositing loops; double:
// std::exp per lane (gradcheck precision).
template <typename S>
GS_INLINE typename Simd<S>::V exp_small(typename Simd<S>::V x) {
  typename Simd<S>::V r;
  for (int k = 0; k < Simd<S>::L; ++k) r[k] = std::exp(x[k]);
  return r;
}
template <>
GS_INLINE Simd<float>::V exp_small<float>(Simd<float>::V x) {
  typedef Simd<float>::V V;
  typedef Simd<float>::M M;
  const V magic = splat<V>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V fn = (x * splat<V>(1.44269504088896341f) + magic) - magic;
  const V r = (x - fn * splat<V>(0.693145751953125f)) - fn * splat<V>(1.428606765330187e-06f);
  const V r2 = r * r, r4 = r2 * r2;
  const V p01 = splat<V>(1.0f) + r;
  const V p23 = splat<V>(0.5f) + r * splat<V>(1.0f / 6.0f);
  const V p45 = splat<V>(1.0f / 24.0f) + r * splat<V>(1.0f / 120.0f);
  const V p67 = splat<V>(1.0f / 720.0f) + r * splat<V>(1.0f / 5040.0f);
  const V p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
  const M bits = (__builtin_convertvector(fn, M) + splat<M>(127)) << 23;  // 2^fn as a float bit pattern
  return p * (V)bits;  // same-size vector cast = bit reinterpretation
}

// Lanes of v where m is set, +0 elsewhere. Masked terms let the loops use plain arithmetic instead
// of selects: a skipped pixel gets alpha 0, so T * (1 - 0), acc + 0 * c, ... leave it unchanged.
template <typename Vec, typename Msk>
GS_INLINE Vec mask(Vec v, Msk m) {
  return (Vec)((Msk)v & m);
}

template <typename Vec>
GS_INLINE Vec vsqrt(Vec v) {
#if defined(__SSE2__)
  if constexpr (sizeof(v[0]) == 4) return __builtin_ia32_sqrtps(v);
  else return __builtin_ia32_sqrtpd(v);
#else
  for (int k = 0; k < (int)(sizeof(Vec) / sizeof(v[0])); ++k) v[k] = std::sqrt(v[k]);
  return v;
#endif
}

// One Gaussian at L pixels of a row: power, alpha and whether it contributes; shared by forward
// and backward so both take exactly the same decisions. Skipped (ok = 0) when power > 0 or alpha
// < 1/255 (which covers every power < pmin: o exp(pmin) < 1/255 by construction, so the clamp of
// the exp argument to [pmin, 0] changes no decision).
template <typename S>
struct Eval {
  typedef typename Simd<S>::V V;
  typedef typename Simd<S>::M M;
  V dx, ex, a, alpha;  // a = o exp(power), alpha = min(a, 0.99)
  M ok;
};

// Per-Gaussian constants as vectors, set up once per (tile, Gaussian).
template <typename S>
struct GVec {
  typedef typename Simd<S>::V V;
  V mx, A, B, C, o, pmin;
  GS_INLINE explicit GVec(const GRec<S>& g)
      : mx(splat<V>(g.mx)), A(splat<V>(g.A)), B(splat<V>(g.B)), C(splat<V>(g.C)), o(splat<V>(g.o)),
        pmin(splat<V>(g.pmin)) {}
};

// dy = my - (y + 0.5) and C dy^2 of one row, as vectors.
template <typename S>
struct RowVec {
  typedef typename Simd<S>::V V;
  V dy, cdyy;
  GS_INLINE RowVec(const GRec<S>& g, S dys) : dy(splat<V>(dys)), cdyy(splat<V>(g.C * (dys * dys))) {}
};

template <typename S>
GS_INLINE Eval<S> eval_pixels(const GVec<S>& g, const RowVec<S>& rw, typename Simd<S>::V pxc) {
  typedef typename Simd<S>::V V;
  const V zero = splat<V>(S(0)), cap = splat<V>(S(0.99));
  Eval<S> e;
  e.dx = g.mx - pxc;
  // Same expression order as the reference: -0.5 (A dx^2 + C dy^2) - B dx dy.
  const V pw = splat<V>(S(-0.5)) * (g.A * (e.dx * e.dx) + rw.cdyy) - g.B * e.dx * rw.dy;
  V cl = pw < g.pmin ? g.pmin : pw;  // keep the exp argument in its valid range
  cl = zero < cl ? zero : cl;
  e.ex = exp_small<S>(cl);
  e.a = g.o * e.ex;
  e.alpha = cap < e.a ? cap : e.a;
  e.ok = (pw <= zero) & (e.alpha >= splat<V>(S(1.0 / 255.0)));
  return e;
}

// Pixel-centre x of every lane of a tile's row chunks, and which lanes lie inside the image.
template <typename S>
GS_INLINE void tile_lanes(int x0, int x1, typename Simd<S>::V* pxc, typename Simd<S>::M* inside) {
  constexpr int L = Simd<S>::L;
  for (int c = 0; c < TILE / L; ++c)
    for (int k = 0; k < L; ++k) {
      const int x = x0 + c * L + k;
      pxc[c][k] = S(x) + S(0.5);
      inside[c][k] = x < x1 ? -1 : 0;
    }
}

// Column spans [xl[r], xh[r]] (xl > xh: none) of the tile rows r in [r0, r1] that Gaussian g can
// touch, clipped to the tile's columns [x0, xe]: L rows at a time (the per-row sqrt and rounding
// would otherwise cost as much as the pixels). Pixels outside have alpha < 1/255 for sure (see GRec).
template <typename S>
GS_INLINE void row_spans(const GRec<S>& g, int y0, int r0, int r1, int x0, int xe, int* xl, int* xh) {
  typedef typename Simd<S>::V V;
  typedef typename Simd<S>::M M;
  constexpr int L = Simd<S>::L;
  const V lo = splat<V>(S(x0)), hi = splat<V>(S(xe)), zero = splat<V>(S(0)), half = splat<V>(S(0.5));
  for (int rb = r0 - r0 % L; rb <= r1; rb += L) {
    V pyc;
    for (int k = 0; k < L; ++k) pyc[k] = S(y0 + rb + k) + S(0.5);
    const V dy = splat<V>(g.my) - pyc;
    const V hw2 = splat<V>(g.h0) - splat<V>(g.h1) * (dy * dy);
    const V hw = vsqrt(hw2 < zero ? zero : hw2) + splat<V>(S(0.02));
    const V cx = splat<V>(g.mx) - splat<V>(g.kc) * dy - half;  // pixel x has its centre at x + 0.5
    V fl = cx - hw, fh = cx + hw;
    fl = fl < lo ? lo : fl;  // clamp before rounding so the integer conversions cannot overflow
    fh = hi < fh ? hi : fh;
    const M valid = (hw2 >= zero) & (fl <= fh);  // false for NaN too
    fl = mask(fl, valid);
    fh = mask(fh, valid);
    // ceil / floor of values in [x0 - 1, xe + 1] by truncation and a correction
    M il = __builtin_convertvector(fl, M), ih = __builtin_convertvector(fh, M);
    il -= (__builtin_convertvector(il, V) < fl);  // comparison masks are -1 where true
    ih += (fh < __builtin_convertvector(ih, V));
    for (int k = 0; k < L; ++k) {
      xl[rb + k] = valid[k] ? (int)il[k] : 1;
      xh[rb + k] = valid[k] ? (int)ih[k] : 0;
    }
  }
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

// Tile lists, viewed from the tensors that own them (returned to Python by the forward and handed
// back to the backward, so the backward neither re-bins nor copies): tile t's Gaussians are
// ids[offsets[t] .. offsets[t + 1]), sorted front to back.
struct Binning {
  const int64_t* offsets;
  const int32_t* ids;
  int64_t count;  // intersections (length of ids)
  int64_t n;      // Gaussians
};

inline Binning view_binning(const torch::Tensor& offsets, const torch::Tensor& ids, int64_t n) {
  return Binning{offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), ids.numel(), n};
}

// Returns the tile offsets (ntiles + 1, int64) and ids (I, int32) tensors.
template <typename S>
std::pair<torch::Tensor, torch::Tensor> bin_tiles(const S* means2d, const S* depths, const int32_t* radii, int64_t N,
                                                  const Intrinsics& K) {
  const int tx = K.tiles_x(), ty = K.tiles_y();
  const int ntiles = tx * ty;
  std::vector<int32_t> order;
  order.reserve(N);
  for (int64_t n = 0; n < N; ++n)
    if (radii[n] > 0) order.push_back((int32_t)n);
  sort_by_depth(order, depths);
  const int64_t V = (int64_t)order.size();
  std::vector<int32_t> rects(4 * V);
#pragma omp parallel for schedule(static, 1024)
  for (int64_t i = 0; i < V; ++i) {
    int32_t n = order[i];
    tile_rect<S>(means2d[2 * n], means2d[2 * n + 1], radii[n], tx, ty, &rects[4 * i]);
  }
  // Each thread owns a band of tile rows, so counting and filling need no atomics and the
  // per-tile order is the global depth order.
  torch::Tensor offsets_t = torch::empty({ntiles + 1}, torch::kInt64);
  int64_t* offsets = offsets_t.data_ptr<int64_t>();
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
  offsets[0] = 0;
  for (int t = 0; t < ntiles; ++t) offsets[t + 1] = offsets[t] + counts[t];
  torch::Tensor ids_t = torch::empty({offsets[ntiles]}, torch::kInt32);
  int32_t* ids = ids_t.data_ptr<int32_t>();
#pragma omp parallel
  {
    int r0, r1;
    thread_row_band(ty, &r0, &r1);
    std::vector<int64_t> cursor(offsets + (int64_t)r0 * tx, offsets + (int64_t)r1 * tx);
    for (int64_t i = 0; i < V; ++i) {
      const int32_t* r = &rects[4 * i];
      int y0 = std::max(r[1], r0), y1 = std::min(r[3], r1);
      for (int y = y0; y < y1; ++y)
        for (int x = r[0]; x < r[2]; ++x) ids[cursor[(y - r0) * tx + x]++] = order[i];
    }
  }
  return {offsets_t, ids_t};
}

// Fills recs[0..N) (only visible Gaussians' records are ever read).
template <typename S>
void fill_records(const S* means2d, const S* conics, const S* colors, const S* opac, const S* depths,
                  const int32_t* radii, int64_t N, GRec<S>* recs) {
#pragma omp parallel for schedule(static, 1024)
  for (int64_t n = 0; n < N; ++n) {
    GRec<S>& g = recs[n];
    g.by0 = 1;
    g.by1 = 0;  // no rows by default
    g.h0 = S(-1);
    g.kc = g.h1 = S(0);
    if (radii[n] <= 0) continue;
    g.mx = means2d[2 * n];
    g.my = means2d[2 * n + 1];
    g.A = conics[3 * n];
    g.B = conics[3 * n + 1];
    g.C = conics[3 * n + 2];
    g.o = opac[n];
    for (int c = 0; c < 3; ++c) g.col[c] = colors[3 * n + c];
    g.depth = depths[n];
    // alpha >= 1/255 needs power >= -t with t = log(255 o): the ellipse A dx^2 + 2B dx dy + C dy^2
    // <= 2t. Margins (t + 1e-3, h0 x (1 + 1e-3), heights x (1 + 1e-4) + 0.01 px, spans + 0.02 px)
    // absorb rounding, so every pixel left out is one the reference skips anyway: same result.
    double o = (double)g.o;
    if (!(o * 255.0 >= 0.999)) continue;  // alpha <= o < 1/255 everywhere
    double t = std::max(std::log(255.0 * o), 0.0) + 1e-3;
    g.pmin = S(-t);  // o exp(-t) < (1/255) exp(-1e-3): far below the threshold for any rounding
    double A = g.A, Bc = g.B, C = g.C;
    double detq = A * C - Bc * Bc;
    if (!(detq > 0) || !(A > 0)) {  // cannot happen for a valid conic; fall back to whole rows
      g.by0 = 0; g.by1 = 1 << 30;
      g.h0 = std::numeric_limits<S>::infinity();
      continue;
    }
    g.kc = S(-Bc / A);
    g.h0 = S(2.0 * t / A * (1 + 1e-3));
    g.h1 = S(detq / (A * A));
    double ey = std::sqrt(2.0 * t * A / detq) * (1 + 1e-4) + 1e-2;
    double my = g.my;
    // pixel i has centre i + 0.5
    double fy0 = std::ceil(my - ey - 0.5), fy1 = std::floor(my + ey - 0.5);
    const double BIG = 1 << 30;
    g.by0 = (int)std::max(-BIG, std::min(BIG, fy0));
    g.by1 = (int)std::max(-BIG, std::min(BIG, fy1));
  }
}

template <typename S>
std::unique_ptr<GRec<S>[]> gather_records(const S* means2d, const S* conics, const S* colors, const S* opac,
                                          const S* depths, const int32_t* radii, int64_t N) {
  std::unique_ptr<GRec<S>[]> recs(new GRec<S>[N]);
  fill_records(means2d, conics, colors, opac, depths, radii, N, recs.get());
  return recs;
}

template <typename S>
struct FwdArgs {
  const GRec<S>* recs;
  const Binning* B;
  const Intrinsics* K;
  const S* bg;
  S *out_color, *out_alpha, *out_depth, *T_final;
  int32_t* n_contrib;
};

// Composites tile t front to back.
template <typename S>
GS_INLINE void forward_tile(const FwdArgs<S>& args, int t) {
  typedef typename Simd<S>::V V;
  typedef typename Simd<S>::M M;
  typedef typename std::remove_reference<decltype(std::declval<M>()[0])>::type MI;
  constexpr int L = Simd<S>::L, CH = TILE / L;
  const GRec<S>* recs = args.recs;
  const Binning& B = *args.B;
  const Intrinsics& K = *args.K;
  const S* bg = args.bg;
  S *out_color = args.out_color, *out_alpha = args.out_alpha, *out_depth = args.out_depth;
  S *T_final = args.T_final;
  int32_t* n_contrib = args.n_contrib;
  const int tx = K.tiles_x(), W = K.W, H = K.H;
  const V T_MIN = splat<V>(S(1e-4)), one = splat<V>(S(1));
  const int x0 = (t % tx) * TILE, y0 = (t / tx) * TILE;
  const int x1 = std::min(x0 + TILE, W), y1 = std::min(y0 + TILE, H);
  const int tw = x1 - x0, th = y1 - y0, np = tw * th;
  // Pixel state, [row][chunk] vectors. Lanes right of the image start (and stay) done.
  V T[TILE * CH], a0[TILE * CH], a1[TILE * CH], a2[TILE * CH], ad[TILE * CH], pxc[CH];
  M last[TILE * CH], done[TILE * CH], inside[CH];
  tile_lanes<S>(x0, x1, pxc, inside);
  for (int r = 0; r < th; ++r)
    for (int c = 0; c < CH; ++c) {
      const int i = r * CH + c;
      T[i] = one;
      a0[i] = a1[i] = a2[i] = ad[i] = splat<V>(S(0));
      last[i] = splat<M>(0);
      done[i] = ~inside[c];
    }
  int ndone = 0;
  const int64_t beg = B.offsets[t], end = B.offsets[t + 1];
  // Gaussian-outer order: each pixel still sees its Gaussians front to back, so the result is the
  // same as a per-pixel loop, but only the row chunks meeting a Gaussian's row spans are visited.
  for (int64_t j = beg; j < end && ndone < np; ++j) {
    if (j + 8 < end) __builtin_prefetch(&recs[B.ids[j + 8]]);  // records are visited in depth order
    const GRec<S>& g = recs[B.ids[j]];
    const int gy0 = std::max(g.by0, y0), gy1 = std::min(g.by1, y1 - 1);
    if (gy0 > gy1) continue;
    int xl[TILE], xh[TILE];
    row_spans(g, y0, gy0 - y0, gy1 - y0, x0, x1 - 1, xl, xh);
    const GVec<S> gv(g);
    const V col0 = splat<V>(g.col[0]), col1 = splat<V>(g.col[1]), col2 = splat<V>(g.col[2]);
    const V dep = splat<V>(g.depth);
    const M pos = splat<M>((MI)(j - beg + 1));
    M nstop = splat<M>(0);  // minus the number of pixels this Gaussian saturates
    for (int r = gy0 - y0; r <= gy1 - y0; ++r) {
      if (xl[r] > xh[r]) continue;
      const RowVec<S> rw(g, g.my - (S(y0 + r) + S(0.5)));
      const int c1 = (xh[r] - x0) / L;
      for (int c = (xl[r] - x0) / L; c <= c1; ++c) {
        const int i = r * CH + c;
        const Eval<S> e = eval_pixels<S>(gv, rw, pxc[c]);
        const M ok = e.ok & ~done[i];
        const V am = mask(e.alpha, ok);  // alpha where this Gaussian counts, else 0
        const V test_T = T[i] * (one - am);
        const M stop = test_T < T_MIN;  // it would take T below 1e-4: the pixel ends before it
        const V au = mask(am, ~stop);
        done[i] |= stop;
        nstop += stop;
        const V w = au * T[i];
        a0[i] += w * col0;
        a1[i] += w * col1;
        a2[i] += w * col2;
        ad[i] += w * dep;
        T[i] = T[i] * (one - au);
        last[i] = (ok & ~stop) ? pos : last[i];
      }
    }
    ndone -= (int)hsum(nstop);
  }
  for (int r = 0; r < th; ++r)
    for (int cc = 0; cc < tw; ++cc) {
      const int i = r * CH + cc / L, k = cc % L;
      const int64_t pix = (int64_t)(y0 + r) * W + (x0 + cc);
      const S Tp = T[i][k];
      out_color[3 * pix] = a0[i][k] + Tp * bg[0];
      out_color[3 * pix + 1] = a1[i][k] + Tp * bg[1];
      out_color[3 * pix + 2] = a2[i][k] + Tp * bg[2];
      const S a = S(1) - Tp;
      out_alpha[pix] = a;
      out_depth[pix] = a > S(0) ? ad[i][k] / std::max(a, S(1e-10)) : S(0);
      T_final[pix] = Tp;
      n_contrib[pix] = (int32_t)last[i][k];
    }
}

template <typename S>
void forward_tile_base(const FwdArgs<S>& args, int t) {
  forward_tile<S>(args, t);
}
#if GS_AVX_DISPATCH
__attribute__((target("avx"))) void forward_tile_avx(const FwdArgs<float>& args, int t) {
  forward_tile<float>(args, t);
}
#endif

template <typename S>
void rasterize_forward_impl(const FwdArgs<S>& args) {
  void (*tile)(const FwdArgs<S>&, int) = forward_tile_base<S>;
#if GS_AVX_DISPATCH
  if constexpr (std::is_same<S, float>::value)
    if (use_avx()) tile = forward_tile_avx;
#endif
  const int ntiles = args.K->tiles_x() * args.K->tiles_y();
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < ntiles; ++t) tile(args, t);
}

// Per-intersection rows into per-Gaussian sums: add(n, j) for every list entry j of Gaussian n.
// Each thread owns a range of Gaussian ids and walks the whole list in order, so every sum is taken
// in list order whatever the thread count (deterministic), without atomics. [j0, j1): a run of
// tiles (fisher_raster_impl); the two-argument form takes them all.
template <typename F>
void reduce_rows(const Binning& B, int64_t j0, int64_t j1, F add) {
  const int32_t* ids = B.ids;
#pragma omp parallel
  {
    int64_t n0, n1;
    thread_share(B.n, &n0, &n1);
    for (int64_t j = j0; j < j1; ++j) {
      const int32_t n = ids[j];
      if (n >= n0 && n < n1) add(n, j);
    }
  }
}

template <typename F>
void reduce_rows(const Binning& B, F add) {
  reduce_rows(B, 0, B.count, add);
}

// Per-intersection gradient row: means2d (2), conic (3), colour (3), opacity, depth.
constexpr int GROW = 10;

template <typename S>
struct BwdArgs {
  const GRec<S>* recs;
  const Binning* B;
  const Intrinsics* K;
  const S *bg, *out_depth, *T_final;
  const int32_t* n_contrib;
  const S *v_color, *v_alpha, *v_depth;
  S* rows;     // per-intersection gradient rows (GROW each)
  S* bg_part;  // per-tile background gradient (3 each)
};

// Walks tile t back to front, writing the gradient rows of its list entries.
template <typename S>
GS_INLINE void backward_tile(const BwdArgs<S>& args, int t) {
  typedef typename Simd<S>::V V;
  typedef typename Simd<S>::M M;
  typedef typename std::remove_reference<decltype(std::declval<M>()[0])>::type MI;
  constexpr int L = Simd<S>::L, CH = TILE / L;
  const GRec<S>* recs = args.recs;
  const Binning& B = *args.B;
  const Intrinsics& K = *args.K;
  const S *bg = args.bg, *out_depth = args.out_depth, *T_final = args.T_final;
  const int32_t* n_contrib = args.n_contrib;
  const S *v_color = args.v_color, *v_alpha = args.v_alpha, *v_depth = args.v_depth;
  S* rows = args.rows;
  S* bg_part = args.bg_part;
  const int tx = K.tiles_x(), W = K.W, H = K.H;
  const V zero = splat<V>(S(0)), one = splat<V>(S(1));
  const int x0 = (t % tx) * TILE, y0 = (t / tx) * TILE;
  const int x1 = std::min(x0 + TILE, W), y1 = std::min(y0 + TILE, H);
  const int th = y1 - y0;
  // Pixel state, [row][chunk] vectors: T walks back from T_final; R is the loss behind the current
  // Gaussian per unit transmittance; g0..g2 / gs the colour / depth-sum gradients; lanes outside
  // the image have last = 0 and so never take part.
  V T[TILE * CH], R[TILE * CH], g0[TILE * CH], g1[TILE * CH], g2[TILE * CH], gs[TILE * CH], pxc[CH];
  M last[TILE * CH], inside[CH];
  tile_lanes<S>(x0, x1, pxc, inside);
  int32_t maxlast = 0;
  for (int r = 0; r < th; ++r)
    for (int cc = 0; cc < TILE; ++cc) {
      const int i = r * CH + cc / L, k = cc % L;
      if (x0 + cc >= x1) {
        T[i][k] = S(1); R[i][k] = g0[i][k] = g1[i][k] = g2[i][k] = gs[i][k] = S(0);
        last[i][k] = 0;
        continue;
      }
      const int64_t pix = (int64_t)(y0 + r) * W + (x0 + cc);
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
      const S c0 = v_color[3 * pix], c1 = v_color[3 * pix + 1], c2 = v_color[3 * pix + 2];
      g0[i][k] = c0; g1[i][k] = c1; g2[i][k] = c2;
      gs[i][k] = gS;
      R[i][k] = c0 * bg[0] + c1 * bg[1] + c2 * bg[2] - gA;
      T[i][k] = Tf;
      last[i][k] = n_contrib[pix];
      maxlast = std::max(maxlast, n_contrib[pix]);
      bg_part[3 * (size_t)t] += Tf * c0;
      bg_part[3 * (size_t)t + 1] += Tf * c1;
      bg_part[3 * (size_t)t + 2] += Tf * c2;
    }
  const int64_t beg = B.offsets[t];
  // Rows of list entries behind every pixel's last contributor get no gradient.
  std::fill(&rows[(size_t)(beg + maxlast) * GROW], &rows[(size_t)B.offsets[t + 1] * GROW], S(0));
  for (int64_t jj = maxlast - 1; jj >= 0; --jj) {
    const int64_t j = beg + jj;
    if (jj >= 8) __builtin_prefetch(&recs[B.ids[j - 8]]);
    const GRec<S>& g = recs[B.ids[j]];
    S* row = &rows[(size_t)j * GROW];
    const int gy0 = std::max(g.by0, y0), gy1 = std::min(g.by1, y1 - 1);
    // Lane-wise partial sums over the pixels the Gaussian touches: the colour / depth / opacity
    // gradients directly; for the power's inputs the sums of vp, vp dx, vp dx^2 (vp = dL/dpower),
    // combined with the row's dy once per row, from which the conic and mean gradients follow.
    V vc0 = zero, vc1 = zero, vc2 = zero, vd = zero, vo = zero;
    V s2 = zero, p1 = zero, q1 = zero, d0 = zero, d2 = zero;
    if (gy0 <= gy1) {
      int xl[TILE], xh[TILE];
      row_spans(g, y0, gy0 - y0, gy1 - y0, x0, x1 - 1, xl, xh);
      const GVec<S> gv(g);
      const V col0 = splat<V>(g.col[0]), col1 = splat<V>(g.col[1]), col2 = splat<V>(g.col[2]);
      const V dep = splat<V>(g.depth);
      const M pos = splat<M>((MI)jj);
      for (int r = gy0 - y0; r <= gy1 - y0; ++r) {
        if (xl[r] > xh[r]) continue;
        const RowVec<S> rw(g, g.my - (S(y0 + r) + S(0.5)));
        V s0 = zero, s1 = zero;
        const int c1 = (xh[r] - x0) / L;
        for (int c = (xl[r] - x0) / L; c <= c1; ++c) {
          const int i = r * CH + c;
          const Eval<S> e = eval_pixels<S>(gv, rw, pxc[c]);
          const M ok = e.ok & (pos < last[i]);  // only Gaussians in front of the pixel's last one
          const V am = mask(e.alpha, ok);        // 0 for the others: T, R and the sums stay
          const V om = one - am;
          T[i] = T[i] / om;  // transmittance in front of this Gaussian
          const V Ti = T[i];
          const V gf = g0[i] * col0 + g1[i] * col1 + g2[i] * col2 + gs[i] * dep;
          const V wt = am * Ti;
          vc0 += wt * g0[i];
          vc1 += wt * g1[i];
          vc2 += wt * g2[i];
          vd += wt * gs[i];
          // dL/dalpha; none through a clamped alpha
          const V dLda = mask(Ti * (gf - R[i]), ok & (e.a <= splat<V>(S(0.99))));
          R[i] = am * gf + om * R[i];
          vo += dLda * e.ex;
          const V vp = dLda * e.alpha;  // d alpha / d power = alpha
          const V vpdx = vp * e.dx;
          s0 += vp;
          s1 += vpdx;
          s2 += vpdx * e.dx;
        }
        p1 += s1;
        q1 += s1 * rw.dy;
        d0 += s0 * rw.dy;
        d2 += s0 * (rw.dy * rw.dy);
      }
    }
    // power = -0.5 (A dx^2 + C dy^2) - B dx dy with dx = mx - px, dy = my - py
    const S P1 = hsum(p1), D0 = hsum(d0);
    row[0] = -(g.A * P1 + g.B * D0);  // means2d x
    row[1] = -(g.C * D0 + g.B * P1);  // means2d y
    row[2] = S(-0.5) * hsum(s2);      // conic A
    row[3] = -hsum(q1);               // conic B
    row[4] = S(-0.5) * hsum(d2);      // conic C
    row[5] = hsum(vc0); row[6] = hsum(vc1); row[7] = hsum(vc2); row[8] = hsum(vo); row[9] = hsum(vd);
  }
}

template <typename S>
void backward_tile_base(const BwdArgs<S>& args, int t) {
  backward_tile<S>(args, t);
}
#if GS_AVX_DISPATCH
__attribute__((target("avx"))) void backward_tile_avx(const BwdArgs<float>& args, int t) {
  backward_tile<float>(args, t);
}
#endif

template <typename S>
void rasterize_backward_impl(const GRec<S>* recs, const Binning& B, const Intrinsics& K, const S* bg,
                             const S* out_depth, const S* T_final, const int32_t* n_contrib, const S* v_color,
                             const S* v_alpha, const S* v_depth, S* v_means2d, S* v_conics, S* v_colors, S* v_opac,
                             S* v_depths, S* v_bg) {
  const int ntiles = K.tiles_x() * K.tiles_y();
  const int64_t I = B.count;
  // Every row is written by its tile (zeros for Gaussians that touch no pixel): no zero-fill needed.
  std::unique_ptr<S[]> rows(new S[(size_t)I * GROW]);
  std::vector<S> bg_part((size_t)ntiles * 3, S(0));
  const BwdArgs<S> args{recs, &B, &K, bg, out_depth, T_final, n_contrib, v_color, v_alpha, v_depth,
                        rows.get(), bg_part.data()};
  void (*tile)(const BwdArgs<S>&, int) = backward_tile_base<S>;
#if GS_AVX_DISPATCH
  if constexpr (std::is_same<S, float>::value)
    if (use_avx()) tile = backward_tile_avx;
#endif
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < ntiles; ++t) tile(args, t);
  reduce_rows(B, [&](int32_t n, int64_t j) {
    const S* row = &rows[(size_t)j * GROW];
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
  });
  for (int t = 0; t < ntiles; ++t)
    for (int ch = 0; ch < 3; ++ch) v_bg[ch] += bg_part[3 * (size_t)t + ch];
}

// ------------------------------------------------------------------------------------------------
// Fisher information (diagonal of J^T J, J = d rendered colours / d parameters), one camera
// ------------------------------------------------------------------------------------------------
// The encoder's importance stage needs, per Gaussian, sum over pixels p and channels ch of
// (dC_ch(p) / d theta)^2 for each parameter theta. A Gaussian's parameters act on a pixel only
// through its alpha there, so dC_ch/d theta = u_ch * d alpha/d theta with u_ch = dC_ch/d alpha, and
// sum_ch (dC_ch/d theta)^2 = g * (d alpha/d theta)^2 with g = sum_ch u_ch^2. One back-to-front pass
// (the backward's walk with the three one-hot colour cotangents at once) gathers, per Gaussian:
//   rows 0..14: g alpha^2 q q^T (upper triangle, row-major) for q = d power / d (mx, my, A, B, C),
//   row 15: g (d alpha / d opacity)^2,   row 16: sum (alpha T)^2 (= (dC_ch / d colour_ch)^2).
// fisher_project then takes the 5x5 screen-space block back to the 3D parameters exactly:
// diag(P^T G P) with P the projection's Jacobian, via G = L D L^T and one VJP per column of L.
constexpr int FROW = 17;

template <typename S>
struct FisherArgs {
  const GRec<S>* recs;
  const Binning* B;
  const Intrinsics* K;
  const S *bg, *T_final;
  const int32_t* n_contrib;
  S* rows;       // per-intersection rows (FROW each) of intersections [row0, row0 + rows held)
  int64_t row0;  // the first intersection whose row ``rows`` holds
};

template <typename S>
GS_INLINE void fisher_tile(const FisherArgs<S>& args, int t) {
  typedef typename Simd<S>::V V;
  typedef typename Simd<S>::M M;
  typedef typename std::remove_reference<decltype(std::declval<M>()[0])>::type MI;
  constexpr int L = Simd<S>::L, CH = TILE / L;
  const GRec<S>* recs = args.recs;
  const Binning& B = *args.B;
  const Intrinsics& K = *args.K;
  S* rows = args.rows;
  const int tx = K.tiles_x(), W = K.W, H = K.H;
  const V zero = splat<V>(S(0)), one = splat<V>(S(1)), cap = splat<V>(S(0.99));
  const int x0 = (t % tx) * TILE, y0 = (t / tx) * TILE;
  const int x1 = std::min(x0 + TILE, W), y1 = std::min(y0 + TILE, H);
  const int th = y1 - y0;
  // T walks back from T_final; R0..R2 = colour behind the current Gaussian per unit transmittance.
  V T[TILE * CH], R0[TILE * CH], R1[TILE * CH], R2[TILE * CH], pxc[CH];
  M last[TILE * CH], inside[CH];
  tile_lanes<S>(x0, x1, pxc, inside);
  int32_t maxlast = 0;
  for (int r = 0; r < th; ++r)
    for (int cc = 0; cc < TILE; ++cc) {
      const int i = r * CH + cc / L, k = cc % L;
      R0[i][k] = args.bg[0]; R1[i][k] = args.bg[1]; R2[i][k] = args.bg[2];
      if (x0 + cc >= x1) {
        T[i][k] = S(1);
        last[i][k] = 0;
        continue;
      }
      const int64_t pix = (int64_t)(y0 + r) * W + (x0 + cc);
      T[i][k] = args.T_final[pix];
      last[i][k] = args.n_contrib[pix];
      maxlast = std::max(maxlast, args.n_contrib[pix]);
    }
  const int64_t beg = B.offsets[t];
  const int64_t r0 = args.row0;
  std::fill(&rows[(size_t)(beg + maxlast - r0) * FROW], &rows[(size_t)(B.offsets[t + 1] - r0) * FROW], S(0));
  for (int64_t jj = maxlast - 1; jj >= 0; --jj) {
    const int64_t j = beg + jj;
    if (jj >= 8) __builtin_prefetch(&recs[B.ids[j - 8]]);  // records are visited in depth order
    const GRec<S>& g = recs[B.ids[j]];
    S* row = &rows[(size_t)(j - r0) * FROW];
    const int gy0 = std::max(g.by0, y0), gy1 = std::min(g.by1, y1 - 1);
    // The 5x5 block is a combination of the moments M_ij = sum w dx^i dy^j (i + j in 2..4,
    // w = g alpha^2): lane sums of w dx^i per row, times the row's dy^j once per row (as the
    // backward does), instead of 15 products per pixel.
    V sc = zero, so = zero;  // sum (alpha T)^2, sum g ex^2
    V m20 = zero, m11 = zero, m02 = zero, m30 = zero, m21 = zero, m12 = zero, m03 = zero;
    V m40 = zero, m31 = zero, m22 = zero, m13 = zero, m04 = zero;
    if (gy0 <= gy1) {
      int xl[TILE], xh[TILE];
      row_spans(g, y0, gy0 - y0, gy1 - y0, x0, x1 - 1, xl, xh);
      const GVec<S> gv(g);
      const V col0 = splat<V>(g.col[0]), col1 = splat<V>(g.col[1]), col2 = splat<V>(g.col[2]);
      const M pos = splat<M>((MI)jj);
      for (int r = gy0 - y0; r <= gy1 - y0; ++r) {
        if (xl[r] > xh[r]) continue;
        const RowVec<S> rw(g, g.my - (S(y0 + r) + S(0.5)));
        V s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero;  // sum w dx^i over the row
        const int c1 = (xh[r] - x0) / L;
        for (int c = (xl[r] - x0) / L; c <= c1; ++c) {
          const int i = r * CH + c;
          const Eval<S> e = eval_pixels<S>(gv, rw, pxc[c]);
          const M ok = e.ok & (pos < last[i]);
          const V am = mask(e.alpha, ok);
          const V om = one - am;
          T[i] = T[i] / om;
          const V Ti = T[i];
          const M live = ok & (e.a <= cap);  // no gradient through a clamped alpha
          const V u0 = mask(Ti * (col0 - R0[i]), live), u1 = mask(Ti * (col1 - R1[i]), live),
                  u2 = mask(Ti * (col2 - R2[i]), live);
          R0[i] = am * col0 + om * R0[i];
          R1[i] = am * col1 + om * R1[i];
          R2[i] = am * col2 + om * R2[i];
          const V gw = u0 * u0 + u1 * u1 + u2 * u2;
          const V wt = am * Ti;
          sc += wt * wt;
          so += gw * (e.ex * e.ex);
          const V w0 = gw * (e.alpha * e.alpha);  // d alpha / d power = alpha
          const V w1 = w0 * e.dx, w2 = w1 * e.dx, w3 = w2 * e.dx;
          s0 += w0; s1 += w1; s2 += w2; s3 += w3; s4 += w3 * e.dx;
        }
        const V dy = rw.dy, dy2 = dy * dy;
        m20 += s2; m11 += s1 * dy; m02 += s0 * dy2;
        m30 += s3; m21 += s2 * dy; m12 += s1 * dy2; m03 += s0 * (dy2 * dy);
        m40 += s4; m31 += s3 * dy; m22 += s2 * dy2; m13 += s1 * (dy2 * dy); m04 += s0 * (dy2 * dy2);
      }
    }
    // q = -d power / d (mx, my, A, B, C) = (A dx + B dy, B dx + C dy, dx^2 / 2, dx dy, dy^2 / 2)
    // (the sign drops out of q q^T)
    const S A = g.A, Bc = g.B, C = g.C, h = S(0.5), qr = S(0.25);
    const S M20 = hsum(m20), M11 = hsum(m11), M02 = hsum(m02), M30 = hsum(m30), M21 = hsum(m21), M12 = hsum(m12),
            M03 = hsum(m03), M40 = hsum(m40), M31 = hsum(m31), M22 = hsum(m22), M13 = hsum(m13), M04 = hsum(m04);
    row[0] = A * A * M20 + S(2) * A * Bc * M11 + Bc * Bc * M02;
    row[1] = A * Bc * M20 + (A * C + Bc * Bc) * M11 + Bc * C * M02;
    row[2] = h * (A * M30 + Bc * M21);
    row[3] = A * M21 + Bc * M12;
    row[4] = h * (A * M12 + Bc * M03);
    row[5] = Bc * Bc * M20 + S(2) * Bc * C * M11 + C * C * M02;
    row[6] = h * (Bc * M30 + C * M21);
    row[7] = Bc * M21 + C * M12;
    row[8] = h * (Bc * M12 + C * M03);
    row[9] = qr * M40;
    row[10] = h * M31;
    row[11] = qr * M22;
    row[12] = M22;
    row[13] = h * M13;
    row[14] = qr * M04;
    row[15] = hsum(so);
    row[16] = hsum(sc);
  }
}

template <typename S>
void fisher_tile_base(const FisherArgs<S>& args, int t) {
  fisher_tile<S>(args, t);
}
#if GS_AVX_DISPATCH
__attribute__((target("avx"))) void fisher_tile_avx(const FisherArgs<float>& args, int t) {
  fisher_tile<float>(args, t);
}
#endif

// Per-Gaussian rows (N, FROW), reduced from the intersections in list order (thread-count free).
// Each tile is composited front to back (``fwd``: its pixels' T_final and n_contrib) and at once
// walked back, while its records are still in cache. Tiles go in runs of consecutive tiles whose
// intersections fit ``rows`` (``max_rows`` rows; a tile of more is a run of its own, see
// fisher_rows_needed), each run reduced before the next: the same sums in the same order, in a
// buffer that no longer grows with the whole view's screen coverage (17 floats per intersection
// took GBs on scenes of large Gaussians or with cameras inside them).
template <typename S>
void fisher_raster_impl(const FwdArgs<S>& fwd, S* rows, int64_t max_rows, S* out) {
  const Binning& B = *fwd.B;
  const Intrinsics& K = *fwd.K;
  const int ntiles = K.tiles_x() * K.tiles_y();
  FisherArgs<S> args{fwd.recs, &B, &K, fwd.bg, fwd.T_final, fwd.n_contrib, rows, 0};
  void (*ftile)(const FwdArgs<S>&, int) = forward_tile_base<S>;
  void (*tile)(const FisherArgs<S>&, int) = fisher_tile_base<S>;
#if GS_AVX_DISPATCH
  if constexpr (std::is_same<S, float>::value)
    if (use_avx()) {
      ftile = forward_tile_avx;
      tile = fisher_tile_avx;
    }
#endif
  for (int t0 = 0; t0 < ntiles;) {
    int t1 = t0 + 1;
    while (t1 < ntiles && B.offsets[t1 + 1] - B.offsets[t0] <= max_rows) ++t1;
    args.row0 = B.offsets[t0];
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = t0; t < t1; ++t) {
      ftile(fwd, t);
      tile(args, t);
    }
    reduce_rows(B, B.offsets[t0], B.offsets[t1], [&](int32_t n, int64_t j) {
      const S* row = &rows[(size_t)(j - args.row0) * FROW];
      for (int k = 0; k < FROW; ++k) out[FROW * n + k] += row[k];
    });
    t0 = t1;
  }
}

// Rows fisher_raster_impl needs for runs of at most ``max_rows`` (more where one tile has more).
inline int64_t fisher_rows_needed(const Binning& B, int ntiles, int64_t max_rows) {
  int64_t need = std::min(B.count, max_rows);
  for (int t = 0; t < ntiles; ++t) need = std::max(need, B.offsets[t + 1] - B.offsets[t]);
  return need;
}

template <typename S>
struct FisherProjArgs {
  const S *means, *quats, *scales, *viewmat;
  const Intrinsics* K;
  const int32_t* radii;
  const S *conics, *colors, *opac;
  S sh0_gain;
  const S* rows;
  double *a_means, *a_quats, *a_scales, *a_opac, *a_sh0;
};

// Gaussians [n0, n1) of fisher_project_impl. The five VJPs (one per column of L) run as lanes of
// vectors: W = 8 does all five in one call (AVX's 8-lane registers), W = 4 columns 0..3 and then
// column 4 as a scalar call (SSE2 has 4 lanes; 8-lane vectors there spill). Lane-wise they are the
// same IEEE operations in the same order as five scalar calls, so every W gives the same bits.
template <typename S, int W>
GS_INLINE void fisher_project_range(const FisherProjArgs<S>& a, int64_t n0, int64_t n1) {
  typedef S VW __attribute__((vector_size(W * sizeof(S))));
  constexpr int NV = W >= 5 ? 5 : W;  // columns carried in the vector lanes
  const Intrinsics& K = *a.K;
  for (int64_t n = n0; n < n1; ++n) {
    const S* r = a.rows + FROW * n;
    {
      const S o = a.opac[n], t = o * (S(1) - o);
      a.a_opac[n] += (double)(r[15] * (t * t));
      const S g = r[16] * a.sh0_gain;
      for (int c = 0; c < 3; ++c) a.a_sh0[3 * n + c] += (double)(g * (a.colors[3 * n + c] > S(0) ? S(1) : S(0)));
    }
    if (a.radii[n] <= 0) continue;
    double G[5][5];
    int k = 0;
    for (int i = 0; i < 5; ++i)
      for (int j = i; j < 5; ++j) G[i][j] = G[j][i] = (double)r[k++];
    double gmax = 0;
    for (int i = 0; i < 5; ++i) gmax = std::max(gmax, G[i][i]);
    if (!(gmax > 0)) continue;
    double Lm[5][5] = {}, D[5];
    for (int c = 0; c < 5; ++c) {
      double d = G[c][c];
      for (int j = 0; j < c; ++j) d -= Lm[c][j] * Lm[c][j] * D[j];
      D[c] = d > 1e-12 * gmax ? d : 0.0;
      Lm[c][c] = 1.0;
      for (int i = c + 1; i < 5; ++i) {
        double v = G[i][c];
        for (int j = 0; j < c; ++j) v -= Lm[i][j] * Lm[c][j] * D[j];
        Lm[i][c] = D[c] > 0 ? v / D[c] : 0.0;
      }
    }
    const S *quat = a.quats + 4 * n, *conic = a.conics + 3 * n;
    ProjLocal<S> L;
    project_one(a.means + 3 * n, quat, a.scales + 3 * n, a.viewmat, K, L);
    VW col[5] = {}, vp[3] = {}, vmean[3] = {}, vq[4], vs[3];
    for (int i = 0; i < 5; ++i)
      for (int c = 0; c < NV; ++c) col[i][c] = S(Lm[i][c]);
    project_vjp_geom<S, VW>(quat, L, a.viewmat, K, conic, col[0], col[1], col + 2, vp, vmean, vq, vs);
    double fm[3] = {0, 0, 0}, fq[4] = {0, 0, 0, 0}, fs[3] = {0, 0, 0};
    for (int c = 0; c < NV; ++c) {
      if (D[c] <= 0) continue;
      for (int i = 0; i < 3; ++i) fm[i] += D[c] * (double)vmean[i][c] * (double)vmean[i][c];
      for (int i = 0; i < 4; ++i) fq[i] += D[c] * (double)vq[i][c] * (double)vq[i][c];
      for (int i = 0; i < 3; ++i) fs[i] += D[c] * (double)vs[i][c] * (double)vs[i][c];
    }
    if (NV < 5 && D[4] > 0) {
      S c4[5];
      for (int i = 0; i < 5; ++i) c4[i] = S(Lm[i][4]);
      S wp[3] = {S(0), S(0), S(0)}, wm[3] = {S(0), S(0), S(0)}, wq[4], ws[3];
      project_vjp_geom<S>(quat, L, a.viewmat, K, conic, c4[0], c4[1], c4 + 2, wp, wm, wq, ws);
      for (int i = 0; i < 3; ++i) fm[i] += D[4] * (double)wm[i] * (double)wm[i];
      for (int i = 0; i < 4; ++i) fq[i] += D[4] * (double)wq[i] * (double)wq[i];
      for (int i = 0; i < 3; ++i) fs[i] += D[4] * (double)ws[i] * (double)ws[i];
    }
    for (int i = 0; i < 3; ++i) a.a_means[3 * n + i] += (double)S(fm[i]);
    for (int i = 0; i < 4; ++i) a.a_quats[4 * n + i] += (double)S(fq[i]);
    for (int i = 0; i < 3; ++i) a.a_scales[3 * n + i] += (double)S(fs[i]);
  }
}

template <typename S>
void fisher_project_base(const FisherProjArgs<S>& a, int64_t n0, int64_t n1) {
  fisher_project_range<S, 4>(a, n0, n1);
}
#if GS_AVX_DISPATCH
__attribute__((target("avx"))) void fisher_project_avx(const FisherProjArgs<float>& a, int64_t n0, int64_t n1) {
  fisher_project_range<float, 8>(a, n0, n1);
}
#endif

// Adds one camera's Fisher diagonal into the float64 sums a_means (N,3), a_quats (N,4), a_scales
// (N,3), a_opac (N), a_sh0 (N,3), each term first rounded to S (so the sums are those of the
// per-view S values, in view order, whatever the thread count).
// Means, quats, scales: diag(P^T G P), G each Gaussian's 5x5 block of `rows` (screen mean and
// conic), P the Jacobian of (mean2d, conic) by (mean, raw quat, log scales). G = L D L^T (pivots
// below 1e-12 of the largest diagonal entry dropped: G is a sum of outer products, PSD up to
// rounding), so diag(P^T G P) = sum_k D_k (P^T L_k)^2, one VJP per column.
// Opacity logits: row 15 times (d sigmoid / d logit)^2 = (o (1 - o))^2. sh0: row 16 times
// sh0_gain (C0^2: d colour / d sh0 = C0), zero where the colour was clamped at 0 (no gradient).
template <typename S>
void fisher_project_impl(const FisherProjArgs<S>& a, int64_t N) {
  void (*range)(const FisherProjArgs<S>&, int64_t, int64_t) = fisher_project_base<S>;
#if GS_AVX_DISPATCH
  if constexpr (std::is_same<S, float>::value)
    if (use_avx()) range = fisher_project_avx;
#endif
  constexpr int64_t CHUNK = 1024;
#pragma omp parallel for schedule(static, 1)
  for (int64_t c = 0; c < (N + CHUNK - 1) / CHUNK; ++c) range(a, c * CHUNK, std::min(N, (c + 1) * CHUNK));
}

// ------------------------------------------------------------------------------------------------
// Torch bindings
// ------------------------------------------------------------------------------------------------

Intrinsics make_k(double fx, double fy, double cx, double cy, int64_t W, int64_t H) {
  return Intrinsics(fx, fy, cx, cy, (int)W, (int)H);
}

void check(const torch::Tensor& t, const char* name, torch::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dt, name, " has the wrong dtype");
}

// means (N,3), quats (N,4), scales (N,3): returns N (the kernels index them by these shapes).
int64_t check_geom(const torch::Tensor& means, const torch::Tensor& quats, const torch::Tensor& scales) {
  TORCH_CHECK(means.dim() == 2 && means.size(1) == 3, "means must be (N,3)");
  const int64_t N = means.size(0);
  TORCH_CHECK(quats.dim() == 2 && quats.size(0) == N && quats.size(1) == 4, "quats must be (N,4)");
  TORCH_CHECK(scales.dim() == 2 && scales.size(0) == N && scales.size(1) == 3, "scales must be (N,3)");
  return N;
}

// The projected Gaussians handed to the rasterizer: returns N.
int64_t check_projected(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
                        const torch::Tensor& opac, const torch::Tensor& depths, const torch::Tensor& radii) {
  const int64_t N = means2d.dim() == 2 ? means2d.size(0) : -1;
  TORCH_CHECK(N >= 0 && means2d.size(1) == 2, "means2d must be (N,2)");
  TORCH_CHECK(conics.numel() == 3 * N && colors.numel() == 3 * N && opac.numel() == N && depths.numel() == N &&
                  radii.numel() == N,
              "projected inputs disagree on N");
  return N;
}

// SH coefficients come as sh0 (N,1,3) and shN (N,KN,3); the first (sh_degree + 1)^2 are used.
int64_t check_sh(const torch::Tensor& sh0, const torch::Tensor& shN, int64_t N, int64_t sh_degree) {
  TORCH_CHECK(sh0.dim() == 3 && sh0.size(0) == N && sh0.size(1) == 1 && sh0.size(2) == 3, "sh0 must be (N,1,3)");
  TORCH_CHECK(shN.dim() == 3 && shN.size(0) == N && shN.size(2) == 3, "shN must be (N,K,3)");
  TORCH_CHECK(sh_degree >= 0 && sh_degree <= 3 && (sh_degree + 1) * (sh_degree + 1) <= shN.size(1) + 1,
              "not enough SH coefficients");
  return shN.size(1);
}

// means (N,3) quats (N,4) scales (N,3) sh0 (N,1,3) shN (N,KN,3) viewmat (4,4) campos (3)
std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                           torch::Tensor sh0, torch::Tensor shN, int64_t sh_degree,
                                           torch::Tensor viewmat, torch::Tensor campos, double fx, double fy,
                                           double cx, double cy, int64_t W, int64_t H, bool antialiased) {
  auto dt = means.scalar_type();
  for (auto* p : {&means, &quats, &scales, &sh0, &shN, &viewmat, &campos}) check(*p, "input", dt);
  const int64_t N = check_geom(means, quats, scales), KN = check_sh(sh0, shN, N, sh_degree);
  auto opts = means.options();
  auto means2d = torch::empty({N, 2}, opts), conics = torch::empty({N, 3}, opts);
  auto colors = torch::empty({N, 3}, opts), depths = torch::empty({N}, opts);
  auto radii = torch::empty({N}, opts.dtype(torch::kInt32));
  auto aa = torch::empty({antialiased ? N : 0}, opts);
  Intrinsics K = make_k(fx, fy, cx, cy, W, H);
  AT_DISPATCH_FLOATING_TYPES(dt, "project_forward", [&] {
    project_forward_impl<scalar_t>(means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                                   sh0.data_ptr<scalar_t>(), shN.data_ptr<scalar_t>(), N, KN, (int)sh_degree,
                                   viewmat.data_ptr<scalar_t>(), campos.data_ptr<scalar_t>(), K,
                                   means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                   colors.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(),
                                   antialiased ? aa.data_ptr<scalar_t>() : nullptr);
  });
  return {means2d, conics, colors, depths, radii, aa};
}

// Adds into v_means, v_quats, v_scales, v_sh0, v_shN (so several cameras add up); with overwrite
// it writes them instead (every entry, so they may come from torch.empty).
void project_backward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales, torch::Tensor sh0,
                      torch::Tensor shN, int64_t sh_degree, torch::Tensor viewmat, torch::Tensor campos, double fx,
                      double fy, double cx, double cy, int64_t W, int64_t H, torch::Tensor radii,
                      torch::Tensor conics, torch::Tensor v_means2d, torch::Tensor v_conics, torch::Tensor v_colors,
                      torch::Tensor v_depths, bool overwrite, torch::Tensor v_means, torch::Tensor v_quats,
                      torch::Tensor v_scales, torch::Tensor v_sh0, torch::Tensor v_shN) {
  auto dt = means.scalar_type();
  for (auto* p : {&means, &quats, &scales, &sh0, &shN, &viewmat, &campos, &conics, &v_means2d, &v_conics, &v_colors,
                  &v_depths, &v_means, &v_quats, &v_scales, &v_sh0, &v_shN})
    check(*p, "input", dt);
  check(radii, "radii", torch::kInt32);
  const int64_t N = check_geom(means, quats, scales), KN = check_sh(sh0, shN, N, sh_degree);
  TORCH_CHECK(v_sh0.sizes() == sh0.sizes() && v_shN.sizes() == shN.sizes(), "SH gradient shapes differ");
  Intrinsics K = make_k(fx, fy, cx, cy, W, H);
  AT_DISPATCH_FLOATING_TYPES(dt, "project_backward", [&] {
    project_backward_impl<scalar_t>(
        means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(), sh0.data_ptr<scalar_t>(),
        shN.data_ptr<scalar_t>(), N, KN, (int)sh_degree, viewmat.data_ptr<scalar_t>(), campos.data_ptr<scalar_t>(),
        K, radii.data_ptr<int32_t>(), conics.data_ptr<scalar_t>(), v_means2d.data_ptr<scalar_t>(),
        v_conics.data_ptr<scalar_t>(), v_colors.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(), overwrite,
        v_means.data_ptr<scalar_t>(), v_quats.data_ptr<scalar_t>(), v_scales.data_ptr<scalar_t>(),
        v_sh0.data_ptr<scalar_t>(), v_shN.data_ptr<scalar_t>());
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
  const int64_t N = check_projected(means2d, conics, colors, opac, depths, radii);
  Intrinsics K = make_k(1, 1, 0, 0, W, H);
  auto opts = means2d.options();
  auto out_color = torch::empty({H, W, 3}, opts), out_alpha = torch::empty({H, W}, opts);
  auto out_depth = torch::empty({H, W}, opts), T_final = torch::empty({H, W}, opts);
  auto n_contrib = torch::empty({H, W}, opts.dtype(torch::kInt32));
  torch::Tensor offsets, ids;
  AT_DISPATCH_FLOATING_TYPES(dt, "rasterize_forward", [&] {
    std::tie(offsets, ids) = bin_tiles<scalar_t>(means2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                                                 radii.data_ptr<int32_t>(), N, K);
    auto recs = gather_records<scalar_t>(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                         colors.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(),
                                         depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(), N);
    const Binning B = view_binning(offsets, ids, N);
    rasterize_forward_impl<scalar_t>(FwdArgs<scalar_t>{
        recs.get(), &B, &K, bg.data_ptr<scalar_t>(), out_color.data_ptr<scalar_t>(), out_alpha.data_ptr<scalar_t>(),
        out_depth.data_ptr<scalar_t>(), T_final.data_ptr<scalar_t>(), n_contrib.data_ptr<int32_t>()});
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
  const int64_t N = check_projected(means2d, conics, colors, opac, depths, radii);
  Intrinsics K = make_k(1, 1, 0, 0, W, H);
  auto opts = means2d.options();
  auto v_means2d = torch::zeros({N, 2}, opts), v_conics = torch::zeros({N, 3}, opts);
  auto v_colors = torch::zeros({N, 3}, opts), v_opac = torch::zeros({N}, opts), v_depths = torch::zeros({N}, opts);
  auto v_bg = torch::zeros({3}, opts);
  AT_DISPATCH_FLOATING_TYPES(dt, "rasterize_backward", [&] {
    const Binning B = view_binning(offsets, ids, N);
    auto recs = gather_records<scalar_t>(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                         colors.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(),
                                         depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(), N);
    rasterize_backward_impl<scalar_t>(recs.get(), B, K, bg.data_ptr<scalar_t>(), out_depth.data_ptr<scalar_t>(),
                                      T_final.data_ptr<scalar_t>(), n_contrib.data_ptr<int32_t>(),
                                      v_color.data_ptr<scalar_t>(), v_alpha.data_ptr<scalar_t>(),
                                      v_depth.data_ptr<scalar_t>(), v_means2d.data_ptr<scalar_t>(),
                                      v_conics.data_ptr<scalar_t>(), v_colors.data_ptr<scalar_t>(),
                                      v_opac.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(),
                                      v_bg.data_ptr<scalar_t>());
  });
  return {v_means2d, v_conics, v_colors, v_opac, v_depths, v_bg};
}

// Fisher rows of one camera (see fisher_tile) into ``out``, resized to (N, 17): bins the Gaussians,
// composites each tile front to back (each pixel's final transmittance and last contributor) and
// walks it back. ``work`` is resized to hold the records and the per-intersection rows of a run of
// tiles (at most ``max_rows`` rows, or one tile's if more: fisher_raster_impl). Both have
// the input dtype; a caller scoring many views passes the same two each time, so their pages are
// not faulted in and zeroed again for every view (large blocks come from mmap every time).
void fisher_raster(torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors, torch::Tensor opac,
                   torch::Tensor depths, torch::Tensor radii, torch::Tensor bg, int64_t W, int64_t H,
                   torch::Tensor work, torch::Tensor out, int64_t max_rows) {
  TORCH_CHECK(max_rows >= 1, "max_rows must be >= 1");
  auto dt = means2d.scalar_type();
  for (auto* p : {&means2d, &conics, &colors, &opac, &depths, &bg}) check(*p, "input", dt);
  check(radii, "radii", torch::kInt32);
  for (auto* p : {&work, &out})
    TORCH_CHECK(p->scalar_type() == dt && p->device().is_cpu() && p->is_contiguous(),
                "fisher buffers must be contiguous CPU tensors of the input dtype");
  const int64_t N = check_projected(means2d, conics, colors, opac, depths, radii);
  Intrinsics K = make_k(1, 1, 0, 0, W, H);
  auto opts = means2d.options();
  out.resize_({N, FROW});
  out.zero_();
  auto color = torch::empty({H, W, 3}, opts), alpha = torch::empty({H, W}, opts), depth = torch::empty({H, W}, opts);
  auto T_final = torch::empty({H, W}, opts), n_contrib = torch::empty({H, W}, opts.dtype(torch::kInt32));
  AT_DISPATCH_FLOATING_TYPES(dt, "fisher_raster", [&] {
    using S = scalar_t;
    static_assert(sizeof(GRec<S>) % sizeof(S) == 0, "records must tile the work buffer");
    torch::Tensor offsets, ids;
    std::tie(offsets, ids) = bin_tiles<S>(means2d.data_ptr<S>(), depths.data_ptr<S>(), radii.data_ptr<int32_t>(), N, K);
    const Binning B = view_binning(offsets, ids, N);
    const int64_t nrec = N * (int64_t)(sizeof(GRec<S>) / sizeof(S));
    const int64_t nrows = fisher_rows_needed(B, K.tiles_x() * K.tiles_y(), max_rows);
    work.resize_({nrec + nrows * FROW});
    GRec<S>* recs = reinterpret_cast<GRec<S>*>(work.data_ptr<S>());  // torch's buffers are 64-byte aligned
    fill_records<S>(means2d.data_ptr<S>(), conics.data_ptr<S>(), colors.data_ptr<S>(), opac.data_ptr<S>(),
                    depths.data_ptr<S>(), radii.data_ptr<int32_t>(), N, recs);
    const FwdArgs<S> fwd{recs, &B, &K, bg.data_ptr<S>(), color.data_ptr<S>(), alpha.data_ptr<S>(),
                         depth.data_ptr<S>(), T_final.data_ptr<S>(), n_contrib.data_ptr<int32_t>()};
    fisher_raster_impl<S>(fwd, work.data_ptr<S>() + nrec, nrows, out.data_ptr<S>());
  });
}

// Adds one camera's Fisher diagonal into float64 sums shaped like the fields (see fisher_project_impl).
void fisher_project(torch::Tensor means, torch::Tensor quats, torch::Tensor scales, torch::Tensor viewmat,
                    double fx, double fy, double cx, double cy, int64_t W, int64_t H, torch::Tensor radii,
                    torch::Tensor conics, torch::Tensor colors, torch::Tensor opac, double sh0_gain,
                    torch::Tensor rows, torch::Tensor a_means, torch::Tensor a_quats, torch::Tensor a_scales,
                    torch::Tensor a_opac, torch::Tensor a_sh0) {
  auto dt = means.scalar_type();
  for (auto* p : {&means, &quats, &scales, &viewmat, &conics, &colors, &opac, &rows}) check(*p, "input", dt);
  for (auto* p : {&a_means, &a_quats, &a_scales, &a_opac, &a_sh0}) check(*p, "fisher sums", torch::kFloat64);
  check(radii, "radii", torch::kInt32);
  const int64_t N = check_geom(means, quats, scales);
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) == N && rows.size(1) == FROW, "fisher rows must be (N, 17)");
  TORCH_CHECK(colors.numel() == 3 * N && opac.numel() == N && conics.numel() == 3 * N && radii.numel() == N,
              "fisher inputs have the wrong size");
  TORCH_CHECK(a_means.numel() == 3 * N && a_quats.numel() == 4 * N && a_scales.numel() == 3 * N &&
                  a_opac.numel() == N && a_sh0.numel() == 3 * N,
              "fisher sums have the wrong size");
  Intrinsics K = make_k(fx, fy, cx, cy, W, H);
  AT_DISPATCH_FLOATING_TYPES(dt, "fisher_project", [&] {
    const FisherProjArgs<scalar_t> a{means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(),
                                     scales.data_ptr<scalar_t>(), viewmat.data_ptr<scalar_t>(), &K,
                                     radii.data_ptr<int32_t>(), conics.data_ptr<scalar_t>(),
                                     colors.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(), scalar_t(sh0_gain),
                                     rows.data_ptr<scalar_t>(), a_means.data_ptr<double>(), a_quats.data_ptr<double>(),
                                     a_scales.data_ptr<double>(), a_opac.data_ptr<double>(), a_sh0.data_ptr<double>()};
    fisher_project_impl<scalar_t>(a, N);
  });
}

// 1 / (1 + exp(-x)) in double with the C library's scalar exp, rounded once to the tensor's type.
// torch.sigmoid's vectorised exp differs in the last bit between CPU instruction sets (AVX2,
// AVX-512, none), and encoder decisions (importance classes) must not depend on the machine.
template <typename S>
void sigmoid_scalar_impl(const S* a, S* o, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) o[i] = S(1.0 / (1.0 + std::exp(-double(a[i]))));
}

torch::Tensor sigmoid_scalar(torch::Tensor x) {
  TORCH_CHECK(x.is_contiguous() && x.device().is_cpu(), "sigmoid_scalar: contiguous CPU tensor expected");
  auto out = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_scalar", [&] {
    sigmoid_scalar_impl<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.numel());
  });
  return out;
}

// ------------------------------------------------------------------------------------------------
// SSIM of the training loss, its value and gradient in one call
// ------------------------------------------------------------------------------------------------
// The 3DGS loss's SSIM (separable Gaussian window w, Wang et al. constants) over P planes (H, W):
// 'valid' windows (pad 0) or zero-padded 'same' ones (pad k / 2). torch's depthwise convolutions
// and two dozen elementwise passes over 15 planes took most of a training step at 1600 px. Here:
// row blurs of x, y, x^2, y^2, xy (products formed a row at a time), column blurs, the map and its
// partial derivatives per pixel, and for the gradient the transposed blurs of three maps:
//   d mean / d x = W^T d_mu + 2 x W^T d_xx + y W^T d_xy.
// Each output sums its taps j = 0..k-1 in order, lanes across outputs, and the mean sums rows in
// order (double), so values do not depend on the thread count or the instruction set (no FMA).

// out[i] = sum_j w[j] x[i + j - pad_lo] (x zero outside [0, n)) for i in [0, nout)
template <typename S>
GS_INLINE void corr_row(const S* x, int64_t n, const S* w, int k, int64_t pad_lo, S* out, int64_t nout) {
  const int64_t i0 = std::min<int64_t>(nout, std::max<int64_t>(0, pad_lo));  // [i0, i1): every tap inside x
  const int64_t i1 = std::max<int64_t>(i0, std::min<int64_t>(nout, n - k + 1 + pad_lo));
  auto edge = [&](int64_t i) {
    S acc = S(0);
    for (int j = 0; j < k; ++j) {
      const int64_t m = i + j - pad_lo;
      if (m >= 0 && m < n) acc += w[j] * x[m];
    }
    out[i] = acc;
  };
  for (int64_t i = 0; i < i0; ++i) edge(i);
  for (int64_t i = i0; i < i1; ++i) out[i] = S(0) + w[0] * x[i - pad_lo];
  for (int j = 1; j < k; ++j) {
    const S wj = w[j];
    const S* xj = x + j - pad_lo;
    for (int64_t i = i0; i < i1; ++i) out[i] += wj * xj[i];
  }
  for (int64_t i = i1; i < nout; ++i) edge(i);
}

// Column pass over a plane (H, W) -> (hout, W), the same rule along H; output rows in parallel.
template <typename S>
void corr_cols(const S* x, int64_t H, int64_t W, const S* w, int k, int64_t pad_lo, S* out, int64_t hout) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < hout; ++i) {
    S* o = out + i * W;
    std::fill(o, o + W, S(0));
    for (int j = 0; j < k; ++j) {
      const int64_t m = i + j - pad_lo;
      if (m < 0 || m >= H) continue;  // (zero: adds nothing)
      const S wj = w[j];
      const S* xm = x + m * W;
      for (int64_t c = 0; c < W; ++c) o[c] += wj * xm[c];
    }
  }
}

// One plane (H, W): the SSIM map's row sums into rows[0, Ho) and, with ``grad``, scale x the map's
// gradient with respect to x into grad (H, W).
template <typename S>
void ssim_plane(const S* x, const S* y, int64_t H, int64_t W, const S* w, int k, int64_t pad, S c1, S c2, S scale,
                double* rows, S* grad) {
  const int64_t Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1, plane = H * Wo, oplane = Ho * Wo;
  std::vector<S> hb(5 * plane);  // row blurs of x, y, xx, yy, xy: (5, H, Wo)
#pragma omp parallel
  {
    std::vector<S> t(3 * W);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < H; ++r) {
      const S *xr = x + r * W, *yr = y + r * W;
      for (int64_t c = 0; c < W; ++c) {
        t[c] = xr[c] * xr[c];
        t[W + c] = yr[c] * yr[c];
        t[2 * W + c] = xr[c] * yr[c];
      }
      const S* src[5] = {xr, yr, t.data(), t.data() + W, t.data() + 2 * W};
      for (int q = 0; q < 5; ++q) corr_row<S>(src[q], W, w, k, pad, &hb[q * plane + r * Wo], Wo);
    }
  }
  std::vector<S> vb(5 * oplane);  // column blurs: mu_x, mu_y, e_xx, e_yy, e_xy (5, Ho, Wo)
  for (int q = 0; q < 5; ++q) corr_cols<S>(&hb[q * plane], H, Wo, w, k, pad, &vb[q * oplane], Ho);
  std::vector<S>().swap(hb);
  S *mx = &vb[0], *my = &vb[oplane], *exx = &vb[2 * oplane], *eyy = &vb[3 * oplane], *exy = &vb[4 * oplane];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < Ho; ++r) {
    double acc = 0.0;
    for (int64_t c = r * Wo; c < (r + 1) * Wo; ++c) {
      const S ux = mx[c], uy = my[c];
      const S a1 = S(2) * ux * uy + c1, a2 = S(2) * (exy[c] - ux * uy) + c2;
      const S b1 = ux * ux + uy * uy + c1, b2 = (exx[c] - ux * ux) + (eyy[c] - uy * uy) + c2;
      const S den = b1 * b2, s = (a1 * a2) / den;
      acc += double(s);
      if (grad) {  // the three partial derivatives replace mu_x, e_xx and e_xy
        mx[c] = scale * (S(2) * uy * (a2 - a1) / den - S(2) * ux * s * (S(1) / b1 - S(1) / b2));
        exx[c] = scale * (-s / b2);
        exy[c] = scale * (S(2) * a1 / den);
      }
    }
    rows[r] = acc;
  }
  if (!grad) return;
  // transposed passes: correlation with the reversed window, padded by k - 1 - pad
  std::vector<S> wr(w, w + k);
  std::reverse(wr.begin(), wr.end());
  const int64_t tp = k - 1 - pad;
  std::vector<S> tb(3 * plane);  // (3, H, Wo)
  const S* maps[3] = {mx, exx, exy};
  for (int q = 0; q < 3; ++q) corr_cols<S>(maps[q], Ho, Wo, wr.data(), k, tp, &tb[q * plane], H);
  std::vector<S>().swap(vb);
#pragma omp parallel
  {
    std::vector<S> t(3 * W);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < H; ++r) {
      for (int q = 0; q < 3; ++q) corr_row<S>(&tb[q * plane + r * Wo], Wo, wr.data(), k, tp, &t[q * W], W);
      const S *xr = x + r * W, *yr = y + r * W;
      S* g = grad + r * W;
      for (int64_t c = 0; c < W; ++c) g[c] = t[c] + S(2) * xr[c] * t[W + c] + yr[c] * t[2 * W + c];
    }
  }
}

// P planes one after another (the buffers of one plane at a time: 1600x2845, 0.3 GB rather than 0.8);
// the mean's sum runs over the planes' rows in order.
template <typename S>
void ssim_impl(const S* x, const S* y, int64_t P, int64_t H, int64_t W, const S* w, int k, int64_t pad, S c1,
               S c2, double* total, S* grad) {
  const int64_t Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
  const S scale = S(1.0 / double(P * Ho * Wo));  // d mean / d map
  std::vector<double> rows(P * Ho);
  for (int64_t p = 0; p < P; ++p)
    ssim_plane<S>(x + p * H * W, y + p * H * W, H, W, w, k, pad, c1, c2, scale, &rows[p * Ho],
                  grad ? grad + p * H * W : nullptr);
  double sum = 0.0;
  for (double v : rows) sum += v;
  *total = sum;
}

// (mean SSIM as a 0-d double tensor, its gradient with respect to x or an empty tensor)
std::vector<torch::Tensor> ssim_loss(torch::Tensor x, torch::Tensor y, torch::Tensor w, int64_t pad, double c1,
                                     double c2, bool with_grad) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && x.device().is_cpu() && y.sizes() == x.sizes() &&
                  y.is_contiguous() && y.scalar_type() == x.scalar_type(),
              "ssim_loss: two contiguous CPU (P, H, W) tensors of one dtype");
  TORCH_CHECK(w.dim() == 1 && w.is_contiguous() && w.scalar_type() == x.scalar_type() && w.numel() >= 1,
              "ssim_loss: a 1D window of the inputs' dtype");
  const int64_t P = x.size(0), H = x.size(1), W = x.size(2), k = w.numel();
  TORCH_CHECK(pad >= 0 && pad < k && H + 2 * pad >= k && W + 2 * pad >= k, "ssim_loss: window larger than the image");
  auto total = torch::zeros({}, x.options().dtype(torch::kFloat64));
  auto grad = with_grad ? torch::empty_like(x) : torch::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_loss", [&] {
    ssim_impl<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), P, H, W, w.data_ptr<scalar_t>(), (int)k, pad,
                        scalar_t(c1), scalar_t(c2), total.data_ptr<double>(),
                        with_grad ? grad.data_ptr<scalar_t>() : nullptr);
  });
  return {total, grad};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("project_forward", &project_forward, "project Gaussians for one camera");
  m.def("project_backward", &project_backward, "backward of project_forward (accumulating)");
  m.def("rasterize_forward", &rasterize_forward, "tile-bin and alpha-composite one camera");
  m.def("rasterize_backward", &rasterize_backward, "backward of rasterize_forward");
  m.def("fisher_raster", &fisher_raster, "per-Gaussian Fisher rows of one camera (screen space)");
  m.def("fisher_project", &fisher_project, "adds one camera's Fisher diagonal into float64 sums");
  m.def("ssim_loss", &ssim_loss, "mean SSIM of (P, H, W) planes and its gradient (the training loss)");
  m.def("sigmoid_scalar", &sigmoid_scalar, "sigmoid with the same bits on every CPU (encoder decisions)");
}
