/* ----------------------------------------------------------------------
   pair_style geoff graph layers: message passing with per-layer communication under MPI.

   Each rank builds a graph of its own atoms plus one cutoff of ghosts (LAMMPS' default ghost
   cutoff, cutoff + skin, is enough) with edges into its own atoms only, and runs the model
   in the pieces the export carries (geoff/lammps/layer_pieces.py):

     state, geometry = lammps_embed(graph)
     for k < n_layers:  state = lammps_layer(k, state, geometry)
                        ghost rows of state[node_features] <- owners    (forward comm, k < L-1)
     energies = lammps_energies(state, geometry, species, nlocal)          (own atoms only)

   (layer_model.cpp; the exchanges' host side, LAMMPS' pack/unpack: layer_exchange.cpp).
   Each piece runs on detached leaf copies of its inputs, so that the
   backward pass can stop between pieces: going through them in reverse, the gradient with respect to a ghost row of
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
#include "graph_device.h"
#include "layer_chunks.h"
#include "layer_comm.h"

#include <algorithm>
#include <chrono>
#include <cstring>

using namespace LAMMPS_NS;

namespace {
using Clock = std::chrono::steady_clock;
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
  lc.probed = false;    // send lists are found again at the first call
  ghostneigh = 0;
  neighbor->add_request(this, NeighConst::REQ_FULL);
  // A float32 model's rows travel as float pairs packed into LAMMPS' doubles (half the bytes).
  lc.single = torch_->dtype == torch::kFloat32;
  comm_forward = comm_reverse = std::max(lc.slots(lc.max_width), 1);
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

  lc.begin_rows(tag, nall);
  graph_atoms.resize(nlocal);
  for (int i = 0; i < nlocal; ++i) {
    graph_atoms[i] = i;
    lc.set_row(tag[i], i);
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
      int r = j < nlocal ? j : lc.row_of(tag[j]);
      if (r < 0) {    // first image of an atom owned by another rank: a ghost row
        r = (int) graph_atoms.size();
        graph_atoms.push_back(j);
        lc.set_row(tag[j], r);
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
   One force call with per-layer communication (every rank, atoms or not).
------------------------------------------------------------------------- */

void PairGeoff::compute_layers(int eflag, int vflag)
{
  GeoffLayerComm &lc = *layers_;
  auto t0 = Clock::now();
  const int nlocal = atom->nlocal;
  const int n_edges = graph_on_device ? build_graph_device() : build_graph_layers();
  stop_on_overlap();
  const int n = (int) graph_atoms.size();
  lc.t_graph += seconds_since(t0);
  probe_send_rows();

  if (nlocal == 0) {
    // No atoms here: take part in every exchange (this rank may relay ghosts).
    for (int k = 0; k + 1 < n_layers; ++k)
      lc.single ? rows_forward<float>(nullptr, nullptr, lc.widths[k])
                : rows_forward<double>(nullptr, nullptr, lc.widths[k]);
    for (int k = n_layers - 2; k >= 0; --k)
      lc.single ? rows_reverse<float>(nullptr, nullptr, lc.widths[k])
                : rows_reverse<double>(nullptr, nullptr, lc.widths[k]);
  } else {
    run_layers(n_edges);
  }

  lc.sum_rows += n;
  lc.sum_ghost_rows += n - nlocal;
  lc.sum_edges += n_edges;
  lc.sum_local += nlocal;
  lc.sum_send += lc.send_rows.size();
  ++lc.n_calls;
  if (reset_timers) {    // the setup call is not counted (as LAMMPS' loop time)
    lc.reset();
    chunks_->reset();
    dgraph_->reset();
    reset_timers = false;
  }
  pvector[0] = lc.t_upload + lc.t_forward + lc.t_backward + lc.t_xfer;
  pvector[1] = lc.t_graph + lc.t_comm + lc.t_scatter;
  pvector[2] = (double) lc.n_calls;
  pvector[3] = lc.n_calls ? lc.sum_rows / lc.n_calls : (double) n;
  pvector[4] = lc.n_calls ? lc.sum_edges / lc.n_calls : (double) n_edges;
}

/* ----------------------------------------------------------------------
   End of a run: the timing summary (mean over ranks, and the slowest rank's communication),
   then the per-phase breakdown in ms per step.
------------------------------------------------------------------------- */

void PairGeoff::finish_layers()
{
  const GeoffLayerComm &lc = *layers_;
  const std::string chunking = chunk_summary() + device_graph_summary();    // collective
  const double model = lc.t_upload + lc.t_forward + lc.t_backward + lc.t_xfer;
  double mine[15] = {lc.t_graph, model, lc.t_comm, lc.t_scatter, (double) lc.n_calls,
                     lc.sum_rows, lc.sum_ghost_rows, lc.sum_edges, lc.sum_local,
                     lc.t_upload, lc.t_forward, lc.t_backward, lc.t_xfer, lc.sum_send, 0.0};
  double sum[15], max_comm = 0.0;
  MPI_Allreduce(mine, sum, 15, MPI_DOUBLE, MPI_SUM, world);
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
  mesg += chunking;
  if (loop > 0)
    mesg += fmt::format("; of the loop time {:.4g} s: model {:.1f}%, comm {:.1f}%", loop,
                        100.0 * sum[1] / p / loop, 100.0 * sum[2] / p / loop);
  mesg += fmt::format("; graph = {:.0f} own atoms + {:.0f} ghost rows ({:.0f} rows sent)",
                      sum[8] / sum[4], sum[6] / sum[4], sum[13] / sum[4]);
  const double ms = 1000.0 / std::max(sum[4], 1.0);    // mean over ranks, per call
  mesg += fmt::format(
      "\npair geoff phases (ms per step, mean over ranks{}): graph {:.4g}, upload {:.4g}, "
      "forward {:.4g}, backward {:.4g}, device<->host rows {:.4g}, comm {:.4g}, results "
      "{:.4g}", torch_->sync_timing ? ", device synchronised" : "; device work is counted "
      "where the host waits for it: `pair_style geoff ... timing sync` to attribute it",
      sum[0] * ms, sum[9] * ms, sum[10] * ms, sum[11] * ms, sum[12] * ms, sum[2] * ms,
      sum[3] * ms);
  utils::logmesg(lmp, mesg + "\n");
}
