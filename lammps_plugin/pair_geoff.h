/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff: geoff (GEOmetric Force Fields) TorchScript models in LAMMPS.

   pair_style geoff [device auto|cpu|cuda] [graph auto|periodic|ghosts]
   pair_coeff * * model.pt Cu Zr          (one element per atom type)

   The model file is written by `geoff export`; it carries its own metadata (species,
   cutoff, message-passing layers, dtype, device). Newton on.

   graph periodic (default on one MPI rank): the graph holds the local atoms only; an edge to
     a ghost becomes an edge to its owner with a periodic shift, exactly as in ASE. No ghost
     shell beyond the cutoff is needed.
   graph ghosts (default on several ranks: domain decomposition): the graph holds local and
     ghost atoms with the neighbours of ghosts (full list with ghost neighbours); the ghost
     shell must reach n_layers x cutoff + skin (comm_modify cutoff), which init_style checks.
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

namespace LAMMPS_NS {

struct GeoffTorch;    // the TorchScript module and device; defined in pair_geoff.cpp

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

 protected:
  std::unique_ptr<GeoffTorch> torch_;

  // From the model's metadata.
  std::string model_file, model_name, model_dtype, model_device;
  std::vector<std::string> species;    // element symbols of the model
  double cutoff;                        // Å
  int n_layers;                         // message-passing layers
  int hops;                             // receptive field in cutoff spheres: n_layers (+1 for a
                                        // direct force head); graph ghosts needs hops x cutoff
  bool global_frames;                   // model is not local: one MPI rank only
  bool conservative;                    // forces are -dE/dx, not a direct force head

  // Settings.
  std::string device_request;    // auto | cpu | cuda
  std::string graph_request;     // auto | periodic | ghosts
  bool periodic_graph;           // this run: local atoms + shifts (one rank) or ghosts
  double overlap_request;        // pair_style ... overlap <A>; < 0: from the model (below)
  double overlap;                // A: two atoms closer than this stop the run (0: off)
  double min_rsq;                // closest pair of the last neighbour pass (squared A)
  int min_i, min_j;              // ... and its atoms (indices)

  std::vector<int64_t> type2species;    // LAMMPS type (1..ntypes) -> model species index

  // Work buffers, reused between steps.
  std::vector<int> adj_start, adj_count, adj;    // neighbours within the cutoff (CSR)
  std::vector<int> depth, gidx, graph_atoms, frontier, next_frontier;
  std::vector<int> owner, tag2local, edge_j;    // periodic graph: owner of each ghost
  std::vector<double> pos_buf, shift_buf;
  std::vector<int64_t> species_buf, edge_buf;

  // Timing (seconds, this rank) and graph sizes, reset at each run's setup.
  double t_graph, t_model, t_scatter, sum_atoms, sum_edges;
  long n_calls;
  bool reset_timers;    // set by setup(): the next call is the setup force call

  void allocate();
  void neighbours_within_cutoff(int nlist);
  int build_graph_ghosts();      // returns the number of edges
  int build_graph_periodic();    // returns the number of edges
};

}    // namespace LAMMPS_NS

#endif
#endif
