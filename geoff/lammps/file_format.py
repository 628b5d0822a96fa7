"""The exported file's format name, version and metadata file name, read from the plugin's
``geoff_format.h`` so that Python (``geoff.export``) and C++ (``pair_geoff.cpp``) share them.

Version history: 1, the first; 2, ``receptive_hops`` added (format 1 files get it computed on
reading). ``layer_comm``/``layer_comm_refusal`` are optional keys of version 2 (older plugins
ignore them).
"""
from __future__ import annotations

import re
from pathlib import Path

HEADER = Path(__file__).with_name("plugin") / "geoff_format.h"


def _read(header: Path = HEADER):
    text = header.read_text()
    values = dict(re.findall(r'^#define (GEOFF_\w+) (.+?)\s*$', text, re.M))
    try:
        return (values["GEOFF_FORMAT"].strip('"'), int(values["GEOFF_FORMAT_VERSION"]),
                values["GEOFF_METADATA_FILE"].strip('"'))
    except KeyError as exc:
        raise RuntimeError(f"{header} lacks #define {exc.args[0]}: the geoff install is "
                           "incomplete; reinstall geoff") from None


FORMAT, FORMAT_VERSION, METADATA_FILE = _read()
