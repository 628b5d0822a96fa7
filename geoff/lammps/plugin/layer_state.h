/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff, model in pieces: the state dictionaries the pieces pass on, as the
   per-layer path (layer_model.cpp) and the chunked path (layer_chunks.cpp) handle them.
   Include after geoff_torch.h.
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_LAYER_STATE_H
#define LMP_GEOFF_LAYER_STATE_H

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

namespace LAMMPS_NS {
namespace geoff_state {

using TensorDict = c10::Dict<std::string, torch::Tensor>;
using Grads = std::unordered_map<std::string, torch::Tensor>;

// The node-feature entries of `d` as one (rows, width) matrix, and back.
inline torch::Tensor flatten(const TensorDict &d, const std::vector<std::string> &names,
                             int64_t n)
{
  std::vector<torch::Tensor> parts;
  for (const auto &name : names) parts.push_back(d.at(name).reshape({n, -1}));
  return torch::cat(parts, 1);
}

inline void unflatten(const torch::Tensor &flat, const TensorDict &like,
                      const std::vector<std::string> &names, TensorDict &out, bool leaves)
{
  int64_t col = 0;
  for (const auto &name : names) {
    const torch::Tensor ref = like.at(name);
    const int64_t w = ref.numel() / std::max<int64_t>(ref.size(0), 1);
    torch::Tensor t = flat.narrow(1, col, w).reshape(ref.sizes()).clone();
    out.insert_or_assign(name, leaves ? t.requires_grad_(true) : t);
    col += w;
  }
}

inline TensorDict typed(const c10::IValue &v)
{
  return c10::impl::toTypedDict<std::string, torch::Tensor>(v.toGenericDict());
}

inline torch::Tensor host(const torch::Tensor &t)
{
  return t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

}    // namespace geoff_state
}    // namespace LAMMPS_NS

#endif
