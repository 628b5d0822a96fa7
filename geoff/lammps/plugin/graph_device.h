/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff ... graph_on device: the graph of graph periodic and graph layers built on
   the model's device (graph_device.cpp). Include after geoff_torch.h.

   After each LAMMPS neighbour-list build the host turns the list (every pair within cutoff +
   skin: the candidates) into graph rows and candidate edges and uploads them once. Every step
   only the positions of the atoms the candidates touch (P x 3 doubles) and the cell go up; the
   device computes the candidates' distances in float64, keeps those within the cutoff (the
   host graph's test, in the same order, so that the edges are the host graph's edges in the
   host graph's order), and makes the edge list, the shifts and the positions in the model's
   dtype. The kept candidates' indices come back (one copy) for what the host still does edge
   by edge: per-atom virials and the plan of chunk N.
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_GRAPH_DEVICE_H
#define LMP_GEOFF_GRAPH_DEVICE_H

#include <cstdint>
#include <string>
#include <vector>

namespace LAMMPS_NS {

struct GeoffDeviceGraph {
  // Per neighbour-list build (host). Points: the LAMMPS atoms whose positions go up each step;
  // point r < n_rows is graph row r (graph_atoms[r]), the others are further periodic images
  // that candidates reach. Candidate c: receiver row cand_recv[c] (a local atom), sender row
  // cand_send[c], the sender's image as point cand_point[c] and LAMMPS atom cand_j[c].
  std::vector<int> points;
  std::vector<int> point_of;    // LAMMPS atom -> point, -1 if none
  std::vector<int64_t> cand;    // (3, C): cand_recv, cand_send, cand_point
  std::vector<int> cand_j;
  int64_t n_cand = 0;
  int n_rows = 0, nlocal = -1, nall = -1;
  bool valid = false;    // false: rebuild at the next call (init_style, a new run)

  // On the device, per neighbour-list build: the candidates (3, C) int64, the rows' species
  // (n_rows,), n_local (1,), pbc (1,3), batch (n_rows,).
  torch::Tensor cand_d, species_d, n_local_d, pbc_d, batch_d;
  // This step: the kept candidates (E,) on the host, and the graph (graph_tensors' keys).
  // Candidate indices fit an int: LAMMPS' neighbour lists count pairs in ints.
  std::vector<int> keep;    // filled only when the host needs the edges (host_edges)
  c10::Dict<std::string, torch::Tensor> graph;

  // Since the run's setup (the setup call's build is not counted): candidate builds and
  // their seconds (part of the graph phase; the timing summary reports them).
  double t_rebuild = 0;
  long n_rebuilds = 0;
  void reset() { t_rebuild = 0, n_rebuilds = 0; }
};

}    // namespace LAMMPS_NS

#endif
