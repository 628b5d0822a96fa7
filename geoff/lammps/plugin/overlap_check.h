/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff: overlapping atoms found from the positions alone, before LAMMPS builds
   its first neighbour list (init_style). Coincident atoms in a thin periodic box give every
   atom more neighbours than `neigh_modify one` allows, so LAMMPS stops in the neighbour
   build, with its own advice, before compute() could name the two atoms.
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_OVERLAP_CHECK_H
#define LMP_GEOFF_OVERLAP_CHECK_H

namespace LAMMPS_NS {

class LAMMPS;

struct GeoffClosePair {
  int i = -1, j = -1;    // local atom indices (i < 0: no pair below the threshold)
  double rsq = 0.0;      // squared distance, A^2
};

// The closest pair of this rank's owned atoms closer than `threshold` (A), with the nearest
// periodic image in periodic dimensions (an atom and its own image are not a pair). Cell
// search on fractional coordinates: O(N) time and memory. Atoms owned by different MPI ranks
// are not compared here (compute() still checks them with the neighbour list).
GeoffClosePair closest_owned_pair(LAMMPS *lmp, double threshold);

}    // namespace LAMMPS_NS

#endif
