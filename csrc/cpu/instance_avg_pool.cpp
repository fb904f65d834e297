// CPU kernels of instance_avg_pool (paper Eq. 4): the mean of x over each
// instance's pixels, and its gradient dx[b, c, h, w] = dy[b, inst, c] / count[b, inst].
//
// Layout: x and dx are [B, C, H, W] whose (H, W) is one axis of stride s_hw
// (contiguous: 1, channels-last: C); inst: [B, H, W] contiguous int32/int64;
// pooled tables: [B, L, C] contiguous.
//
// Each call encodes inst once into runs of equal id along each image row
// (cpu/common.h); the counts come from the ids. Every task then walks its image
// for several channels at once (kRowGroup rows of a contiguous map, kChannelBlock
// channels of a channels-last one). Along an image row with long runs, a run is
// summed in registers, one independent chain per channel, and flushed once into
// its instance's accumulators, and a run's gradient is one fill per channel; an
// image row of short runs adds (or copies) pixel by pixel straight into (from)
// its instances' entries. Accumulation is in float within a run (at most
// kMaxRun pixels) and in double across runs (double throughout for double inputs).
#include <algorithm>
#include <tuple>
#include <vector>

#include "cpu/common.h"
#include "ops.h"

namespace inade {
namespace {

using cpu::acc_t;
using cpu::IdRuns;
using cpu::MapLayout;

constexpr int64_t kChannelBlock = 32;  // channels per task in channels-last maps
constexpr int64_t kRowGroup = 8;       // channel rows per task in contiguous maps
constexpr int64_t kImageRows = 8;      // image rows per backward task in channels-last maps

// Channels-last maps (and channel slices of them) have unit channel stride; every
// other flattenable map is walked row by row along (H, W).
bool walk_by_pixel(const MapLayout& g) { return g.s_c == 1 && g.s_hw != 1 && g.channels > 1; }

// ---------------------------------------------------------------------------
// Forward: per-instance means
// ---------------------------------------------------------------------------

// How a task reads its channels: kRowGroup rows of a contiguous map, or a block of
// up to kChannelBlock channels of a channels-last one (N > 0: a full block, a
// width the compiler unrolls and vectorises).
template <typename scalar_t>
struct RowGroup {
  static constexpr int64_t kWidth = kRowGroup;
  const scalar_t* rows[kRowGroup];
  int64_t s_hw;
  // acc[k] += x[channel k, pixel p] for p in [p0, p1): one independent chain per row.
  template <typename T>
  inline void add(int64_t p0, int64_t p1, T acc[]) const {
    if (s_hw == 1) {
      for (int64_t p = p0; p < p1; ++p) {
        for (int64_t k = 0; k < kRowGroup; ++k) acc[k] += static_cast<T>(rows[k][p]);
      }
    } else {
      for (int64_t p = p0; p < p1; ++p) {
        for (int64_t k = 0; k < kRowGroup; ++k) acc[k] += static_cast<T>(rows[k][p * s_hw]);
      }
    }
  }
};

template <typename scalar_t, int64_t N>
struct ChannelBlock {
  static constexpr int64_t kWidth = kChannelBlock;
  const scalar_t* xb;
  int64_t s_hw, nc;
  template <typename T>
  inline void add(int64_t p0, int64_t p1, T acc[]) const {
    const int64_t width = N > 0 ? N : nc;
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* px = xb + p * s_hw;
      for (int64_t k = 0; k < width; ++k) acc[k] += static_cast<T>(px[k]);
    }
  }
};

// out[b, l, c0 + k] = sums[l * width + k] / count[b, l] (0 for an empty instance).
template <typename scalar_t, typename acc>
inline void write_means(const std::vector<double>& sums, int64_t width, int64_t nc, const acc* counts, int64_t b,
                        int64_t c0, int64_t channels, int64_t num_instances, scalar_t* out) {
  for (int64_t l = 0; l < num_instances; ++l) {
    const acc n = counts[b * num_instances + l];
    for (int64_t k = 0; k < nc; ++k) {
      const double v = n > 0 ? sums[l * width + k] / n : 0.0;
      out[(b * num_instances + l) * channels + c0 + k] = static_cast<scalar_t>(v);
    }
  }
}

// One task per (b, group of channels): a contiguous map in groups of kRowGroup rows
// (each run decoded once for the group), a channels-last one in blocks of
// kChannelBlock channels (each pixel's block one short contiguous read).
template <typename scalar_t>
void forward_kernel(const scalar_t* x, const MapLayout& g, const IdRuns& runs, const acc_t<scalar_t>* counts,
                    int64_t num_instances, scalar_t* out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const bool by_pixel = walk_by_pixel(g);
  const int64_t width = by_pixel ? kChannelBlock : kRowGroup;
  const int64_t groups = (g.channels + width - 1) / width;
  at::parallel_for(0, g.batch * groups, 1, [&](int64_t t0, int64_t t1) {
    std::vector<double> sums(num_instances * width);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / groups, c0 = (t % groups) * width;
      const int64_t nc = std::min(width, g.channels - c0);
      std::fill(sums.begin(), sums.end(), 0.0);
      const scalar_t* base = x + b * g.s_b + c0 * g.s_c;
      if (!by_pixel) {
        RowGroup<scalar_t> in{{}, g.s_hw};
        cpu::group_rows<kRowGroup>(base, g.s_c, nc, in.rows);
        cpu::sum_instances<opmath_t>(in, runs, b, sums.data());
      } else if (nc == kChannelBlock) {
        cpu::sum_instances<opmath_t>(ChannelBlock<scalar_t, kChannelBlock>{base, g.s_hw, nc}, runs, b, sums.data());
      } else {
        cpu::sum_instances<opmath_t>(ChannelBlock<scalar_t, 0>{base, g.s_hw, nc}, runs, b, sums.data());
      }
      write_means(sums, width, nc, counts, b, c0, g.channels, num_instances, out);
    }
  });
}

// ---------------------------------------------------------------------------
// Backward: dx = dy[inst] / count[inst]
// ---------------------------------------------------------------------------

// table[b, l, c] = dy[b, l, c] / count[b, l] in x's dtype (0 for an empty
// instance): [B, L, C], small, built on the calling thread.
template <typename scalar_t>
at::Tensor scaled_table(const at::Tensor& dy, const at::Tensor& counts) {
  using acc = acc_t<scalar_t>;
  at::Tensor table = at::empty_like(dy);
  const scalar_t* d = dy.const_data_ptr<scalar_t>();
  const acc* n = counts.const_data_ptr<acc>();
  scalar_t* t = table.data_ptr<scalar_t>();
  const int64_t rows = dy.size(0) * dy.size(1), channels = dy.size(2);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const acc v = static_cast<acc>(d[r * channels + c]);
      t[r * channels + c] = static_cast<scalar_t>(n[r] > 0 ? v / n[r] : acc(0));
    }
  }
  return table;
}

// Contiguous dx, channels b, [c0, c0 + kRowGroup): a run is one fill per channel
// row, an image row of short runs one gather from the table per channel row.
template <typename scalar_t>
void fill_channel_rows(const scalar_t* table, const IdRuns& runs, int64_t num_instances, scalar_t* dx,
                       const MapLayout& g, int64_t b, int64_t c0) {
  const int64_t nc = std::min(kRowGroup, g.channels - c0);
  scalar_t* rows[kRowGroup];
  cpu::group_rows<kRowGroup>(dx + b * g.s_b + c0 * g.s_c, g.s_c, nc, rows);
  const scalar_t* tb = table + b * num_instances * g.channels + c0;
  const int32_t* ids = runs.ids_of(b);
  const int64_t s = g.s_hw, C = g.channels;
  std::vector<scalar_t> local;
  runs.for_each_span(
      b, 0, runs.height,
      [&](int64_t begin, int64_t end, int64_t id) {
        const scalar_t* v = tb + id * C;
        for (int64_t k = 0; k < kRowGroup; ++k) {
          const scalar_t value = v[std::min(k, nc - 1)];
          if (s == 1) {
            std::fill(rows[k] + begin, rows[k] + end, value);
          } else {
            for (int64_t p = begin; p < end; ++p) rows[k][p * s] = value;
          }
        }
      },
      [&](int64_t begin, int64_t end) {
        if (local.empty()) {  // the group's table entries, [kRowGroup, L], for gathers
          local.resize(kRowGroup * num_instances);
          for (int64_t l = 0; l < num_instances; ++l) {
            for (int64_t k = 0; k < kRowGroup; ++k) local[k * num_instances + l] = tb[l * C + std::min(k, nc - 1)];
          }
        }
        for (int64_t k = 0; k < kRowGroup; ++k) {
          const scalar_t* __restrict v = local.data() + k * num_instances;
          scalar_t* __restrict dst = rows[k];
#ifdef INADE_REGISTER_TABLES
          if constexpr (std::is_same_v<scalar_t, float>) {
            if (s == 1 && num_instances <= cpu::RegisterTable::kMaxEntries) {
              const cpu::RegisterTable table(v, num_instances);
              cpu::for_each_block16(begin, end, [&](int64_t p, __mmask16 m) {
                _mm512_mask_storeu_ps(dst + p, m, table.lookup(_mm512_maskz_loadu_epi32(m, ids + p)));
              });
              continue;
            }
          }
#endif
#pragma omp simd
          for (int64_t p = begin; p < end; ++p) dst[p * s] = v[ids[p]];
        }
      });
}

// Channels-last dx, image b, image rows [h0, h0 + kImageRows): each pixel copies its
// instance's contiguous row of the table.
template <typename scalar_t>
void copy_pixel_rows(const scalar_t* table, const IdRuns& runs, int64_t num_instances, scalar_t* dx,
                     const MapLayout& g, int64_t b, int64_t h0) {
  const scalar_t* tb = table + b * num_instances * g.channels;
  scalar_t* dxb = dx + b * g.s_b;
  runs.for_each_run(b, h0, std::min(runs.height, h0 + kImageRows), [&](int64_t begin, int64_t end, int64_t id) {
    const scalar_t* src = tb + id * g.channels;
    for (int64_t p = begin; p < end; ++p) std::copy(src, src + g.channels, dxb + p * g.s_hw);
  });
}

// One task per (b, kRowGroup channel rows) of a contiguous dx, per (b, kImageRows
// image rows) of a channels-last one.
template <typename scalar_t>
void backward_kernel(const scalar_t* table, const IdRuns& runs, int64_t num_instances, scalar_t* dx,
                     const MapLayout& g) {
  if (walk_by_pixel(g)) {
    const int64_t chunks = (runs.height + kImageRows - 1) / kImageRows;
    cpu::parallel_tasks(g.batch * chunks, [&](int64_t t) {
      copy_pixel_rows(table, runs, num_instances, dx, g, t / chunks, (t % chunks) * kImageRows);
    });
  } else {
    const int64_t groups = (g.channels + kRowGroup - 1) / kRowGroup;
    cpu::parallel_tasks(g.batch * groups, [&](int64_t t) {
      fill_channel_rows(table, runs, num_instances, dx, g, t / groups, (t % groups) * kRowGroup);
    });
  }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

void check_index_map(const at::Tensor& inst) {
  TORCH_CHECK(inst.device().is_cpu() && inst.dim() == 3 && inst.is_contiguous(),
              "inade._C: inst must be a contiguous CPU [B, H, W] tensor");
}

IdRuns runs_of(const at::Tensor& inst) {
  check_index_map(inst);
  return cpu::encode_runs(inst, inst.size(0), inst.size(1), inst.size(2));
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& inst, int64_t num_instances) {
  cpu::check_map(x, "x");
  const IdRuns runs = runs_of(inst);
  TORCH_CHECK(x.size(0) == inst.size(0) && x.size(2) == inst.size(1) && x.size(3) == inst.size(2),
              "inade._C: x and inst must share B, H, W");
  const at::Tensor counts = cpu::counts_of(runs, num_instances, cpu::acc_type(x.scalar_type()));
  at::Tensor out = at::empty({x.size(0), num_instances, x.size(1)}, x.options());
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_avg_pool_forward", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), cpu::layout_of(x), runs,
                             counts.const_data_ptr<acc_t<scalar_t>>(), num_instances, out.data_ptr<scalar_t>());
  });
  return {out, counts};
}

at::Tensor backward(const at::Tensor& dy, const at::Tensor& inst, const at::Tensor& counts, bool channels_last) {
  const IdRuns runs = runs_of(inst);
  TORCH_CHECK(counts.is_contiguous() && counts.dim() == 2 && counts.size(0) == inst.size(0),
              "inade._C: counts must be a contiguous [B, L] tensor");
  const int64_t num_instances = counts.size(1);
  TORCH_CHECK(dy.is_contiguous() && dy.dim() == 3 && dy.size(0) == inst.size(0) && dy.size(1) == num_instances,
              "inade._C: dy must be a contiguous [B, L, C] tensor");
  TORCH_CHECK(counts.scalar_type() == cpu::acc_type(dy.scalar_type()), "inade._C: counts has the wrong dtype");
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor dx = at::empty({inst.size(0), dy.size(2), inst.size(1), inst.size(2)}, dy.options(), format);
  const MapLayout g = cpu::layout_of(dx);
  INADE_DISPATCH_FLOATING(dy.scalar_type(), "instance_avg_pool_backward", [&] {
    const at::Tensor table = scaled_table<scalar_t>(dy, counts);
    backward_kernel(table.const_data_ptr<scalar_t>(), runs, num_instances, dx.data_ptr<scalar_t>(), g);
  });
  return dx;
}

}  // namespace

void register_instance_avg_pool(pybind11::module& m) {
  m.def("instance_avg_pool_forward", &forward, "per-instance means [B, L, C] of x, and pixel counts [B, L]");
  m.def("instance_avg_pool_backward", &backward, "gradient dx = dy[inst] / count[inst]");
}

}  // namespace inade
