// CPU kernels of instance_avg_pool (paper Eq. 4): the mean of x over each
// instance's pixels, and its gradient dx[b, c, h, w] = dy[b, inst, c] / count[b, inst].
//
// Layout: every feature map is [B, C, H, W] whose (H, W) is one axis of stride
// s_hw (contiguous: 1, channels-last: C); inst: [B, H*W] contiguous int32/int64;
// pooled tables: [B, L, C] contiguous. Several maps that share one index map are
// handled in one call.
//
// Instances are regions, so along an image row the ids come in runs. Each call
// reads inst once and turns it into runs (end column and id of every run of every
// image row, built in parallel over rows); the counts come from the runs. Every
// task then walks the runs of its image for several channels at once (kRowGroup
// rows of a contiguous map, kChannelBlock channels of a channels-last one): a
// run is summed in registers, one independent chain per channel, and flushed once
// into its instance's accumulators, so short runs cost no horizontal reduction
// and no store-to-load chain through the table; a run's gradient is one fill per
// channel. Accumulation is in float within a run (at most kMaxRun pixels) and in
// double across runs (double throughout for double inputs).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <functional>
#include <tuple>
#include <vector>

#include "ops.h"

namespace inade {
namespace {

constexpr int64_t kMaxRun = 512;      // pixels summed in float before a flush into double
constexpr int64_t kChannelBlock = 32;  // channels per task in channels-last maps
constexpr int64_t kRowGroup = 8;       // channel rows per task in contiguous maps
constexpr int64_t kImageRows = 8;      // image rows per backward task in channels-last maps
constexpr int64_t kSerialIds = 1 << 18;  // index maps up to this size are turned into runs serially

struct MapLayout {
  int64_t batch, channels, hw;  // sizes
  int64_t s_b, s_c, s_hw;       // strides
};

MapLayout layout_of(const at::Tensor& t) {
  return {t.size(0), t.size(1), t.size(2) * t.size(3), t.stride(0), t.stride(1), t.stride(3)};
}

// Channels-last maps (and channel slices of them) have unit channel stride; every
// other flattenable map is walked row by row along (H, W).
bool walk_by_pixel(const MapLayout& g) { return g.s_c == 1 && g.s_hw != 1 && g.channels > 1; }

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// ---------------------------------------------------------------------------
// Runs of equal ids along each image row
// ---------------------------------------------------------------------------

struct Runs {
  int64_t batch, height, width;
  at::Tensor end_id;    // int32 [B*H, W, 2]: (end column, id) of each run of a row
  at::Tensor num_runs;  // int32 [B*H]

  // Calls f(begin, end, id) for the runs of image rows [h0, h1) of image b, with
  // pixel offsets within the image.
  template <typename F>
  inline void for_each_run(int64_t b, int64_t h0, int64_t h1, F&& f) const {
    const int32_t* runs = end_id.const_data_ptr<int32_t>();
    const int32_t* counts = num_runs.const_data_ptr<int32_t>();
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t row = b * height + h;
      const int32_t* r = runs + row * width * 2;
      int64_t begin = h * width;
      for (int32_t k = 0; k < counts[row]; ++k) {
        const int64_t end = h * width + r[2 * k];
        f(begin, end, static_cast<int64_t>(r[2 * k + 1]));
        begin = end;
      }
    }
  }

  template <typename F>
  inline void for_each_run(int64_t b, F&& f) const {
    for_each_run(b, 0, height, std::forward<F>(f));
  }
};

template <typename index_t>
void build_runs_kernel(const index_t* inst, int64_t width, int64_t rows, int32_t* end_id, int32_t* num_runs) {
  // Small maps stay on the calling thread: waking the pool would cost more.
  const int64_t grain = std::max<int64_t>(1, kSerialIds / std::max<int64_t>(1, width));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const index_t* ids = inst + row * width;
      int32_t* out = end_id + row * width * 2;
      int32_t n = 0;
      for (int64_t w = 1; w <= width; ++w) {
        if (w == width || ids[w] != ids[w - 1]) {
          out[2 * n] = static_cast<int32_t>(w);
          out[2 * n + 1] = static_cast<int32_t>(ids[w - 1]);
          ++n;
        }
      }
      num_runs[row] = n;
    }
  });
}

Runs build_runs(const at::Tensor& inst) {
  const int64_t B = inst.size(0), H = inst.size(1), W = inst.size(2);
  TORCH_CHECK(W < (int64_t{1} << 31), "inade._C: index map rows must be shorter than 2^31");
  Runs runs{B, H, W, at::empty({B * H, W, 2}, inst.options().dtype(at::kInt)),
            at::empty({B * H}, inst.options().dtype(at::kInt))};
  AT_DISPATCH_INDEX_TYPES(inst.scalar_type(), "avg_pool_runs", [&] {
    build_runs_kernel<index_t>(inst.const_data_ptr<index_t>(), W, B * H, runs.end_id.data_ptr<int32_t>(),
                               runs.num_runs.data_ptr<int32_t>());
  });
  return runs;
}

// count[b, l] = number of pixels of instance l in image b (one pass over the runs).
at::Tensor counts_of(const Runs& runs, int64_t num_instances, at::ScalarType dtype) {
  at::Tensor counts = at::zeros({runs.batch, num_instances}, runs.end_id.options().dtype(at::kLong));
  int64_t* n = counts.data_ptr<int64_t>();
  for (int64_t b = 0; b < runs.batch; ++b) {
    runs.for_each_run(b, [&](int64_t begin, int64_t end, int64_t id) { n[b * num_instances + id] += end - begin; });
  }
  return counts.to(dtype);
}

// ---------------------------------------------------------------------------
// Work of one call: every map's tasks in one parallel region
// ---------------------------------------------------------------------------

// A map's share of a call: `tasks` independent pieces; run(t0, t1) does [t0, t1).
struct Work {
  int64_t tasks;
  std::function<void(int64_t, int64_t)> run;
};

// One wake-up of the thread pool per call, however many maps share the index map.
void run_all(const std::vector<Work>& work) {
  std::vector<int64_t> offset{0};
  for (const Work& w : work) offset.push_back(offset.back() + w.tasks);
  at::parallel_for(0, offset.back(), 1, [&](int64_t t0, int64_t t1) {
    for (size_t i = 0; i < work.size(); ++i) {
      const int64_t lo = std::max(t0, offset[i]), hi = std::min(t1, offset[i + 1]);
      if (lo < hi) work[i].run(lo - offset[i], hi - offset[i]);
    }
  });
}

// ---------------------------------------------------------------------------
// Forward: per-instance means
// ---------------------------------------------------------------------------

// Pointers to the kRowGroup channel rows of a group of nc rows starting at base;
// rows past the end repeat the last one so every loop is kRowGroup wide (their
// results are dropped, their writes repeat the last row's).
template <typename T>
inline void group_rows(T* base, int64_t s_c, int64_t nc, T* rows[]) {
  for (int64_t k = 0; k < kRowGroup; ++k) rows[k] = base + std::min(k, nc - 1) * s_c;
}

// acc[k] += Σ_{p in [p0, p1)} rows[k][p * s_hw] for the kRowGroup rows: one
// independent chain per row, so a short run costs no horizontal reduction.
template <typename scalar_t, typename opmath_t>
inline void sum_run(const scalar_t* const rows[], int64_t p0, int64_t p1, int64_t s_hw, opmath_t acc[]) {
  if (s_hw == 1) {
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t k = 0; k < kRowGroup; ++k) acc[k] += static_cast<opmath_t>(rows[k][p]);
    }
  } else {
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t k = 0; k < kRowGroup; ++k) acc[k] += static_cast<opmath_t>(rows[k][p * s_hw]);
    }
  }
}

// acc[k] += Σ_{p in [p0, p1)} xb[p * s_hw + k] for the nc (= N when N > 0, a
// width the compiler unrolls and vectorises) channels of a block.
template <int64_t N, typename scalar_t, typename opmath_t>
inline void sum_pixels(const scalar_t* xb, int64_t p0, int64_t p1, int64_t s_hw, int64_t nc, opmath_t acc[]) {
  const int64_t width = N > 0 ? N : nc;
  for (int64_t p = p0; p < p1; ++p) {
    const scalar_t* px = xb + p * s_hw;
    for (int64_t k = 0; k < width; ++k) acc[k] += static_cast<opmath_t>(px[k]);
  }
}

// out[b, l, c0 + k] = sums[l * width + k] / count[b, l] (0 for an empty instance).
template <typename scalar_t, typename acc_t>
inline void write_means(const std::vector<double>& sums, int64_t width, int64_t nc, const acc_t* counts, int64_t b,
                        int64_t c0, int64_t channels, int64_t num_instances, scalar_t* out) {
  for (int64_t l = 0; l < num_instances; ++l) {
    const acc_t n = counts[b * num_instances + l];
    for (int64_t k = 0; k < nc; ++k) {
      const double v = n > 0 ? sums[l * width + k] / n : 0.0;
      out[(b * num_instances + l) * channels + c0 + k] = static_cast<scalar_t>(v);
    }
  }
}

// Contiguous map: one task per (b, group of kRowGroup channel rows); each run is
// decoded once for the group, summed for every row in registers and flushed once.
template <typename scalar_t, typename acc_t>
Work forward_by_row(const scalar_t* x, MapLayout g, const Runs& runs, const acc_t* counts, int64_t num_instances,
                    scalar_t* out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t groups = (g.channels + kRowGroup - 1) / kRowGroup;
  return {g.batch * groups, [=, &runs](int64_t t0, int64_t t1) {
            std::vector<double> sums(num_instances * kRowGroup);
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t b = t / groups, c0 = (t % groups) * kRowGroup;
              const int64_t nc = std::min(kRowGroup, g.channels - c0);
              const scalar_t* rows[kRowGroup];
              group_rows(x + b * g.s_b + c0 * g.s_c, g.s_c, nc, rows);
              std::fill(sums.begin(), sums.end(), 0.0);
              runs.for_each_run(b, [&](int64_t begin, int64_t end, int64_t id) {
                for (int64_t p0 = begin; p0 < end; p0 += kMaxRun) {
                  opmath_t acc[kRowGroup] = {};
                  sum_run(rows, p0, std::min(end, p0 + kMaxRun), g.s_hw, acc);
                  double* s = sums.data() + id * kRowGroup;
                  for (int64_t k = 0; k < kRowGroup; ++k) s[k] += static_cast<double>(acc[k]);
                }
              });
              write_means(sums, kRowGroup, nc, counts, b, c0, g.channels, num_instances, out);
            }
          }};
}

// Channels-last map: one task per (b, block of kChannelBlock channels); each
// pixel's block is one short contiguous read; a run's block sum is flushed once.
template <typename scalar_t, typename acc_t>
Work forward_by_pixel(const scalar_t* x, MapLayout g, const Runs& runs, const acc_t* counts, int64_t num_instances,
                      scalar_t* out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t blocks = (g.channels + kChannelBlock - 1) / kChannelBlock;
  return {g.batch * blocks, [=, &runs](int64_t t0, int64_t t1) {
            std::vector<double> sums(num_instances * kChannelBlock);
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t b = t / blocks, c0 = (t % blocks) * kChannelBlock;
              const int64_t nc = std::min(kChannelBlock, g.channels - c0);
              const scalar_t* xb = x + b * g.s_b + c0;
              std::fill(sums.begin(), sums.end(), 0.0);
              runs.for_each_run(b, [&](int64_t begin, int64_t end, int64_t id) {
                for (int64_t p0 = begin; p0 < end; p0 += kMaxRun) {
                  opmath_t acc[kChannelBlock] = {};
                  const int64_t p1 = std::min(end, p0 + kMaxRun);
                  if (nc == kChannelBlock) {
                    sum_pixels<kChannelBlock>(xb, p0, p1, g.s_hw, nc, acc);
                  } else {
                    sum_pixels<0>(xb, p0, p1, g.s_hw, nc, acc);
                  }
                  double* s = sums.data() + id * kChannelBlock;
                  for (int64_t k = 0; k < nc; ++k) s[k] += static_cast<double>(acc[k]);
                }
              });
              write_means(sums, kChannelBlock, nc, counts, b, c0, g.channels, num_instances, out);
            }
          }};
}

// ---------------------------------------------------------------------------
// Backward: dx = dy[inst] / count[inst]
// ---------------------------------------------------------------------------

// table[b, l, c] = dy[b, l, c] / count[b, l] in x's dtype (0 for an empty
// instance): [B, L, C], small, built on the calling thread.
template <typename scalar_t, typename acc_t>
at::Tensor scaled_table(const at::Tensor& dy, const at::Tensor& counts) {
  at::Tensor table = at::empty_like(dy);
  const scalar_t* d = dy.const_data_ptr<scalar_t>();
  const acc_t* n = counts.const_data_ptr<acc_t>();
  scalar_t* t = table.data_ptr<scalar_t>();
  const int64_t rows = dy.size(0) * dy.size(1), channels = dy.size(2);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const acc_t v = static_cast<acc_t>(d[r * channels + c]);
      t[r * channels + c] = static_cast<scalar_t>(n[r] > 0 ? v / n[r] : acc_t(0));
    }
  }
  return table;
}

// Contiguous dx: one task per (b, group of kRowGroup channel rows); each run is
// decoded once and filled in every row of the group.
template <typename scalar_t>
Work backward_by_row(const scalar_t* table, const Runs& runs, int64_t num_instances, scalar_t* dx, MapLayout g) {
  const int64_t groups = (g.channels + kRowGroup - 1) / kRowGroup;
  return {g.batch * groups, [=, &runs](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t b = t / groups, c0 = (t % groups) * kRowGroup;
              const int64_t nc = std::min(kRowGroup, g.channels - c0);
              scalar_t* rows[kRowGroup];
              group_rows(dx + b * g.s_b + c0 * g.s_c, g.s_c, nc, rows);
              const scalar_t* tb = table + b * num_instances * g.channels + c0;
              runs.for_each_run(b, [&](int64_t begin, int64_t end, int64_t id) {
                const scalar_t* v = tb + id * g.channels;
                for (int64_t k = 0; k < kRowGroup; ++k) {
                  const scalar_t value = v[std::min(k, nc - 1)];
                  if (g.s_hw == 1) {
                    std::fill(rows[k] + begin, rows[k] + end, value);
                  } else {
                    for (int64_t p = begin; p < end; ++p) rows[k][p * g.s_hw] = value;
                  }
                }
              });
            }
          }};
}

// Channels-last dx: one task per (b, kImageRows image rows); each pixel copies its
// instance's contiguous row of the table.
template <typename scalar_t>
Work backward_by_pixel(const scalar_t* table, const Runs& runs, int64_t num_instances, scalar_t* dx, MapLayout g) {
  const int64_t chunks = (runs.height + kImageRows - 1) / kImageRows;
  return {g.batch * chunks, [=, &runs](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t b = t / chunks, h0 = (t % chunks) * kImageRows;
              const scalar_t* tb = table + b * num_instances * g.channels;
              scalar_t* dxb = dx + b * g.s_b;
              runs.for_each_run(b, h0, std::min(runs.height, h0 + kImageRows),
                                [&](int64_t begin, int64_t end, int64_t id) {
                                  const scalar_t* src = tb + id * g.channels;
                                  for (int64_t p = begin; p < end; ++p) {
                                    std::copy(src, src + g.channels, dxb + p * g.s_hw);
                                  }
                                });
            }
          }};
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

void check_map(const at::Tensor& x, const at::Tensor& inst, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), "inade._C: ", name, " must be a CPU tensor");
  TORCH_CHECK(x.dim() == 4, "inade._C: ", name, " must be [B, C, H, W]");
  TORCH_CHECK(x.size(0) == inst.size(0) && x.size(2) == inst.size(1) && x.size(3) == inst.size(2), "inade._C: ",
              name, " and inst must share B, H, W");
  TORCH_CHECK(x.size(2) == 1 || x.stride(2) == x.size(3) * x.stride(3), "inade._C: ", name,
              " must have (H, W) flattenable (contiguous or channels-last)");
}

void check_index_map(const at::Tensor& inst) {
  TORCH_CHECK(inst.device().is_cpu() && inst.dim() == 3 && inst.is_contiguous(),
              "inade._C: inst must be a contiguous CPU [B, H, W] tensor");
}

std::tuple<std::vector<at::Tensor>, at::Tensor> forward(const std::vector<at::Tensor>& xs, const at::Tensor& inst,
                                                       int64_t num_instances) {
  TORCH_CHECK(!xs.empty(), "inade._C: avg_pool_forward needs at least one map");
  check_index_map(inst);
  for (const at::Tensor& x : xs) {
    check_map(x, inst, "x");
    TORCH_CHECK(x.scalar_type() == xs[0].scalar_type(), "inade._C: every map must have one dtype");
  }
  const Runs runs = build_runs(inst);
  const at::Tensor counts = counts_of(runs, num_instances, acc_type(xs[0].scalar_type()));
  std::vector<at::Tensor> means;
  std::vector<Work> work;
  for (const at::Tensor& x : xs) {
    at::Tensor out = at::empty({x.size(0), num_instances, x.size(1)}, x.options());
    const MapLayout g = layout_of(x);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "avg_pool_forward", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      auto make = walk_by_pixel(g) ? forward_by_pixel<scalar_t, acc_t> : forward_by_row<scalar_t, acc_t>;
      work.push_back(make(x.const_data_ptr<scalar_t>(), g, runs, counts.const_data_ptr<acc_t>(), num_instances,
                          out.data_ptr<scalar_t>()));
    });
    means.push_back(out);
  }
  run_all(work);
  return {means, counts};
}

std::vector<at::Tensor> backward(const std::vector<at::Tensor>& grads, const at::Tensor& inst,
                                 const at::Tensor& counts, const std::vector<bool>& channels_last) {
  check_index_map(inst);
  TORCH_CHECK(grads.size() == channels_last.size(), "inade._C: one channels_last flag per gradient");
  TORCH_CHECK(counts.is_contiguous() && counts.dim() == 2 && counts.size(0) == inst.size(0),
              "inade._C: counts must be a contiguous [B, L] tensor");
  const int64_t num_instances = counts.size(1);
  for (const at::Tensor& dy : grads) {
    TORCH_CHECK(dy.is_contiguous() && dy.dim() == 3 && dy.size(0) == inst.size(0) && dy.size(1) == num_instances,
                "inade._C: each gradient must be a contiguous [B, L, C] tensor");
    TORCH_CHECK(counts.scalar_type() == acc_type(dy.scalar_type()), "inade._C: counts has the wrong dtype");
  }
  const Runs runs = build_runs(inst);
  std::vector<at::Tensor> dxs, tables;
  std::vector<Work> work;
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& dy = grads[i];
    const auto format = channels_last[i] ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    at::Tensor dx = at::empty({inst.size(0), dy.size(2), inst.size(1), inst.size(2)}, dy.options(), format);
    const MapLayout g = layout_of(dx);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "avg_pool_backward", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      tables.push_back(scaled_table<scalar_t, acc_t>(dy, counts));
      auto make = walk_by_pixel(g) ? backward_by_pixel<scalar_t> : backward_by_row<scalar_t>;
      work.push_back(make(tables.back().const_data_ptr<scalar_t>(), runs, num_instances, dx.data_ptr<scalar_t>(), g));
    });
    dxs.push_back(dx);
  }
  run_all(work);
  return dxs;
}

// One map: (means [B, L, C], counts [B, L]).
std::tuple<at::Tensor, at::Tensor> forward_one(const at::Tensor& x, const at::Tensor& inst, int64_t num_instances) {
  auto [means, counts] = forward({x}, inst, num_instances);
  return {means[0], counts};
}

// One map: dx [B, C, H, W] (channels-last when asked).
at::Tensor backward_one(const at::Tensor& dy, const at::Tensor& inst, const at::Tensor& counts, bool channels_last) {
  return backward({dy}, inst, counts, {channels_last})[0];
}

}  // namespace

void register_instance_avg_pool(pybind11::module& m) {
  m.def("instance_avg_pool_forward", &forward_one, "per-instance means [B, L, C] of x, and pixel counts [B, L]");
  m.def("instance_avg_pool_backward", &backward_one, "gradient dx = dy[inst] / count[inst]");
  // Old list-taking names, kept while inade/ops still calls them.
  m.def("avg_pool_forward", &forward, "per-instance means [B, L, C] of each map, and pixel counts [B, L]");
  m.def("avg_pool_backward", &backward, "gradient dx = dy[inst] / count[inst] of each map");
}

}  // namespace inade
