/* ----------------------------------------------------------------------
   pair_style geoff: geoff TorchScript models (exported by `geoff export`) in LAMMPS.

   Each step this rank builds one graph (the Graph of geoff.graph):
     positions (N,3), species (N,), edge_index (2,E) as (receiver i, sender j) for every pair
     closer than the cutoff, shifts (E,3) with r_ij = x_j - x_i + shift_ij, cell (1,3,3),
     pbc (1,3), batch (N,), n_local (1,)
   and calls model.forward(graph, compute_forces=True, compute_stress=vflag_global). The
   model sums energies over the first n_local atoms only and returns forces on all graph
   atoms and its "virial" (-dE/d strain), this rank's share of the global virial.

   Three graphs (pair_style geoff graph ...); the third, layers (per-layer communication, the
   default on several ranks for models exported with their per-layer pieces), is in
   layer_comm.cpp. The two here:
   - periodic (one MPI rank, the default there): the local atoms only. An edge to a ghost
     becomes an edge to the ghost's owner plus a shift (x_ghost - x_owner), exactly the graph
     that ASE builds, so any number of layers needs no ghost shell beyond the cutoff.
   - ghosts (domain decomposition, the default on several ranks): local atoms, then ghosts,
     shifts zero (LAMMPS ghosts are periodic images already). An L-layer model (L = n_layers,
     plus one for a direct force head, which reads its neighbours' final features) needs the
     neighbours of ghosts up to L-1 hops from a local atom, so the ghost shell must reach
     L x cutoff + skin. Ghosts more than L hops away, and the edges into ghosts L hops away,
     cannot change the local energies: a breadth-first search over the cutoff graph leaves
     them out. Forces on ghosts are reverse-communicated by LAMMPS (newton on).
   The model call on these graphs is model_whole.cpp (or, for a large periodic graph, the
   chunked pieces of layer_chunks.cpp).
   Per-atom virials (compute stress/atom) split -r_e (x) dE/dr_e of every edge e between its
   two atoms, from the gradient with respect to the shifts (dE/dshift_e = dE/dr_e).
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "lammps.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "timer.h"
#include "update.h"
#include "overlap_check.h"
#include "zip_check.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <unordered_map>
#ifdef __GLIBC__
#include <malloc.h>
#endif

using namespace LAMMPS_NS;

#include "geoff_torch.h"
#include "graph_device.h"
#include "layer_chunks.h"
#include "layer_comm.h"

#include "geoff_format.h"

namespace {
const char *METADATA_FILE = GEOFF_METADATA_FILE;
const char *EXPORT_HINT = "export a geoff checkpoint with `geoff export model.ckpt -o model.pt`";

using Clock = std::chrono::steady_clock;

std::string join(const std::vector<std::string> &items)
{
  std::string out = "[";
  for (size_t k = 0; k < items.size(); ++k) out += (k ? ", '" : "'") + items[k] + "'";
  return out + "]";
}
}    // namespace

/* ---------------------------------------------------------------------- */

PairGeoff::PairGeoff(LAMMPS *lmp) :
    Pair(lmp), torch_(new GeoffTorch), cutoff(0.0), n_layers(1), hops(1), global_frames(false),
    conservative(true), device_request("auto"), graph_request("auto"),
    graph_on_request("auto"), graph_on_device(false), periodic_graph(true),
    overlap_request(-1.0), overlap(0.5), min_rsq(0.0), min_i(-1), min_j(-1), t_graph(0.0),
    t_model(0.0), t_scatter(0.0), sum_atoms(0.0), sum_edges(0.0), n_calls(0), reset_timers(true)
{
  layers_.reset(new GeoffLayerComm);
  layered = false;
  chunks_.reset(new GeoffChunks);
  dgraph_.reset(new GeoffDeviceGraph);
  chunk_edges = GEOFF_DEFAULT_CHUNK;
  chunk_explicit = false;
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  ghostneigh = 1;                 // graph ghosts: needs the neighbours of ghost atoms
  no_virial_fdotr_compute = 1;    // the virial comes from the model (strain derivative)
  centroidstressflag = CENTROID_NOTAVAIL;
  // compute pair geoff: [1] model seconds, [2] other pair seconds, [3] model calls,
  // [4] mean graph atoms, [5] mean graph edges (this run)
  nextra = 5;
  pvector = new double[nextra]();
}

PairGeoff::~PairGeoff()
{
  delete[] pvector;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairGeoff::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) setflag[i][j] = 0;
}

/* ----------------------------------------------------------------------
   pair_style geoff [device auto|cpu|cuda] [graph auto|periodic|ghosts]
------------------------------------------------------------------------- */

void PairGeoff::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    std::string key = arg[iarg];
    if (key == "device" && iarg + 1 < narg) {
      device_request = arg[iarg + 1];
      if (device_request != "auto" && device_request != "cpu" && device_request != "cuda")
        error->all(FLERR, "pair_style geoff device must be auto, cpu or cuda, got '{}'",
                   device_request);
      iarg += 2;
    } else if (key == "graph" && iarg + 1 < narg) {
      graph_request = arg[iarg + 1];
      if (graph_request != "auto" && graph_request != "periodic" && graph_request != "ghosts" &&
          graph_request != "layers")
        error->all(FLERR, "pair_style geoff graph must be auto, periodic, ghosts or layers, "
                   "got '{}'", graph_request);
      iarg += 2;
    } else if (key == "graph_on" && iarg + 1 < narg) {
      graph_on_request = arg[iarg + 1];
      if (graph_on_request != "auto" && graph_on_request != "host" && graph_on_request != "device")
        error->all(FLERR, "pair_style geoff graph_on must be auto, host or device, got '{}'",
                   graph_on_request);
      iarg += 2;
    } else if (key == "timing" && iarg + 1 < narg) {
      const std::string how = arg[iarg + 1];
      if (how != "fast" && how != "sync")
        error->all(FLERR, "pair_style geoff timing must be fast or sync, got '{}'", how);
      torch_->sync_timing = how == "sync";
      iarg += 2;
    } else if (key == "chunk" && iarg + 1 < narg) {
      chunk_edges = utils::bnumeric(FLERR, arg[iarg + 1], false, lmp);
      if (chunk_edges < 0)
        error->all(FLERR, "pair_style geoff chunk must be >= 0 edges per chunk (0 turns "
                   "chunking off), got {}", chunk_edges);
      chunk_explicit = true;
      iarg += 2;
    } else if (key == "overlap" && iarg + 1 < narg) {
      overlap_request = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      if (overlap_request < 0.0)
        error->all(FLERR, "pair_style geoff overlap must be >= 0 A (0 turns the check off)");
      iarg += 2;
    } else {
      error->all(FLERR,
                 "Illegal pair_style geoff argument '{}': usage is `pair_style geoff "
                 "[device auto|cpu|cuda] [graph auto|periodic|ghosts|layers] [overlap <A>] "
                 "[timing fast|sync] [chunk <edges>] [graph_on auto|host|device]`",
                 key);
    }
  }
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt El1 El2 ...   (one element per atom type)
------------------------------------------------------------------------- */

void PairGeoff::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR,
               "pair_style geoff needs `pair_coeff * * model.pt El1 El2 ...` with one "
               "element per atom type");
  model_file = arg[2];
  std::vector<std::string> elements(arg + 3, arg + narg);
  if ((int) elements.size() != ntypes)
    error->all(FLERR,
               "pair_coeff * * {} lists {} element(s) but the box has {} atom type(s): give "
               "one element per type, e.g. `pair_coeff * * {}{}`",
               model_file, elements.size(), ntypes, model_file,
               std::string(ntypes == 1 ? " Cu" : " Cu Zr ..."));

  check_model_file();
  metadata_json = load_module();
  read_metadata(metadata_json);
  read_layer_metadata(metadata_json);    // graph layers: layer_comm.cpp
  read_chunk_metadata(metadata_json);    // chunk N: layer_chunks.cpp
  log_chunk_refusal();
  map_elements(elements);
  if (global_frames && comm->nprocs > 1)
    error->all(FLERR,
               "pair_style geoff: the {} model in '{}' uses global frames (it sees the whole "
               "structure at once), so it cannot be split over {} MPI ranks: run it on one "
               "rank, or export a local model (e.g. faenet with frames=\"local\")",
               model_name, model_file, comm->nprocs);
  choose_device();

  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;

  if (comm->me == 0)
    utils::logmesg(lmp,
                   "{}: {} model '{}' ({}, {}), species {}, cutoff {} A, {} layer(s), {} "
                   "torch thread(s), overlap check {} A\n",
                   log_name, model_name, model_file, model_dtype, torch_->device.str(),
                   join(species), cutoff, n_layers, at::get_num_threads(), overlap);
}

/* ----------------------------------------------------------------------
   pair_coeff, step 1: the model file exists, is a file and is an intact zip.
------------------------------------------------------------------------- */

void PairGeoff::check_model_file()
{
  if (platform::path_is_directory(model_file))
    error->all(FLERR, "pair_style geoff: model file '{}' is a folder; give the .pt file that "
               "`geoff export` wrote ({})", model_file, EXPORT_HINT);
  if (!platform::file_is_readable(model_file))
    error->all(FLERR, "pair_style geoff: cannot open model file '{}' (no such file or not "
               "readable); {}", model_file, EXPORT_HINT);
  // torch::jit::load checks no checksum: a damaged file must not load (or crash) silently.
  const std::string damage = geoff_zip::zip_problem(model_file);
  if (!damage.empty())
    error->all(FLERR, "pair_style geoff: model file '{}' is not a TorchScript file that can be "
               "loaded: it {}; re-export it ({}) or restore an intact copy", model_file, damage,
               EXPORT_HINT);
}

/* ----------------------------------------------------------------------
   pair_coeff, step 2: the TorchScript module, loaded on the CPU (the metadata decides where
   it runs); returns the metadata record (JSON text).
------------------------------------------------------------------------- */

std::string PairGeoff::load_module()
{
  // TorchScript's profiling executor re-specialises the graph when shapes change, and the
  // graph's shape changes every step: plain execution is as fast and starts at once.
  // GEOFF_JIT_OPTIMIZE=1 turns the optimiser back on.
  const char *jit_opt = getenv("GEOFF_JIT_OPTIMIZE");
  torch::jit::setGraphExecutorOptimize(jit_opt && strcmp(jit_opt, "0") != 0);

  std::unordered_map<std::string, std::string> extra{{METADATA_FILE, ""}};
  try {
    torch_->module = torch::jit::load(model_file, torch::Device(torch::kCPU), extra);
  } catch (const std::exception &e) {
    const std::string why = first_line(e.what());
    if (why.find("constants.pkl") != std::string::npos)    // a torch.save zip: a checkpoint
      error->all(FLERR, "pair_style geoff: '{}' is a torch.save file (a geoff checkpoint?), not "
                 "a TorchScript export; convert it with `geoff export {} -o model.pt`",
                 model_file, model_file);
    error->all(FLERR, "pair_style geoff: '{}' is not a TorchScript file ({}); {}", model_file,
               why, EXPORT_HINT);
  }
  if (extra[METADATA_FILE].empty())
    error->all(FLERR,
               "pair_style geoff: '{}' is a TorchScript file but not a geoff model (it has no "
               "{}); {}",
               model_file, METADATA_FILE, EXPORT_HINT);
  return extra[METADATA_FILE];
}

/* ----------------------------------------------------------------------
   pair_coeff, step 3: species, cutoff, layers, dtype, force head, reach and overlap
   threshold from the metadata record.
------------------------------------------------------------------------- */

void PairGeoff::read_metadata(const std::string &text)
{
  try {
    auto meta = json::parse(text);
    if (meta.value("format", "") != GEOFF_FORMAT)
      error->all(FLERR, "pair_style geoff: '{}' has metadata of an unknown format; {}",
                 model_file, EXPORT_HINT);
    if (meta.value("format_version", 0) > GEOFF_FORMAT_VERSION)
      error->all(FLERR,
                 "pair_style geoff: '{}' was exported by a newer geoff ({}); rebuild this "
                 "plugin with `geoff lammps build` after upgrading geoff",
                 model_file, meta.value("geoff_version", "?"));
    species = meta.at("species").get<std::vector<std::string>>();
    cutoff = meta.at("cutoff").get<double>();
    n_layers = meta.at("n_layers").get<int>();
    model_dtype = meta.at("dtype").get<std::string>();
    model_device = meta.value("device", "cpu");
    model_name = meta.value("model", "?");
    global_frames = meta.value("needs_global_frames", false);
    conservative = meta.value("force_head", "conservative") != "direct";
    // The reach the export stores (format 2); format 1 files get the same rule it encodes
    // (geoff.inference.receptive_hops): a direct force head reads one more neighbour shell.
    hops = meta.contains("receptive_hops") ? meta.at("receptive_hops").get<int>()
                                           : n_layers + (conservative ? 0 : 1);
    // Overlap threshold (geoff.structure_checks): half the closest training contact, >= 0.5 A.
    overlap = 0.5;
    if (meta.contains("config") && meta["config"].is_object() &&
        meta["config"].contains("min_train_distance") &&
        meta["config"]["min_train_distance"].is_number())
      overlap = std::max(0.5, 0.5 * meta["config"]["min_train_distance"].get<double>());
    if (overlap_request >= 0.0) overlap = overlap_request;
  } catch (const json::exception &e) {
    error->all(FLERR, "pair_style geoff: '{}' has incomplete or invalid metadata ({}); re-{}",
               model_file, e.what(), EXPORT_HINT);
  }
  if (species.empty() || !(cutoff > 0.0) || n_layers < 1 || hops < 1)
    error->all(FLERR, "pair_style geoff: '{}' metadata has no species, cutoff or layers; {}",
               model_file, EXPORT_HINT);
  if (model_dtype == "float64")
    torch_->dtype = torch::kFloat64;
  else if (model_dtype == "float32")
    torch_->dtype = torch::kFloat32;
  else
    error->all(FLERR, "pair_style geoff: '{}' has dtype '{}' (float32 or float64 expected)",
               model_file, model_dtype);
}

/* ----------------------------------------------------------------------
   pair_coeff steps: the model species of each atom type; the device and CPU threads.
------------------------------------------------------------------------- */

void PairGeoff::map_elements(const std::vector<std::string> &elements)
{
  const int ntypes = atom->ntypes;
  type2species.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; ++t) {
    const std::string &el = elements[t - 1];
    auto it = std::find(species.begin(), species.end(), el);
    if (it == species.end())
      error->all(FLERR,
                 "pair_coeff: element '{}' (atom type {}) is not in the species {} of model "
                 "'{}'; use a model trained on it or map type {} to one of these elements",
                 el, t, join(species), model_file, t);
    type2species[t] = it - species.begin();
  }
}

// This rank's index among the ranks of its node, and their number.
void PairGeoff::node_rank_and_size(int &rank, int &size)
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &rank);
  MPI_Comm_size(node, &size);
  MPI_Comm_free(&node);
}

// Keep freed CPU memory in the process, as geoff.cpu_memory does for Python: each force call
// allocates and frees the same large per-edge tensors, which glibc would otherwise map and
// fault in afresh every step (735k page faults and 1.5 s of system time per call for PaiNN at
// 864 atoms on the 2-core machine). GEOFF_KEEP_FREED_MEMORY=0 switches it off.
static void keep_freed_memory()
{
#ifdef __GLIBC__
  const char *keep = getenv("GEOFF_KEEP_FREED_MEMORY");
  if (keep && std::string(keep) == "0") return;
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

void PairGeoff::choose_device()
{
  int node_rank = 0, node_size = 1;
  node_rank_and_size(node_rank, node_size);

  // Device: the exported one, unless pair_style says otherwise.
  std::string want = device_request == "auto" ? model_device : device_request;
  if (want == "cuda") {
    if (!torch::cuda::is_available())
      error->all(FLERR,
                 "pair_style geoff: model '{}' is for CUDA but torch sees no GPU here; run on a "
                 "GPU node, use `pair_style geoff device cpu`, or re-export with `geoff export "
                 "--device cpu`",
                 model_file);
    // One GPU per rank of a node, round robin.
    int ndev = (int) torch::cuda::device_count();
    torch_->device = torch::Device(torch::kCUDA, node_rank % std::max(ndev, 1));
    // The graph's size changes every step: growable segments keep the caching allocator from
    // fragmenting (set before the first CUDA allocation; a user's own setting wins).
    setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", /*overwrite=*/0);
  } else {
    torch_->device = torch::Device(torch::kCPU);
    keep_freed_memory();
  }

  // CPU threads: torch's own choice (OMP_NUM_THREADS, or torch.set_num_threads in a Python
  // host), except that several ranks on one node share its cores instead of each taking all.
  if (torch_->device.is_cpu() && !getenv("OMP_NUM_THREADS") && node_size > 1) {
    int cores = std::max(1u, std::thread::hardware_concurrency());
    at::set_num_threads(std::max(1, cores / node_size));
  }

  try {
    c10::DeviceGuard guard(torch_->device);    // this rank's GPU is the current one
    torch_->module.to(torch_->device);
    torch_->module.eval();
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style geoff: cannot move model '{}' to {}: {}", model_file,
               torch_->device.str(), first_line(e.what()));
  }
}

/* ---------------------------------------------------------------------- */

void PairGeoff::init_style()
{
  if (type2species.empty())
    error->all(FLERR, "pair_style geoff needs `pair_coeff * * model.pt El1 El2 ...` before a run");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style geoff needs `units metal` (eV, A, ps: the units geoff models "
               "are trained in), but the input uses `units {}`; put `units metal` before the "
               "box is created", update->unit_style);
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style geoff needs `newton on` (the default): forces on ghost atoms "
               "are sent back to their owners");
  if (global_frames && comm->nprocs > 1)
    error->all(FLERR, "pair_style geoff: model '{}' uses global frames: run it on one MPI rank",
               model_file);
  if (graph_request == "periodic" && comm->nprocs > 1)
    error->all(FLERR, "pair_style geoff graph periodic works on one MPI rank only ({} here); "
               "use graph ghosts (the default on several ranks)", comm->nprocs);
  if (graph_request == "ghosts" && global_frames)
    error->all(FLERR, "pair_style geoff: model '{}' uses global frames, which see the whole "
               "structure: use graph periodic (the default on one rank)", model_file);
  periodic_graph = graph_request == "periodic" || (graph_request == "auto" && comm->nprocs == 1);

  // A periodic box only a sliver thick needs ~ghost cutoff / thickness images of every atom
  // per direction: refuse it before LAMMPS allocates them all. Thickness along dimension k =
  // 1 / |row k of h^-1| (LAMMPS' h_inv: 1/lx 1/ly 1/lz and the inverse tilts).
  const double *hi = domain->h_inv;
  const double rows[3] = {std::sqrt(hi[0] * hi[0] + hi[5] * hi[5] + hi[4] * hi[4]),
                          std::sqrt(hi[1] * hi[1] + hi[3] * hi[3]), std::fabs(hi[2])};
  const int periodic[3] = {domain->xperiodic, domain->yperiodic, domain->zperiodic};
  const double reach = std::max(comm->cutghostuser, cutoff + neighbor->skin);
  double images = 1.0;
  for (int k = 0; k < 3; ++k)
    if (periodic[k]) images *= 2.0 * std::ceil(reach * rows[k]) + 1.0;
  // Every atom closer to its own image than the overlap threshold (found by fuzzing: LAMMPS
  // then overflows its neighbour list first, with advice that does not help).
  const double *hb = domain->h;    // xprd yprd zprd yz xz xy
  const double box[3][3] = {{hb[0], 0.0, 0.0}, {hb[5], hb[1], 0.0}, {hb[4], hb[3], hb[2]}};
  double shortest = 1e300;
  for (int a = -2; a <= 2; ++a)
    for (int b = -2; b <= 2; ++b)
      for (int c = -2; c <= 2; ++c) {
        const int n[3] = {periodic[0] ? a : 0, periodic[1] ? b : 0, periodic[2] ? c : 0};
        if (!n[0] && !n[1] && !n[2]) continue;
        double v[3] = {0.0, 0.0, 0.0};
        for (int k = 0; k < 3; ++k)
          for (int d = 0; d < 3; ++d) v[d] += n[k] * box[k][d];
        shortest = std::min(shortest, std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]));
      }
  if (overlap > 0.0 && shortest < overlap)
    error->all(FLERR, "pair_style geoff: every atom is {:.4g} A from its own periodic image, "
               "closer than the {} A overlap threshold: the periodic box is too small; check "
               "its size and units, or turn the check off with `pair_style geoff overlap 0`",
               shortest, overlap);
  // Coincident atoms can overflow LAMMPS' neighbour list in its first build, before compute()
  // sees them: look for them now, from the positions (overlap_check.cpp).
  const GeoffClosePair close = closest_owned_pair(lmp, overlap);
  if (close.i >= 0) min_rsq = close.rsq, min_i = close.i, min_j = close.j, stop_on_overlap();
  if (images > 1e5)
    error->all(FLERR, "pair_style geoff: the periodic box is too thin for the {} A cutoff "
               "(thicknesses {:.3g} {:.3g} {:.3g} A): every atom would need {:.3g} periodic "
               "images; check the box size and units, or make thin directions non-periodic",
               cutoff, 1.0 / rows[0], 1.0 / rows[1], 1.0 / rows[2], images);
  if (periodic_graph && atom->tag_enable == 0)
    error->all(FLERR, "pair_style geoff graph periodic needs atom IDs (atom_modify id yes)");

  const bool layers_run = init_style_layers();    // graph layers: layer_comm.cpp
  choose_graph_on();                              // graph_device.cpp
  if (layers_run) return;
  if (periodic_graph) {
    ghostneigh = 0;
    neighbor->add_request(this, NeighConst::REQ_FULL);
    return;
  }
  ghostneigh = 1;
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);

  // Ghost shell: neighbours of ghosts up to hops - 1 from a local atom, and atoms move up to
  // skin/2 each between neighbour-list builds. hops is the export's receptive_hops: n_layers,
  // plus one for a direct force head (it reads the final features of each atom's neighbours).
  const double skin = neighbor->skin;
  const double need = hops * cutoff + skin;
  const double have = std::max(comm->cutghostuser, cutoff + skin);
  if (have < need - 1e-9) {
    error->all(FLERR,
               "pair_style geoff: model '{}' has {} message-passing layer(s){} with cutoff {} A: "
               "on {} MPI rank(s) (graph ghosts) ghost atoms are needed out to {} x {} + skin {} "
               "= {} A, but the ghost cutoff is {} A. Add this line to the input before the "
               "run:\n\n    comm_modify cutoff {}\n\n",
               model_file, n_layers, conservative ? "" : " and a direct force head", cutoff,
               comm->nprocs, hops, cutoff, skin, need, have,
               std::ceil(need * 1000.0 - 1e-6) / 1000.0);
  }
}

double PairGeoff::init_one(int i, int j)
{
  if (setflag[i][j] == 0 && setflag[j][i] == 0)
    error->all(FLERR, "pair_style geoff: pair_coeff not set for types {} {}", i, j);
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

// The timers cover the run's loop, as LAMMPS' "Loop time" does: the setup call is not counted.
void PairGeoff::setup()
{
  reset_timers = true;
}

/* ----------------------------------------------------------------------
   Neighbours within the model's cutoff of the atoms in the list (locals, and ghosts for
   graph ghosts), as CSR over atom indices: adj_start, adj_count, adj.
------------------------------------------------------------------------- */

void PairGeoff::neighbours_within_cutoff(int nlist)
{
  double **x = atom->x;
  const int nall = atom->nlocal + atom->nghost;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutsq_model = cutoff * cutoff;

  adj_start.assign(nall, 0);
  adj_count.assign(nall, 0);
  adj.clear();
  min_rsq = cutsq_model;
  min_i = min_j = -1;
  for (int ii = 0; ii < nlist; ++ii) {
    const int i = ilist[ii];
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    adj_start[i] = (int) adj.size();
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      const double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq < cutsq_model) adj.push_back(j);
      if (rsq < min_rsq) min_rsq = rsq, min_i = i, min_j = j;
    }
    adj_count[i] = (int) adj.size() - adj_start[i];
  }
}

/* ----------------------------------------------------------------------
   Positions and species of the graph's atoms (graph_atoms: LAMMPS indices, in graph order).
------------------------------------------------------------------------- */

void PairGeoff::fill_atoms()
{
  double **x = atom->x;
  int *type = atom->type;
  const int n = (int) graph_atoms.size();
  pos_buf.resize(3 * (size_t) n + 3);
  species_buf.resize(n + 1);
  for (int k = 0; k < n; ++k) {
    const int i = graph_atoms[k];
    pos_buf[3 * k] = x[i][0];
    pos_buf[3 * k + 1] = x[i][1];
    pos_buf[3 * k + 2] = x[i][2];
    species_buf[k] = type2species[type[i]];
  }
}

/* ----------------------------------------------------------------------
   graph periodic: local atoms only; the sender of an edge to a ghost is the ghost's owner
   (found through the atom IDs) and its shift is x_ghost - x_owner.
------------------------------------------------------------------------- */

int PairGeoff::build_graph_periodic()
{
  // The layers graph (layer_comm.cpp) on one rank: every ghost is a periodic image of a local
  // atom, so it becomes an edge to that atom plus a shift, and no ghost rows remain.
  const int n_edges = graph_on_device ? build_graph_device() : build_graph_layers();
  const int nlocal = atom->nlocal;
  if ((int) graph_atoms.size() > nlocal)
    error->one(FLERR, "pair_style geoff graph periodic: ghost atom ID {} has no owner on this "
               "rank; use graph ghosts", (long) atom->tag[graph_atoms[nlocal]]);
  return n_edges;
}

/* ----------------------------------------------------------------------
   graph ghosts: hop distance from the local atoms (breadth-first over the cutoff graph), then
   the atoms and edges that the local energies depend on.
------------------------------------------------------------------------- */

int PairGeoff::build_graph_ghosts()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  neighbours_within_cutoff(list->inum + list->gnum);

  const int far = INT_MAX / 2;
  depth.assign(nall, far);
  frontier.clear();
  for (int i = 0; i < nlocal; ++i) {
    depth[i] = 0;
    frontier.push_back(i);
  }
  for (int k = 0; k < hops && !frontier.empty(); ++k) {
    next_frontier.clear();
    for (int i : frontier) {
      const int *nb = adj.data() + adj_start[i];
      for (int c = 0; c < adj_count[i]; ++c) {
        const int j = nb[c];
        if (depth[j] > k + 1) {
          depth[j] = k + 1;
          next_frontier.push_back(j);
        }
      }
    }
    frontier.swap(next_frontier);
  }
  const int max_receiver_depth = hops - 1;

  // Graph atoms: local atoms keep their index, needed ghosts follow in index order.
  gidx.assign(nall, -1);
  graph_atoms.clear();
  for (int i = 0; i < nlocal; ++i) {
    gidx[i] = i;
    graph_atoms.push_back(i);
  }
  for (int i = nlocal; i < nall; ++i)
    if (depth[i] <= hops) {
      gidx[i] = (int) graph_atoms.size();
      graph_atoms.push_back(i);
    }
  const int n = (int) graph_atoms.size();
  fill_atoms();

  // Edges into atoms less than `hops` hops away.
  size_t n_edges = 0;
  for (int k = 0; k < n; ++k) {
    const int i = graph_atoms[k];
    if (depth[i] <= max_receiver_depth) n_edges += adj_count[i];
  }
  edge_buf.resize(2 * n_edges + 2);
  edge_j.resize(n_edges + 1);
  int64_t *recv = edge_buf.data();
  int64_t *send = edge_buf.data() + n_edges;
  size_t e = 0;
  for (int k = 0; k < n; ++k) {
    const int i = graph_atoms[k];
    if (depth[i] > max_receiver_depth) continue;
    const int *nb = adj.data() + adj_start[i];
    for (int c = 0; c < adj_count[i]; ++c, ++e) {
      recv[e] = k;
      send[e] = gidx[nb[c]];
      edge_j[e] = nb[c];
    }
  }
  return (int) n_edges;
}

/* ----------------------------------------------------------------------
   Two atoms of the last neighbour pass closer than the overlap threshold stop the run
   (geoff.structure_checks): the model was never trained on such contacts.
------------------------------------------------------------------------- */

void PairGeoff::stop_on_overlap()
{
  if (!(overlap > 0.0 && min_i >= 0 && min_rsq < overlap * overlap)) return;
  const tagint *tag = atom->tag;
  error->one(FLERR,
               "pair_style geoff: atoms {} and {} (atom IDs) are {:.4g} A apart, closer than "
               "the {} A overlap threshold of model '{}': the model was never trained on such "
               "contacts. Remove duplicated atoms (e.g. `delete_atoms overlap {} all all`), or "
               "turn the check off with `pair_style geoff overlap 0`",
               tag ? (long) tag[min_i] : (long) min_i, tag ? (long) tag[min_j] : (long) min_j,
               std::sqrt(min_rsq), overlap, model_file, overlap);
}

/* ---------------------------------------------------------------------- */

void PairGeoff::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  // This rank's GPU is the current device (pinned buffers, streams and kernels go there).
  c10::DeviceGuard guard(torch_->device);
  if (layered) return compute_layers(eflag, vflag);    // every rank, atoms or not
  if (list->inum == 0) return;    // no local atoms: no energy, no forces

  auto t0 = Clock::now();
  const int n_edges = periodic_graph ? build_graph_periodic() : build_graph_ghosts();
  stop_on_overlap();
  const int n = (int) graph_atoms.size();
  const bool per_atom_virial = vflag_atom != 0;

  if (per_atom_virial && !conservative)
    error->all(FLERR, "pair_style geoff: per-atom virial (compute stress/atom) needs a "
               "conservative model; model '{}' has a direct force head", model_file);
  if (per_atom_virial && global_frames)
    error->all(FLERR, "pair_style geoff: per-atom virial is not available for the "
               "global-frame model '{}'", model_file);

  t_graph += seconds_since(t0);
  if (periodic_graph && use_chunks(n_edges)) {    // one rank, a large graph: chunked pieces
    auto t1 = Clock::now();
    run_chunked(n_edges);
    t_model += seconds_since(t1);
  } else {
    run_whole(n_edges);
  }
  sum_atoms += n;
  sum_edges += n_edges;
  ++n_calls;
  if (reset_timers) {
    t_graph = t_model = t_scatter = sum_atoms = sum_edges = 0.0;
    n_calls = 0;
    chunks_->reset();
    dgraph_->reset();
    reset_timers = false;
  }
  pvector[0] = t_model;
  pvector[1] = t_graph + t_scatter;
  pvector[2] = (double) n_calls;
  pvector[3] = n_calls ? sum_atoms / n_calls : (double) n;
  pvector[4] = n_calls ? sum_edges / n_calls : (double) n_edges;
}

/* ----------------------------------------------------------------------
   compute steps: forces of the graph's atoms (fd: (n_force, 3)), per-atom energies of the
   local atoms, and the virial: from the strain derivative (v: (3,3)) or edge by edge.
------------------------------------------------------------------------- */

void PairGeoff::scatter_forces(const double *fd, int n_force)
{
  double **f = atom->f;
  for (int k = 0; k < n_force; ++k) {
    const int i = graph_atoms[k];
    f[i][0] += fd[3 * k];
    f[i][1] += fd[3 * k + 1];
    f[i][2] += fd[3 * k + 2];
  }
}

void PairGeoff::add_energies(const double *ed, double total)
{
  const int nlocal = atom->nlocal;
  if (eflag_global) eng_vdwl += total;
  if (eflag_atom)
    for (int i = 0; i < nlocal; ++i) eatom[i] += ed[i];
}

void PairGeoff::add_strain_virial(const double *v)
{
  virial[0] += v[0];    // v: (1,3,3), symmetric
  virial[1] += v[4];
  virial[2] += v[8];
  virial[3] += 0.5 * (v[1] + v[3]);
  virial[4] += 0.5 * (v[2] + v[6]);
  virial[5] += 0.5 * (v[5] + v[7]);
}

// Pair split: W_e = -sym(r_e (x) dE/dr_e) for every edge (g: dE/dr_e, (n_edges, 3)), half to
// each atom of the edge (the sender's half on its LAMMPS copy, a ghost or not: compute
// stress/atom's reverse comm brings it home); the global virial is their sum.
void PairGeoff::add_edge_virials(const double *g, int n_edges)
{
  double **x = atom->x;
  const int64_t *recv = edge_buf.data();
  double total[6] = {0, 0, 0, 0, 0, 0};
  for (int e = 0; e < n_edges; ++e) {
    const int i = graph_atoms[recv[e]];
    const int j = edge_j[e];
    const double r[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
    const double *ge = g + 3 * e;
    const double w[6] = {-r[0] * ge[0], -r[1] * ge[1], -r[2] * ge[2],
                         -0.5 * (r[0] * ge[1] + r[1] * ge[0]),
                         -0.5 * (r[0] * ge[2] + r[2] * ge[0]),
                         -0.5 * (r[1] * ge[2] + r[2] * ge[1])};
    for (int c = 0; c < 6; ++c) total[c] += w[c];
    if (vflag_atom)
      for (int c = 0; c < 6; ++c) {
        vatom[i][c] += 0.5 * w[c];
        vatom[j][c] += 0.5 * w[c];
      }
  }
  if (vflag_global)
    for (int c = 0; c < 6; ++c) virial[c] += total[c];
}

/* ----------------------------------------------------------------------
   End of a run: where the pair style's time went (mean over ranks).
------------------------------------------------------------------------- */

void PairGeoff::finish()
{
  if (layered) return finish_layers();
  // Collective: before rank 0 goes on alone.
  const std::string chunking = chunk_summary() + device_graph_summary();
  double mine[6] = {t_graph, t_model, t_scatter, (double) n_calls, sum_atoms, sum_edges};
  double sum[6];
  MPI_Allreduce(mine, sum, 6, MPI_DOUBLE, MPI_SUM, world);
  if (comm->me != 0 || sum[3] <= 0) return;
  const double p = comm->nprocs;
  const double calls = sum[3] / p;
  const double loop = timer->get_wall(Timer::TOTAL);
  std::string mesg = fmt::format(
      "pair geoff ({} graph, mean over {} rank(s), {} calls): {:.0f} atoms and {:.0f} edges "
      "per graph; time in graph {:.4g} s, model forward+backward {:.4g} s, results {:.4g} s",
      periodic_graph ? "periodic" : "ghosts", (int) p, (long) calls, sum[4] / sum[3],
      sum[5] / sum[3], sum[0] / p, sum[1] / p, sum[2] / p);
  mesg += chunking;
  if (loop > 0)
    mesg += fmt::format("; model = {:.1f}% of the loop time {:.4g} s", 100.0 * sum[1] / p / loop,
                        loop);
  utils::logmesg(lmp, mesg + "\n");
}

double PairGeoff::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += sizeof(int) * (adj.capacity() + 5.0 * depth.capacity());
  bytes += sizeof(int) * edge_j.capacity();
  bytes += sizeof(double) * (pos_buf.capacity() + shift_buf.capacity());
  bytes += sizeof(int64_t) * (species_buf.capacity() + edge_buf.capacity());
  bytes += sizeof(int64_t) * (chunks_->index.capacity() + chunks_->ptr.capacity());
  bytes += sizeof(int) * (chunks_->stamp.capacity() + chunks_->local.capacity());
  bytes += device_graph_bytes();    // graph_on device (graph_device.cpp)
  return bytes;
}

/* ----------------------------------------------------------------------
   Registration, called by the loader geoffplugin.so (geoff_plugin.cpp).
------------------------------------------------------------------------- */

#include "lammpsplugin_geoff.h"

static Pair *geoff_creator(LAMMPS *lmp)
{
  return new PairGeoff(lmp);
}

extern "C" void geoff_register(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;    // the running LAMMPS' own
  plugin.style = "pair";
  plugin.name = "geoff";
  plugin.info = "geoff geometric GNN potentials (TorchScript) pair style";
  plugin.author = "the geoff developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &geoff_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
