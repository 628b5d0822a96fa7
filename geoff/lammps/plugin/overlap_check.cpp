/* ----------------------------------------------------------------------
   pair_style geoff: the closest pair of owned atoms below the overlap threshold, from the
   positions alone (no neighbour list). See overlap_check.h.

   Atoms are binned on fractional coordinates. Along dimension k the box is t_k thick
   (1 / |row k of h^-1|), and two atoms d apart differ by at most d / t_k in fractional
   coordinate k; with n_k = floor(t_k / threshold) bins every pair closer than the threshold
   lies in the same or an adjacent bin. In periodic dimensions atoms are wrapped into the box
   and a neighbour bin across the boundary carries an explicit lattice shift, so each image
   is compared once (also when n_k is 1 or 2) and the result is exact for any tilt.
------------------------------------------------------------------------- */

#include "overlap_check.h"

#include "atom.h"
#include "domain.h"
#include "lammps.h"

#include <algorithm>
#include <cmath>
#include <vector>

using namespace LAMMPS_NS;

namespace {

struct Bins {
  int n[3];
  bool periodic[3];
  std::vector<int> start, atoms;    // CSR: atoms of bin b are atoms[start[b] .. start[b+1])

  int index(const int c[3]) const { return (c[2] * n[1] + c[1]) * n[0] + c[0]; }
};

// n_k = floor(thickness_k / threshold) bins per dimension, at least 1; at most ~2 bins per
// atom in all (larger bins keep the search exact, only slower).
void choose_bins(Bins &bins, const double thickness[3], double threshold, int natoms)
{
  const double cap = std::max(27.0, 2.0 * natoms);
  for (int k = 0; k < 3; ++k)
    bins.n[k] = (int) std::max(1.0, std::min(std::floor(thickness[k] / threshold), cap));
  while ((double) bins.n[0] * bins.n[1] * bins.n[2] > cap) {
    int *largest = std::max_element(bins.n, bins.n + 3);
    *largest = std::max(1, *largest / 2);
  }
}

}    // namespace

GeoffClosePair LAMMPS_NS::closest_owned_pair(LAMMPS *lmp, double threshold)
{
  GeoffClosePair best;
  const int nlocal = lmp->atom->nlocal;
  if (threshold <= 0.0 || nlocal < 2) return best;
  Domain *domain = lmp->domain;
  double **x = lmp->atom->x;
  const double *hi = domain->h_inv, *h = domain->h, *lo = domain->boxlo;

  Bins bins;
  const double thickness[3] = {1.0 / std::sqrt(hi[0] * hi[0] + hi[5] * hi[5] + hi[4] * hi[4]),
                               1.0 / std::sqrt(hi[1] * hi[1] + hi[3] * hi[3]),
                               1.0 / std::fabs(hi[2])};
  choose_bins(bins, thickness, threshold, nlocal);
  bins.periodic[0] = domain->xperiodic, bins.periodic[1] = domain->yperiodic;
  bins.periodic[2] = domain->zperiodic;
  const double lattice[3][3] = {{h[0], 0.0, 0.0}, {h[5], h[1], 0.0}, {h[4], h[3], h[2]}};    // a, b, c

  // Wrapped positions and bin of every atom with finite coordinates (-1: skipped).
  std::vector<double> pos(3 * (size_t) nlocal);
  std::vector<int> bin_of(nlocal, -1);
  std::vector<int> cell_of(3 * (size_t) nlocal);
  for (int i = 0; i < nlocal; ++i) {
    const double d[3] = {x[i][0] - lo[0], x[i][1] - lo[1], x[i][2] - lo[2]};
    if (!std::isfinite(d[0]) || !std::isfinite(d[1]) || !std::isfinite(d[2])) continue;
    double f[3] = {hi[0] * d[0] + hi[5] * d[1] + hi[4] * d[2], hi[1] * d[1] + hi[3] * d[2],
                   hi[2] * d[2]};
    double *p = &pos[3 * (size_t) i];
    for (int k = 0; k < 3; ++k) p[k] = x[i][k];
    for (int k = 0; k < 3; ++k) {
      if (!bins.periodic[k]) continue;
      const double m = std::floor(f[k]);
      f[k] -= m;
      for (int e = 0; e < 3; ++e) p[e] -= m * lattice[k][e];
    }
    int *c = &cell_of[3 * (size_t) i];
    for (int k = 0; k < 3; ++k)    // clamped: rounding at 1.0, atoms outside a fixed box
      c[k] = (int) std::min(std::max(std::floor(f[k] * bins.n[k]), 0.0), bins.n[k] - 1.0);
    bin_of[i] = bins.index(c);
  }

  const int nbins = bins.n[0] * bins.n[1] * bins.n[2];
  bins.start.assign(nbins + 1, 0);
  for (int i = 0; i < nlocal; ++i)
    if (bin_of[i] >= 0) ++bins.start[bin_of[i] + 1];
  for (int b = 0; b < nbins; ++b) bins.start[b + 1] += bins.start[b];
  bins.atoms.resize(bins.start[nbins]);
  std::vector<int> fill(bins.start.begin(), bins.start.end() - 1);
  for (int i = 0; i < nlocal; ++i)
    if (bin_of[i] >= 0) bins.atoms[fill[bin_of[i]]++] = i;

  best.rsq = threshold * threshold;
  for (int i = 0; i < nlocal; ++i) {
    if (bin_of[i] < 0) continue;
    const int *c = &cell_of[3 * (size_t) i];
    const double *pi = &pos[3 * (size_t) i];
    for (int o = 0; o < 27; ++o) {
      int nb[3], shift[3];
      const int off[3] = {o % 3 - 1, (o / 3) % 3 - 1, o / 9 - 1};
      bool inside = true;
      for (int k = 0; k < 3; ++k) {
        nb[k] = c[k] + off[k];
        shift[k] = nb[k] < 0 ? -1 : (nb[k] >= bins.n[k] ? 1 : 0);
        if (shift[k] != 0 && !bins.periodic[k]) inside = false;
        nb[k] -= shift[k] * bins.n[k];
      }
      if (!inside) continue;
      double s[3] = {0.0, 0.0, 0.0};    // the lattice shift of that bin's atoms
      for (int k = 0; k < 3; ++k)
        for (int e = 0; e < 3; ++e) s[e] += shift[k] * lattice[k][e];
      const int b = bins.index(nb);
      for (int a = bins.start[b]; a < bins.start[b + 1]; ++a) {
        const int j = bins.atoms[a];
        if (j == i) continue;    // own image: init_style checks the box vectors
        const double *pj = &pos[3 * (size_t) j];
        const double dx = pj[0] + s[0] - pi[0], dy = pj[1] + s[1] - pi[1],
                     dz = pj[2] + s[2] - pi[2];
        const double rsq = dx * dx + dy * dy + dz * dz;
        if (rsq < best.rsq) best.rsq = rsq, best.i = std::min(i, j), best.j = std::max(i, j);
      }
    }
  }
  return best;
}
