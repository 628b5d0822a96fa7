/* ----------------------------------------------------------------------
   pair_style geoff ... chunk N: the per-layer pieces (lammps_embed, lammps_layer,
   lammps_energies) over chunks of atoms, with recomputation, so that memory holds the node
   features of every layer plus the per-edge activations of ONE chunk.

   A chunk is a set of whole receivers [a, b) (edges sorted by receiver: a contiguous edge
   range) and its sub-graph: own rows [a, b) first, then the senders of its edges. That is the
   graph the per-layer mode already runs under MPI (own rows plus ghost rows, edges into own
   rows only), so each piece gives exact outputs for the own rows.

   Forward, without autograd state: state_0 = lammps_embed's state, chunk by chunk; for each
   layer k and chunk, gather the chunk's rows of the full state_k (index_select), recompute the
   chunk's geometry (lammps_embed on the sub-graph: radial bases, harmonics; cheap against a
   layer, and never stored for the whole graph), run lammps_layer and write the own rows into
   state_{k+1}. Only state_0 .. state_L (N rows each) are kept.
   Backward, in reverse: the readout per chunk (with autograd: energies and dE/dstate_L), then
   for each layer and chunk the same recomputation with autograd on, torch::autograd::grad of
   its own output rows against the incoming gradient rows, index_add_ of the input-row
   gradients into dE/dstate_k, of the position gradients into the forces, and of the shift
   gradients into dE/dr_e (virials: add_edge_virials, as in graph layers); last the embedding.
   Under MPI (graph layers) the exchanges stay between layers, on the full tensors; on one rank
   (graph periodic) there are none. Rows of ghosts owned elsewhere (no edges into them) form
   chunks of their own, as the unchunked pieces compute those rows too.
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"

#include "geoff_torch.h"
#include "layer_chunks.h"
#include "layer_comm.h"
#include "layer_state.h"

#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cstring>

using namespace LAMMPS_NS;
using geoff_state::Grads;
using geoff_state::TensorDict;
using geoff_state::typed;

namespace LAMMPS_NS {
// One chunked force call: the full graph on the device, the states of every layer, results.
struct GeoffChunkRun {
  torch::Tensor positions, shifts, species, cell, pbc, index;    // device
  bool virial = false;                     // dE/dshifts wanted (global or per-atom virial)
  std::vector<TensorDict> states;          // states[k]: input of layer k (full rows), k <= L
  torch::Tensor grad_positions, edge_grad, energies;
};
}    // namespace LAMMPS_NS

namespace {
using Clock = std::chrono::steady_clock;

// A chunk's sub-graph (graph_tensors' keys); with `leaves`, its positions (and shifts when
// the virial is wanted) are fresh leaves of a backward pass, returned in pos / shift.
TensorDict chunk_graph(const GeoffChunkRun &run, const GeoffChunk &c, bool leaves,
                       torch::Tensor &pos, torch::Tensor &shift, torch::Tensor &rows)
{
  rows = run.index.narrow(0, c.rows_off, c.n_rows);
  pos = run.positions.index_select(0, rows);
  shift = run.shifts.narrow(0, c.lo, c.edges());
  if (leaves) {
    pos.requires_grad_(true);
    if (run.virial) shift = shift.detach().requires_grad_(true);
  }
  auto ints = torch::TensorOptions().dtype(torch::kInt64).device(run.positions.device());
  TensorDict g;
  g.insert("positions", pos);
  g.insert("shifts", shift);
  g.insert("edge_index", run.index.narrow(0, c.edge_off, 2 * c.edges()).view({2, c.edges()}));
  g.insert("species", run.species.index_select(0, rows));
  g.insert("cell", run.cell);
  g.insert("pbc", run.pbc);
  g.insert("batch", torch::zeros({c.n_rows}, ints));
  g.insert("n_local", torch::full({1}, c.own(), ints));
  return g;
}

// The chunk's rows of every entry of the full state; floating entries as leaves if asked.
TensorDict gather(const TensorDict &full, const torch::Tensor &rows, bool leaves)
{
  TensorDict out;
  for (const auto &kv : full) {
    torch::Tensor t = kv.value().index_select(0, rows);
    if (leaves && t.is_floating_point()) t.requires_grad_(true);
    out.insert(kv.key(), t);
  }
  return out;
}

// Adds the gradients `g` of the chunk's rows into the full-row gradients `acc` (n rows).
void add_rows(Grads &acc, const std::string &key, const torch::Tensor &g,
              const torch::Tensor &rows, int64_t n)
{
  if (!g.defined()) return;
  auto it = acc.find(key);
  if (it == acc.end()) {
    std::vector<int64_t> shape(g.sizes().begin(), g.sizes().end());
    shape[0] = n;
    it = acc.emplace(key, torch::zeros(shape, g.options())).first;
  }
  it->second.index_add_(0, rows, g);
}
// The own rows of a piece's outputs that have an incoming gradient, and those gradient rows.
void own_rows_with_grads(const TensorDict &out, const Grads &grads, const GeoffChunk &c,
                         std::vector<torch::Tensor> &outputs,
                         std::vector<torch::Tensor> &grad_outputs)
{
  for (const auto &kv : out) {
    auto it = grads.find(kv.key());
    if (it == grads.end() || !kv.value().requires_grad()) continue;
    outputs.push_back(kv.value().narrow(0, 0, c.own()));
    grad_outputs.push_back(it->second.narrow(0, c.a, c.own()));
  }
}
}    // namespace

/* ----------------------------------------------------------------------
   Forward without autograd state: state_0 .. state_L, full rows (ghost rows of the node
   features exchanged after every layer but the last under MPI).
------------------------------------------------------------------------- */

void PairGeoff::chunks_forward(GeoffChunkRun &run)
{
  torch::NoGradGuard no_grad;
  GeoffLayerComm &lc = *layers_;
  auto &module = torch_->module;
  auto embed = module.get_method("lammps_embed");
  auto layer = module.get_method("lammps_layer");
  const int64_t n = (int64_t) graph_atoms.size();
  const int L = n_layers;
  run.states.clear();    // L + 1 distinct dictionaries (copies of a c10::Dict share one)
  for (int k = 0; k <= L; ++k) run.states.emplace_back();
  // The own rows of a piece's output `out` into the full state `full`.
  auto put_rows = [&](TensorDict &full, const TensorDict &out, const GeoffChunk &c) {
    for (const auto &kv : out) {
      const torch::Tensor &t = kv.value();
      if (t.dim() == 0 || t.size(0) != c.n_rows)
        error->one(FLERR, "pair_style geoff chunk: state entry '{}' of model '{}' has {} rows "
                   "for a chunk of {} atoms (it is not one row per atom); use `chunk 0`",
                   kv.key(), model_file, t.dim() ? t.size(0) : 0, c.n_rows);
      if (!full.contains(kv.key())) {
        std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
        shape[0] = n;
        full.insert(kv.key(), torch::zeros(shape, t.options()));
      }
      full.at(kv.key()).narrow(0, c.a, c.own()).copy_(t.narrow(0, 0, c.own()));
    }
  };
  torch::Tensor pos, shift, rows;
  for (const auto &c : chunks_->list) {
    auto first = embed({chunk_graph(run, c, false, pos, shift, rows)}).toTuple();
    put_rows(run.states[0], typed(first->elements()[0]), c);
  }
  for (int k = 0; k < L; ++k) {
    for (const auto &c : chunks_->list) {
      auto first = embed({chunk_graph(run, c, false, pos, shift, rows)}).toTuple();
      TensorDict out = typed(layer({(int64_t) k, gather(run.states[k], rows, false),
                                    typed(first->elements()[1])}));
      put_rows(run.states[k + 1], out, c);
    }
    if (!layered || k + 1 == L) continue;
    TensorDict &next = run.states[k + 1];
    torch::Tensor flat = geoff_state::flatten(next, lc.names, n);
    if (flat.size(1) != lc.widths[k])
      error->one(FLERR, "pair_style geoff: model '{}' sends {} doubles per atom after layer "
                 "{}, its metadata says {}; re-export it", model_file, flat.size(1), k,
                 lc.widths[k]);
    torch_->sync();
    geoff_state::unflatten(ghosts_exchange(flat, true), next, lc.names, next, false);
  }
}

/* ----------------------------------------------------------------------
   Backward: the readout, the layers in reverse, the embedding, each chunk recomputed with
   autograd on. Gradients with respect to the chunk's leaves (gathered state rows, positions,
   shifts) go into full-row tensors by index_add_.
------------------------------------------------------------------------- */

void PairGeoff::chunks_backward(GeoffChunkRun &run)
{
  GeoffLayerComm &lc = *layers_;
  auto &module = torch_->module;
  auto embed = module.get_method("lammps_embed");
  auto layer = module.get_method("lammps_layer");
  auto readout = module.get_method("lammps_energies");
  const int64_t n = (int64_t) graph_atoms.size();
  const int nlocal = atom->nlocal;
  const int L = n_layers;
  run.grad_positions = torch::zeros_like(run.positions);
  if (run.virial) run.edge_grad = torch::zeros_like(run.shifts);
  run.energies = torch::zeros({nlocal}, run.positions.options());

  // grad of `outputs` against `grad_outputs`, into `acc` (state leaves), positions, shifts.
  auto differentiate = [&](const std::vector<torch::Tensor> &outputs,
                           const std::vector<torch::Tensor> &grad_outputs, const TensorDict &st,
                           const torch::Tensor &pos, const torch::Tensor &shift,
                           const torch::Tensor &rows, const GeoffChunk &c, Grads &acc) {
    std::vector<torch::Tensor> wrt{pos};
    std::vector<std::string> keys;
    for (const auto &kv : st)
      if (kv.value().requires_grad()) wrt.push_back(kv.value()), keys.push_back(kv.key());
    if (run.virial) wrt.push_back(shift);
    auto g = torch::autograd::grad(outputs, wrt, grad_outputs, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    if (g[0].defined()) run.grad_positions.index_add_(0, rows, g[0]);
    for (size_t k = 0; k < keys.size(); ++k) add_rows(acc, keys[k], g[k + 1], rows, n);
    if (run.virial && g.back().defined()) run.edge_grad.narrow(0, c.lo, c.edges()).add_(g.back());
  };

  Grads grads;    // dE/dstate_k, full rows
  torch::Tensor pos, shift, rows;
  for (const auto &c : chunks_->list) {
    if (c.a >= nlocal) break;    // ghost rows: no energies
    TensorDict graph = chunk_graph(run, c, true, pos, shift, rows);
    auto first = embed({graph}).toTuple();
    TensorDict st = gather(run.states[L], rows, true);
    torch::Tensor e = readout({st, typed(first->elements()[1]), graph.at("species"), c.own()})
                          .toTensor();
    run.energies.narrow(0, c.a, c.own()).copy_(e.detach());
    differentiate({e.sum()}, {}, st, pos, shift, rows, c, grads);
  }
  for (int k = L - 1; k >= 0; --k) {
    if (layered && k + 1 < L) {    // the node features of state_{k+1} were exchanged
      TensorDict g;
      for (const auto &name : lc.names) {
        auto it = grads.find(name);
        g.insert(name, it != grads.end() ? it->second
                                         : torch::zeros_like(run.states[k + 1].at(name)));
      }
      torch_->sync();
      TensorDict owned;
      geoff_state::unflatten(ghosts_exchange(geoff_state::flatten(g, lc.names, n), false), g,
                             lc.names, owned, false);
      for (const auto &kv : owned) grads[kv.key()] = kv.value();
    }
    Grads below;
    for (const auto &c : chunks_->list) {
      TensorDict graph = chunk_graph(run, c, true, pos, shift, rows);
      auto first = embed({graph}).toTuple();
      TensorDict st = gather(run.states[k], rows, true);
      TensorDict out = typed(layer({(int64_t) k, st, typed(first->elements()[1])}));
      std::vector<torch::Tensor> outputs, grad_outputs;
      own_rows_with_grads(out, grads, c, outputs, grad_outputs);
      if (!outputs.empty())
        differentiate(outputs, grad_outputs, st, pos, shift, rows, c, below);
    }
    grads.swap(below);
  }
  for (const auto &c : chunks_->list) {    // the embedding, where state_0 has a gradient
    TensorDict graph = chunk_graph(run, c, true, pos, shift, rows);
    TensorDict state0 = typed(embed({graph}).toTuple()->elements()[0]);
    std::vector<torch::Tensor> outputs, grad_outputs;
    own_rows_with_grads(state0, grads, c, outputs, grad_outputs);
    Grads unused;
    if (!outputs.empty())
      differentiate(outputs, grad_outputs, TensorDict(), pos, shift, rows, c, unused);
  }
}

/* ----------------------------------------------------------------------
   One chunked force call (graph from build_graph_layers): plan, upload, forward, backward,
   then forces, energies and virials into LAMMPS' arrays as run_layers does.
------------------------------------------------------------------------- */

void PairGeoff::run_chunked(int n_edges)
{
  GeoffLayerComm &lc = *layers_;
  GeoffChunks &ch = *chunks_;
  GeoffTorch &tm = *torch_;
  const int n = (int) graph_atoms.size();
  const int nlocal = atom->nlocal;
  GeoffChunkRun run;
  run.virial = vflag_global || vflag_atom;
  torch::Tensor results;
  auto t0 = Clock::now();
  const double xfer0 = lc.t_xfer + lc.t_comm;
  double t_up = 0, t_fwd = 0, t_bwd = 0, x_fwd = 0;    // x_fwd: the forward's exchanges
  try {
    plan_chunks(n_edges);
    TensorDict graph = graph_input(n_edges, true);    // graph_device.cpp
    run.positions = graph.at("positions");
    run.shifts = graph.at("shifts");
    run.species = graph.at("species");
    run.cell = graph.at("cell");
    run.pbc = graph.at("pbc");
    const int64_t ni = (int64_t) ch.index.size();
    torch::Tensor idx = tm.chunk_index.rows(1, ni, torch::kInt64, tm.on_gpu()).view({-1});
    std::memcpy(idx.data_ptr<int64_t>(), ch.index.data(), sizeof(int64_t) * ni);
    run.index = idx.to(tm.device, /*non_blocking=*/tm.on_gpu(), /*copy=*/true);
    tm.sync();
    t_up = seconds_since(t0);
    auto t1 = Clock::now();
    chunks_forward(run);
    tm.sync();
    t_fwd = seconds_since(t1);
    x_fwd = lc.t_xfer + lc.t_comm - xfer0;
    auto t2 = Clock::now();
    chunks_backward(run);
    tm.sync();
    t_bwd = seconds_since(t2);
    std::vector<torch::Tensor> parts{-run.grad_positions.reshape({-1}), run.energies};
    if (run.virial) parts.push_back(run.edge_grad.reshape({-1}));
    results = geoff_state::host(torch::cat(parts));
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style geoff: model '{}' failed (chunked, {} chunks of up to {} "
               "edges) on {} atoms / {} edges: {}", model_file, ch.list.size(), chunk_edges,
               n, n_edges, torch_error_text(e.what()));
  }
  const double t_results = seconds_since(t0) - t_up - t_fwd - t_bwd;
  const double x_all = lc.t_xfer + lc.t_comm - xfer0;
  auto t3 = Clock::now();
  const double *forces = results.data_ptr<double>();
  const double *energies = forces + 3 * (size_t) n;
  const double total = results.narrow(0, 3 * (int64_t) n, nlocal).sum().item<double>();
  scatter_forces(forces, n);
  add_energies(energies, total);
  if (run.virial) add_edge_virials(energies + nlocal, n_edges);
  ch.sum_chunks += (double) ch.list.size();
  ++ch.n_chunked;
  if (layered) {    // graph layers' phase timers (the exchanges count their own)
    lc.t_upload += t_up;
    lc.t_forward += t_fwd - x_fwd;
    lc.t_backward += t_bwd - (x_all - x_fwd);
    lc.t_scatter += t_results + seconds_since(t3);
  }
}
