/* ----------------------------------------------------------------------
   pair_style geoff ... chunk N: which models and calls are chunked, the chunks of a graph
   (host side, once per force call) and the summary line (layer_chunks.cpp runs them).
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "json.h"

#include "geoff_torch.h"
#include "layer_chunks.h"
#include "layer_comm.h"

#include <algorithm>

using namespace LAMMPS_NS;

/* ----------------------------------------------------------------------
   Metadata (pair_coeff): the pieces and a state that splits by atom rows.
------------------------------------------------------------------------- */

void PairGeoff::read_chunk_metadata(const std::string &json_text)
{
  GeoffChunks &ch = *chunks_;
  ch.can = false;
  if (layers_->names.empty()) {
    ch.refusal = "it has no per-layer pieces (" + layers_->refusal + ")";
    return;
  }
  std::vector<std::string> edge_state;
  try {
    auto meta = json::parse(json_text);
    const auto &lcm = meta["layer_comm"];
    if (!lcm.contains("edge_state")) {
      ch.refusal = "it was exported before chunking (no layer_comm edge_state): re-export it";
      return;
    }
    edge_state = lcm["edge_state"].get<std::vector<std::string>>();
  } catch (const json::exception &e) {
    error->all(FLERR, "pair_style geoff: '{}' has an invalid layer_comm edge_state entry ({}); "
               "re-export it with `geoff export`", model_file, e.what());
  }
  ch.can = edge_state.empty();
  if (!ch.can) ch.refusal = "its layers keep per-edge state (" + edge_state.front() + ")";
}

// pair_coeff, after read_chunk_metadata: say so when an explicit `chunk N` cannot apply.
void PairGeoff::log_chunk_refusal()
{
  if (chunk_explicit && chunk_edges > 0 && !chunks_->can && comm->me == 0)
    utils::logmesg(lmp, "pair_style geoff: chunk {} does not apply to model '{}': {}; large "
                   "graphs run unchunked\n", chunk_edges, model_file, chunks_->refusal);
}

// Whether this call runs chunked: a model that can, `chunk` on, more edges than a chunk.
bool PairGeoff::use_chunks(int64_t n_edges) const
{
  return chunks_->can && chunk_edges > 0 && n_edges > chunk_edges;
}

/* ----------------------------------------------------------------------
   Chunks of the graph built by build_graph_layers (edges sorted by receiver; rows of ghosts
   owned elsewhere have no edges): whole receivers up to chunk_edges edges (one row at least),
   then the ghost rows chunk_edges at a time. Host work O(rows + edges).
------------------------------------------------------------------------- */

void PairGeoff::plan_chunks(int64_t n_edges)
{
  GeoffChunks &ch = *chunks_;
  const int64_t n = (int64_t) graph_atoms.size();
  const int64_t *recv = edge_buf.data();
  const int64_t *send = edge_buf.data() + n_edges;
  ch.ptr.assign(n + 1, 0);
  for (int64_t e = 0; e < n_edges; ++e) ++ch.ptr[recv[e] + 1];
  for (int64_t i = 0; i < n; ++i) ch.ptr[i + 1] += ch.ptr[i];
  ch.stamp.assign(n, -1);
  ch.local.resize(n);
  ch.list.clear();
  ch.index.clear();
  ch.index.reserve(2 * n + 3 * n_edges);    // rows (own + senders) and the edge lists
  const int nlocal = atom->nlocal;
  int64_t a = 0;
  while (a < n) {
    int64_t b = a + 1;
    if (a < nlocal)
      while (b < nlocal && ch.ptr[b + 1] - ch.ptr[a] <= chunk_edges) ++b;
    else
      b = std::min(n, a + chunk_edges);
    GeoffChunk c{a, b, ch.ptr[a], ch.ptr[b], (int64_t) ch.index.size(), 0, 0};
    const int id = (int) ch.list.size();
    for (int64_t r = a; r < b; ++r) {
      ch.stamp[r] = id;
      ch.local[r] = (int) (r - a);
      ch.index.push_back(r);
    }
    for (int64_t e = c.lo; e < c.hi; ++e) {
      const int64_t s = send[e];
      if (ch.stamp[s] == id) continue;
      ch.stamp[s] = id;
      ch.local[s] = (int) (ch.index.size() - c.rows_off);
      ch.index.push_back(s);
    }
    c.n_rows = (int64_t) ch.index.size() - c.rows_off;
    c.edge_off = (int64_t) ch.index.size();
    for (int64_t e = c.lo; e < c.hi; ++e) ch.index.push_back(recv[e] - a);
    for (int64_t e = c.lo; e < c.hi; ++e) ch.index.push_back(ch.local[send[e]]);
    ch.max_chunk_edges = std::max(ch.max_chunk_edges, c.edges());
    ch.list.push_back(c);
    a = b;
  }
}

/* ----------------------------------------------------------------------
   The chunking line of the end-of-run summary (every rank must call it: it reduces).
------------------------------------------------------------------------- */

std::string PairGeoff::chunk_summary()
{
  const GeoffChunks &ch = *chunks_;
  double mine[3] = {(double) ch.n_chunked, ch.sum_chunks, (double) ch.max_chunk_edges};
  double sum[2], most = 0;
  MPI_Allreduce(mine, sum, 2, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(mine + 2, &most, 1, MPI_DOUBLE, MPI_MAX, world);
  if (sum[0] <= 0) {
    if (chunk_edges > 0 && !ch.can)
      return fmt::format("; not chunked (chunk {}): {}", chunk_edges, ch.refusal);
    return "";
  }
  return fmt::format("; edge chunks (chunk {}): {:.4g} per chunked call, up to {:.0f} edges "
                     "each, in {:.0f} rank-calls", chunk_edges, sum[1] / sum[0], most, sum[0]);
}
