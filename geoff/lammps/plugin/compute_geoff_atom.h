/* -*- c++ -*- ----------------------------------------------------------
   compute geoff/atom: the per-atom property heads of a geoff model (exported by `geoff
   export`) evaluated during a run, whatever the pair style.

   compute ID group-ID geoff/atom model.pt El1 El2 ...   (one element per atom type)

   One property (e.g. barrier_mean): a per-atom vector, c_ID. Several: a per-atom array,
   c_ID[1] ... c_ID[k] in the order of the export's `properties`. Atoms outside the group
   get 0. Units: the property's own (eV for barriers).

   The model is loaded, and each evaluation's graph is built, by a private PairGeoff (the
   pair style's code: pair_geoff.cpp, layer_comm.cpp) on this compute's full neighbour list
   with the model's cutoff (occasional on one rank; on several, a perpetual list with ghost
   neighbours, rebuilt at each reneighbouring, since LAMMPS has no occasional ghost lists):
   - one MPI rank: the periodic graph (local atoms + shifts), the graph ASE builds;
   - several ranks: the ghosts graph (local atoms and ghosts with their neighbours), which
     needs a ghost shell of n_layers x cutoff + skin (`comm_modify cutoff`, checked in init).
------------------------------------------------------------------------- */

#ifdef COMPUTE_CLASS
// clang-format off
ComputeStyle(geoff/atom,ComputeGeoffAtom);
// clang-format on
#else

#ifndef LMP_COMPUTE_GEOFF_ATOM_H
#define LMP_COMPUTE_GEOFF_ATOM_H

#include "compute.h"

#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairGeoff;

class ComputeGeoffAtom : public Compute {
 public:
  ComputeGeoffAtom(class LAMMPS *, int, char **);
  ~ComputeGeoffAtom() override;
  void init() override;
  void init_list(int, class NeighList *) override;
  void compute_peratom() override;
  double memory_usage() override;

 private:
  std::unique_ptr<PairGeoff> engine;    // the model and the graph builders
  std::vector<std::string> properties;    // the model outputs, one column each
  class NeighList *list;
  bool ghosts;      // this run: graph ghosts (several ranks) or periodic (one rank)
  int nmax;         // rows allocated in vector_atom / array_atom
  std::vector<double> values;    // this call's properties of the local atoms (nlocal x k)

  void read_properties();
  void check_ghost_shell();
  void evaluate();    // fills `values` from the model
  void store();       // `values` -> vector_atom / array_atom (0 outside the group)
};

}    // namespace LAMMPS_NS

#endif
#endif
