"""Builds geds._geds, the cffi API-mode extension over libgeds, against the installed geds.h.

libgeds is found through pkg-config (`PKG_CONFIG_PATH=PREFIX/lib/pkgconfig`, after `tools/install.sh --prefix
PREFIX`); the extension keeps an rpath to that lib folder, so no LD_LIBRARY_PATH is needed at run time."""

import os
import re
import shlex
import subprocess

from cffi import FFI


def pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "geds"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit("geds: pkg-config cannot find libgeds; run tools/install.sh --prefix PREFIX and set "
                         f"PKG_CONFIG_PATH=PREFIX/lib/pkgconfig ({error})")
    return shlex.split(out)


include_dirs = [flag[2:] for flag in pkg_config("--cflags-only-I") if flag.startswith("-I")]
library_dirs = [flag[2:] for flag in pkg_config("--libs-only-L") if flag.startswith("-L")]
header = next((os.path.join(d, "geds.h") for d in include_dirs if os.path.exists(os.path.join(d, "geds.h"))), None)
if header is None:
    raise SystemExit(f"geds: geds.h is not in pkg-config's include folders {include_dirs}")


def declarations(text: str) -> str:
    """geds.h as cffi's cdef reads it: no comments, no preprocessor lines, no C++ guard."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
with open(header) as handle:
    ffibuilder.cdef(declarations(handle.read()))
ffibuilder.set_source(
    "geds._geds",
    '#include "geds.h"',
    libraries=["geds"],
    include_dirs=include_dirs,
    library_dirs=library_dirs,
    runtime_library_dirs=library_dirs,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
