/* -*- c++ -*- ----------------------------------------------------------
   The exported model file's metadata record: its format name, its version and the
   TorchScript extra file that holds it. The one place for these: pair_geoff.cpp includes this
   header, and geoff/export.py reads the same three lines (geoff.lammps.file_format).
------------------------------------------------------------------------- */

#ifndef LMP_GEOFF_FORMAT_H
#define LMP_GEOFF_FORMAT_H

#define GEOFF_FORMAT "geoff-torchscript"
#define GEOFF_FORMAT_VERSION 2
#define GEOFF_METADATA_FILE "geoff_metadata.json"

#endif
