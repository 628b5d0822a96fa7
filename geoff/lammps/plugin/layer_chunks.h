/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff ... chunk N: the model in pieces over chunks of atoms, with recomputation
   (layer_chunks.cpp). What PairGeoff keeps for it between calls.
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_LAYER_CHUNKS_H
#define LMP_GEOFF_LAYER_CHUNKS_H

#include <cstdint>
#include <string>
#include <vector>

namespace LAMMPS_NS {

// Edges per chunk when the input does not say (as geoff.potentials.chunking's default).
constexpr int64_t GEOFF_DEFAULT_CHUNK = 131072;

/* One chunk: own rows [a, b) of the graph (whole receivers: every edge into them, and no
   other edge), edges [lo, hi) (edges are sorted by receiver), and its sub-graph's rows: the
   own rows first, then the senders outside [a, b). In the index tensor: n_rows row indices
   at rows_off, then the sub-graph's edge_index (2, hi - lo) at edge_off. */
struct GeoffChunk {
  int64_t a, b, lo, hi, rows_off, n_rows, edge_off;
  int64_t own() const { return b - a; }
  int64_t edges() const { return hi - lo; }
};

struct GeoffChunks {
  bool can = false;       // the model's state splits by atom rows (metadata edge_state = [])
  std::string refusal;    // why not
  std::vector<GeoffChunk> list;       // this call's chunks
  std::vector<int64_t> index;         // host side of the index tensor (see GeoffChunk)
  std::vector<int64_t> ptr;           // first edge of each graph row (n + 1)
  std::vector<int> stamp, local;      // planning: last chunk that took a row, its local index
  // Since the run's setup: chunked calls and chunks (the summary at the end of a run).
  double sum_chunks = 0;
  long n_chunked = 0;
  int64_t max_chunk_edges = 0;
  void reset() { sum_chunks = 0, n_chunked = 0, max_chunk_edges = 0; }
};

}    // namespace LAMMPS_NS

#endif
