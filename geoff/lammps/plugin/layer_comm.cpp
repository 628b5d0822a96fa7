/* ----------------------------------------------------------------------
   pair_style geoff graph layers: message passing with per-layer communication under MPI.

   Each rank builds a graph of its own atoms plus one cutoff of ghosts (LAMMPS' default ghost
   cutoff, cutoff + skin, is enough) with edges into its own atoms only, and runs the model
   in the pieces the export carries (geoff/lammps/layer_pieces.py):

     state, geometry = lammps_embed(graph)
     for k < n_layers:  state = lammps_layer(k, state, geometry)
                        ghost rows of state[node_features] <- owners    (forward comm, k < L-1)
     energies = lammps_energies(state, geometry, species, nlocal)          (own atoms only)

   Each piece runs on detached leaf copies of its inputs, so that the backward pass can stop
   between pieces: going through them in reverse, the gradient with respect to a ghost row of
   the node features is sent to (and summed on) the owner after each layer's backward
   (reverse comm), exactly the term the owner's own layer needs. Every atom's layer update is
   computed once, by its owner; a ghost row is a copy, refreshed each layer.

   Graph rows: the local atoms (row = LAMMPS index), then one row per atom owned by another
   rank. A ghost that is a periodic image of a local atom, or of a ghost atom that already has
   a row, becomes an edge to that row plus a shift (x_image - x_row), as in graph periodic:
   on one rank this is exactly the periodic graph. Forces are -dE/dx of the rows (ghost rows
   go home through LAMMPS' reverse comm, newton on); the virial is -sum_e r_e (x) dE/dr_e over
   this rank's edges, with dE/dr_e = dE/dshift_e, half of each edge to each of its atoms for
   compute stress/atom, so per-atom virials sum to the global one.
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "timer.h"

#include "geoff_torch.h"
#include "layer_comm.h"

#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

using namespace LAMMPS_NS;

namespace {
using Clock = std::chrono::steady_clock;
using TensorDict = c10::Dict<std::string, torch::Tensor>;

double since(Clock::time_point t0)
{
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A piece's inputs: differentiable entries become fresh leaves (so that the backward pass
// can stop here); the others (indices, constants) pass through.
TensorDict leaves_of(const TensorDict &d)
{
  TensorDict out;
  for (const auto &kv : d) {
    const torch::Tensor &t = kv.value();
    out.insert(kv.key(), t.requires_grad() ? t.detach().requires_grad_(true) : t);
  }
  return out;
}

// Gradients of `outputs` (with `grad_outputs`, entries without one are skipped) with
// respect to the leaves among `inputs`: key -> gradient (undefined where unused).
std::unordered_map<std::string, torch::Tensor>
backward(const std::vector<torch::Tensor> &outputs, const std::vector<torch::Tensor> &grads,
         const std::vector<std::pair<std::string, torch::Tensor>> &inputs)
{
  std::unordered_map<std::string, torch::Tensor> out;
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

void add_into(std::unordered_map<std::string, torch::Tensor> &acc,
              const std::unordered_map<std::string, torch::Tensor> &g)
{
  for (const auto &kv : g) {
    if (!kv.second.defined()) continue;
    auto it = acc.find(kv.first);
    if (it == acc.end() || !it->second.defined())
      acc[kv.first] = kv.second;
    else
      it->second = it->second + kv.second;
  }
}
}    // namespace

/* ----------------------------------------------------------------------
   Metadata (pair_coeff): layer_comm = {"node_features": [...], "widths": [...]} or null,
   layer_comm_refusal = why not. The module must carry the pieces.
------------------------------------------------------------------------- */

void PairGeoff::read_layer_metadata(const std::string &metadata_json)
{
  GeoffLayerComm &lc = *layers_;
  lc.names.clear();
  lc.widths.clear();
  lc.max_width = 0;
  lc.refusal = "it was exported by a geoff without per-layer pieces: re-export it";
  try {
    auto meta = json::parse(metadata_json);
    if (meta.contains("layer_comm") && !meta["layer_comm"].is_null()) {
      lc.names = meta["layer_comm"].at("node_features").get<std::vector<std::string>>();
      lc.widths = meta["layer_comm"].at("widths").get<std::vector<int>>();
    } else if (meta.contains("layer_comm_refusal")) {
      lc.refusal = meta["layer_comm_refusal"].get<std::string>();
    }
  } catch (const json::exception &e) {
    error->all(FLERR, "pair_style geoff: '{}' has an invalid layer_comm metadata entry ({}); "
               "re-export it with `geoff export`", model_file, e.what());
  }
  for (const char *method : {"lammps_embed", "lammps_layer", "lammps_energies"})
    if (!lc.names.empty() && !torch_->module.find_method(method)) {
      lc.names.clear();
      lc.refusal = fmt::format("the file has no {} method: re-export it", method);
    }
  if (!lc.names.empty() && (int) lc.widths.size() != std::max(n_layers - 1, 0))
    error->all(FLERR, "pair_style geoff: '{}' lists {} layer_comm widths for {} layers; "
               "re-export it with `geoff export`", model_file, lc.widths.size(), n_layers);
  for (int w : lc.widths) lc.max_width = std::max(lc.max_width, w);
}

/* ----------------------------------------------------------------------
   init_style: graph layers when asked for, or by default on several ranks when the model
   has the pieces; true if this run uses it (full neighbour list of local atoms, one cutoff
   of ghosts, buffers for the widest node features).
------------------------------------------------------------------------- */

bool PairGeoff::init_style_layers()
{
  GeoffLayerComm &lc = *layers_;
  const bool can = !lc.names.empty();
  if (graph_request == "layers" && !can)
    error->all(FLERR, "pair_style geoff graph layers: model '{}' cannot run with per-layer "
               "communication: {}; use graph ghosts (or graph auto)", model_file, lc.refusal);
  layered = graph_request == "layers" || (graph_request == "auto" && comm->nprocs > 1 && can);
  if (!layered) {
    if (graph_request == "auto" && comm->nprocs > 1 && comm->me == 0)
      utils::logmesg(lmp, "pair_style geoff: graph ghosts (ghost shell of {} x cutoff + skin, "
                     "no per-layer communication): model '{}': {}\n", hops, model_file,
                     lc.refusal);
    comm_forward = comm_reverse = 0;
    return false;
  }
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair_style geoff graph layers needs atom IDs (atom_modify id yes)");
  periodic_graph = false;
  ghostneigh = 0;
  neighbor->add_request(this, NeighConst::REQ_FULL);
  comm_forward = comm_reverse = std::max(lc.max_width, 1);
  std::string names;
  for (const auto &name : lc.names) names += (names.empty() ? "" : ", ") + name;
  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style geoff: graph layers (per-layer communication over {} "
                   "rank(s): one cutoff of ghosts, node features {} of up to {} doubles per "
                   "atom sent after each of the first {} layer(s))\n", comm->nprocs,
                   names, lc.max_width, n_layers - 1);
  return true;
}

/* ----------------------------------------------------------------------
   LAMMPS communication of the buffer's columns [col0, col0 + ncols).
------------------------------------------------------------------------- */

int PairGeoff::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  const GeoffLayerComm &lc = *layers_;
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const double *src = lc.buf.data() + (size_t) list[i] * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) buf[m++] = src[c];
  }
  return m;
}

void PairGeoff::unpack_forward_comm(int n, int first, double *buf)
{
  GeoffLayerComm &lc = *layers_;
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    double *dst = lc.buf.data() + (size_t) i * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) dst[c] = buf[m++];
  }
}

int PairGeoff::pack_reverse_comm(int n, int first, double *buf)
{
  const GeoffLayerComm &lc = *layers_;
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    const double *src = lc.buf.data() + (size_t) i * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) buf[m++] = src[c];
  }
  return m;
}

void PairGeoff::unpack_reverse_comm(int n, int *list, double *buf)
{
  GeoffLayerComm &lc = *layers_;
  int m = 0;
  for (int i = 0; i < n; ++i) {
    double *dst = lc.buf.data() + (size_t) list[i] * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) dst[c] += buf[m++];
  }
}

namespace {
// One forward or reverse communication of the whole buffer (width columns), in passes of at
// most comm_forward columns. Every rank makes the same calls, with or without atoms.
template <typename Send> void communicate(GeoffLayerComm &lc, int max_cols, Send send)
{
  for (lc.col0 = 0; lc.col0 < lc.width; lc.col0 += max_cols) {
    lc.ncols = std::min(max_cols, lc.width - lc.col0);
    send(lc.ncols);
  }
}
}    // namespace

/* ----------------------------------------------------------------------
   The graph: rows (locals, then ghosts owned elsewhere, one row per atom ID), edges into the
   local atoms within the cutoff, shifts for periodic images. Returns the number of edges.
------------------------------------------------------------------------- */

int PairGeoff::build_graph_layers()
{
  GeoffLayerComm &lc = *layers_;
  double **x = atom->x;
  tagint *tag = atom->tag;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  neighbours_within_cutoff(list->inum);

  // Atom ID -> row: a vector when IDs are dense enough, a hash map otherwise.
  tagint max_tag = 0;
  for (int i = 0; i < nall; ++i) max_tag = std::max(max_tag, tag[i]);
  const bool dense = max_tag <= 4 * (tagint) nall + 1024;
  if (dense)
    lc.tag_row.assign((size_t) max_tag + 1, -1);
  else
    lc.tag_row_sparse.clear();
  auto row_of = [&](tagint t) -> int {
    if (dense) return lc.tag_row[t];
    auto it = lc.tag_row_sparse.find(t);
    return it == lc.tag_row_sparse.end() ? -1 : it->second;
  };
  auto set_row = [&](tagint t, int r) {
    if (dense)
      lc.tag_row[t] = r;
    else
      lc.tag_row_sparse[t] = r;
  };

  graph_atoms.resize(nlocal);
  for (int i = 0; i < nlocal; ++i) {
    graph_atoms[i] = i;
    set_row(tag[i], i);
  }
  const size_t n_edges = adj.size();
  edge_buf.resize(2 * n_edges + 2);
  shift_buf.resize(3 * n_edges + 3);
  edge_j.resize(n_edges + 1);
  int64_t *recv = edge_buf.data();
  int64_t *send = edge_buf.data() + n_edges;
  size_t e = 0;
  for (int i = 0; i < nlocal; ++i) {
    const int *nb = adj.data() + adj_start[i];
    for (int c = 0; c < adj_count[i]; ++c, ++e) {
      const int j = nb[c];
      int r = j < nlocal ? j : row_of(tag[j]);
      if (r < 0) {    // first image of an atom owned by another rank: a ghost row
        r = (int) graph_atoms.size();
        graph_atoms.push_back(j);
        set_row(tag[j], r);
      }
      const int o = graph_atoms[r];
      recv[e] = i;
      send[e] = r;
      edge_j[e] = j;
      shift_buf[3 * e] = x[j][0] - x[o][0];
      shift_buf[3 * e + 1] = x[j][1] - x[o][1];
      shift_buf[3 * e + 2] = x[j][2] - x[o][2];
    }
  }

  fill_atoms();
  return (int) n_edges;
}

/* ----------------------------------------------------------------------
   Ghost rows of the node features: forward (owners' values to the ghost rows) and reverse
   (gradients of the ghost rows summed onto their owners). `flat` is (rows, width) on the
   model's device; `comm_pass(cols)` makes one LAMMPS communication of that many columns.
------------------------------------------------------------------------- */

namespace {
template <typename Pass>
torch::Tensor exchange_forward(GeoffLayerComm &lc, const std::vector<int> &rows,
                               const torch::Tensor &flat, int nlocal, int nall, int width,
                               int max_cols, Pass comm_pass)
{
  lc.width = width;
  lc.buf.assign((size_t) nall * width, 0.0);
  const int n = (int) rows.size();
  torch::Tensor host;
  if (n > 0) {
    host = flat.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    std::memcpy(lc.buf.data(), host.data_ptr<double>(), sizeof(double) * nlocal * width);
  }
  communicate(lc, max_cols, comm_pass);
  if (n == 0) return flat;
  double *h = host.data_ptr<double>();
  for (int r = nlocal; r < n; ++r)
    std::memcpy(h + (size_t) r * width, lc.buf.data() + (size_t) rows[r] * width,
                sizeof(double) * width);
  return host.to(flat.device(), flat.scalar_type());
}

template <typename Pass>
torch::Tensor exchange_reverse(GeoffLayerComm &lc, const std::vector<int> &rows,
                               const torch::Tensor &grad, int nlocal, int nall, int width,
                               int max_cols, Pass comm_pass)
{
  lc.width = width;
  lc.buf.assign((size_t) nall * width, 0.0);
  const int n = (int) rows.size();
  torch::Tensor host;
  if (n > 0) {
    host = grad.to(torch::kCPU, torch::kFloat64).contiguous();
    const double *h = host.data_ptr<double>();
    for (int r = nlocal; r < n; ++r)
      std::memcpy(lc.buf.data() + (size_t) rows[r] * width, h + (size_t) r * width,
                  sizeof(double) * width);
  }
  communicate(lc, max_cols, comm_pass);
  if (n == 0) return grad;
  // Own rows: own gradient plus what the other ranks' ghost copies received; ghost rows: 0
  // (they were overwritten by the owners' values, so nothing upstream depends on them).
  host = host.clone();
  double *h = host.data_ptr<double>();
  for (size_t k = 0; k < (size_t) nlocal * width; ++k) h[k] += lc.buf[k];
  std::fill(h + (size_t) nlocal * width, h + (size_t) n * width, 0.0);
  return host.to(grad.device(), grad.scalar_type());
}

// The node-feature entries of `d` as one (rows, width) matrix, and back.
torch::Tensor flatten(const TensorDict &d, const std::vector<std::string> &names, int64_t n)
{
  std::vector<torch::Tensor> parts;
  for (const auto &name : names) parts.push_back(d.at(name).reshape({n, -1}));
  return torch::cat(parts, 1);
}

void unflatten(const torch::Tensor &flat, const TensorDict &like,
               const std::vector<std::string> &names, TensorDict &out, bool leaves)
{
  int64_t col = 0;
  for (const auto &name : names) {
    const torch::Tensor &ref = like.at(name);
    const int64_t w = ref.numel() / std::max<int64_t>(ref.size(0), 1);
    torch::Tensor t = flat.narrow(1, col, w).reshape(ref.sizes()).clone();
    out.insert_or_assign(name, leaves ? t.requires_grad_(true) : t);
    col += w;
  }
}

TensorDict typed(const c10::IValue &v)
{
  return c10::impl::toTypedDict<std::string, torch::Tensor>(v.toGenericDict());
}
}    // namespace

/* ----------------------------------------------------------------------
   One force call with per-layer communication (every rank, atoms or not).
------------------------------------------------------------------------- */

void PairGeoff::compute_layers(int eflag, int vflag)
{
  GeoffLayerComm &lc = *layers_;
  auto t0 = Clock::now();
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int n_edges = build_graph_layers();
  const int n = (int) graph_atoms.size();
  lc.t_graph += since(t0);

  const int max_cols = comm_forward;
  auto forward_pass = [&](int cols) {
    auto t = Clock::now();
    comm->forward_comm(this, cols);
    lc.t_comm += since(t);
    ++lc.n_comms;
  };
  auto reverse_pass = [&](int cols) {
    auto t = Clock::now();
    comm->reverse_comm(this, cols);
    lc.t_comm += since(t);
    ++lc.n_comms;
  };

  auto t1 = Clock::now();
  const double comm_before = lc.t_comm;
  if (nlocal == 0) {
    // No atoms here: take part in every communication (this rank may relay ghosts).
    torch::Tensor none;
    for (int k = 0; k + 1 < n_layers; ++k)
      exchange_forward(lc, graph_atoms, none, 0, nall, lc.widths[k], max_cols, forward_pass);
    for (int k = n_layers - 2; k >= 0; --k)
      exchange_reverse(lc, graph_atoms, none, 0, nall, lc.widths[k], max_cols, reverse_pass);
  } else {
    run_layers(n_edges, forward_pass, reverse_pass);
  }
  lc.t_model += since(t1) - (lc.t_comm - comm_before);

  lc.sum_rows += n;
  lc.sum_ghost_rows += n - nlocal;
  lc.sum_edges += n_edges;
  lc.sum_local += nlocal;
  ++lc.n_calls;
  if (reset_timers) {    // the setup call is not counted (as LAMMPS' loop time)
    lc.reset();
    reset_timers = false;
  }
  pvector[0] = lc.t_model;
  pvector[1] = lc.t_graph + lc.t_comm + lc.t_scatter;
  pvector[2] = (double) lc.n_calls;
  pvector[3] = lc.n_calls ? lc.sum_rows / lc.n_calls : (double) n;
  pvector[4] = lc.n_calls ? lc.sum_edges / lc.n_calls : (double) n_edges;
}

/* ----------------------------------------------------------------------
   The model in pieces, forward then backward, with the exchanges between layers; then the
   forces, energies and virials into LAMMPS' arrays.
------------------------------------------------------------------------- */

void PairGeoff::run_layers(int n_edges, const std::function<void(int)> &forward_pass,
                           const std::function<void(int)> &reverse_pass)
{
  GeoffLayerComm &lc = *layers_;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int n = (int) graph_atoms.size();
  const int L = n_layers;
  const int max_cols = comm_forward;
  const bool want_virial = vflag_global || vflag_atom;
  torch::Tensor forces, energies, edge_grad;
  try {
    // Leaves of the backward pass: positions, and shifts (dE/dshift_e = dE/dr_e: virial).
    const bool periodic[3] = {domain->xperiodic != 0, domain->yperiodic != 0,
                              domain->zperiodic != 0};
    TensorDict graph = graph_tensors(*torch_, n, pos_buf.data(), species_buf.data(), n_edges,
                                     edge_buf.data(), shift_buf.data(), domain->h, periodic,
                                     nlocal);
    torch::Tensor positions = graph.at("positions");
    torch::Tensor shifts = graph.at("shifts");
    torch::Tensor species_t = graph.at("species");
    positions.requires_grad_(true);
    if (want_virial) shifts.requires_grad_(true);

    auto &module = torch_->module;
    auto embed = module.get_method("lammps_embed");
    auto layer = module.get_method("lammps_layer");
    auto readout = module.get_method("lammps_energies");

    // Forward: ins[k] feeds layer k (ins[L] the energies), outs[k] is what layer k returns.
    auto first = embed({graph}).toTuple();
    TensorDict state0 = typed(first->elements()[0]);
    TensorDict geometry_out = typed(first->elements()[1]);
    TensorDict geometry = leaves_of(geometry_out);
    std::vector<TensorDict> ins(L + 1), outs(L);
    ins[0] = leaves_of(state0);
    for (int k = 0; k < L; ++k) {
      outs[k] = typed(layer({(int64_t) k, ins[k], geometry}));
      ins[k + 1] = leaves_of(outs[k]);
      if (k + 1 == L) break;    // the readout reads each atom's own row only
      torch::Tensor flat = flatten(outs[k], lc.names, n);
      if (flat.size(1) != lc.widths[k])
        error->one(FLERR, "pair_style geoff: model '{}' sends {} doubles per atom after "
                   "layer {}, its metadata says {}; re-export it", model_file, flat.size(1),
                   k, lc.widths[k]);
      auto mixed = exchange_forward(lc, graph_atoms, flat, nlocal, nall, lc.widths[k],
                                    max_cols, forward_pass);
      unflatten(mixed, outs[k], lc.names, ins[k + 1], true);
    }
    energies = readout({ins[L], geometry, species_t, (int64_t) nlocal}).toTensor();

    // Backward, piece by piece; geometry gradients add up over the pieces.
    auto entries = [&](const TensorDict &d) {
      std::vector<std::pair<std::string, torch::Tensor>> v;
      for (const auto &kv : d) v.emplace_back(kv.key(), kv.value());
      return v;
    };
    auto with_geometry = [&](const TensorDict &d) {
      auto v = entries(d);
      for (const auto &kv : geometry) v.emplace_back("geometry:" + kv.key(), kv.value());
      return v;
    };
    std::unordered_map<std::string, torch::Tensor> g_geo;
    auto split_geo = [&](std::unordered_map<std::string, torch::Tensor> g) {
      std::unordered_map<std::string, torch::Tensor> state_grads;
      for (auto &kv : g) {
        if (kv.first.rfind("geometry:", 0) == 0)
          add_into(g_geo, {{kv.first.substr(9), kv.second}});
        else
          state_grads[kv.first] = kv.second;
      }
      return state_grads;
    };
    auto g = split_geo(backward({energies.sum()}, {}, with_geometry(ins[L])));
    for (int k = L - 1; k >= 0; --k) {
      if (k + 1 < L) {    // ins[k + 1]'s node features were exchanged after layer k
        TensorDict grads;
        for (const auto &name : lc.names) {
          auto it = g.find(name);
          grads.insert(name, it != g.end() && it->second.defined()
                                 ? it->second
                                 : torch::zeros_like(ins[k + 1].at(name)));
        }
        auto back = exchange_reverse(lc, graph_atoms, flatten(grads, lc.names, n), nlocal,
                                     nall, lc.widths[k], max_cols, reverse_pass);
        TensorDict owned;
        unflatten(back, outs[k], lc.names, owned, false);
        for (const auto &kv : owned) g[kv.key()] = kv.value();
      }
      std::vector<torch::Tensor> outputs, grad_outputs;
      for (const auto &kv : outs[k]) {
        auto it = g.find(kv.key());
        if (it != g.end() && it->second.defined() && kv.value().requires_grad()) {
          outputs.push_back(kv.value());
          grad_outputs.push_back(it->second);
        }
      }
      g = split_geo(backward(outputs, grad_outputs, with_geometry(ins[k])));
    }
    std::vector<torch::Tensor> outputs, grad_outputs;
    for (const auto &kv : state0) {
      auto it = g.find(kv.key());
      if (it != g.end() && it->second.defined() && kv.value().requires_grad()) {
        outputs.push_back(kv.value());
        grad_outputs.push_back(it->second);
      }
    }
    for (const auto &kv : geometry_out) {
      auto it = g_geo.find(kv.key());
      if (it != g_geo.end() && it->second.defined() && kv.value().requires_grad()) {
        outputs.push_back(kv.value());
        grad_outputs.push_back(it->second);
      }
    }
    auto leaves = backward(outputs, grad_outputs, {{"positions", positions}, {"shifts", shifts}});
    auto gp = leaves["positions"];
    forces = gp.defined() ? -gp : torch::zeros_like(positions);
    forces = forces.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    energies = energies.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    if (want_virial) {
      auto gs = leaves["shifts"];
      edge_grad = (gs.defined() ? gs : torch::zeros_like(shifts))
                      .detach()
                      .to(torch::kCPU, torch::kFloat64)
                      .contiguous();
    }
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style geoff: model '{}' failed (graph layers) on {} atoms / {} "
               "edges: {}", model_file, n, n_edges, std::string(e.what()).substr(0, 400));
  }
  auto t = Clock::now();
  scatter_forces(forces.data_ptr<double>(), n);    // ghost rows go home: LAMMPS reverse comm
  add_energies(energies.data_ptr<double>(), energies.sum().item<double>());
  if (edge_grad.defined()) add_edge_virials(edge_grad.data_ptr<double>(), n_edges);
  lc.t_scatter += since(t);
}

/* ----------------------------------------------------------------------
   End of a run: the timing summary (mean over ranks, and the slowest rank's communication).
------------------------------------------------------------------------- */

void PairGeoff::finish_layers()
{
  const GeoffLayerComm &lc = *layers_;
  double mine[9] = {lc.t_graph, lc.t_model, lc.t_comm, lc.t_scatter, (double) lc.n_calls,
                    lc.sum_rows, lc.sum_ghost_rows, lc.sum_edges, lc.sum_local};
  double sum[9], max_comm = 0.0;
  MPI_Allreduce(mine, sum, 9, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(&lc.t_comm, &max_comm, 1, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me != 0 || sum[4] <= 0) return;
  const double p = comm->nprocs;
  const double calls = sum[4] / p;
  const double loop = timer->get_wall(Timer::TOTAL);
  // Same leading fields as the other graphs' summary (benchmarks parse them), then comm.
  std::string mesg = fmt::format(
      "pair geoff (layers graph: one-cutoff ghosts graph, mean over {} rank(s), {} calls): "
      "{:.0f} atoms and {:.0f} edges per graph; time in graph {:.4g} s, model "
      "forward+backward {:.4g} s, comm {:.4g} s (slowest rank {:.4g} s, {} exchanges per "
      "call), results {:.4g} s",
      (int) p, (long) calls, sum[5] / sum[4], sum[7] / sum[4], sum[0] / p, sum[1] / p,
      sum[2] / p, max_comm, 2 * std::max(n_layers - 1, 0), sum[3] / p);
  if (loop > 0)
    mesg += fmt::format("; of the loop time {:.4g} s: model {:.1f}%, comm {:.1f}%", loop,
                        100.0 * sum[1] / p / loop, 100.0 * sum[2] / p / loop);
  mesg += fmt::format("; graph = {:.0f} own atoms + {:.0f} ghost rows", sum[8] / sum[4],
                      sum[6] / sum[4]);
  utils::logmesg(lmp, mesg + "\n");
}
