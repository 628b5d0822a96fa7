"""LAMMPS: the `pair_style geoff` plugin (build/locate) and the Python-side runtime."""
