// What the three CPU ops share: the layout of a feature map, the accumulator
// type, the input checks, and the one encoder of an index map into runs of
// equal id along each image row.
//
// Instance maps are regions, so along an image row the ids usually come in runs;
// inside a run the table entry of the instance is a scalar and a kernel's inner
// loop is a plain vector FMA or sum. Per-pixel random ids (or every pixel its own
// instance) have runs of one pixel, where walking runs costs a loop per pixel.
// So each image row is walked one of two ways, chosen from its mean run length
// (IdRuns::for_each_span): run by run, or pixel by pixel with the ids gathered.
// Both give the same values (up to the order of additions in sums).
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#define INADE_REGISTER_TABLES 1
#endif

namespace inade {
namespace cpu {

// A [B, C, H, W] map whose (H, W) is one axis of stride s_hw (contiguous: 1, channels-last: C).
struct MapLayout {
  int64_t batch, channels, hw;  // sizes
  int64_t s_b, s_c, s_hw;       // strides
};

inline MapLayout layout_of(const at::Tensor& t) {
  return {t.size(0), t.size(1), t.size(2) * t.size(3), t.stride(0), t.stride(1), t.stride(3)};
}

// Accumulators and tables: double for double inputs, float otherwise.
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Runs the lambda __VA_ARGS__ with scalar_t = the floating type TYPE (float, double, half, bfloat16).
#define INADE_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "inade._C: ", name, " must be a CPU tensor");
}

// t is a CPU [B, C, H, W] tensor whose (H, W) flatten into one axis.
inline void check_map(const at::Tensor& t, const char* name) {
  check_cpu(t, name);
  TORCH_CHECK(t.dim() == 4, "inade._C: ", name, " must be [B, C, H, W]");
  TORCH_CHECK(t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3), "inade._C: ", name,
              " must have (H, W) flattenable (contiguous or channels-last)");
}

// An image row whose runs are shorter than this on average is walked pixel by pixel:
// by the gathers of a table (where a pixel costs about what it costs in a run) ...
constexpr int64_t kMinMeanRun = 16;
// ... and by the per-instance sums (where a pixel added alone costs a run's flush).
constexpr int64_t kMinMeanRunSums = 3;

// The index map of a call as int32 ids, and the runs of equal id along each image
// row: (end column, id) of each run. Built once per call, in parallel over rows,
// and shared by every channel.
struct IdRuns {
  int64_t batch = 0, height = 0, width = 0;
  at::Tensor ids;       // int32 [B, H*W]
  at::Tensor end_id;    // int32 [B*H, W, 2]
  at::Tensor num_runs;  // int32 [B*H]
  // Their data, read once: the kernels walk every image row of every channel, and a
  // Tensor's checked data accessor there costs as much as a short row.
  const int32_t* ids_data = nullptr;
  const int32_t* end_id_data = nullptr;
  const int32_t* num_runs_data = nullptr;

  int64_t hw() const { return height * width; }
  const int32_t* ids_of(int64_t b) const { return ids_data + b * hw(); }

  // Calls f(begin, end, id) for the runs of image rows [h0, h1) of image b (pixel
  // offsets within the image).
  template <typename F>
  void for_each_run(int64_t b, int64_t h0, int64_t h1, F&& f) const {
    for (int64_t h = h0; h < h1; ++h) walk_runs(b, h, f);
  }

  // For image rows [h0, h1) of image b: on_run(begin, end, id) for each run of a row
  // with long runs, on_pixels(begin, end) for the whole of a row with short ones
  // (the caller then reads each pixel's id from ids_of(b)).
  template <typename R, typename P>
  void for_each_span(int64_t b, int64_t h0, int64_t h1, R&& on_run, P&& on_pixels,
                     int64_t min_mean_run = kMinMeanRun) const {
    for (int64_t h = h0; h < h1; ++h) {
      if (num_runs_data[b * height + h] * min_mean_run > width) {
        on_pixels(h * width, (h + 1) * width);
      } else {
        walk_runs(b, h, on_run);
      }
    }
  }

 private:
  template <typename F>
  void walk_runs(int64_t b, int64_t h, F& f) const {
    const int64_t row = b * height + h;
    const int32_t* r = end_id_data + row * width * 2;
    const int32_t n = num_runs_data[row];
    int64_t begin = h * width;
    for (int32_t k = 0; k < n; ++k) {
      const int64_t end = h * width + r[2 * k];
      f(begin, end, static_cast<int64_t>(r[2 * k + 1]));
      begin = end;
    }
  }
};

// f(t, scratch) for every task t in [0, n), in parallel: each worker thread makes its
// scratch = init() once, then takes the next task not yet taken until none is left, so
// a worker slowed down (a busy core, a slow cache) takes fewer tasks instead of making
// the others wait for its fixed share.
template <typename Init, typename F>
inline void parallel_tasks(int64_t n, Init&& init, F&& f) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(n, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    auto scratch = init();
    for (int64_t t = next.fetch_add(1); t < n; t = next.fetch_add(1)) f(t, scratch);
  });
}

// f(t) for every task t in [0, n), in parallel, tasks taken as above.
template <typename F>
inline void parallel_tasks(int64_t n, F&& f) {
  parallel_tasks(n, [] { return 0; }, [&](int64_t t, int) { f(t); });
}

// Pixels of a run summed in the accumulator type before a flush into double.
constexpr int64_t kMaxRun = 512;

// Pointers to the N channel rows of a group of nc rows starting at base; rows past
// the end repeat the last one so every loop is N wide (their results are dropped,
// their writes repeat the last row's).
template <int64_t N, typename T>
inline void group_rows(T* base, int64_t s_c, int64_t nc, T* rows[]) {
  for (int64_t k = 0; k < N; ++k) rows[k] = base + std::min(k, nc - 1) * s_c;
}

// sums[l * Reader::kWidth + j] += the sum over the pixels of instance l in image b of
// the j-th of the kWidth values `in` reads per pixel (in.add(p0, p1, acc) adds them
// for pixels [p0, p1) into acc). Along a row of runs, a run is summed in opmath_t
// (chunks of kMaxRun pixels) and flushed once; a row of runs of about one pixel
// adds each pixel straight into its instance's sums. The task's channels make the
// independent chains, so a short run costs no horizontal reduction.
template <typename opmath_t, typename Reader>
void sum_instances(const Reader& in, const IdRuns& runs, int64_t b, double* sums) {
  constexpr int64_t kWidth = Reader::kWidth;
  const int32_t* ids = runs.ids_of(b);
  runs.for_each_span(
      b, 0, runs.height,
      [&](int64_t begin, int64_t end, int64_t id) {
        for (int64_t p0 = begin; p0 < end; p0 += kMaxRun) {
          opmath_t acc[kWidth] = {};
          in.add(p0, std::min(end, p0 + kMaxRun), acc);
          double* s = sums + id * kWidth;
          for (int64_t k = 0; k < kWidth; ++k) s[k] += static_cast<double>(acc[k]);
        }
      },
      [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) in.add(p, p + 1, sums + ids[p] * kWidth);
      },
      kMinMeanRunSums);
}

#ifdef INADE_REGISTER_TABLES
// A float table of up to kMaxEntries entries held in four vector registers and looked
// up for 16 ids at once by permutes (one for 32 entries, two and a blend for 64),
// where a gather would load the 16 entries one by one.
class RegisterTable {
 public:
  static constexpr int64_t kMaxEntries = 64;

  RegisterTable(const float* table, int64_t entries) : wide_(entries > 32) {
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t n = std::clamp<int64_t>(entries - 16 * i, 0, 16);
      part_[i] = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), table + 16 * i);
    }
  }

  inline __m512 lookup(__m512i ids) const {
    const __m512 low = _mm512_permutex2var_ps(part_[0], ids, part_[1]);
    if (!wide_) return low;
    const __m512 high = _mm512_permutex2var_ps(part_[2], ids, part_[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(ids, _mm512_set1_epi32(32)), low, high);
  }

 private:
  __m512 part_[4];
  bool wide_;
};

// Two float tables a, b of any length read together: interleaved as (a[l], b[l])
// pairs, one 64-bit gather per 8 ids loads both entries, half the loads of a gather
// from each table.
class PairTable {
 public:
  // pairs[2 l] = a[l], pairs[2 l + 1] = b[l] for l < entries (the layout the table reads),
  // 16 entries at a time.
  static void interleave(const float* a, const float* b, int64_t entries, float* pairs) {
    const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    for (int64_t l = 0; l < entries; l += 16) {
      const int64_t n = std::min<int64_t>(16, entries - l);
      const __m512 va = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), a + l);
      const __m512 vb = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), b + l);
      const auto pair_mask = [](int64_t k) { return static_cast<__mmask16>(k >= 8 ? 0xFFFF : (1u << (2 * k)) - 1); };
      _mm512_mask_storeu_ps(pairs + 2 * l, pair_mask(n), _mm512_permutex2var_ps(va, first, vb));
      if (n > 8) _mm512_mask_storeu_ps(pairs + 2 * l + 16, pair_mask(n - 8), _mm512_permutex2var_ps(va, second, vb));
    }
  }

  explicit PairTable(const float* pairs) : pairs_(pairs) {}

  inline void lookup(__m512i ids, __m512& a, __m512& b) const {
    const __m512 lo = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_castsi512_si256(ids), pairs_, 8));
    const __m512 hi = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_extracti64x4_epi64(ids, 1), pairs_, 8));
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    a = _mm512_permutex2var_ps(lo, even, hi);
    b = _mm512_permutex2var_ps(lo, _mm512_add_epi32(even, _mm512_set1_epi32(1)), hi);
  }

 private:
  const float* pairs_;
};

// Transposes the 16 x 16 floats of r in place: r[i][j] becomes r[j][i].
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16] = {};  // (every element is written before it is read; GCC cannot tell)
  for (int i = 0; i < 16; i += 2) {  // pairs of rows: 2x2 blocks of floats
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 4x4 blocks
    for (int k = 0; k < 2; ++k) {
      const __m512d a = _mm512_castps_pd(t[i + k]), b = _mm512_castps_pd(t[i + k + 2]);
      r[i + 2 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  }
  for (int i = 0; i < 16; i += 8) {  // 8x8 blocks: 128-bit lanes
    for (int k = 0; k < 4; ++k) {
      t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
      t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xDD);
    }
  }
  for (int k = 0; k < 8; ++k) {  // 16x16
    r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xDD);
  }
}

// f(k, mask) for the blocks of 16 pixels [k, k + 16) of [k0, k1); mask has a bit per
// pixel inside [k0, k1) (all 16 but in the last block).
template <typename F>
inline void for_each_block16(int64_t k0, int64_t k1, F&& f) {
  int64_t k = k0;
  for (; k + 16 <= k1; k += 16) f(k, static_cast<__mmask16>(0xFFFF));
  if (k < k1) f(k, static_cast<__mmask16>((1u << (k1 - k)) - 1));
}
#endif

// Encodes inst, a contiguous int32/int64 CPU tensor of batch * height * width ids
// ([B, H, W] or [B, H*W]).
IdRuns encode_runs(const at::Tensor& inst, int64_t batch, int64_t height, int64_t width);

// count[b, l] = pixels of instance l in image b, as a [B, L] tensor of `dtype`.
at::Tensor counts_of(const IdRuns& runs, int64_t num_instances, at::ScalarType dtype);

}  // namespace cpu
}  // namespace inade
