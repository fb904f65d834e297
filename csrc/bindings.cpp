// The one registration file of inade._C.
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "INADE fused instance-aware ops (CPU kernels; see inade.ops for the public API)";
  inade::register_instance_modulation(m);
  inade::register_instance_avg_pool(m);
  inade::register_instance_conv2d(m);
}
