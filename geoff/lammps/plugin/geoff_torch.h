/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff: the TorchScript module and where it runs (shared by pair_geoff.cpp and
   layer_comm.cpp; include after the LAMMPS headers, whose fmt must win over torch's).
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_TORCH_H
#define LMP_GEOFF_TORCH_H

#include <torch/script.h>

namespace LAMMPS_NS {
struct GeoffTorch {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype{torch::kFloat64};
};
}    // namespace LAMMPS_NS

#endif
