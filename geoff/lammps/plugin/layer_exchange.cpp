/* ----------------------------------------------------------------------
   pair_style geoff graph layers: the host side of the per-layer exchanges (layer_comm.cpp has
   the graph, the force call and the timing summary; layer_model.cpp the device side).

   LAMMPS' forward and reverse communication read and write one row of doubles per LAMMPS atom
   (lc.buf). Only the rows that matter are filled: before a forward exchange the rank's own
   atoms that LAMMPS sends (send_rows, found by a one-column probe after each neighbour-list
   build), after it the ghost rows of the graph are read; for a reverse exchange the ghost
   rows' gradients are written and the sums for the send rows read back.
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "neighbor.h"

#include "geoff_torch.h"
#include "layer_comm.h"

#include <algorithm>
#include <chrono>
#include <cstring>

using namespace LAMMPS_NS;

namespace {
using Clock = std::chrono::steady_clock;
}    // namespace

/* ----------------------------------------------------------------------
   LAMMPS communication of the buffer's columns [col0, col0 + ncols). While probing (one
   column), pack_forward_comm marks the local atoms LAMMPS sends and the values are unused.
------------------------------------------------------------------------- */

int PairGeoff::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  GeoffLayerComm &lc = *layers_;
  if (lc.probing) {
    for (int i = 0; i < n; ++i) {
      lc.sent[list[i]] = 1;
      buf[i] = 0.0;
    }
    return n;
  }
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const double *src = lc.buf.data() + (size_t) list[i] * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) buf[m++] = src[c];
  }
  return m;
}

void PairGeoff::unpack_forward_comm(int n, int first, double *buf)
{
  GeoffLayerComm &lc = *layers_;
  if (lc.probing) return;
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    double *dst = lc.buf.data() + (size_t) i * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) dst[c] = buf[m++];
  }
}

int PairGeoff::pack_reverse_comm(int n, int first, double *buf)
{
  const GeoffLayerComm &lc = *layers_;
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    const double *src = lc.buf.data() + (size_t) i * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) buf[m++] = src[c];
  }
  return m;
}

void PairGeoff::unpack_reverse_comm(int n, int *list, double *buf)
{
  GeoffLayerComm &lc = *layers_;
  int m = 0;
  if (lc.single) {    // each double holds two floats: add them as floats
    for (int i = 0; i < n; ++i) {
      double *dst = lc.buf.data() + (size_t) list[i] * lc.width + lc.col0;
      for (int c = 0; c < lc.ncols; ++c) {
        float a[2], b[2];
        std::memcpy(a, dst + c, sizeof a);
        std::memcpy(b, buf + m++, sizeof b);
        a[0] += b[0];
        a[1] += b[1];
        std::memcpy(dst + c, a, sizeof a);
      }
    }
    return;
  }
  for (int i = 0; i < n; ++i) {
    double *dst = lc.buf.data() + (size_t) list[i] * lc.width + lc.col0;
    for (int c = 0; c < lc.ncols; ++c) dst[c] += buf[m++];
  }
}

/* ----------------------------------------------------------------------
   send_rows: the local atoms in LAMMPS' forward send lists, found by a one-column forward
   exchange. The lists change only when LAMMPS rebuilds them (with the neighbour list), so this
   runs on the first call of a run and after every build: every rank at the same steps.
------------------------------------------------------------------------- */

void PairGeoff::probe_send_rows()
{
  GeoffLayerComm &lc = *layers_;
  if (lc.probed && neighbor->ago != 0) return;
  auto t = Clock::now();
  const int nlocal = atom->nlocal;
  lc.sent.assign(nlocal + atom->nghost, 0);
  lc.probing = true;
  comm->forward_comm(this, 1);
  lc.probing = false;
  lc.probed = true;
  lc.send_rows.clear();
  for (int i = 0; i < nlocal; ++i)
    if (lc.sent[i]) lc.send_rows.push_back(i);
  torch_->send_index = torch::from_blob(lc.send_rows.data(), {(int64_t) lc.send_rows.size()},
                                        torch::kInt32)
                           .to(torch::kInt64)
                           .to(torch_->device);
  lc.t_comm += seconds_since(t);
}

/* ----------------------------------------------------------------------
   The exchanges. exchange: lc.buf (nall x width doubles) through LAMMPS, forward (owners to
   their ghosts) or reverse (ghosts summed onto their owners), in passes of at most
   comm_forward columns; every rank makes the same calls, with or without atoms.
   rows_forward: `send` holds the send_rows' values (n_send, width); on return `ghosts` holds
   the ghost rows' (graph rows nlocal..n-1) values from their owners.
   rows_reverse: `ghosts` holds the gradients of the ghost rows; on return `send` holds what
   the other copies of the send_rows added up to (to be added to their own gradients).
   T is the model's dtype (float or double); LAMMPS' buffers are doubles, and a row of w
   values takes lc.slots(w) of them (float32: two values per double, copied bit for bit).
------------------------------------------------------------------------- */

void PairGeoff::exchange(int width, bool forward)
{
  GeoffLayerComm &lc = *layers_;
  auto t = Clock::now();
  lc.width = width;
  for (lc.col0 = 0; lc.col0 < width; lc.col0 += comm_forward) {
    lc.ncols = std::min(comm_forward, width - lc.col0);
    if (forward)
      comm->forward_comm(this, lc.ncols);
    else
      comm->reverse_comm(this, lc.ncols);
  }
  lc.t_comm += seconds_since(t);
  ++lc.n_comms;
}

namespace {
// Row rows[k] of `dst` (a matrix of `stride` doubles per row) <- the w values of row k of
// `src`, bit for bit (float32 rows are packed two values per double).
template <typename T>
void put_rows(double *dst, size_t stride, const T *src, const int *rows, size_t count, int w)
{
  for (size_t k = 0; k < count; ++k)
    std::memcpy(dst + (size_t) rows[k] * stride, src + k * w, sizeof(T) * w);
}

// Row k of `dst` <- the w values in row rows[k] of `src`.
template <typename T>
void get_rows(T *dst, const double *src, size_t stride, const int *rows, size_t count, int w)
{
  for (size_t k = 0; k < count; ++k)
    std::memcpy(dst + k * w, src + (size_t) rows[k] * stride, sizeof(T) * w);
}

void grow(std::vector<double> &buf, size_t need)
{
  if (buf.size() < need) buf.resize(need + need / 4);
}
}    // namespace

template <typename T>
void PairGeoff::rows_forward(const T *send, T *ghosts, int width)
{
  GeoffLayerComm &lc = *layers_;
  const int nlocal = atom->nlocal;
  const int n = (int) graph_atoms.size();
  const size_t stride = lc.slots(width);
  grow(lc.buf, (size_t) (nlocal + atom->nghost) * stride);
  // Only the rows LAMMPS packs are written: every ghost is unpacked before it is relayed.
  put_rows(lc.buf.data(), stride, send, lc.send_rows.data(), lc.send_rows.size(), width);
  exchange((int) stride, true);
  if (n > nlocal)
    get_rows(ghosts, lc.buf.data(), stride, graph_atoms.data() + nlocal, n - nlocal, width);
}

template <typename T>
void PairGeoff::rows_reverse(const T *ghosts, T *send, int width)
{
  GeoffLayerComm &lc = *layers_;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int n = (int) graph_atoms.size();
  const size_t stride = lc.slots(width);
  grow(lc.buf, (size_t) nall * stride);
  // Every ghost is packed (zero unless it is a graph row); the send rows are summed into.
  std::fill(lc.buf.begin() + (size_t) nlocal * stride, lc.buf.begin() + (size_t) nall * stride,
            0.0);
  for (int i : lc.send_rows) std::fill_n(lc.buf.begin() + (size_t) i * stride, stride, 0.0);
  if (n > nlocal)
    put_rows(lc.buf.data(), stride, ghosts, graph_atoms.data() + nlocal, n - nlocal, width);
  exchange((int) stride, false);
  get_rows(send, lc.buf.data(), stride, lc.send_rows.data(), lc.send_rows.size(), width);
}

template void PairGeoff::rows_forward<float>(const float *, float *, int);
template void PairGeoff::rows_forward<double>(const double *, double *, int);
template void PairGeoff::rows_reverse<float>(const float *, float *, int);
template void PairGeoff::rows_reverse<double>(const double *, double *, int);
