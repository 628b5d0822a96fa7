/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff: geoff (GEOmetric Force Fields) TorchScript models in LAMMPS.

   pair_style geoff [device auto|cpu|cuda] [graph auto|periodic|layers|ghosts] [overlap <A>]
                    [timing fast|sync] [chunk <edges>] [graph_on auto|host|device]
   pair_coeff * * model.pt Cu Zr          (one element per atom type)

   The model file is written by `geoff export`; it carries its own metadata (species,
   cutoff, message-passing layers, dtype, device). Newton on.

   graph periodic (default on one MPI rank): the graph holds the local atoms only; an edge to
     a ghost becomes an edge to its owner with a periodic shift, exactly as in ASE. No ghost
     shell beyond the cutoff is needed.
   graph layers (default on several ranks, for models exported with their per-layer pieces):
     local atoms plus one cutoff of ghosts; after every layer the ghosts' node features come
     from their owners (forward comm), their gradients go back in the backward pass (reverse
     comm). layer_comm.cpp, layer_model.cpp.
   graph ghosts (default on several ranks for other models: domain decomposition): the graph
     holds local and ghost atoms with the neighbours of ghosts (full list with ghost
     neighbours); the ghost shell must reach n_layers x cutoff + skin (comm_modify cutoff),
     which init_style checks.
   chunk N (default 131072, 0 = off): a rank whose graph has more than N edges runs the
     per-layer pieces over chunks of about N edges with recomputation (layer_chunks.cpp; one
     rank then uses them instead of the fused periodic forward): exact, and memory bounded by
     the node features of every layer plus one chunk's per-edge activations.
   graph_on device (default on a GPU) | host (default on the CPU): where the edges of graph
     periodic and graph layers are found each step (graph_device.cpp): on the device from the
     candidates of each neighbour-list build, or on the host and uploaded.
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(geoff,PairGeoff);
// clang-format on
#else

#ifndef LMP_PAIR_GEOFF_H
#define LMP_PAIR_GEOFF_H

#include "pair.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;    // torch::Tensor
}
namespace c10 {
template <class Key, class Value> class Dict;    // the graph handed to the model
}

namespace LAMMPS_NS {

struct GeoffTorch;        // the TorchScript module and device: geoff_torch.h
struct GeoffLayerComm;    // graph layers: buffers, metadata, timers (layer_comm.h)
struct GeoffLayerTape;    // graph layers: what the forward pass keeps (layer_model.cpp)
struct GeoffChunks;       // chunk N: the chunks of this call, counters (layer_chunks.h)
struct GeoffChunkRun;     // chunk N: one call's full tensors (layer_chunks.cpp)
struct GeoffDeviceGraph;  // graph_on device: candidates and this step's graph (graph_device.h)

class PairGeoff : public Pair {
 public:
  PairGeoff(class LAMMPS *);
  ~PairGeoff() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void setup() override;
  void finish() override;
  double memory_usage() override;

  // graph layers: node features of ghosts (forward) and their gradients (reverse).
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  // compute geoff/atom (compute_geoff_atom.cpp) drives a private PairGeoff: it shares the
  // model loading (coeff) and the graph builders, not the force pass.
  friend class ComputeGeoffAtom;
  std::unique_ptr<GeoffTorch> torch_;

  // From the model's metadata.
  std::string model_file, model_name, model_dtype, model_device;
  std::string metadata_json;            // the export's metadata record, as read
  std::string log_name = "pair_style geoff";    // who the load line of coeff names
  std::vector<std::string> species;    // element symbols of the model
  double cutoff;                        // Å
  int n_layers;                         // message-passing layers
  int hops;                             // receptive field in cutoff spheres (metadata
                                        // receptive_hops); graph ghosts needs hops x cutoff
  bool global_frames;                   // model is not local: one MPI rank only
  bool conservative;                    // forces are -dE/dx, not a direct force head

  // Settings.
  std::string device_request;    // auto | cpu | cuda
  std::string graph_request;     // auto | periodic | ghosts
  std::string graph_on_request;  // auto | host | device
  bool graph_on_device;          // this run: the graph is built on the model's device
  bool periodic_graph;           // this run: local atoms + shifts (one rank) or ghosts
  double overlap_request;        // pair_style ... overlap <A>; < 0: from the model (below)
  double overlap;                // A: two atoms closer than this stop the run (0: off)
  double min_rsq;                // closest pair of the last neighbour pass (squared A)
  int min_i, min_j;              // ... and its atoms (indices)

  std::vector<int64_t> type2species;    // LAMMPS type (1..ntypes) -> model species index

  // Work buffers, reused between steps.
  std::vector<int> adj_start, adj_count, adj;    // neighbours within the cutoff (CSR)
  std::vector<int> depth, gidx, graph_atoms, frontier, next_frontier;
  std::vector<int> edge_j;    // LAMMPS index of each edge's neighbour (the image it is)
  std::vector<double> pos_buf, shift_buf;
  std::vector<int64_t> species_buf, edge_buf;

  // Timing (seconds, this rank) and graph sizes, reset at each run's setup.
  double t_graph, t_model, t_scatter, sum_atoms, sum_edges;
  long n_calls;
  bool reset_timers;    // set by setup(): the next call is the setup force call

  // graph layers (per-layer communication): layer_comm.cpp.
  std::unique_ptr<GeoffLayerComm> layers_;
  bool layered;                  // this run: per-layer communication
  void read_layer_metadata(const std::string &metadata_json);
  bool init_style_layers();      // chooses graph layers; true if this run uses it
  void compute_layers(int eflag, int vflag);
  int build_graph_layers();      // returns the number of edges
  void probe_send_rows();                     // which local rows LAMMPS sends
  void exchange(int width, bool forward);     // LAMMPS forward/reverse comm of the buffer
  // Host side of one exchange, in the model's dtype T (layer_comm.cpp explains the rows).
  template <typename T> void rows_forward(const T *send, T *ghosts, int width);
  template <typename T> void rows_reverse(const T *ghosts, T *send, int width);
  void run_layers(int n_edges);                  // layer_model.cpp: the model in pieces
  at::Tensor ghosts_exchange(const at::Tensor &rows, bool forward);    // its device side
  void layers_forward(GeoffLayerTape &tape, int n_edges);
  void layers_backward(GeoffLayerTape &tape);

  void finish_layers();

  // graph_on device (graph periodic and layers): candidates per neighbour-list build, the
  // within-cutoff edges on the device every step (graph_device.cpp).
  std::unique_ptr<GeoffDeviceGraph> dgraph_;
  void choose_graph_on();              // init_style: graph_on_device for this run
  void rebuild_graph_candidates();     // after a neighbour-list build
  int build_graph_device();            // returns the number of edges
  void host_edges();                   // edge_buf and edge_j from the kept candidates
  double device_graph_bytes() const;   // its host lists (memory_usage)
  std::string device_graph_summary();  // collective (MPI_Allreduce); "" with graph_on host
  // The graph of this call on the model's device (graph_tensors' keys): the device graph, or
  // the host buffers uploaded (`shifts` false: zero shifts, graph ghosts).
  c10::Dict<std::string, at::Tensor> graph_input(int n_edges, bool shifts);

  // chunk N (edges per chunk, 0 = off): the pieces over chunks of atoms with recomputation,
  // memory bounded by the node features of every layer plus one chunk (layer_chunks.cpp).
  std::unique_ptr<GeoffChunks> chunks_;
  int64_t chunk_edges;
  bool chunk_explicit;    // chunk N given in pair_style (a refusal is then logged at init)
  void read_chunk_metadata(const std::string &metadata_json);
  void log_chunk_refusal();
  bool use_chunks(int64_t n_edges) const;
  void plan_chunks(int64_t n_edges);
  void run_chunked(int n_edges);
  void chunks_forward(GeoffChunkRun &run);
  void chunks_backward(GeoffChunkRun &run);
  std::string chunk_summary();    // collective (MPI_Allreduce)
  void run_whole(int n_edges);    // graph periodic / ghosts: model.forward on the whole graph
  std::string chunk_hint(int64_t n_edges) const;    // for the error of a failed whole graph

  // pair_coeff and compute, step by step.
  void check_model_file();                          // exists, a file, an intact zip
  std::string load_module();                        // TorchScript on the CPU; metadata JSON
  void read_metadata(const std::string &text);      // species, cutoff, layers, dtype, ...
  void map_elements(const std::vector<std::string> &elements);
  void node_rank_and_size(int &rank, int &size);    // this rank among its node's ranks
  void choose_device();                             // device and CPU threads
  void fill_atoms();                                // positions, species of graph_atoms
  void scatter_forces(const double *forces, int n_force);
  void add_energies(const double *energies, double total);
  void add_strain_virial(const double *virial3x3);
  void add_edge_virials(const double *edge_grad, int n_edges);

  void allocate();
  void neighbours_within_cutoff(int nlist);
  void stop_on_overlap();          // error->one naming the closest pair below `overlap`
  int build_graph_ghosts();      // returns the number of edges
  int build_graph_periodic();    // returns the number of edges
};

}    // namespace LAMMPS_NS

#endif
#endif
