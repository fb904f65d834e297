// The ops of inade._C. Each op lives in its own file under csrc/cpu/ (and, where
// built, csrc/cuda/) and adds its entry points to the module through its
// register_<op> function; csrc/bindings.cpp calls the three. Python (inade/ops/)
// wraps the entry points in torch.library custom ops, so no schema lives here.
// Entry points are named instance_<op>_<pass>, as the custom ops inade::instance_<op>_<pass>.
// What the CPU kernels share (layouts, checks, the index-map run encoder) is csrc/cpu/common.h.
#pragma once
#include <torch/extension.h>

namespace inade {

void register_instance_modulation(pybind11::module& m);  // op 1: paper Eq. 1-2 with batch norm
void register_instance_avg_pool(pybind11::module& m);    // op 2: paper Eq. 4
void register_instance_conv2d(pybind11::module& m);      // op 3: instance-aware partial convolution

}  // namespace inade
