/* ----------------------------------------------------------------------
   pair_style geoff ... graph_on device: the graph of graph periodic and graph layers built on
   the model's device (graph_device.h says what goes where and when).

   The edges are exactly build_graph_layers' edges, in its order: the candidates are LAMMPS'
   full list of the local atoms, walked atom by atom as the host graph walks it, and an edge is
   kept when |x_j - x_i|^2 < cutoff^2, with the squared distance summed in the host's order in
   float64. Rows differ: a ghost row exists for every atom owned elsewhere that a candidate
   reaches (within cutoff + skin), so that rows and points stay fixed between neighbour-list
   builds; a ghost row without edges changes no local energy and gets no force.
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "neigh_list.h"
#include "neighbor.h"

#include "geoff_torch.h"
#include "graph_device.h"
#include "layer_comm.h"

using namespace LAMMPS_NS;

/* ----------------------------------------------------------------------
   graph_on auto|host|device (pair_style), resolved at init_style: the device graph serves
   graph periodic and graph layers; graph ghosts builds on the host. auto: the device when the
   model runs on a GPU (what it saves is the upload of the edge list), the host otherwise.
------------------------------------------------------------------------- */

void PairGeoff::choose_graph_on()
{
  const bool can = layered || periodic_graph;
  graph_on_device = can && (graph_on_request == "device" ||
                            (graph_on_request == "auto" && torch_->on_gpu()));
  if (comm->me == 0 && graph_on_device)
    utils::logmesg(lmp, "pair_style geoff: graph_on device (candidate edges uploaded once per "
                   "neighbour-list build; each step only positions go up and the edges within "
                   "the cutoff are found on the model's device)\n");
  else if (comm->me == 0 && !can && graph_on_request == "device")
    utils::logmesg(lmp, "pair_style geoff: graph_on device serves graph periodic and graph "
                   "layers; graph ghosts builds its graph on the host\n");
  dgraph_->valid = false;    // candidates again at the first call of the run
}

/* ----------------------------------------------------------------------
   After a neighbour-list build: rows and candidates from LAMMPS' full list of the local
   atoms, then points, species and the candidates to the device.
------------------------------------------------------------------------- */

void PairGeoff::rebuild_graph_candidates()
{
  GeoffDeviceGraph &dg = *dgraph_;
  const auto t0 = std::chrono::steady_clock::now();
  GeoffLayerComm &lc = *layers_;
  const tagint *tag = atom->tag;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  lc.begin_rows(tag, nall);
  graph_atoms.resize(nlocal);
  for (int i = 0; i < nlocal; ++i) {
    graph_atoms[i] = i;
    lc.set_row(tag[i], i);
  }
  int64_t count = 0;
  for (int i = 0; i < nlocal; ++i) count += numneigh[i];
  dg.n_cand = count;
  dg.cand.resize(3 * count + 3);
  dg.cand_j.resize(count + 1);
  int64_t *recv = dg.cand.data(), *send = recv + count, *point = send + count;
  int64_t c = 0;
  for (int i = 0; i < nlocal; ++i) {    // the host graph's order (build_graph_layers)
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; ++jj, ++c) {
      const int j = jlist[jj] & NEIGHMASK;
      int r = j < nlocal ? j : lc.row_of(tag[j]);
      if (r < 0) {
        r = (int) graph_atoms.size();
        graph_atoms.push_back(j);
        lc.set_row(tag[j], r);
      }
      recv[c] = i;
      send[c] = r;
      dg.cand_j[c] = j;
    }
  }
  // Points: the rows' atoms, then the other images the candidates reach.
  dg.n_rows = (int) graph_atoms.size();
  dg.points.assign(graph_atoms.begin(), graph_atoms.end());
  dg.point_of.assign(nall, -1);
  for (int r = 0; r < dg.n_rows; ++r) dg.point_of[graph_atoms[r]] = r;
  for (c = 0; c < count; ++c) {
    int &p = dg.point_of[dg.cand_j[c]];
    if (p < 0) {
      p = (int) dg.points.size();
      dg.points.push_back(dg.cand_j[c]);
    }
    point[c] = p;
  }
  fill_atoms();    // species_buf (positions go up each step)

  const auto dev = torch_->device;
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  dg.cand_d = torch::from_blob(dg.cand.data(), {3, count}, i64).to(dev, false, true);
  dg.species_d = torch::from_blob(species_buf.data(), {dg.n_rows}, i64).to(dev, false, true);
  dg.n_local_d = torch::full({1}, (int64_t) nlocal, i64).to(dev);
  dg.pbc_d = torch::tensor({domain->xperiodic != 0, domain->yperiodic != 0,
                            domain->zperiodic != 0}).view({1, 3}).to(dev);
  dg.batch_d = torch::zeros({dg.n_rows}, i64.device(dev));
  dg.nlocal = nlocal;
  dg.nall = nall;
  dg.valid = true;
  dg.t_rebuild += seconds_since(t0);
  ++dg.n_rebuilds;
}

// The timing summary's note: candidate builds since the run's setup, ms each.
std::string PairGeoff::device_graph_summary()
{
  GeoffDeviceGraph &dg = *dgraph_;
  if (!graph_on_device) return "";
  double mine[2] = {dg.t_rebuild, (double) dg.n_rebuilds}, sum[2];
  MPI_Allreduce(mine, sum, 2, MPI_DOUBLE, MPI_SUM, world);
  return fmt::format("; graph_on device: {:.0f} candidate builds per rank, {:.4g} ms each "
                     "(in graph)", sum[1] / comm->nprocs,
                     sum[1] > 0 ? 1000 * sum[0] / sum[1] : 0.0);
}

/* ----------------------------------------------------------------------
   One step: points' positions and the cell up, distances and the kept candidates on the
   device, their indices back. Fills dgraph_->graph and graph_atoms; returns the edge count.
   The host gets the edges (edge_buf, edge_j) only when it needs them edge by edge.
------------------------------------------------------------------------- */

int PairGeoff::build_graph_device()
{
  GeoffDeviceGraph &dg = *dgraph_;
  GeoffTorch &tm = *torch_;
  if (!dg.valid || neighbor->ago == 0 || dg.nlocal != atom->nlocal ||
      dg.nall != atom->nlocal + atom->nghost)
    rebuild_graph_candidates();
  double **x = atom->x;
  const int64_t P = (int64_t) dg.points.size(), C = dg.n_cand, n = dg.n_rows;
  torch::Tensor real = tm.up_real.rows(1, 3 * P + 9, torch::kFloat64, tm.on_gpu()).view({-1});
  double *xp = real.data_ptr<double>();
  for (int64_t p = 0; p < P; ++p)
    for (int d = 0; d < 3; ++d) xp[3 * p + d] = x[dg.points[p]][d];
  const double *h = domain->h;    // as graph_tensors: rows a, b, c of the cell
  const double cell[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};
  std::copy(cell, cell + 9, xp + 3 * P);
  torch::Tensor up = real.to(tm.device, /*non_blocking=*/tm.on_gpu(), /*copy=*/true);
  torch::Tensor X = up.narrow(0, 0, 3 * P).view({P, 3});

  // Squared distances as the host sums them: (dx*dx + dy*dy) + dz*dz, one rounding each.
  const torch::Tensor &cand = dg.cand_d;
  torch::Tensor d = X.index_select(0, cand[2]) - X.index_select(0, cand[0]);
  torch::Tensor dx = d.select(1, 0), dy = d.select(1, 1), dz = d.select(1, 2);
  torch::Tensor rsq = dx * dx;
  rsq.add_(dy * dy).add_(dz * dz);
  torch::Tensor keep = (rsq < cutoff * cutoff).nonzero().view({-1});
  const int64_t E = keep.size(0);
  // Back to the host in one int32 copy: the kept candidates when the host needs the edges one
  // by one (virials, the chunk plan), and the closest candidate for the overlap check.
  const bool edges_to_host = vflag_global || vflag_atom || use_chunks(E);
  const bool check = overlap > 0.0 && C > 0;
  std::vector<torch::Tensor> parts;
  if (edges_to_host) parts.push_back(keep);
  if (check) parts.push_back(rsq.argmin().view({1}));
  torch::Tensor back;
  if (!parts.empty()) back = torch::cat(parts).to(torch::kInt32).to(torch::kCPU).contiguous();
  const int32_t *kept_h = back.defined() ? back.data_ptr<int32_t>() : nullptr;
  if (edges_to_host)
    dg.keep.assign(kept_h, kept_h + E);
  else
    dg.keep.clear();
  min_i = min_j = -1;
  if (check) {    // the closest candidate, measured again on the host as the host graph does
    const int64_t cmin = kept_h[edges_to_host ? E : 0];
    const int i = (int) dg.cand[cmin], j = dg.cand_j[cmin];
    const double ex = x[j][0] - x[i][0], ey = x[j][1] - x[i][1], ez = x[j][2] - x[i][2];
    const double r2 = ex * ex + ey * ey + ez * ez;
    if (r2 < cutoff * cutoff) min_rsq = r2, min_i = i, min_j = j;
  }

  torch::Tensor kept = cand.index_select(1, keep);    // (3, E)
  const auto dtype = tm.dtype;
  dg.graph = c10::Dict<std::string, torch::Tensor>();
  dg.graph.insert("positions", X.narrow(0, 0, n).to(dtype, false, /*copy=*/true));
  dg.graph.insert("shifts", (X.index_select(0, kept[2]) - X.index_select(0, kept[1])).to(dtype));
  dg.graph.insert("cell", up.narrow(0, 3 * P, 9).view({1, 3, 3}).to(dtype, false, true));
  dg.graph.insert("species", dg.species_d);
  dg.graph.insert("edge_index", kept.narrow(0, 0, 2));
  dg.graph.insert("n_local", dg.n_local_d);
  dg.graph.insert("pbc", dg.pbc_d);
  dg.graph.insert("batch", dg.batch_d);

  if (edges_to_host) host_edges();
  return (int) E;
}

// The kept candidates as the host graph's edge_buf (receivers, senders) and edge_j.
void PairGeoff::host_edges()
{
  const GeoffDeviceGraph &dg = *dgraph_;
  const size_t E = dg.keep.size();
  const int64_t C = dg.n_cand;
  edge_buf.resize(2 * E + 2);
  edge_j.resize(E + 1);
  for (size_t e = 0; e < E; ++e) {
    const int64_t c = dg.keep[e];
    edge_buf[e] = dg.cand[c];
    edge_buf[E + e] = dg.cand[C + c];
    edge_j[e] = dg.cand_j[c];
  }
}

// Bytes of the host lists kept between neighbour-list builds (memory_usage).
double PairGeoff::device_graph_bytes() const
{
  const GeoffDeviceGraph &dg = *dgraph_;
  return sizeof(int) * (double) (dg.points.capacity() + dg.point_of.capacity() +
                                 dg.cand_j.capacity()) +
      sizeof(int) * (double) dg.keep.capacity() + sizeof(int64_t) * (double) dg.cand.capacity();
}

// The graph of this call: built on the device, or uploaded from the host buffers.
c10::Dict<std::string, torch::Tensor> PairGeoff::graph_input(int n_edges, bool shifts)
{
  if (graph_on_device) return dgraph_->graph;
  const bool periodic[3] = {domain->xperiodic != 0, domain->yperiodic != 0,
                            domain->zperiodic != 0};
  return graph_tensors(*torch_, (int) graph_atoms.size(), pos_buf.data(), species_buf.data(),
                       n_edges, edge_buf.data(), shifts ? shift_buf.data() : nullptr, domain->h,
                       periodic, atom->nlocal);
}
