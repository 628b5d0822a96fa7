/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff: the TorchScript module and where it runs, the graph tensors every graph
   mode hands to it, and torch's error messages as LAMMPS prints them (shared by
   pair_geoff.cpp, layer_comm.cpp and compute_geoff_atom.cpp; include after the LAMMPS
   headers, whose fmt must win over torch's).
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_TORCH_H
#define LMP_GEOFF_TORCH_H

#include <torch/script.h>

#include <string>

namespace LAMMPS_NS {
struct GeoffTorch {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype{torch::kFloat64};
};

// First line of a (possibly long) torch error message, printable ASCII only (it may quote
// bytes of a damaged file, which must not make LAMMPS' message invalid UTF-8).
inline std::string first_line(const std::string &text)
{
  auto end = text.find('\n');
  std::string line = end == std::string::npos ? text : text.substr(0, end);
  const auto advice = line.find(". This is an internal miniz error");    // torch's, not ours
  if (advice != std::string::npos) line = line.substr(0, advice);
  for (char &ch : line)
    if ((unsigned char) ch < 0x20 || (unsigned char) ch > 0x7E) ch = '?';
  return line;
}

/* The Graph of geoff.graph on the model's device: positions (n,3) and species (n,) of the
   graph atoms, edge_index (2,E) as (receiver, sender) rows, shifts (E,3) (zeros when `shifts`
   is null), cell (1,3,3) from LAMMPS' h (xprd yprd zprd yz xz xy), pbc (1,3), batch (n,),
   n_local (1,). Positions and shifts are fresh copies, so callers may make them leaves of a
   backward pass. */
inline c10::Dict<std::string, torch::Tensor>
graph_tensors(const GeoffTorch &model, int n, const double *positions, const int64_t *species,
              int64_t n_edges, const int64_t *edges, const double *shifts, const double *h,
              const bool periodic[3], int nlocal)
{
  const auto dev = model.device;
  const auto dtype = model.dtype;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  c10::Dict<std::string, torch::Tensor> graph;
  graph.insert("positions", torch::from_blob((void *) positions, {n, 3}, f64)
                                .to(dev, dtype, false, /*copy=*/true));
  graph.insert("species", torch::from_blob((void *) species, {n}, i64).to(dev));
  graph.insert("edge_index", torch::from_blob((void *) edges, {2, n_edges}, i64).to(dev));
  graph.insert("shifts", shifts ? torch::from_blob((void *) shifts, {n_edges, 3}, f64)
                                      .to(dev, dtype, false, /*copy=*/true)
                                : torch::zeros({n_edges, 3}, f64.dtype(dtype).device(dev)));
  graph.insert("cell", torch::tensor({h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]}, f64)
                           .reshape({1, 3, 3})
                           .to(dev, dtype));
  graph.insert("pbc", torch::tensor({periodic[0], periodic[1], periodic[2]}, torch::kBool)
                          .reshape({1, 3})
                          .to(dev));
  graph.insert("batch", torch::zeros({n}, i64.device(dev)));
  graph.insert("n_local", torch::full({1}, (int64_t) nlocal, i64.device(dev)));
  return graph;
}
}    // namespace LAMMPS_NS

#endif
