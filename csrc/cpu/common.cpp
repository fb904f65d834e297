// The index-map encoder shared by the CPU ops (see common.h).
#include "cpu/common.h"

namespace inade {
namespace cpu {
namespace {

constexpr int64_t kSerialIds = 1 << 18;  // index maps up to this size are encoded on the calling thread

template <typename index_t>
void encode_kernel(const index_t* inst, int64_t width, int64_t rows, int32_t* ids, int32_t* end_id,
                   int32_t* num_runs) {
  const int64_t grain = std::max<int64_t>(1, kSerialIds / std::max<int64_t>(1, width));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const index_t* in = inst + row * width;
      int32_t* out_ids = ids + row * width;
      int32_t* out = end_id + row * width * 2;
      int32_t n = 0;
      for (int64_t w = 0; w < width; ++w) {
        out_ids[w] = static_cast<int32_t>(in[w]);
        if (w + 1 == width || in[w + 1] != in[w]) {
          out[2 * n] = static_cast<int32_t>(w + 1);
          out[2 * n + 1] = out_ids[w];
          ++n;
        }
      }
      num_runs[row] = n;
    }
  });
}

}  // namespace

IdRuns encode_runs(const at::Tensor& inst, int64_t batch, int64_t height, int64_t width) {
  TORCH_CHECK(inst.device().is_cpu() && inst.is_contiguous(), "inade._C: inst must be a contiguous CPU tensor");
  TORCH_CHECK(inst.numel() == batch * height * width, "inade._C: inst must have B*H*W = ", batch * height * width,
              " ids, got ", inst.numel());
  TORCH_CHECK(width < (int64_t{1} << 31), "inade._C: index map rows must be shorter than 2^31");
  const auto opts = inst.options().dtype(at::kInt);
  IdRuns runs{batch, height, width, at::empty({batch, height * width}, opts),
              at::empty({batch * height, width, 2}, opts), at::empty({batch * height}, opts)};
  AT_DISPATCH_INDEX_TYPES(inst.scalar_type(), "encode_runs", [&] {
    encode_kernel<index_t>(inst.const_data_ptr<index_t>(), width, batch * height, runs.ids.data_ptr<int32_t>(),
                           runs.end_id.data_ptr<int32_t>(), runs.num_runs.data_ptr<int32_t>());
  });
  runs.ids_data = runs.ids.const_data_ptr<int32_t>();
  runs.end_id_data = runs.end_id.const_data_ptr<int32_t>();
  runs.num_runs_data = runs.num_runs.const_data_ptr<int32_t>();
  return runs;
}

at::Tensor counts_of(const IdRuns& runs, int64_t num_instances, at::ScalarType dtype) {
  at::Tensor counts = at::zeros({runs.batch, num_instances}, runs.ids.options().dtype(at::kLong));
  int64_t* n = counts.data_ptr<int64_t>();
  for (int64_t b = 0; b < runs.batch; ++b) {
    const int32_t* ids = runs.ids_of(b);
    int64_t* nb = n + b * num_instances;
    for (int64_t k = 0; k < runs.hw(); ++k) ++nb[ids[k]];
  }
  return counts.to(dtype);
}

}  // namespace cpu
}  // namespace inade
