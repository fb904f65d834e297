// CPU kernels of instance_modulation (paper Eq. 1-2 with batch norm).
//
// Layout: x, dy: [B, C, H, W] whose (H, W) is one axis of stride s_hw (contiguous:
// 1, channels-last: C); inst: [B, H*W] contiguous int32/int64; gamma, beta:
// [B, L, C]. Work is split with at::parallel_for over (b, c) rows (apply, dx;
// each row keeps its instances' table entries in a small local array), over c
// (statistics), and over (b, group of kRowGroup channels) (per-instance sums).
// Each image row is walked run by run (the table entry is a scalar over a run:
// plain FMAs) or, where its runs are short, pixel by pixel with the entries
// gathered (cpu/common.h), so the cost hardly depends on the shape of the
// instances or their number.
// Accumulation is in double for the statistics and the per-instance sums.
#include <algorithm>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/common.h"
#include "ops.h"

namespace inade {
namespace {

using cpu::acc_t;
using cpu::IdRuns;
using cpu::MapLayout;

constexpr int64_t kStatsBlock = 256;  // pixels summed in the accumulator type before a flush into double
constexpr int64_t kRowGroup = 8;      // channel rows per task of the per-instance sums
constexpr int64_t kGroupsPerTask = 2;  // row groups per task of the one-pass backward (16 floats: a cache line)
constexpr int64_t kTableBlock = 16;   // channels whose table entries are built together
constexpr int64_t kLongRun = 32;      // runs summed row by row (one vector reduction per channel row)
constexpr int64_t kMinMeanRunTiles = 16;  // image rows of shorter mean runs: per-instance sums by tiles of pixels
constexpr int64_t kPairTableRatio = 8;    // apply's paired gathers where L <= H*W / kPairTableRatio

// Every kernel walks one (b, c) row at a time. The contiguity of a row is a
// template parameter, so `offset(k)` is `k` when rows are contiguous.
template <bool kContig>
struct Row {
  int64_t stride;
  inline int64_t operator()(int64_t k) const { return kContig ? k : k * stride; }
};

// Calls f(contiguous_tag) with std::true_type when every stride is 1.
template <typename F>
inline void with_contiguity(bool contiguous, F&& f) {
  if (contiguous) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

#ifdef INADE_REGISTER_TABLES
// The float tables of for_each_row for n <= 16 channels: scale[j L + l] = invstd[j] *
// gamma[l C + j] and (where beta is given) shift[j L + l] = beta[l C + j] - mean[j] *
// scale[j L + l], 16 entries of the 16 channels at a time, loaded along C and transposed
// in registers (stored one by one, the entries of a channel lie L floats apart: at
// L = 256 that cost about a quarter of apply's time per row).
inline void build_tables_avx512(const float* gamma, const float* beta, const float* mean, const float* invstd,
                                int64_t n, int64_t L, int64_t C, float* scale, float* shift) {
  const __mmask16 channels = static_cast<__mmask16>((1u << n) - 1);
  const __m512 inv = _mm512_maskz_loadu_ps(channels, invstd), mu = _mm512_maskz_loadu_ps(channels, mean);
  __m512 s[16], t[16];
  for (int64_t l0 = 0; l0 < L; l0 += 16) {
    const int64_t m = std::min<int64_t>(16, L - l0);
    for (int64_t i = 0; i < 16; ++i) {
      s[i] = t[i] = _mm512_setzero_ps();
      if (i >= m) continue;
      s[i] = _mm512_mul_ps(inv, _mm512_maskz_loadu_ps(channels, gamma + (l0 + i) * C));
      if (beta) t[i] = _mm512_fnmadd_ps(mu, s[i], _mm512_maskz_loadu_ps(channels, beta + (l0 + i) * C));
    }
    cpu::transpose16x16(s);
    if (beta) cpu::transpose16x16(t);
    const __mmask16 entries = static_cast<__mmask16>((1u << m) - 1);
    for (int64_t j = 0; j < n; ++j) {
      _mm512_mask_storeu_ps(scale + j * L + l0, entries, s[j]);
      if (beta) _mm512_mask_storeu_ps(shift + j * L + l0, entries, t[j]);
    }
  }
}
#endif

// The tables of for_each_row for the n <= kTableBlock channels from gamma[0, 0], beta[0, 0],
// mean[0], invstd[0] (rows of gamma and beta C apart): scale[j L + l], shift[j L + l].
template <typename opmath_t, typename scalar_t, typename acc>
void build_tables(const scalar_t* gamma, const scalar_t* beta, const acc* mean, const acc* invstd, int64_t n,
                  int64_t L, int64_t C, opmath_t* scale, opmath_t* shift) {
#ifdef INADE_REGISTER_TABLES
  if constexpr (std::is_same_v<opmath_t, float> && std::is_same_v<scalar_t, float> && std::is_same_v<acc, float>) {
    build_tables_avx512(gamma, beta, mean, invstd, n, L, C, scale, shift);
    return;
  }
#endif
  for (int64_t l = 0; l < L; ++l) {
    const scalar_t* gl = gamma + l * C;
    for (int64_t j = 0; j < n; ++j) scale[j * L + l] = static_cast<opmath_t>(invstd[j]) * static_cast<opmath_t>(gl[j]);
    if (!beta) continue;
    const scalar_t* bl = beta + l * C;
    for (int64_t j = 0; j < n; ++j) {
      shift[j * L + l] = static_cast<opmath_t>(bl[j]) - static_cast<opmath_t>(mean[j]) * scale[j * L + l];
    }
  }
}

// Calls f(contig, b, c, scale, shift) for the (b, c) rows of the task [r0, r1), with
// scale[l] = invstd[c] * gamma[b, l, c] and (where beta is given) shift[l] =
// beta[b, l, c] - mean[c] * scale[l] in local tables. The tables of kTableBlock
// channels are built at once, reading gamma and beta along C.
template <typename opmath_t, typename scalar_t, typename acc, typename F>
void for_each_row(int64_t r0, int64_t r1, const MapLayout& g, int64_t num_instances, const scalar_t* gamma,
                  const scalar_t* beta, const acc* mean, const acc* invstd, bool contiguous, F&& f) {
  const int64_t L = num_instances, C = g.channels;
  // Uninitialised (build_tables writes every entry a row reads): a zeroed vector would clear
  // 2 * kTableBlock * L floats per call, and the one-pass kernels call this per image and group.
  const std::unique_ptr<opmath_t[]> scale(new opmath_t[kTableBlock * L]);
  const std::unique_ptr<opmath_t[]> shift(beta ? new opmath_t[kTableBlock * L] : nullptr);
  with_contiguity(contiguous, [&](auto contig) {
    int64_t b0 = -1, c0 = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / C, c = r % C;
      if (b != b0 || c >= c0 + kTableBlock) {
        b0 = b;
        c0 = c;
        const int64_t n = std::min({kTableBlock, C - c0, r1 - r});
        build_tables(gamma + b * L * C + c0, beta ? beta + b * L * C + c0 : nullptr, mean + c0, invstd + c0, n, L, C,
                     scale.get(), shift.get());
      }
      f(contig, b, c, scale.get() + (c - c0) * L, beta ? shift.get() + (c - c0) * L : nullptr);
    }
  });
}

// (mean, biased variance) of channel c of x over (B, H, W), summed in blocks of
// kStatsBlock pixels in the accumulator type and flushed into double.
template <typename scalar_t>
std::pair<double, double> channel_moments(const scalar_t* x, const MapLayout& g, int64_t c) {
  using acc = acc_t<scalar_t>;
  double sum = 0, sum_sq = 0;
  with_contiguity(g.s_hw == 1, [&](auto contig) {
    const Row<decltype(contig)::value> off{g.s_hw};
    for (int64_t b = 0; b < g.batch; ++b) {
      const scalar_t* row = x + b * g.s_b + c * g.s_c;
      for (int64_t k0 = 0; k0 < g.hw; k0 += kStatsBlock) {
        const int64_t k1 = std::min(g.hw, k0 + kStatsBlock);
        acc s = 0, s2 = 0;
#pragma omp simd reduction(+ : s, s2)
        for (int64_t k = k0; k < k1; ++k) {
          const acc v = static_cast<acc>(row[off(k)]);
          s += v;
          s2 += v * v;
        }
        sum += s;
        sum_sq += s2;
      }
    }
  });
  const double n = static_cast<double>(g.batch * g.hw), mean = sum / n;
  return {mean, std::max(sum_sq / n - mean * mean, 0.0)};
}

template <typename scalar_t>
void stats_kernel(const scalar_t* x, const MapLayout& g, double* mean, double* var) {
  at::parallel_for(0, g.channels, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) std::tie(mean[c], var[c]) = channel_moments(x, g, c);
  });
}

#ifdef INADE_REGISTER_TABLES
// y = x * scale[id] + shift[id] over the float pixels [k0, k1) of a contiguous row, 16 at
// a time: tables of up to 64 entries from registers; longer ones by paired gathers while
// L is small against the row (the pairs are interleaved into `pairs` once per (b, c) row,
// then pairs_built is set). False where neither applies: the caller gathers each table.
inline bool apply_pixels_avx512(int64_t k0, int64_t k1, const float* __restrict in, float* __restrict out,
                                const int32_t* __restrict ids, const float* scale, const float* shift,
                                int64_t num_instances, int64_t hw, std::vector<float>& pairs, bool& pairs_built) {
  if (num_instances <= cpu::RegisterTable::kMaxEntries) {
    const cpu::RegisterTable ts(scale, num_instances), tt(shift, num_instances);
    cpu::for_each_block16(k0, k1, [&](int64_t k, __mmask16 m) {
      const __m512i id = _mm512_maskz_loadu_epi32(m, ids + k);
      const __m512 v = _mm512_maskz_loadu_ps(m, in + k);
      _mm512_mask_storeu_ps(out + k, m, _mm512_fmadd_ps(v, ts.lookup(id), tt.lookup(id)));
    });
    return true;
  }
  if (num_instances * kPairTableRatio > hw) return false;
  if (!pairs_built) {
    pairs.resize(2 * num_instances);
    cpu::PairTable::interleave(scale, shift, num_instances, pairs.data());
    pairs_built = true;
  }
  const cpu::PairTable st(pairs.data());
  cpu::for_each_block16(k0, k1, [&](int64_t k, __mmask16 m) {
    const __m512i id = _mm512_maskz_loadu_epi32(m, ids + k);
    __m512 s_id, t_id;
    st.lookup(id, s_id, t_id);
    _mm512_mask_storeu_ps(out + k, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, in + k), s_id, t_id));
  });
  return true;
}
#endif

// y = x * scale[id] + shift[id] (the normalisation folded into the tables) for the
// (b, c) rows [r0, r1).
template <typename scalar_t>
void apply_rows(int64_t r0, int64_t r1, const scalar_t* x, const IdRuns& runs, const scalar_t* gamma,
                const scalar_t* beta, const acc_t<scalar_t>* mean, const acc_t<scalar_t>* invstd, scalar_t* y,
                const MapLayout& g, const MapLayout& gy, int64_t num_instances) {
  using opmath_t = at::opmath_type<scalar_t>;
  std::vector<float> pairs;  // scratch of the pair table (float rows of more than RegisterTable::kMaxEntries)
  for_each_row<opmath_t>(r0, r1, g, num_instances, gamma, beta, mean, invstd, g.s_hw == 1 && gy.s_hw == 1,
                         [&](auto contig, int64_t b, int64_t c, const opmath_t* scale, const opmath_t* shift) {
    const Row<decltype(contig)::value> at_x{g.s_hw}, at_y{gy.s_hw};
    bool pairs_built = false;
    const opmath_t* __restrict t = shift;
    const scalar_t* __restrict xr = x + b * g.s_b + c * g.s_c;
    scalar_t* __restrict yr = y + b * gy.s_b + c * gy.s_c;
    const int32_t* __restrict ids = runs.ids_of(b);
    runs.for_each_span(
        b, 0, runs.height,
        [&](int64_t k0, int64_t k1, int64_t id) {
          const opmath_t s = scale[id], u = t[id];
          const scalar_t* __restrict in = xr;
          scalar_t* __restrict out = yr;
#pragma omp simd
          for (int64_t k = k0; k < k1; ++k) out[at_y(k)] = static_cast<scalar_t>(static_cast<opmath_t>(in[at_x(k)]) * s + u);
        },
        [&](int64_t k0, int64_t k1) {
          const scalar_t* __restrict in = xr;
          scalar_t* __restrict out = yr;
          const opmath_t* __restrict sc = scale;
#ifdef INADE_REGISTER_TABLES
          if constexpr (std::is_same_v<scalar_t, float> && decltype(contig)::value) {
            if (apply_pixels_avx512(k0, k1, in, out, ids, sc, t, num_instances, g.hw, pairs, pairs_built)) return;
          }
#endif
#pragma omp simd
          for (int64_t k = k0; k < k1; ++k) {
            const int32_t id = ids[k];
            out[at_y(k)] = static_cast<scalar_t>(static_cast<opmath_t>(in[at_x(k)]) * sc[id] + t[id]);
          }
        });
  });
}

template <typename scalar_t>
void apply_kernel(const scalar_t* x, const IdRuns& runs, const scalar_t* gamma, const scalar_t* beta,
                  const acc_t<scalar_t>* mean, const acc_t<scalar_t>* invstd, scalar_t* y, const MapLayout& g,
                  const MapLayout& gy, int64_t num_instances) {
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t r0, int64_t r1) {
    apply_rows(r0, r1, x, runs, gamma, beta, mean, invstd, y, g, gy, num_instances);
  });
}

// Channels per task of the fused forward: as many as keep the task's rows of x
// (every image) within about kCacheBytes, so that apply reads again from cache
// what the statistics just read from memory.
constexpr int64_t kCacheBytes = int64_t{1} << 20;

inline int64_t channels_per_task(const MapLayout& g, int64_t element_size, int64_t most) {
  const int64_t bytes = std::max<int64_t>(1, g.batch * g.hw * element_size);
  return std::clamp<int64_t>(kCacheBytes / bytes, 1, most);
}

// The training forward in one pass over memory: per group of channels, the
// statistics over (B, H, W), then y for every image.
template <typename scalar_t>
void forward_kernel(const scalar_t* x, const IdRuns& runs, const scalar_t* gamma, const scalar_t* beta, double eps,
                    acc_t<scalar_t>* mean, acc_t<scalar_t>* var, acc_t<scalar_t>* invstd, scalar_t* y,
                    const MapLayout& g, const MapLayout& gy, int64_t num_instances) {
  using acc = acc_t<scalar_t>;
  const int64_t C = g.channels, per_task = channels_per_task(g, sizeof(scalar_t), kTableBlock);
  cpu::parallel_tasks((C + per_task - 1) / per_task, [&](int64_t t) {
    const int64_t c0 = t * per_task, c1 = std::min(C, c0 + per_task);
    for (int64_t c = c0; c < c1; ++c) {
      const auto [m, v] = channel_moments(x, g, c);
      mean[c] = static_cast<acc>(m);
      var[c] = static_cast<acc>(v);
      invstd[c] = static_cast<acc>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
    }
    for (int64_t b = 0; b < g.batch; ++b) {
      apply_rows(b * C + c0, b * C + c1, x, runs, gamma, beta, mean, invstd, y, g, gy, num_instances);
    }
  });
}

// kRowGroup channel rows of x and dy read together: per pixel, the kWidth values
// dy * (x - mean) of each row, then dy of each row.
template <typename scalar_t>
struct ReduceRows {
  static constexpr int64_t kWidth = 2 * kRowGroup;
  static constexpr int64_t kTile = 16;  // pixels of a tile of add_tile
  const scalar_t* x[kRowGroup];
  const scalar_t* dy[kRowGroup];
  acc_t<scalar_t> mean[kRowGroup];
  int64_t s_x, s_dy;  // pixel strides

  // A long run: one vector reduction per row; a short one: pixel by pixel, all rows at once.
  template <typename T>
  inline void add(int64_t p0, int64_t p1, T acc[]) const {
    if (p1 - p0 < kLongRun) {
      for (int64_t p = p0; p < p1; ++p) one(p * s_x, p * s_dy, acc);
    } else if (s_x == 1 && s_dy == 1) {
      for (int64_t r = 0; r < kRowGroup; ++r) sum_row<T, 1>(r, p0, p1, acc);
    } else {
      for (int64_t r = 0; r < kRowGroup; ++r) sum_row<T, 0>(r, p0, p1, acc);
    }
  }

  template <typename T, int kUnit>
  inline void sum_row(int64_t r, int64_t p0, int64_t p1, T acc[]) const {
    const scalar_t* __restrict xr = x[r];
    const scalar_t* __restrict dr = dy[r];
    const int64_t sx = kUnit ? 1 : s_x, sd = kUnit ? 1 : s_dy;
    const T m = static_cast<T>(mean[r]);
    T a = 0, d = 0;
#pragma omp simd reduction(+ : a, d)
    for (int64_t p = p0; p < p1; ++p) {
      const T v = static_cast<T>(dr[p * sd]);
      a += v * (static_cast<T>(xr[p * sx]) - m);
      d += v;
    }
    acc[r] += a;
    acc[kRowGroup + r] += d;
  }

  // Pixels [p0, p0 + kTile), each added into the sums of its own instance ids[p]:
  // the kWidth values of the tile are computed row by row (vector loads along the
  // row) into a [kWidth, kTile] block, transposed to [kTile, kWidth], and each
  // pixel's kWidth values added as one vector into its instance's sums (opmath_t;
  // the caller flushes them into double every cpu::kMaxRun pixels).
  template <typename T, int kUnit>
  inline void add_tile(int64_t p0, const int32_t* __restrict ids, T* __restrict sums) const {
    const int64_t sx = kUnit ? 1 : s_x, sd = kUnit ? 1 : s_dy;
    alignas(64) T rows[kWidth][kTile];
    for (int64_t r = 0; r < kRowGroup; ++r) {
      const scalar_t* __restrict xr = x[r] + p0 * sx;
      const scalar_t* __restrict dr = dy[r] + p0 * sd;
      const T m = static_cast<T>(mean[r]);
#pragma omp simd
      for (int64_t k = 0; k < kTile; ++k) {
        const T v = static_cast<T>(dr[k * sd]);
        rows[r][k] = v * (static_cast<T>(xr[k * sx]) - m);
        rows[kRowGroup + r][k] = v;
      }
    }
    alignas(64) T tile[kTile][kWidth];
    for (int64_t k = 0; k < kTile; ++k) {
      for (int64_t j = 0; j < kWidth; ++j) tile[k][j] = rows[j][k];
    }
    for (int64_t k = 0; k < kTile; ++k) {
      T* __restrict s = sums + static_cast<int64_t>(ids[p0 + k]) * kWidth;
#pragma omp simd
      for (int64_t j = 0; j < kWidth; ++j) s[j] += tile[k][j];
    }
  }

  // Pixels [p0, p1), each into the sums of its instance: whole tiles, then the rest one by one.
  template <typename T>
  inline void add_pixels(int64_t p0, int64_t p1, const int32_t* ids, T* sums) const {
    int64_t p = p0;
    if (s_x == 1 && s_dy == 1) {
      for (; p + kTile <= p1; p += kTile) add_tile<T, 1>(p, ids, sums);
    } else {
      for (; p + kTile <= p1; p += kTile) add_tile<T, 0>(p, ids, sums);
    }
    for (; p < p1; ++p) one(p * s_x, p * s_dy, sums + static_cast<int64_t>(ids[p]) * kWidth);
  }

  template <typename T>
  inline void one(int64_t px, int64_t pd, T acc[]) const {
    for (int64_t r = 0; r < kRowGroup; ++r) {
      const T v = static_cast<T>(dy[r][pd]);
      acc[r] += v * (static_cast<T>(x[r][px]) - static_cast<T>(mean[r]));
      acc[kRowGroup + r] += v;
    }
  }
};

// The per-instance sums of one group of kRowGroup channels in one image, with the
// scratch of a task: rows of long runs are summed run by run, rows of short ones by
// tiles of pixels into float sums flushed into double every kMaxRun pixels per 32
// instances (a flush costs L * kWidth additions).
template <typename scalar_t>
class GroupSums {
 public:
  using acc = acc_t<scalar_t>;
  using opmath_t = at::opmath_type<scalar_t>;
  static constexpr int64_t kWidth = ReduceRows<scalar_t>::kWidth;

  explicit GroupSums(int64_t num_instances)
      : L_(num_instances),
        flush_every_(cpu::kMaxRun * std::max<int64_t>(1, num_instances / 32)),
        sums_(num_instances * kWidth),
        fsums_(num_instances * kWidth, opmath_t(0)) {}

  // dgamma[b, :, c0 + r] = invstd * sum dy * (x - mean) and dbeta[b, :, c0 + r] = sum dy
  // over each instance's pixels, for the rows r < nc of the group at channel c0. With
  // gamma, also adds sum_l gamma * dbeta into dxhat[r] and sum_l gamma * dgamma into
  // dxhat_xhat[r] (the batch-norm terms of the input gradient, read from the sums in hand).
  void run(const scalar_t* dy, const scalar_t* x, const IdRuns& runs, const acc* mean, const acc* invstd,
           acc* dgamma, acc* dbeta, const MapLayout& gd, const MapLayout& g, int64_t b, int64_t c0,
           const scalar_t* gamma = nullptr, double* dxhat = nullptr, double* dxhat_xhat = nullptr) {
    const int64_t nc = std::min(kRowGroup, g.channels - c0);
    ReduceRows<scalar_t> in{{}, {}, {}, g.s_hw, gd.s_hw};
    cpu::group_rows<kRowGroup>(x + b * g.s_b + c0 * g.s_c, g.s_c, nc, in.x);
    cpu::group_rows<kRowGroup>(dy + b * gd.s_b + c0 * gd.s_c, gd.s_c, nc, in.dy);
    for (int64_t r = 0; r < kRowGroup; ++r) in.mean[r] = mean[c0 + std::min(r, nc - 1)];
    std::fill(sums_.begin(), sums_.end(), 0.0);
    double* s = sums_.data();
    const int32_t* ids = runs.ids_of(b);
    runs.for_each_span(
        b, 0, runs.height,
        [&](int64_t begin, int64_t end, int64_t id) {
          for (int64_t p0 = begin; p0 < end; p0 += cpu::kMaxRun) {
            opmath_t part[kWidth] = {};
            in.add(p0, std::min(end, p0 + cpu::kMaxRun), part);
            double* si = s + id * kWidth;
            for (int64_t k = 0; k < kWidth; ++k) si[k] += static_cast<double>(part[k]);
          }
        },
        [&](int64_t begin, int64_t end) {
          in.template add_pixels<opmath_t>(begin, end, ids, fsums_.data());
          pending_ += end - begin;
          if (pending_ >= flush_every_) flush();
        },
        kMinMeanRunTiles);
    flush();
    // The batch-norm terms gather in locals: accumulated through the dxhat pointers, every
    // (l, r) waited on the store of the one before (~1/4 of the sums' time at L = 256).
    double inv[kRowGroup], terms[kRowGroup] = {}, terms_xhat[kRowGroup] = {};
    for (int64_t r = 0; r < nc; ++r) inv[r] = static_cast<double>(invstd[c0 + r]);
    for (int64_t l = 0; l < L_; ++l) {
      const double* sl = s + l * kWidth;
      const int64_t i0 = (b * L_ + l) * g.channels + c0;
      for (int64_t r = 0; r < nc; ++r) {
        const acc dg = static_cast<acc>(inv[r] * sl[r]);  // sum dy * xhat
        const acc db = static_cast<acc>(sl[kRowGroup + r]);
        dgamma[i0 + r] = dg;
        dbeta[i0 + r] = db;
        if (gamma) {
          const double gm = static_cast<double>(gamma[i0 + r]);
          terms[r] += gm * static_cast<double>(db);
          terms_xhat[r] += gm * static_cast<double>(dg);
        }
      }
    }
    if (!gamma) return;
    for (int64_t r = 0; r < nc; ++r) {
      dxhat[r] += terms[r];
      dxhat_xhat[r] += terms_xhat[r];
    }
  }

 private:
  void flush() {
    if (pending_ == 0) return;
    double* __restrict d = sums_.data();
    opmath_t* __restrict f = fsums_.data();
#pragma omp simd
    for (int64_t i = 0; i < L_ * kWidth; ++i) {
      d[i] += static_cast<double>(f[i]);
      f[i] = 0;
    }
    pending_ = 0;
  }

  int64_t L_, flush_every_, pending_ = 0;
  std::vector<double> sums_;
  std::vector<opmath_t> fsums_;
};

template <typename scalar_t>
void backward_reduce_kernel(const scalar_t* dy, const scalar_t* x, const IdRuns& runs, const acc_t<scalar_t>* mean,
                            const acc_t<scalar_t>* invstd, acc_t<scalar_t>* dgamma, acc_t<scalar_t>* dbeta,
                            const MapLayout& gd, const MapLayout& g, int64_t num_instances) {
  // One task per (b, group of kRowGroup channels).
  const int64_t groups = (g.channels + kRowGroup - 1) / kRowGroup;
  at::parallel_for(0, g.batch * groups, 1, [&](int64_t t0, int64_t t1) {
    GroupSums<scalar_t> sums(num_instances);
    for (int64_t t = t0; t < t1; ++t) {
      sums.run(dy, x, runs, mean, invstd, dgamma, dbeta, gd, g, t / groups, (t % groups) * kRowGroup);
    }
  });
}

#ifdef INADE_REGISTER_TABLES
// dx = dy * scale[id] + x * a + k over the float pixels [p0, p1) of a contiguous row, 16
// at a time, with a table of up to 64 entries in registers. False for longer tables.
inline bool dx_pixels_avx512(int64_t p0, int64_t p1, const float* __restrict grad, const float* __restrict in,
                             float* __restrict out, const int32_t* __restrict ids, const float* scale, float a,
                             float k, int64_t num_instances) {
  if (num_instances > cpu::RegisterTable::kMaxEntries) return false;
  const cpu::RegisterTable ts(scale, num_instances);
  const __m512 va = _mm512_set1_ps(a), vk = _mm512_set1_ps(k);
  cpu::for_each_block16(p0, p1, [&](int64_t p, __mmask16 m) {
    const __m512i id = _mm512_maskz_loadu_epi32(m, ids + p);
    const __m512 base = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, in + p), va, vk);
    _mm512_mask_storeu_ps(out + p, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, grad + p), ts.lookup(id), base));
  });
  return true;
}
#endif

// dx for the (b, c) rows [r0, r1): dy * invstd * gamma[id] + x * a + k, where a and k
// carry the batch-norm terms (zero for fixed statistics).
template <typename scalar_t>
void dx_rows(int64_t r0, int64_t r1, const scalar_t* dy, const scalar_t* x, const IdRuns& runs, const scalar_t* gamma,
             const acc_t<scalar_t>* mean, const acc_t<scalar_t>* invstd, const acc_t<scalar_t>* mean_dxhat,
             const acc_t<scalar_t>* mean_dxhat_xhat, bool batch_stats, scalar_t* dx, const MapLayout& gd,
             const MapLayout& g, const MapLayout& gdx, int64_t num_instances) {
  using opmath_t = at::opmath_type<scalar_t>;
  for_each_row<opmath_t>(r0, r1, g, num_instances, gamma, static_cast<const scalar_t*>(nullptr), mean, invstd,
                         g.s_hw == 1 && gd.s_hw == 1 && gdx.s_hw == 1,
                         [&](auto contig, int64_t b, int64_t c, const opmath_t* scale, const opmath_t*) {
    const Row<decltype(contig)::value> at_x{g.s_hw}, at_d{gd.s_hw}, at_dx{gdx.s_hw};
    opmath_t a = 0, k0 = 0;
    if (batch_stats) {
      const opmath_t is = invstd[c], m = mean[c], m1 = mean_dxhat[c], m2 = mean_dxhat_xhat[c];
      a = -is * is * m2;
      k0 = -is * m1 + m * is * is * m2;
    }
    const scalar_t* __restrict xr = x + b * g.s_b + c * g.s_c;
    const scalar_t* __restrict dyr = dy + b * gd.s_b + c * gd.s_c;
    scalar_t* __restrict dxr = dx + b * gdx.s_b + c * gdx.s_c;
    const int32_t* __restrict ids = runs.ids_of(b);
    runs.for_each_span(
        b, 0, runs.height,
        [&](int64_t p0, int64_t p1, int64_t id) {
          const opmath_t s = scale[id];
          const scalar_t* __restrict in = xr;
          const scalar_t* __restrict grad = dyr;
          scalar_t* __restrict out = dxr;
#pragma omp simd
          for (int64_t k = p0; k < p1; ++k) {
            out[at_dx(k)] = static_cast<scalar_t>(static_cast<opmath_t>(grad[at_d(k)]) * s +
                                                  static_cast<opmath_t>(in[at_x(k)]) * a + k0);
          }
        },
        [&](int64_t p0, int64_t p1) {
          const scalar_t* __restrict in = xr;
          const scalar_t* __restrict grad = dyr;
          scalar_t* __restrict out = dxr;
          const opmath_t* __restrict sc = scale;
#ifdef INADE_REGISTER_TABLES
          if constexpr (std::is_same_v<scalar_t, float> && decltype(contig)::value) {
            if (dx_pixels_avx512(p0, p1, grad, in, out, ids, sc, a, k0, num_instances)) return;
          }
#endif
#pragma omp simd
          for (int64_t k = p0; k < p1; ++k) {
            out[at_dx(k)] = static_cast<scalar_t>(static_cast<opmath_t>(grad[at_d(k)]) * sc[ids[k]] +
                                                  static_cast<opmath_t>(in[at_x(k)]) * a + k0);
          }
        });
  });
}

template <typename scalar_t>
void backward_dx_kernel(const scalar_t* dy, const scalar_t* x, const IdRuns& runs, const scalar_t* gamma,
                        const acc_t<scalar_t>* mean, const acc_t<scalar_t>* invstd, const acc_t<scalar_t>* mean_dxhat,
                        const acc_t<scalar_t>* mean_dxhat_xhat, bool batch_stats, scalar_t* dx, const MapLayout& gd,
                        const MapLayout& g, const MapLayout& gdx, int64_t num_instances) {
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t r0, int64_t r1) {
    dx_rows(r0, r1, dy, x, runs, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, batch_stats, dx, gd, g, gdx,
            num_instances);
  });
}

// The training backward (batch statistics) in one pass over memory: per group of
// kRowGroup channels, the per-instance sums of every image, the two per-channel
// batch-norm terms from them (sum dy * gamma[id] = sum_l gamma_l * dbeta_l and
// sum dy * gamma[id] * xhat = sum_l gamma_l * dgamma_l, divided by the count), then
// dx of every image, reading again from cache the rows the sums just read.
template <typename scalar_t>
void backward_kernel(const scalar_t* dy, const scalar_t* x, const IdRuns& runs, const scalar_t* gamma,
                     const acc_t<scalar_t>* mean, const acc_t<scalar_t>* invstd, acc_t<scalar_t>* dgamma,
                     acc_t<scalar_t>* dbeta, acc_t<scalar_t>* mean_dxhat, acc_t<scalar_t>* mean_dxhat_xhat,
                     scalar_t* dx, const MapLayout& gd, const MapLayout& g, const MapLayout& gdx,
                     int64_t num_instances) {
  using acc = acc_t<scalar_t>;
  const int64_t L = num_instances, C = g.channels, groups = (C + kRowGroup - 1) / kRowGroup;
  const double count = static_cast<double>(g.batch * g.hw);
  // A task takes kGroupsPerTask groups one after the other, so that the 64-byte lines of
  // dgamma and dbeta it writes (16 floats of a (b, l) row) are not shared with a task
  // running on another thread; each group's rows still fit in cache between its two reads.
  const int64_t tasks = (groups + kGroupsPerTask - 1) / kGroupsPerTask;
  cpu::parallel_tasks(tasks, [&] { return GroupSums<scalar_t>(L); }, [&](int64_t task, GroupSums<scalar_t>& sums) {
    for (int64_t t = task * kGroupsPerTask; t < std::min(groups, (task + 1) * kGroupsPerTask); ++t) {
      const int64_t c0 = t * kRowGroup, c1 = std::min(C, c0 + kRowGroup);
      double s1[kRowGroup] = {}, s2[kRowGroup] = {};
      for (int64_t b = 0; b < g.batch; ++b) {
        sums.run(dy, x, runs, mean, invstd, dgamma, dbeta, gd, g, b, c0, gamma, s1, s2);
      }
      for (int64_t c = c0; c < c1; ++c) {
        mean_dxhat[c] = static_cast<acc>(s1[c - c0] / count);
        mean_dxhat_xhat[c] = static_cast<acc>(s2[c - c0] / count);
      }
      for (int64_t b = 0; b < g.batch; ++b) {
        dx_rows(b * C + c0, b * C + c1, dy, x, runs, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, true, dx, gd,
                g, gdx, L);
      }
    }
  });
}

// inst [B, H*W] (x's B, H, W) as runs.
IdRuns runs_of(const at::Tensor& inst, const at::Tensor& x) {
  return cpu::encode_runs(inst, x.size(0), x.size(2), x.size(3));
}

std::tuple<at::Tensor, at::Tensor> stats(const at::Tensor& x) {
  cpu::check_map(x, "x");
  auto opts = x.options().dtype(at::kDouble);
  at::Tensor mean = at::empty({x.size(1)}, opts), var = at::empty({x.size(1)}, opts);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_modulation_stats", [&] {
    stats_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), cpu::layout_of(x), mean.data_ptr<double>(),
                           var.data_ptr<double>());
  });
  const auto acc = cpu::acc_type(x.scalar_type());
  return {mean.to(acc), var.to(acc)};
}

at::Tensor apply(const at::Tensor& x, const at::Tensor& inst, const at::Tensor& gamma, const at::Tensor& beta,
                 const at::Tensor& mean, const at::Tensor& invstd) {
  cpu::check_map(x, "x");
  TORCH_CHECK(gamma.is_contiguous() && beta.is_contiguous(), "inade._C: gamma and beta must be contiguous");
  const IdRuns runs = runs_of(inst, x);
  at::Tensor y = at::empty_like(x);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_modulation_apply", [&] {
    using acc = acc_t<scalar_t>;
    apply_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), runs, gamma.const_data_ptr<scalar_t>(),
                           beta.const_data_ptr<scalar_t>(), mean.const_data_ptr<acc>(), invstd.const_data_ptr<acc>(),
                           y.data_ptr<scalar_t>(), cpu::layout_of(x), cpu::layout_of(y), gamma.size(1));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& inst,
                                                   const at::Tensor& mean, const at::Tensor& invstd,
                                                   int64_t num_instances) {
  cpu::check_map(x, "x");
  cpu::check_map(dy, "dy");
  const IdRuns runs = runs_of(inst, x);
  auto opts = x.options().dtype(cpu::acc_type(x.scalar_type()));
  at::Tensor dgamma = at::empty({x.size(0), num_instances, x.size(1)}, opts);
  at::Tensor dbeta = at::empty_like(dgamma);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_modulation_backward_reduce", [&] {
    using acc = acc_t<scalar_t>;
    backward_reduce_kernel<scalar_t>(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), runs,
                                     mean.const_data_ptr<acc>(), invstd.const_data_ptr<acc>(), dgamma.data_ptr<acc>(),
                                     dbeta.data_ptr<acc>(), cpu::layout_of(dy), cpu::layout_of(x), num_instances);
  });
  return {dgamma, dbeta};
}

at::Tensor backward_dx(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& inst, const at::Tensor& gamma,
                       const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& mean_dxhat,
                       const at::Tensor& mean_dxhat_xhat, bool batch_stats) {
  cpu::check_map(x, "x");
  cpu::check_map(dy, "dy");
  TORCH_CHECK(gamma.is_contiguous(), "inade._C: gamma must be contiguous");
  const IdRuns runs = runs_of(inst, x);
  at::Tensor dx = at::empty_like(x);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_modulation_backward_dx", [&] {
    using acc = acc_t<scalar_t>;
    backward_dx_kernel<scalar_t>(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), runs,
                                 gamma.const_data_ptr<scalar_t>(), mean.const_data_ptr<acc>(),
                                 invstd.const_data_ptr<acc>(), mean_dxhat.const_data_ptr<acc>(),
                                 mean_dxhat_xhat.const_data_ptr<acc>(), batch_stats, dx.data_ptr<scalar_t>(),
                                 cpu::layout_of(dy), cpu::layout_of(x), cpu::layout_of(dx), gamma.size(1));
  });
  return dx;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& inst,
                                                                   const at::Tensor& gamma, const at::Tensor& beta,
                                                                   double eps) {
  cpu::check_map(x, "x");
  TORCH_CHECK(gamma.is_contiguous() && beta.is_contiguous(), "inade._C: gamma and beta must be contiguous");
  const IdRuns runs = runs_of(inst, x);
  at::Tensor y = at::empty_like(x);
  auto opts = x.options().dtype(cpu::acc_type(x.scalar_type()));
  at::Tensor mean = at::empty({x.size(1)}, opts), var = at::empty_like(mean), invstd = at::empty_like(mean);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_modulation_forward", [&] {
    using acc = acc_t<scalar_t>;
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), runs, gamma.const_data_ptr<scalar_t>(),
                             beta.const_data_ptr<scalar_t>(), eps, mean.data_ptr<acc>(), var.data_ptr<acc>(),
                             invstd.data_ptr<acc>(), y.data_ptr<scalar_t>(), cpu::layout_of(x), cpu::layout_of(y),
                             gamma.size(1));
  });
  return {y, mean, var, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& dy, const at::Tensor& x,
                                                        const at::Tensor& inst, const at::Tensor& gamma,
                                                        const at::Tensor& mean, const at::Tensor& invstd) {
  cpu::check_map(x, "x");
  cpu::check_map(dy, "dy");
  TORCH_CHECK(gamma.is_contiguous(), "inade._C: gamma must be contiguous");
  const IdRuns runs = runs_of(inst, x);
  auto opts = x.options().dtype(cpu::acc_type(x.scalar_type()));
  at::Tensor dgamma = at::empty({x.size(0), gamma.size(1), x.size(1)}, opts), dbeta = at::empty_like(dgamma);
  at::Tensor terms = at::empty({2, x.size(1)}, opts);  // the two batch-norm terms per channel (scratch)
  at::Tensor dx = at::empty_like(x);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_modulation_backward", [&] {
    using acc = acc_t<scalar_t>;
    backward_kernel<scalar_t>(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), runs,
                              gamma.const_data_ptr<scalar_t>(), mean.const_data_ptr<acc>(),
                              invstd.const_data_ptr<acc>(), dgamma.data_ptr<acc>(), dbeta.data_ptr<acc>(),
                              terms[0].data_ptr<acc>(), terms[1].data_ptr<acc>(), dx.data_ptr<scalar_t>(),
                              cpu::layout_of(dy), cpu::layout_of(x), cpu::layout_of(dx), gamma.size(1));
  });
  return {dx, dgamma, dbeta};
}

}  // namespace

void register_instance_modulation(pybind11::module& m) {
  m.def("instance_modulation_stats", &stats, "per-channel (mean, biased var) of x [B, C, H, W]");
  m.def("instance_modulation_apply", &apply, "y = xhat * gamma[inst] + beta[inst]");
  m.def("instance_modulation_backward_reduce", &backward_reduce, "per-instance sums (dgamma, dbeta) [B, L, C]");
  m.def("instance_modulation_backward_dx", &backward_dx, "gradient of x");
  m.def("instance_modulation_forward", &forward, "training forward in one pass: (y, mean, var, invstd)");
  m.def("instance_modulation_backward", &backward, "training backward in one pass: (dx, dgamma, dbeta)");
}

}  // namespace inade
