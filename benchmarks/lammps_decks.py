"""Input-deck pieces shared by the LAMMPS benchmarks (lammps_speed, lammps_scaling,
reliability_longrun): the periodic fcc Cu box of 4 n^3 atoms (metal units, a = 3.615 Å)."""

FCC_CU_BOX = """\
units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
"""
