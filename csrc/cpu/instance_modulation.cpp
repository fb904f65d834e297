// CPU kernels of instance_modulation (paper Eq. 1-2 with batch norm).
//
// Layout: x, dy: [B, C, H, W] whose (H, W) is one axis of stride s_hw (contiguous:
// 1, channels-last: C); inst: [B, H*W] contiguous int32/int64; gamma, beta:
// [B, L, C]. Work is split over (b, c) rows (or over c where a row's sums meet
// across the batch) with at::parallel_for; each row keeps its instance's table
// entries in a small local array, and the forward and dx passes walk the runs of
// equal id (found once per call) so their inner loops are plain FMAs.
// Accumulation is in double for the statistics and the per-instance sums.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops.h"

namespace inade {
namespace {

struct RowLayout {
  int64_t batch, channels, hw;  // sizes
  int64_t s_b, s_c, s_hw;       // strides of the feature map
};

RowLayout layout_of(const at::Tensor& t) {
  return {t.size(0), t.size(1), t.size(2) * t.size(3), t.stride(0), t.stride(1), t.stride(3)};
}

at::ScalarType acc_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Every kernel walks one (b, c) row at a time, with the row's table entries in a
// small local array. The contiguity of a row is a template parameter, so
// `offset(k)` is `k` when rows are contiguous.
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

// Runs of equal id in each image's index map, found once per call and shared by
// every channel of that image: inside a run the table entry is a scalar, so the
// inner loop is a plain (vectorised) FMA over x.
struct Runs {
  std::vector<int64_t> begin, id;  // run q starts at pixel begin[q] and has instance id[q]
  std::vector<int64_t> first;      // the runs of image b are [first[b], first[b + 1])
  int64_t hw = 0;
  int64_t end(int64_t b, int64_t q) const { return q + 1 < first[b + 1] ? begin[q + 1] : hw; }
};

template <typename index_t>
Runs runs_of(const index_t* inst, int64_t batch, int64_t hw) {
  Runs r;
  r.hw = hw;
  for (int64_t b = 0; b < batch; ++b) {
    r.first.push_back(static_cast<int64_t>(r.id.size()));
    const index_t* ids = inst + b * hw;
    for (int64_t k = 0; k < hw; ++k) {
      if (k == 0 || ids[k] != ids[k - 1]) {
        r.begin.push_back(k);
        r.id.push_back(static_cast<int64_t>(ids[k]));
      }
    }
  }
  r.first.push_back(static_cast<int64_t>(r.id.size()));
  return r;
}

template <typename scalar_t>
void stats_kernel(const scalar_t* x, const RowLayout& g, double* mean, double* var) {
  const double n = static_cast<double>(g.batch * g.hw);
  at::parallel_for(0, g.channels, 1, [&](int64_t c0, int64_t c1) {
    with_contiguity(g.s_hw == 1, [&](auto contig) {
      const Row<decltype(contig)::value> off{g.s_hw};
      for (int64_t c = c0; c < c1; ++c) {
        double sum = 0, sum_sq = 0;
        for (int64_t b = 0; b < g.batch; ++b) {
          const scalar_t* row = x + b * g.s_b + c * g.s_c;
#pragma omp simd reduction(+ : sum, sum_sq)
          for (int64_t k = 0; k < g.hw; ++k) {
            const double v = static_cast<double>(row[off(k)]);
            sum += v;
            sum_sq += v * v;
          }
        }
        mean[c] = sum / n;
        var[c] = std::max(sum_sq / n - mean[c] * mean[c], 0.0);
      }
    });
  });
}

template <typename scalar_t, typename index_t, typename acc_t>
void apply_kernel(const scalar_t* x, const index_t* inst, const scalar_t* gamma, const scalar_t* beta,
                  const acc_t* mean, const acc_t* invstd, scalar_t* y, const RowLayout& g, const RowLayout& gy,
                  int64_t num_instances) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Runs runs = runs_of(inst, g.batch, g.hw);
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t r0, int64_t r1) {
    std::vector<opmath_t> scale(num_instances), shift(num_instances);
    with_contiguity(g.s_hw == 1 && gy.s_hw == 1, [&](auto contig) {
      const Row<decltype(contig)::value> at_x{g.s_hw}, at_y{gy.s_hw};
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g.channels, c = r % g.channels;
        // y = x * scale[id] + shift[id] folds the normalisation into the table.
        const opmath_t m = mean[c], is = invstd[c];
        for (int64_t l = 0; l < num_instances; ++l) {
          const int64_t t = (b * num_instances + l) * g.channels + c;
          scale[l] = is * static_cast<opmath_t>(gamma[t]);
          shift[l] = static_cast<opmath_t>(beta[t]) - m * scale[l];
        }
        const scalar_t* xr = x + b * g.s_b + c * g.s_c;
        scalar_t* yr = y + b * gy.s_b + c * gy.s_c;
        for (int64_t q = runs.first[b]; q < runs.first[b + 1]; ++q) {
          const opmath_t s = scale[runs.id[q]], t = shift[runs.id[q]];
          const int64_t j = runs.end(b, q);
#pragma omp simd
          for (int64_t k = runs.begin[q]; k < j; ++k) {
            yr[at_y(k)] = static_cast<scalar_t>(static_cast<opmath_t>(xr[at_x(k)]) * s + t);
          }
        }
      }
    });
  });
}

template <typename scalar_t, typename index_t, typename acc_t>
void backward_reduce_kernel(const scalar_t* dy, const scalar_t* x, const index_t* inst, const acc_t* mean,
                            const acc_t* invstd, acc_t* dgamma, acc_t* dbeta, const RowLayout& gd,
                            const RowLayout& g, int64_t num_instances) {
  // Each instance has kLanes partial sums: inside a run, every group of kLanes
  // pixels adds into them with one vector operation (no dependency between
  // neighbouring pixels); the partial sums are added in double at the end of the row.
  constexpr int64_t kLanes = 8;
  using lane_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const Runs runs = runs_of(inst, g.batch, g.hw);
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t r0, int64_t r1) {
    std::vector<lane_t> lane_dy_x(num_instances * kLanes), lane_dy(num_instances * kLanes);
    with_contiguity(g.s_hw == 1 && gd.s_hw == 1, [&](auto contig) {
      const Row<decltype(contig)::value> at_x{g.s_hw}, at_d{gd.s_hw};
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g.channels, c = r % g.channels;
        std::fill(lane_dy_x.begin(), lane_dy_x.end(), lane_t(0));
        std::fill(lane_dy.begin(), lane_dy.end(), lane_t(0));
        const scalar_t* xr = x + b * g.s_b + c * g.s_c;
        const scalar_t* dyr = dy + b * gd.s_b + c * gd.s_c;
        const lane_t m = static_cast<lane_t>(mean[c]);
        for (int64_t q = runs.first[b]; q < runs.first[b + 1]; ++q) {
          lane_t* ax = lane_dy_x.data() + runs.id[q] * kLanes;
          lane_t* ad = lane_dy.data() + runs.id[q] * kLanes;
          const int64_t j = runs.end(b, q);
          int64_t k = runs.begin[q];
          for (; k + kLanes <= j; k += kLanes) {  // whole groups of kLanes pixels: one vector op each
#pragma omp simd
            for (int64_t u = 0; u < kLanes; ++u) {
              const lane_t v = static_cast<lane_t>(dyr[at_d(k + u)]);
              ax[u] += v * (static_cast<lane_t>(xr[at_x(k + u)]) - m);
              ad[u] += v;
            }
          }
          for (; k < j; ++k) {
            const lane_t v = static_cast<lane_t>(dyr[at_d(k)]);
            ax[k & (kLanes - 1)] += v * (static_cast<lane_t>(xr[at_x(k)]) - m);
            ad[k & (kLanes - 1)] += v;
          }
        }
        const double is = invstd[c];
        for (int64_t l = 0; l < num_instances; ++l) {
          double a = 0, d = 0;
          for (int64_t q = 0; q < kLanes; ++q) {
            a += lane_dy_x[l * kLanes + q];
            d += lane_dy[l * kLanes + q];
          }
          const int64_t t = (b * num_instances + l) * g.channels + c;
          dgamma[t] = static_cast<acc_t>(is * a);  // sum dy * xhat
          dbeta[t] = static_cast<acc_t>(d);
        }
      }
    });
  });
}

template <typename scalar_t, typename index_t, typename acc_t>
void backward_dx_kernel(const scalar_t* dy, const scalar_t* x, const index_t* inst, const scalar_t* gamma,
                        const acc_t* mean, const acc_t* invstd, const acc_t* mean_dxhat, const acc_t* mean_dxhat_xhat,
                        bool batch_stats, scalar_t* dx, const RowLayout& gd, const RowLayout& g,
                        const RowLayout& gdx, int64_t num_instances) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Runs runs = runs_of(inst, g.batch, g.hw);
  at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t r0, int64_t r1) {
    std::vector<opmath_t> scale(num_instances);
    with_contiguity(g.s_hw == 1 && gd.s_hw == 1 && gdx.s_hw == 1, [&](auto contig) {
      const Row<decltype(contig)::value> at_x{g.s_hw}, at_d{gd.s_hw}, at_dx{gdx.s_hw};
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / g.channels, c = r % g.channels;
        const opmath_t is = invstd[c];
        for (int64_t l = 0; l < num_instances; ++l) {
          scale[l] = is * static_cast<opmath_t>(gamma[(b * num_instances + l) * g.channels + c]);
        }
        // dx = dy * invstd * gamma[id] + x * a + k, with a and k zero for fixed statistics.
        opmath_t a = 0, k0 = 0;
        if (batch_stats) {
          const opmath_t m = mean[c], m1 = mean_dxhat[c], m2 = mean_dxhat_xhat[c];
          a = -is * is * m2;
          k0 = -is * m1 + m * is * is * m2;
        }
        const scalar_t* xr = x + b * g.s_b + c * g.s_c;
        const scalar_t* dyr = dy + b * gd.s_b + c * gd.s_c;
        scalar_t* dxr = dx + b * gdx.s_b + c * gdx.s_c;
        for (int64_t q = runs.first[b]; q < runs.first[b + 1]; ++q) {
          const opmath_t s = scale[runs.id[q]];
          const int64_t j = runs.end(b, q);
#pragma omp simd
          for (int64_t k = runs.begin[q]; k < j; ++k) {
            dxr[at_dx(k)] = static_cast<scalar_t>(static_cast<opmath_t>(dyr[at_d(k)]) * s +
                                                  static_cast<opmath_t>(xr[at_x(k)]) * a + k0);
          }
        }
      }
    });
  });
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "inade._C: ", name, " must be a CPU tensor");
}

void check_hw_flat(const at::Tensor& t, const char* name) {
  check_cpu(t, name);
  TORCH_CHECK(t.dim() == 4, "inade._C: ", name, " must be [B, C, H, W]");
  TORCH_CHECK(t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3), "inade._C: ", name,
              " must have (H, W) flattenable (contiguous or channels-last)");
}

std::tuple<at::Tensor, at::Tensor> stats(const at::Tensor& x) {
  check_hw_flat(x, "x");
  auto opts = x.options().dtype(at::kDouble);
  at::Tensor mean = at::empty({x.size(1)}, opts), var = at::empty({x.size(1)}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulation_stats", [&] {
    stats_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), layout_of(x), mean.data_ptr<double>(), var.data_ptr<double>());
  });
  return {mean.to(acc_type(x)), var.to(acc_type(x))};
}

at::Tensor apply(const at::Tensor& x, const at::Tensor& inst, const at::Tensor& gamma, const at::Tensor& beta,
                 const at::Tensor& mean, const at::Tensor& invstd) {
  check_hw_flat(x, "x");
  TORCH_CHECK(inst.is_contiguous() && gamma.is_contiguous() && beta.is_contiguous(),
              "inade._C: inst, gamma and beta must be contiguous");
  at::Tensor y = at::empty_like(x);
  const int64_t num_instances = gamma.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulation_apply", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    AT_DISPATCH_INDEX_TYPES(inst.scalar_type(), "modulation_apply", [&] {
      apply_kernel<scalar_t, index_t, acc_t>(x.const_data_ptr<scalar_t>(), inst.const_data_ptr<index_t>(),
                                             gamma.const_data_ptr<scalar_t>(), beta.const_data_ptr<scalar_t>(),
                                             mean.const_data_ptr<acc_t>(), invstd.const_data_ptr<acc_t>(),
                                             y.data_ptr<scalar_t>(), layout_of(x), layout_of(y), num_instances);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_reduce(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& inst,
                                                   const at::Tensor& mean, const at::Tensor& invstd,
                                                   int64_t num_instances) {
  check_hw_flat(x, "x");
  check_hw_flat(dy, "dy");
  TORCH_CHECK(inst.is_contiguous(), "inade._C: inst must be contiguous");
  auto opts = x.options().dtype(acc_type(x));
  at::Tensor dgamma = at::empty({x.size(0), num_instances, x.size(1)}, opts);
  at::Tensor dbeta = at::empty_like(dgamma);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulation_backward_reduce", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    AT_DISPATCH_INDEX_TYPES(inst.scalar_type(), "modulation_backward_reduce", [&] {
      backward_reduce_kernel<scalar_t, index_t, acc_t>(
          dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), inst.const_data_ptr<index_t>(),
          mean.const_data_ptr<acc_t>(), invstd.const_data_ptr<acc_t>(), dgamma.data_ptr<acc_t>(),
          dbeta.data_ptr<acc_t>(), layout_of(dy), layout_of(x), num_instances);
    });
  });
  return {dgamma, dbeta};
}

at::Tensor backward_dx(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& inst, const at::Tensor& gamma,
                       const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& mean_dxhat,
                       const at::Tensor& mean_dxhat_xhat, bool batch_stats) {
  check_hw_flat(x, "x");
  check_hw_flat(dy, "dy");
  TORCH_CHECK(inst.is_contiguous() && gamma.is_contiguous(), "inade._C: inst and gamma must be contiguous");
  at::Tensor dx = at::empty_like(x);
  const int64_t num_instances = gamma.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulation_backward_dx", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    AT_DISPATCH_INDEX_TYPES(inst.scalar_type(), "modulation_backward_dx", [&] {
      backward_dx_kernel<scalar_t, index_t, acc_t>(
          dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), inst.const_data_ptr<index_t>(),
          gamma.const_data_ptr<scalar_t>(), mean.const_data_ptr<acc_t>(), invstd.const_data_ptr<acc_t>(),
          mean_dxhat.const_data_ptr<acc_t>(), mean_dxhat_xhat.const_data_ptr<acc_t>(), batch_stats,
          dx.data_ptr<scalar_t>(), layout_of(dy), layout_of(x), layout_of(dx), num_instances);
    });
  });
  return dx;
}

}  // namespace

void register_instance_modulation(pybind11::module& m) {
  m.def("instance_modulation_stats", &stats, "per-channel (mean, biased var) of x [B, C, H, W]");
  m.def("instance_modulation_apply", &apply, "y = xhat * gamma[inst] + beta[inst]");
  m.def("instance_modulation_backward_reduce", &backward_reduce, "per-instance sums (dgamma, dbeta) [B, L, C]");
  m.def("instance_modulation_backward_dx", &backward_dx, "gradient of x");
  // Old names, kept while inade/ops still calls them.
  m.def("modulation_stats", &stats);
  m.def("modulation_apply", &apply);
  m.def("modulation_backward_reduce", &backward_reduce);
  m.def("modulation_backward_dx", &backward_dx);
}

}  // namespace inade
