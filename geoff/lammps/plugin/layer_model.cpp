/* ----------------------------------------------------------------------
   pair_style geoff graph layers: the model in pieces (layer_comm.cpp has the graph, the
   exchanges and the timing).

   Forward: state, geometry = lammps_embed(graph); for each layer k, state =
   lammps_layer(k, state, geometry) and, except after the last layer, the ghost rows of the
   node features are replaced by their owners' values (rows_forward); then
   energies = lammps_energies(state, geometry, species, nlocal).
   Each piece runs on detached leaf copies of its inputs, so that the backward pass stops
   between pieces: going through them in reverse, the gradients of the exchanged ghost rows go
   to their owners (rows_reverse) before the layer that produced them is differentiated.
   Geometry (edge features) is computed once; its gradients add up over the pieces and go
   back through the embedding last, giving dE/dpositions (forces) and dE/dshifts (virial).
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "domain.h"
#include "error.h"

#include "geoff_torch.h"
#include "layer_comm.h"
#include "layer_state.h"

#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {
using Clock = std::chrono::steady_clock;
using geoff_state::flatten;
using geoff_state::Grads;
using geoff_state::host;
using geoff_state::TensorDict;
using geoff_state::typed;
using geoff_state::unflatten;

// A piece's inputs: differentiable entries become fresh leaves; the others (indices,
// constants) pass through.
TensorDict leaves_of(const TensorDict &d)
{
  TensorDict out;
  for (const auto &kv : d) {
    const torch::Tensor &t = kv.value();
    out.insert(kv.key(), t.requires_grad() ? t.detach().requires_grad_(true) : t);
  }
  return out;
}

// Gradients of `outputs` (weighted by `grads`) with respect to the leaves among `inputs`,
// by key (undefined where unused).
Grads backward(const std::vector<torch::Tensor> &outputs, const std::vector<torch::Tensor> &grads,
               const std::vector<std::pair<std::string, torch::Tensor>> &inputs)
{
  Grads out;
  std::vector<torch::Tensor> wrt;
  std::vector<std::string> keys;
  for (const auto &kv : inputs)
    if (kv.second.requires_grad() && kv.second.is_leaf()) {
      wrt.push_back(kv.second);
      keys.push_back(kv.first);
    }
  if (outputs.empty() || wrt.empty()) return out;
  auto g = torch::autograd::grad(outputs, wrt, grads, /*retain_graph=*/false,
                                 /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t k = 0; k < keys.size(); ++k) out[keys[k]] = g[k];
  return out;
}

// The entries of `d` that require grad and have a gradient in `g`: (outputs, grads).
void with_grads(const TensorDict &d, const Grads &g, std::vector<torch::Tensor> &outputs,
                std::vector<torch::Tensor> &grads)
{
  for (const auto &kv : d) {
    auto it = g.find(kv.key());
    if (it != g.end() && it->second.defined() && kv.value().requires_grad()) {
      outputs.push_back(kv.value());
      grads.push_back(it->second);
    }
  }
}

}    // namespace

/* ----------------------------------------------------------------------
   The device side of an exchange. Forward: the send rows of `flat` (n, width) go to the host
   in one copy (index_select on the device), the ghost rows come back in one copy into a clone
   of `flat`. Reverse: the ghost rows' gradients go to the host in one copy; what the other
   copies of the send rows add up to comes back in one copy and is added on the device
   (index_add_), and the ghost rows' gradients are zeroed (their values were overwritten by
   the forward exchange, so nothing upstream depends on them). Staging buffers are pinned on a
   GPU and reused; the timers count these copies as xfer, LAMMPS' exchange as comm.
------------------------------------------------------------------------- */

torch::Tensor PairGeoff::ghosts_exchange(const torch::Tensor &rows, bool forward)
{
  // No autograd here (the caller makes the result a fresh leaf). Root cause of issue 13's
  // memory growth: with grad mode on, copying `rows` (which has history) into the staging
  // view below recorded CopySlices on the persistent staging buffer, chaining each step's
  // autograd graph (edge tensors included) onto the last one's (30-50 MB per step kept
  // for a 256-atom PaiNN on the CPU).
  torch::NoGradGuard no_grad;
  GeoffLayerComm &lc = *layers_;
  GeoffTorch &tm = *torch_;
  auto t = Clock::now();
  const double comm_before = lc.t_comm;
  const int64_t nlocal = atom->nlocal, n = rows.size(0), w = rows.size(1);
  const int64_t nsend = (int64_t) lc.send_rows.size(), ng = n - nlocal;
  const auto dtype = rows.scalar_type();
  const bool f32 = dtype == torch::kFloat32, gpu = tm.on_gpu();
  torch::Tensor send = tm.send_rows.rows(nsend, w, dtype, gpu);
  torch::Tensor ghosts = tm.ghost_rows.rows(ng, w, dtype, gpu);
  // Device -> host (a blocking copy: it also ends any earlier copy out of the staging).
  torch::Tensor out_host = forward ? send : ghosts;
  if (out_host.numel() > 0)
    out_host.copy_(forward ? rows.index_select(0, tm.send_index) : rows.narrow(0, nlocal, ng));
  else
    tm.wait();
  if (forward)
    f32 ? rows_forward(send.data_ptr<float>(), ghosts.data_ptr<float>(), (int) w)
        : rows_forward(send.data_ptr<double>(), ghosts.data_ptr<double>(), (int) w);
  else
    f32 ? rows_reverse(ghosts.data_ptr<float>(), send.data_ptr<float>(), (int) w)
        : rows_reverse(ghosts.data_ptr<double>(), send.data_ptr<double>(), (int) w);
  // Host -> device, into a copy outside any autograd graph (the next piece starts anew).
  torch::Tensor out = rows.detach().clone();
  if (forward && ng > 0) out.narrow(0, nlocal, ng).copy_(ghosts, /*non_blocking=*/gpu);
  if (!forward && ng > 0) out.narrow(0, nlocal, ng).zero_();
  if (!forward && nsend > 0)
    out.index_add_(0, tm.send_index, send.to(out.device(), /*non_blocking=*/gpu));
  tm.sync();
  lc.t_xfer += seconds_since(t) - (lc.t_comm - comm_before);
  return out;
}

namespace LAMMPS_NS {
// What the forward pass keeps for the backward pass.
struct GeoffLayerTape {
  torch::Tensor positions, shifts, energies, forces, edge_grad;
  TensorDict state0, geometry_out, geometry;
  std::vector<TensorDict> ins, outs;    // ins[k] feeds layer k (ins[L]: the energies)
};
}    // namespace LAMMPS_NS

/* ----------------------------------------------------------------------
   Forward: embedding, layers with the ghost rows exchanged after all but the last, energies
   of the local atoms.
------------------------------------------------------------------------- */

void PairGeoff::layers_forward(GeoffLayerTape &tape, int n_edges)
{
  GeoffLayerComm &lc = *layers_;
  auto t0 = Clock::now();
  const int nlocal = atom->nlocal;
  const int n = (int) graph_atoms.size();
  const int L = n_layers;
  TensorDict graph = graph_input(n_edges, true);    // graph_device.cpp
  // Leaves of the backward pass: positions, and shifts (dE/dshift_e = dE/dr_e: the virial).
  tape.positions = graph.at("positions").requires_grad_(true);
  tape.shifts = graph.at("shifts");
  if (vflag_global || vflag_atom) tape.shifts.requires_grad_(true);

  auto &module = torch_->module;
  torch_->sync();
  lc.t_upload += seconds_since(t0);
  auto t1 = Clock::now();
  const double xfer_before = lc.t_xfer + lc.t_comm;
  auto first = module.get_method("lammps_embed")({graph}).toTuple();
  tape.state0 = typed(first->elements()[0]);
  tape.geometry_out = typed(first->elements()[1]);
  tape.geometry = leaves_of(tape.geometry_out);
  tape.ins.assign(L + 1, TensorDict());
  tape.outs.assign(L, TensorDict());
  tape.ins[0] = leaves_of(tape.state0);
  auto layer = module.get_method("lammps_layer");
  for (int k = 0; k < L; ++k) {
    tape.outs[k] = typed(layer({(int64_t) k, tape.ins[k], tape.geometry}));
    tape.ins[k + 1] = leaves_of(tape.outs[k]);
    if (k + 1 == L) break;    // the readout reads each atom's own row only
    torch::Tensor flat = flatten(tape.outs[k], lc.names, n);
    if (flat.size(1) != lc.widths[k])
      error->one(FLERR, "pair_style geoff: model '{}' sends {} doubles per atom after layer "
                 "{}, its metadata says {}; re-export it", model_file, flat.size(1), k,
                 lc.widths[k]);
    torch_->sync();
    unflatten(ghosts_exchange(flat, true), tape.outs[k], lc.names, tape.ins[k + 1], true);
  }
  tape.energies = module.get_method("lammps_energies")(
      {tape.ins[L], tape.geometry, graph.at("species"), (int64_t) nlocal}).toTensor();
  torch_->sync();
  lc.t_forward += seconds_since(t1) - (lc.t_xfer + lc.t_comm - xfer_before);
}

/* ----------------------------------------------------------------------
   Backward, piece by piece in reverse: the gradients of exchanged ghost rows go home first.
------------------------------------------------------------------------- */

void PairGeoff::layers_backward(GeoffLayerTape &tape)
{
  GeoffLayerComm &lc = *layers_;
  auto t0 = Clock::now();
  const double xfer_before = lc.t_xfer + lc.t_comm;
  const int n = (int) graph_atoms.size();
  const int L = n_layers;
  Grads g_geometry;    // summed over the pieces
  auto inputs = [&](const TensorDict &state) {
    std::vector<std::pair<std::string, torch::Tensor>> v;
    for (const auto &kv : state) v.emplace_back(kv.key(), kv.value());
    for (const auto &kv : tape.geometry) v.emplace_back("geometry:" + kv.key(), kv.value());
    return v;
  };
  auto state_part = [&](const Grads &g) {
    Grads state;
    for (const auto &kv : g) {
      if (kv.first.rfind("geometry:", 0) != 0) {
        state[kv.first] = kv.second;
      } else if (kv.second.defined()) {
        auto &acc = g_geometry[kv.first.substr(9)];
        acc = acc.defined() ? acc + kv.second : kv.second;
      }
    }
    return state;
  };

  Grads g = state_part(backward({tape.energies.sum()}, {}, inputs(tape.ins[L])));
  for (int k = L - 1; k >= 0; --k) {
    if (k + 1 < L) {    // ins[k + 1]'s node features were exchanged after layer k
      TensorDict grads;
      for (const auto &name : lc.names) {
        auto it = g.find(name);
        grads.insert(name, it != g.end() && it->second.defined()
                               ? it->second
                               : torch::zeros_like(tape.ins[k + 1].at(name)));
      }
      torch_->sync();
      TensorDict owned;
      torch::Tensor owned_rows = ghosts_exchange(flatten(grads, lc.names, n), false);
      unflatten(owned_rows, tape.outs[k], lc.names, owned, false);
      for (const auto &kv : owned) g[kv.key()] = kv.value();
    }
    std::vector<torch::Tensor> outputs, grad_outputs;
    with_grads(tape.outs[k], g, outputs, grad_outputs);
    g = state_part(backward(outputs, grad_outputs, inputs(tape.ins[k])));
  }
  std::vector<torch::Tensor> outputs, grad_outputs;
  with_grads(tape.state0, g, outputs, grad_outputs);
  with_grads(tape.geometry_out, g_geometry, outputs, grad_outputs);
  auto leaves = backward(outputs, grad_outputs,
                         {{"positions", tape.positions}, {"shifts", tape.shifts}});
  const torch::Tensor &gp = leaves["positions"];
  tape.forces = gp.defined() ? -gp : torch::zeros_like(tape.positions);
  if (tape.shifts.requires_grad()) {
    const torch::Tensor &gs = leaves["shifts"];
    tape.edge_grad = gs.defined() ? gs : torch::zeros_like(tape.shifts);
  }
  torch_->sync();
  lc.t_backward += seconds_since(t0) - (lc.t_xfer + lc.t_comm - xfer_before);
}

/* ----------------------------------------------------------------------
   One force call on a rank with atoms: the pieces, then forces, energies and virials into
   LAMMPS' arrays.
------------------------------------------------------------------------- */

void PairGeoff::run_layers(int n_edges)
{
  if (use_chunks(n_edges)) return run_chunked(n_edges);    // layer_chunks.cpp
  GeoffLayerComm &lc = *layers_;
  GeoffLayerTape tape;
  const int n = (int) graph_atoms.size();
  const int nlocal = atom->nlocal;
  torch::Tensor results;
  try {
    layers_forward(tape, n_edges);
    layers_backward(tape);
    auto t = Clock::now();
    // Forces (n,3), energies (nlocal,) and edge gradients (E,3) to the host in one copy.
    std::vector<torch::Tensor> parts{tape.forces.reshape({-1}), tape.energies.reshape({-1})};
    if (tape.edge_grad.defined()) parts.push_back(tape.edge_grad.reshape({-1}));
    results = host(torch::cat(parts));
    lc.t_scatter += seconds_since(t);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style geoff: model '{}' failed (graph layers) on {} atoms / {} "
               "edges{}: {}", model_file, graph_atoms.size(), n_edges, chunk_hint(n_edges),
               torch_error_text(e.what()));
  }
  auto t = Clock::now();
  const double *forces = results.data_ptr<double>();
  const double *energies = forces + 3 * (size_t) n;
  const double total = results.narrow(0, 3 * (int64_t) n, nlocal).sum().item<double>();
  scatter_forces(forces, n);    // ghosts: LAMMPS
  add_energies(energies, total);
  if (tape.edge_grad.defined()) add_edge_virials(energies + nlocal, n_edges);
  lc.t_scatter += seconds_since(t);
}
