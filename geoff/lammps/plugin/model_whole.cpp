/* ----------------------------------------------------------------------
   pair_style geoff, graph periodic or ghosts: the model on the whole graph in one call of its
   forward (pair_geoff.cpp builds the graph; a large periodic graph goes to the chunked pieces
   of layer_chunks.cpp instead).
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "domain.h"
#include "error.h"

#include "geoff_torch.h"
#include "layer_chunks.h"

#include <torch/csrc/autograd/autograd.h>

#include <chrono>

using namespace LAMMPS_NS;

namespace {
using Clock = std::chrono::steady_clock;
}    // namespace

/* ----------------------------------------------------------------------
   compute, graph periodic or ghosts: model.forward on the whole graph (energies, forces and
   the strain virial in one pass; per-atom virials from our own gradient against the shifts).
------------------------------------------------------------------------- */

void PairGeoff::run_whole(int n_edges)
{
  auto t0 = Clock::now();
  const int n = (int) graph_atoms.size();
  const int nlocal = atom->nlocal;
  const bool per_atom_virial = vflag_atom != 0;
  auto graph = graph_input(n_edges, periodic_graph);    // graph_device.cpp
  torch::Tensor positions = graph.at("positions");
  torch::Tensor shifts = graph.at("shifts");
  if (per_atom_virial) {    // leaves of our own backward pass
    positions.requires_grad_(true);
    shifts.requires_grad_(true);
  }
  auto t1 = Clock::now();
  t_graph += seconds_since(t0);

  // Model: energies, forces and (global) virial in one forward/backward pass. For per-atom
  // virials our own backward pass also takes the gradient with respect to the shifts.
  torch::Tensor energy, energies, forces, virial, edge_grad;
  try {
    std::vector<torch::jit::IValue> inputs{graph, !per_atom_virial,
                                           vflag_global != 0 && !per_atom_virial};
    auto out = torch_->module.forward(inputs).toGenericDict();
    energy = out.at("energy").toTensor();
    energies = out.at("energies").toTensor();
    if (per_atom_virial) {
      auto grads = torch::autograd::grad({energy.sum()}, {positions, shifts}, {},
                                         /*retain_graph=*/false, /*create_graph=*/false,
                                         /*allow_unused=*/true);
      forces = grads[0].defined() ? -grads[0] : torch::zeros_like(positions);
      edge_grad = grads[1].defined() ? grads[1] : torch::zeros_like(shifts);
    } else {
      forces = out.at("forces").toTensor();
      if (vflag_global) virial = out.at("virial").toTensor();
    }
    // Results to the host in double precision.
    energy = energy.detach().to(torch::kCPU, torch::kFloat64);
    energies = energies.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    forces = forces.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    if (virial.defined()) virial = virial.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    if (edge_grad.defined())
      edge_grad = edge_grad.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style geoff: model '{}' failed on {} atoms / {} edges{}: {}",
               model_file, n, n_edges, chunk_hint(n_edges), torch_error_text(e.what()));
  }
  auto t2 = Clock::now();
  t_model += std::chrono::duration<double>(t2 - t1).count();

  // Forces on graph atoms (in graph ghosts, ghosts go back to their owners by reverse comm).
  // A direct force head predicts each atom's own force: only the local atoms' count.
  scatter_forces(forces.data_ptr<double>(), conservative ? n : nlocal);
  add_energies(energies.data_ptr<double>(), energy.sum().item<double>());
  if (per_atom_virial)
    add_edge_virials(edge_grad.data_ptr<double>(), n_edges);
  else if (vflag_global)
    add_strain_virial(virial.data_ptr<double>());

  t_scatter += seconds_since(t2);
}

// What to try when the whole graph fails (an error torch raises for a tensor too large for it
// may not say out of memory): chunking if the model can, else why it cannot.
std::string PairGeoff::chunk_hint(int64_t n_edges) const
{
  if (chunks_->can)
    return fmt::format(" (unchunked: `pair_style geoff ... chunk N` with N < {} splits it)",
                       n_edges);
  return fmt::format(" (unchunked; this model cannot be chunked: {})", chunks_->refusal);
}
