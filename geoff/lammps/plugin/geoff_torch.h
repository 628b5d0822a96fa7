/* -*- c++ -*- ----------------------------------------------------------
   pair_style geoff: the TorchScript module and where it runs, its reusable host staging
   buffers, the graph tensors every graph mode hands to it, and torch's error messages as
   LAMMPS prints them (shared by pair_geoff.cpp, layer_comm.cpp, layer_model.cpp and
   compute_geoff_atom.cpp; include after the LAMMPS headers, whose fmt must win over torch's).
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_TORCH_H
#define LMP_GEOFF_TORCH_H

#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>

namespace LAMMPS_NS {

/* A host buffer reused from step to step: page-locked (pinned) when the model runs on a GPU,
   so that copies to and from the device are DMA transfers that may run asynchronously. It
   grows with 25 % headroom and never shrinks, so varying ghost counts cause no per-step
   allocation. */
struct GeoffStaging {
  torch::Tensor buf;    // 1-D, capacity elements
  // The first `numel` elements as a (rows, width) tensor of `dtype`.
  torch::Tensor rows(int64_t nrows, int64_t width, torch::ScalarType dtype, bool pinned)
  {
    const int64_t numel = nrows * width;
    if (!buf.defined() || buf.scalar_type() != dtype || buf.numel() < numel) {
      const int64_t cap = numel + numel / 4 + 1024;
      buf = torch::empty({cap}, torch::TensorOptions().dtype(dtype).pinned_memory(pinned));
    }
    // A view of a detached alias: an in-place copy into it from a tensor with history then
    // cannot attach that history to `buf`, which lives from step to step (issue 13).
    return buf.detach().narrow(0, 0, numel).view({nrows, width});
  }
};

struct GeoffTorch {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype{torch::kFloat64};
  bool sync_timing = false;    // pair_style ... timing sync: wait for the device at each phase

  // Host staging (graph upload, per-layer exchanges), reused between steps.
  GeoffStaging up_real, up_index, send_rows, ghost_rows;
  GeoffStaging chunk_index;    // chunk N: the chunks' rows and edges (layer_chunks.cpp)
  torch::Tensor send_index;    // graph layers: device copy of the rows sent to other ranks

  bool on_gpu() const { return !device.is_cpu(); }
  // Waits for the device when timing is synchronised (so phase times are honest).
  void sync() const
  {
    if (sync_timing && device.is_cuda()) torch::cuda::synchronize(device.index());
  }
  // Waits for the device (before the host rewrites a staging buffer a copy may still read).
  void wait() const
  {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
  }
};

// Wall seconds since t0 (the phase timers of the timing summaries).
inline double seconds_since(std::chrono::steady_clock::time_point t0)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A torch error raised while the model runs, whole (the TorchScript interpreter puts the
// cause after its traceback, not on the first line), printable ASCII and newlines only, at
// most 6,000 characters (the first and last 3,000 when longer).
inline std::string torch_error_text(const std::string &text)
{
  std::string out = text.size() <= 6000 ? text
                                        : text.substr(0, 3000) + "\n[...]\n" +
          text.substr(text.size() - 3000);
  for (char &ch : out)
    if (ch != '\n' && ((unsigned char) ch < 0x20 || (unsigned char) ch > 0x7E)) ch = '?';
  return out;
}

// First line of a (possibly long) torch error message, printable ASCII only (it may quote
// bytes of a damaged file, which must not make LAMMPS' message invalid UTF-8).
inline std::string first_line(const std::string &text)
{
  auto end = text.find('\n');
  std::string line = end == std::string::npos ? text : text.substr(0, end);
  const auto advice = line.find(". This is an internal miniz error");    // torch's, not ours
  if (advice != std::string::npos) line = line.substr(0, advice);
  for (char &ch : line)
    if ((unsigned char) ch < 0x20 || (unsigned char) ch > 0x7E) ch = '?';
  return line;
}

/* The Graph of geoff.graph on the model's device: positions (n,3) and species (n,) of the
   graph atoms, edge_index (2,E) as (receiver, sender) rows, shifts (E,3) (zeros when `shifts`
   is null), cell (1,3,3) from LAMMPS' h (xprd yprd zprd yz xz xy), pbc (1,3), batch (n,),
   n_local (1,). Positions and shifts are fresh leaves, so callers may make them leaves of a
   backward pass. On a GPU the real-valued and the integer entries each travel in one copy from
   pinned staging buffers (two host->device transfers per step). */
inline c10::Dict<std::string, torch::Tensor>
graph_tensors(GeoffTorch &model, int n, const double *positions, const int64_t *species,
              int64_t n_edges, const int64_t *edges, const double *shifts, const double *h,
              const bool periodic[3], int nlocal)
{
  const auto dev = model.device;
  const auto dtype = model.dtype;
  const bool pinned = model.on_gpu();
  // Reals: positions (3n), shifts (3E), cell (9), in the model's dtype.
  torch::Tensor real = model.up_real.rows(1, 3 * n + 3 * n_edges + 9, dtype, pinned).view({-1});
  const double cell[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};
  auto fill_real = [&](auto *dst) {
    for (int64_t k = 0; k < 3 * n; ++k) dst[k] = positions[k];
    dst += 3 * n;
    for (int64_t k = 0; k < 3 * n_edges; ++k) dst[k] = shifts ? shifts[k] : 0.0;
    dst += 3 * n_edges;
    for (int k = 0; k < 9; ++k) dst[k] = cell[k];
  };
  if (dtype == torch::kFloat32)
    fill_real(real.data_ptr<float>());
  else
    fill_real(real.data_ptr<double>());
  // Integers: species (n), edge_index (2E), n_local (1), pbc (3).
  torch::Tensor ints = model.up_index.rows(1, n + 2 * n_edges + 4, torch::kInt64, pinned).view({-1});
  int64_t *ip = ints.data_ptr<int64_t>();
  std::memcpy(ip, species, sizeof(int64_t) * n);
  std::memcpy(ip + n, edges, sizeof(int64_t) * 2 * n_edges);
  ip[n + 2 * n_edges] = nlocal;
  for (int k = 0; k < 3; ++k) ip[n + 2 * n_edges + 1 + k] = periodic[k] ? 1 : 0;

  // One copy each; on the CPU a copy too, so that the staging buffers can be reused.
  torch::Tensor real_d = real.to(dev, /*non_blocking=*/pinned, /*copy=*/true);
  torch::Tensor ints_d = ints.to(dev, /*non_blocking=*/pinned, /*copy=*/true);
  c10::Dict<std::string, torch::Tensor> graph;
  graph.insert("positions", real_d.narrow(0, 0, 3 * n).view({n, 3}).detach());
  graph.insert("shifts", real_d.narrow(0, 3 * n, 3 * n_edges).view({n_edges, 3}).detach());
  graph.insert("cell", real_d.narrow(0, 3 * n + 3 * n_edges, 9).view({1, 3, 3}));
  graph.insert("species", ints_d.narrow(0, 0, n));
  graph.insert("edge_index", ints_d.narrow(0, n, 2 * n_edges).view({2, n_edges}));
  graph.insert("n_local", ints_d.narrow(0, n + 2 * n_edges, 1));
  graph.insert("pbc", ints_d.narrow(0, n + 2 * n_edges + 1, 3).to(torch::kBool).view({1, 3}));
  graph.insert("batch", torch::zeros({n}, torch::TensorOptions().dtype(torch::kInt64).device(dev)));
  return graph;
}
}    // namespace LAMMPS_NS

#endif
