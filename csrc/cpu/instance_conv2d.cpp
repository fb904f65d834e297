// CPU kernels of instance_conv2d (instance-aware partial convolution).
//
// A tap (u, v) of the window of output pixel (i, j) counts only where its input
// pixel (i*s - p + u, j*s - p + v) lies inside the image and has the instance id
// of the window's centre pixel (i*s - p + k/2, j*s - p + k/2); ids are
// zero-padded. With renorm, a window's taps are scaled by k^2 / (taps that count).
//
// Every pass walks the output in tiles of whole output rows of one image. A tile
// builds its masked patch matrix A [C_in*k^2, P] (P = pixels of the tile) on the
// fly and multiplies it with the weight matrix W [C_out, C_in*k^2] with at::mm_out:
//     forward      y_tile   = W @ A (+ bias)
//     input grad   dA       = W^T @ dy_tile, scattered back onto dx (col2im)
//     weight grad  dW      += dy_tile @ A^T
// so memory stays bounded by one tile per thread (never an unfold of the image).
// Tiles run in parallel with at::parallel_for (the GEMM inside a tile is then
// single-threaded). For a contiguous x the patch rows are ordered (c, u, v) and
// each row is one strided copy of an input row; for a channels-last x they are
// ordered (u, v, c), the patch is stored transposed [P, k^2*C_in], and each tap
// copies C_in contiguous values. Half and bfloat16 are computed in float32.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "cpu/common.h"
#include "ops.h"

namespace inade {
namespace {

struct Geometry {
  int64_t batch, c_in, c_out, height, width, h_out, w_out, k, stride, pad;
  bool channels_last;  // x (and dx, y) are channels-last: patches ordered (u, v, c)

  int64_t taps() const { return k * k; }
  int64_t patch() const { return c_in * k * k; }  // K of the GEMMs
  int64_t pixels_out() const { return h_out * w_out; }
};

// Output rows [r0, r1) of image b.
struct Tile {
  int64_t b, r0, r1;
  int64_t pixels(const Geometry& g) const { return (r1 - r0) * g.w_out; }
};

// Strides of a [B, C, H, W] tensor.
struct Strides4 {
  int64_t b, c, h, w;
};

Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// Output columns [lo, hi) whose tap at offset `shift` (= u - p) lands inside [0, size).
inline std::pair<int64_t, int64_t> inside_range(int64_t shift, int64_t stride, int64_t size, int64_t n_out) {
  const int64_t lo = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
  const int64_t hi = std::min(n_out, (size - shift + stride - 1) / stride);
  return {std::min(lo, n_out), std::max(hi, std::min(lo, n_out))};
}

// Output rows per tile: about `target` pixels, at least ceil(k / s) rows so that
// tiles two apart never touch the same input row (the input gradient relies on it).
int64_t rows_per_tile(const Geometry& g) {
  const int64_t target = std::max<int64_t>(128, (int64_t{1} << 18) / std::max<int64_t>(1, g.patch()));
  const int64_t rows = std::max<int64_t>(1, target / g.w_out);
  return std::min(g.h_out, std::max(rows, (g.k + g.stride - 1) / g.stride));
}

// Tiles per parallel chunk: enough multiply-adds (about 2^20) that a chunk outweighs
// the cost of waking a thread; small problems run on the calling thread.
int64_t tile_grain(const Geometry& g) {
  const int64_t work = std::max<int64_t>(1, rows_per_tile(g) * g.w_out * g.patch() * g.c_out);
  return std::max<int64_t>(1, (int64_t{1} << 20) / work);
}

std::vector<Tile> make_tiles(const Geometry& g, int parity = -1) {
  const int64_t rows = rows_per_tile(g);
  std::vector<Tile> tiles;
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t r0 = 0, n = 0; r0 < g.h_out; r0 += rows, ++n) {
      if (parity < 0 || n % 2 == parity) tiles.push_back({b, r0, std::min(g.h_out, r0 + rows)});
    }
  }
  return tiles;
}

// m [k^2, P]: weight of every tap of every window of the tile (0 or 1, times
// k^2 / count with renorm). Out-of-image taps get 0, so no pass reads them.
template <typename opmath_t>
void tap_weights(const int64_t* ids, const Geometry& g, const Tile& t, bool renorm, opmath_t* m) {
  const int64_t P = t.pixels(g), half = g.k / 2;
  auto inside = [&](int64_t y, int64_t x) { return y >= 0 && y < g.height && x >= 0 && x < g.width; };
  for (int64_t r = t.r0; r < t.r1; ++r) {
    for (int64_t j = 0; j < g.w_out; ++j) {
      const int64_t p = (r - t.r0) * g.w_out + j;
      const int64_t y0 = r * g.stride - g.pad, x0 = j * g.stride - g.pad;
      const int64_t centre = inside(y0 + half, x0 + half) ? static_cast<int64_t>(ids[(y0 + half) * g.width + x0 + half]) : 0;
      int64_t count = 0;
      for (int64_t u = 0; u < g.k; ++u) {
        for (int64_t v = 0; v < g.k; ++v) {
          const bool on = inside(y0 + u, x0 + v) && static_cast<int64_t>(ids[(y0 + u) * g.width + x0 + v]) == centre;
          m[(u * g.k + v) * P + p] = on ? opmath_t(1) : opmath_t(0);
          count += on;
        }
      }
      if (renorm) {
        const opmath_t scale = count > 0 ? opmath_t(g.taps()) / opmath_t(count) : opmath_t(0);
        for (int64_t tap = 0; tap < g.taps(); ++tap) m[tap * P + p] *= scale;
      }
    }
  }
}

// Contiguous x: A[(c*k^2 + tap) * P + p] = x[b, c, iy, ix] * m[tap, p].
template <typename scalar_t, typename opmath_t>
void fill_patches_rows(const scalar_t* x, const Strides4& sx, const Geometry& g, const Tile& t, const opmath_t* m,
                       opmath_t* __restrict a) {
  const int64_t P = t.pixels(g);
  for (int64_t c = 0; c < g.c_in; ++c) {
    const scalar_t* xc = x + t.b * sx.b + c * sx.c;
    for (int64_t u = 0; u < g.k; ++u) {
      for (int64_t v = 0; v < g.k; ++v) {
        const int64_t tap = u * g.k + v;
        const auto [lo, hi] = inside_range(v - g.pad, g.stride, g.width, g.w_out);
        for (int64_t r = t.r0; r < t.r1; ++r) {
          opmath_t* __restrict dst = a + (c * g.taps() + tap) * P + (r - t.r0) * g.w_out;
          const opmath_t* __restrict mr = m + tap * P + (r - t.r0) * g.w_out;
          const int64_t iy = r * g.stride - g.pad + u;
          if (iy < 0 || iy >= g.height || lo >= hi) {
            std::fill(dst, dst + g.w_out, opmath_t(0));
            continue;
          }
          std::fill(dst, dst + lo, opmath_t(0));
          std::fill(dst + hi, dst + g.w_out, opmath_t(0));
          const scalar_t* src = xc + iy * sx.h + (lo * g.stride + v - g.pad) * sx.w;
          const int64_t step = g.stride * sx.w;
          if (step == 1) {
            for (int64_t j = lo; j < hi; ++j) dst[j] = static_cast<opmath_t>(src[j - lo]) * mr[j];
          } else {
            for (int64_t j = lo; j < hi; ++j) dst[j] = static_cast<opmath_t>(src[(j - lo) * step]) * mr[j];
          }
        }
      }
    }
  }
}

// Channels-last x: A^T[p * K + tap * C_in + c] = x[b, c, iy, ix] * m[tap, p].
template <typename scalar_t, typename opmath_t>
void fill_patches_channels(const scalar_t* x, const Strides4& sx, const Geometry& g, const Tile& t, const opmath_t* m,
                           opmath_t* __restrict a) {
  const int64_t P = t.pixels(g), K = g.patch();
  for (int64_t p = 0; p < P; ++p) {
    const int64_t r = t.r0 + p / g.w_out, j = p % g.w_out;
    for (int64_t tap = 0; tap < g.taps(); ++tap) {
      opmath_t* __restrict dst = a + p * K + tap * g.c_in;
      const opmath_t w = m[tap * P + p];
      if (w == opmath_t(0)) {
        std::fill(dst, dst + g.c_in, opmath_t(0));
        continue;
      }
      const int64_t iy = r * g.stride - g.pad + tap / g.k, ix = j * g.stride - g.pad + tap % g.k;
      const scalar_t* src = x + t.b * sx.b + iy * sx.h + ix * sx.w;  // sx.c == 1
      for (int64_t c = 0; c < g.c_in; ++c) dst[c] = static_cast<opmath_t>(src[c]) * w;
    }
  }
}

// Contiguous dx: dx[b, c, iy, ix] += dA[(c*k^2 + tap) * P + p] * m[tap, p] (the transpose of fill_patches_rows).
template <typename opmath_t>
void scatter_patches_rows(const opmath_t* da, const Geometry& g, const Tile& t, const opmath_t* m, opmath_t* dx,
                          const Strides4& sd) {
  const int64_t P = t.pixels(g);
  for (int64_t c = 0; c < g.c_in; ++c) {
    opmath_t* dxc = dx + t.b * sd.b + c * sd.c;
    for (int64_t u = 0; u < g.k; ++u) {
      for (int64_t v = 0; v < g.k; ++v) {
        const int64_t tap = u * g.k + v;
        const auto [lo, hi] = inside_range(v - g.pad, g.stride, g.width, g.w_out);
        for (int64_t r = t.r0; r < t.r1; ++r) {
          const int64_t iy = r * g.stride - g.pad + u;
          if (iy < 0 || iy >= g.height || lo >= hi) continue;
          const opmath_t* __restrict src = da + (c * g.taps() + tap) * P + (r - t.r0) * g.w_out;
          const opmath_t* __restrict mr = m + tap * P + (r - t.r0) * g.w_out;
          opmath_t* __restrict dst = dxc + iy * sd.h + (lo * g.stride + v - g.pad) * sd.w;
          const int64_t step = g.stride * sd.w;
          if (step == 1) {
            for (int64_t j = lo; j < hi; ++j) dst[j - lo] += src[j] * mr[j];
          } else {
            for (int64_t j = lo; j < hi; ++j) dst[(j - lo) * step] += src[j] * mr[j];
          }
        }
      }
    }
  }
}

// Channels-last dx: dx[b, c, iy, ix] += dA^T[p * K + tap * C_in + c] * m[tap, p].
template <typename opmath_t>
void scatter_patches_channels(const opmath_t* da, const Geometry& g, const Tile& t, const opmath_t* m, opmath_t* dx,
                              const Strides4& sd) {
  const int64_t P = t.pixels(g), K = g.patch();
  for (int64_t p = 0; p < P; ++p) {
    const int64_t r = t.r0 + p / g.w_out, j = p % g.w_out;
    for (int64_t tap = 0; tap < g.taps(); ++tap) {
      const opmath_t w = m[tap * P + p];
      if (w == opmath_t(0)) continue;
      const int64_t iy = r * g.stride - g.pad + tap / g.k, ix = j * g.stride - g.pad + tap % g.k;
      opmath_t* __restrict dst = dx + t.b * sd.b + iy * sd.h + ix * sd.w;  // sd.c == 1
      const opmath_t* __restrict src = da + p * K + tap * g.c_in;
      for (int64_t c = 0; c < g.c_in; ++c) dst[c] += src[c] * w;
    }
  }
}

// Scratch of one worker: tap weights [k^2, P], one patch-sized buffer viewed as the
// [K, P] matrix of a tile, and (half / bfloat16 only) a [C_out, P] float32 buffer for
// the output tile or the converted dy tile.
template <typename opmath_t>
struct Scratch {
  at::Tensor taps, patch, out;
  Scratch(const Geometry& g, const at::TensorOptions& opts, bool with_out) {
    const int64_t max_p = rows_per_tile(g) * g.w_out;
    taps = at::empty({g.taps() * max_p}, opts);
    patch = at::empty({g.patch() * max_p}, opts);
    if (with_out) out = at::empty({g.c_out, max_p}, opts);
  }
  // The patch buffer as the [K, P] matrix A of a tile (stored transposed for channels-last).
  at::Tensor matrix(const Geometry& g, int64_t P) const {
    at::Tensor flat = patch.narrow(0, 0, g.patch() * P);
    return g.channels_last ? flat.view({P, g.patch()}).t() : flat.view({g.patch(), P});
  }
  opmath_t* taps_ptr() const { return taps.data_ptr<opmath_t>(); }
  opmath_t* patch_ptr() const { return patch.data_ptr<opmath_t>(); }
};

// Runs f(tile, scratch, worker) over the tiles with at::parallel_for. The scratch of
// every worker is allocated here, on the calling thread, and reused by all its tiles;
// the split of tiles over workers is static, so per-worker sums are deterministic.
// Returns the number of workers (the partial sums a caller must add up).
template <typename opmath_t, typename F>
int64_t parallel_tiles(const std::vector<Tile>& tiles, const Geometry& g, const at::TensorOptions& opts,
                       bool with_out, F&& f) {
  const int64_t n = static_cast<int64_t>(tiles.size()), grain = tile_grain(g);
  if (n == 0) return 0;
  const bool nested = at::in_parallel_region();  // then parallel_for runs inline on this thread
  const int64_t workers = nested ? 1 : std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / grain));
  std::vector<Scratch<opmath_t>> scratch;
  for (int64_t w = 0; w < workers; ++w) scratch.emplace_back(g, opts, with_out);
  auto body = [&](int64_t t0, int64_t t1) {
    at::NoGradGuard no_grad;  // worker threads do not inherit the caller's autograd state
    const int64_t worker = nested ? 0 : at::get_thread_num();
    for (int64_t i = t0; i < t1; ++i) f(tiles[i], scratch[worker], worker);
  };
  if (nested) {
    body(0, n);
  } else {
    at::parallel_for(0, n, grain, body);
  }
  return workers;
}

// The weight as the [C_out, K] matrix of the GEMMs, K ordered like the patches.
at::Tensor weight_matrix(const at::Tensor& weight, const Geometry& g, at::ScalarType opmath) {
  at::Tensor w = g.channels_last ? weight.permute({0, 2, 3, 1}) : weight;
  return w.reshape({g.c_out, g.patch()}).to(opmath).contiguous();
}

// [C_out, P] view of a tile of a [B, C_out, Ho, Wo] tensor whose (Ho, Wo) flatten.
at::Tensor tile_view(const at::Tensor& t, const Geometry& g, const Tile& tile) {
  return t.select(0, tile.b).view({g.c_out, g.pixels_out()}).narrow(1, tile.r0 * g.w_out, tile.pixels(g));
}

// The dy tile as a float matrix (converted into the scratch buffer for half / bfloat16).
template <typename opmath_t>
at::Tensor dy_matrix(const at::Tensor& dy, const Geometry& g, const Tile& t, const Scratch<opmath_t>& s) {
  at::Tensor view = tile_view(dy, g, t);
  if (!s.out.defined()) return view;
  at::Tensor buf = s.out.narrow(1, 0, t.pixels(g));
  buf.copy_(view);
  return buf;
}

template <typename scalar_t, typename opmath_t>
void fill_patches(const scalar_t* x, const Strides4& sx, const Geometry& g, const Tile& t, const int64_t* ids,
                  bool renorm, const Scratch<opmath_t>& s) {
  tap_weights(ids + t.b * g.height * g.width, g, t, renorm, s.taps_ptr());
  if (g.channels_last) {
    fill_patches_channels(x, sx, g, t, s.taps_ptr(), s.patch_ptr());
  } else {
    fill_patches_rows(x, sx, g, t, s.taps_ptr(), s.patch_ptr());
  }
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& x, const int64_t* ids, const at::Tensor& w2, const at::Tensor& bias,
                    at::Tensor& y, const Geometry& g, bool renorm) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr bool exact = std::is_same_v<scalar_t, opmath_t>;
  const auto opts = x.options().dtype(c10::CppTypeToScalarType<opmath_t>::value);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const Strides4 sx = strides_of(x);
  parallel_tiles<opmath_t>(make_tiles(g), g, opts, !exact, [&](const Tile& t, const Scratch<opmath_t>& s, int64_t) {
    const int64_t P = t.pixels(g);
    fill_patches(xp, sx, g, t, ids, renorm, s);
    at::Tensor dst = tile_view(y, g, t);
    at::Tensor out = exact ? dst : s.out.narrow(1, 0, P);
    if (bias.defined()) {
      at::addmm_out(out, bias.view({g.c_out, 1}).expand({g.c_out, P}), w2, s.matrix(g, P));
    } else {
      at::mm_out(out, w2, s.matrix(g, P));
    }
    if (!exact) dst.copy_(out);
  });
}

template <typename scalar_t>
void backward_input_kernel(const at::Tensor& dy, const int64_t* ids, const at::Tensor& w2t, at::Tensor& dx_acc,
                           const Geometry& g, bool renorm) {
  using opmath_t = at::opmath_type<scalar_t>;
  opmath_t* dxp = dx_acc.data_ptr<opmath_t>();
  const Strides4 sd = strides_of(dx_acc);
  // Tiles two apart never touch the same input rows: scatter even tiles, then odd ones.
  for (int parity = 0; parity < 2; ++parity) {
    parallel_tiles<opmath_t>(make_tiles(g, parity), g, dx_acc.options(), !std::is_same_v<scalar_t, opmath_t>,
                             [&](const Tile& t, const Scratch<opmath_t>& s, int64_t) {
      tap_weights(ids + t.b * g.height * g.width, g, t, renorm, s.taps_ptr());
      at::Tensor da = s.matrix(g, t.pixels(g));
      at::mm_out(da, w2t, dy_matrix(dy, g, t, s));
      if (g.channels_last) {
        scatter_patches_channels(s.patch_ptr(), g, t, s.taps_ptr(), dxp, sd);
      } else {
        scatter_patches_rows(s.patch_ptr(), g, t, s.taps_ptr(), dxp, sd);
      }
    });
  }
}

template <typename scalar_t>
void backward_weight_kernel(const at::Tensor& dy, const at::Tensor& x, const int64_t* ids, at::Tensor& dw2,
                            const Geometry& g, bool renorm) {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const Strides4 sx = strides_of(x);
  // One partial sum per worker, added up in worker order.
  at::Tensor partial = at::zeros({at::get_num_threads(), g.c_out, g.patch()}, dw2.options());
  const int64_t workers = parallel_tiles<opmath_t>(make_tiles(g), g, dw2.options(), !std::is_same_v<scalar_t, opmath_t>,
                                                   [&](const Tile& t, const Scratch<opmath_t>& s, int64_t worker) {
    fill_patches(xp, sx, g, t, ids, renorm, s);
    partial.select(0, worker).addmm_(dy_matrix(dy, g, t, s), s.matrix(g, t.pixels(g)).t());
  });
  dw2.copy_(partial.narrow(0, 0, std::max<int64_t>(1, workers)).sum(0));
}

void check_layout(const at::Tensor& t, const char* name) {
  cpu::check_cpu(t, name);
  TORCH_CHECK(t.dim() == 4, "inade._C: ", name, " must be [B, C, H, W]");
  TORCH_CHECK(t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast), "inade._C: ", name,
              " must be contiguous or channels-last");
}

bool is_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

Geometry geometry(const at::Tensor& x, int64_t c_out, int64_t k, int64_t stride, int64_t pad) {
  TORCH_CHECK(k >= 1 && k % 2 == 1, "inade._C: kernel size must be odd, got ", k);
  TORCH_CHECK(stride >= 1 && pad >= 0, "inade._C: stride must be >= 1 and padding >= 0");
  const int64_t h_out = (x.size(2) + 2 * pad - k) / stride + 1, w_out = (x.size(3) + 2 * pad - k) / stride + 1;
  TORCH_CHECK(h_out >= 1 && w_out >= 1, "inade._C: input smaller than the kernel");
  return {x.size(0), x.size(1), c_out, x.size(2), x.size(3), h_out, w_out, k, stride, pad, is_channels_last(x)};
}

at::MemoryFormat format_of(const Geometry& g) {
  return g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::ScalarType opmath_of(const at::Tensor& x) { return at::toOpMathType(x.scalar_type()); }

// The index map [B, H, W] (or [B, H*W]) as contiguous int64 ids (any values: only
// equality matters, so they are not narrowed).
at::Tensor ids_of(const at::Tensor& inst, const Geometry& g) {
  TORCH_CHECK(inst.numel() == g.batch * g.height * g.width, "inade._C: inst must have B*H*W ids");
  return inst.to(at::kLong).contiguous();
}

void check_output_grad(const at::Tensor& dy, const Geometry& g) {
  TORCH_CHECK(dy.size(0) == g.batch && dy.size(1) == g.c_out && dy.size(2) == g.h_out && dy.size(3) == g.w_out,
              "inade._C: dy must be [", g.batch, ", ", g.c_out, ", ", g.h_out, ", ", g.w_out, "], got ", dy.sizes());
}

at::Tensor forward(const at::Tensor& x_in, const at::Tensor& inst, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, int64_t stride, int64_t padding, bool renorm) {
  check_layout(x_in, "x");
  TORCH_CHECK(inst.is_contiguous() && weight.is_contiguous(), "inade._C: inst and weight must be contiguous");
  const at::Tensor x = x_in.detach();
  const Geometry g = geometry(x, weight.size(0), weight.size(2), stride, padding);
  at::Tensor y = at::empty({g.batch, g.c_out, g.h_out, g.w_out}, x.options().memory_format(format_of(g)));
  const at::Tensor w2 = weight_matrix(weight.detach(), g, opmath_of(x));
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->detach().to(opmath_of(x)) : at::Tensor();
  const at::Tensor ids = ids_of(inst, g);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_conv2d_forward", [&] {
    forward_kernel<scalar_t>(x, ids.const_data_ptr<int64_t>(), w2, b, y, g, renorm);
  });
  return y;
}

at::Tensor backward_input(const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& inst,
                          const at::Tensor& weight, int64_t stride, int64_t padding, bool renorm) {
  check_layout(dy_in, "dy");
  check_layout(x, "x");
  TORCH_CHECK(inst.is_contiguous() && weight.is_contiguous(), "inade._C: inst and weight must be contiguous");
  const Geometry g = geometry(x, weight.size(0), weight.size(2), stride, padding);
  check_output_grad(dy_in, g);
  // dy is read through [C_out, P] views of whole rows; its layout need not match x's.
  const at::Tensor dy = dy_in.detach();
  const at::Tensor w2t = weight_matrix(weight.detach(), g, opmath_of(x)).t();
  // (at::zeros would drop the memory format.)
  at::Tensor dx_acc = at::empty(x.sizes(), x.options().dtype(opmath_of(x)).memory_format(format_of(g))).zero_();
  const at::Tensor ids = ids_of(inst, g);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_conv2d_backward_input", [&] {
    backward_input_kernel<scalar_t>(dy, ids.const_data_ptr<int64_t>(), w2t, dx_acc, g, renorm);
  });
  return dx_acc.scalar_type() == x.scalar_type() ? dx_acc : dx_acc.to(x.scalar_type());
}

at::Tensor backward_weight(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& inst,
                           int64_t kernel_size, int64_t stride, int64_t padding, bool renorm) {
  check_layout(dy_in, "dy");
  check_layout(x_in, "x");
  TORCH_CHECK(inst.is_contiguous(), "inade._C: inst must be contiguous");
  const at::Tensor x = x_in.detach(), dy = dy_in.detach();
  const Geometry g = geometry(x, dy.size(1), kernel_size, stride, padding);
  check_output_grad(dy, g);
  at::Tensor dw2 = at::empty({g.c_out, g.patch()}, x.options().dtype(opmath_of(x)));
  const at::Tensor ids = ids_of(inst, g);
  INADE_DISPATCH_FLOATING(x.scalar_type(), "instance_conv2d_backward_weight", [&] {
    backward_weight_kernel<scalar_t>(dy, x, ids.const_data_ptr<int64_t>(), dw2, g, renorm);
  });
  const int64_t k = g.k;
  at::Tensor dw = g.channels_last ? dw2.view({g.c_out, k, k, g.c_in}).permute({0, 3, 1, 2})
                                  : dw2.view({g.c_out, g.c_in, k, k});
  return dw.to(x.scalar_type()).contiguous();
}

}  // namespace

void register_instance_conv2d(pybind11::module& m) {
  m.def("instance_conv2d_forward", &forward, "instance-aware convolution y [B, C_out, Ho, Wo]");
  m.def("instance_conv2d_backward_input", &backward_input, "gradient of x [B, C_in, H, W]");
  m.def("instance_conv2d_backward_weight", &backward_weight, "gradient of the weight [C_out, C_in, k, k]");
}

}  // namespace inade
