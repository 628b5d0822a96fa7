/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff graph layers: per-layer communication under MPI (see layer_comm.cpp).

   The state that PairGeoff keeps for it: what the export says about the model's node
   features, the atom ID -> graph row lookup, the rows other ranks need, the buffer that
   LAMMPS' forward/reverse communication reads and writes (one row of doubles per LAMMPS
   atom, owned and ghost), and the timers of the summary printed at the end of a run.
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_LAYER_COMM_H
#define LMP_GEOFF_LAYER_COMM_H

#include "lmptype.h"

#include <string>
#include <unordered_map>
#include <vector>

namespace LAMMPS_NS {

struct GeoffLayerComm {
  // From the export's metadata (layer_comm): empty names = the model cannot run per layer.
  std::vector<std::string> names;    // state entries read at neighbours (node features)
  std::vector<int> widths;           // doubles per atom sent after layer k, k < n_layers - 1
  int max_width = 0;
  std::string refusal;               // why not (layer_comm_refusal), when names is empty

  // This step's graph (PairGeoff::graph_atoms): row r is LAMMPS atom graph_atoms[r]; rows
  // [0, nlocal) are the local atoms, then one row per ghost atom owned by another rank
  // (several periodic images of one atom share a row, with shifts). An edge to an image of a
  // local atom goes to that atom. Atom ID -> row:
  std::vector<int> tag_row;                          // atom ID -> row (dense IDs)
  std::unordered_map<tagint, int> tag_row_sparse;    // atom ID -> row (sparse IDs)
  bool dense = true;
  // Empties the lookup for the atoms' IDs tag[0..nall): a vector when the IDs are dense
  // enough, a hash map otherwise.
  void begin_rows(const tagint *tag, int nall)
  {
    tagint max_tag = 0;
    for (int i = 0; i < nall; ++i) max_tag = tag[i] > max_tag ? tag[i] : max_tag;
    dense = max_tag <= 4 * (tagint) nall + 1024;
    if (dense)
      tag_row.assign((size_t) max_tag + 1, -1);
    else
      tag_row_sparse.clear();
  }
  int row_of(tagint t) const    // -1: no row yet
  {
    if (dense) return tag_row[t];
    auto it = tag_row_sparse.find(t);
    return it == tag_row_sparse.end() ? -1 : it->second;
  }
  void set_row(tagint t, int r)
  {
    if (dense)
      tag_row[t] = r;
    else
      tag_row_sparse[t] = r;
  }

  // Rows LAMMPS sends to other ranks (or to its own periodic images): the local atoms that
  // appear in a forward send list, sorted; found by a one-column probe exchange after each
  // neighbour-list build. Only these rows leave the device before a forward exchange, and
  // only they receive gradients from a reverse exchange.
  std::vector<int> send_rows;
  std::vector<char> sent;    // mark per LAMMPS atom, filled by the probe
  bool probing = false, probed = false;

  // Communication buffer: nall x width doubles, LAMMPS atom index major; a pass sends
  // columns [col0, col0 + ncols) (several passes when width exceeds comm_forward). Grown with
  // headroom, never shrunk or zeroed as a whole.
  std::vector<double> buf;
  int width = 0, col0 = 0, ncols = 0;
  bool single = false;    // float32 model: two values per double (unpack_reverse adds floats)
  int slots(int values) const { return single ? (values + 1) / 2 : values; }

  // Seconds on this rank since the run's setup, by phase (pair_style ... timing sync waits for
  // the device at each phase boundary, so that device work is counted where it runs):
  // graph = neighbour list -> graph on the host; upload = graph to the device; forward =
  // embedding, layers, readout; backward = their gradients; xfer = exchanged rows between
  // device and host; comm = LAMMPS' MPI exchanges (waiting for other ranks included);
  // scatter = forces, energies and virials into LAMMPS' arrays (results to the host included).
  double t_graph = 0, t_upload = 0, t_forward = 0, t_backward = 0, t_xfer = 0, t_comm = 0,
         t_scatter = 0;
  double sum_rows = 0, sum_ghost_rows = 0, sum_edges = 0, sum_local = 0, sum_send = 0;
  long n_calls = 0, n_comms = 0;
  void reset()
  {
    t_graph = t_upload = t_forward = t_backward = t_xfer = t_comm = t_scatter = 0;
    sum_rows = sum_ghost_rows = sum_edges = sum_local = sum_send = 0;
    n_calls = n_comms = 0;
  }
};

}    // namespace LAMMPS_NS

#endif
