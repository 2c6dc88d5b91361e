#!/usr/bin/env bash
# Installs GEDS for C, C++ and Fortran programs and for shell use:
#   tools/install.sh --prefix DIR [--no-build]
# DIR/lib/libgeds.so (the C ABI, Swift runtime inside), DIR/include/geds.h, DIR/include/geds.f90 (the Fortran
# module `geds`; with gfortran also geds.mod, lib/libgeds_fortran.a and pkg-config's geds-fortran),
# DIR/lib/pkgconfig/geds.pc, and DIR/bin/{geds, geds-mds,
# gedsd, geds-perf, geds-launch}. Then: PKG_CONFIG_PATH=DIR/lib/pkgconfig cc app.c $(pkg-config --cflags --libs geds)
# Binaries come from $GEDS_BIN when set, else the release build folder.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="" build=1
while (($#)); do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (usage: tools/install.sh --prefix DIR [--no-build])" >&2; exit 2 ;;
  esac
done
[[ -n $prefix ]] || { echo "install.sh: --prefix DIR is required" >&2; exit 2; }
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

PRODUCTS=(GedsC geds geds-mds gedsd geds-perf)
if ((build)); then
  for product in "${PRODUCTS[@]}"; do swift build -c release --product "$product"; done
fi
BIN=${GEDS_BIN:-$(swift build -c release --show-bin-path)}

install -d "$prefix/bin" "$prefix/lib/pkgconfig" "$prefix/include"
# The library's soname is libgeds.so (set at link time), so programs linked against the installed file find it.
install -m 755 "$BIN/libGedsC.so" "$prefix/lib/libgeds.so"
strip --strip-unneeded "$prefix/lib/libgeds.so"
for tool in geds geds-mds gedsd geds-perf; do install -m 755 "$BIN/$tool" "$prefix/bin/$tool"; done
install -m 755 tools/geds-launch "$prefix/bin/geds-launch"
install -m 644 CShims/CGeds/include/geds.h fortran/geds.f90 "$prefix/include/"
if command -v gfortran >/dev/null; then
  # The module compiled for this machine's gfortran: include/geds.mod and lib/libgeds_fortran.a (pkg-config
  # geds-fortran); other compilers compile include/geds.f90 themselves.
  scratch=$(mktemp -d)
  (cd "$scratch" && gfortran -O2 -fPIC -c "$prefix/include/geds.f90" && ar rcs libgeds_fortran.a geds.o)
  install -m 644 "$scratch/geds.mod" "$prefix/include/"
  install -m 644 "$scratch/libgeds_fortran.a" "$prefix/lib/"
  rm -rf "$scratch"
  cat > "$prefix/lib/pkgconfig/geds-fortran.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: geds-fortran
Description: GEDS for Fortran: the module geds (use geds) over libgeds
Version: 0.1.0
Requires: geds
Cflags: -I\${includedir}
Libs: -L\${libdir} -lgeds_fortran
PC
fi

cat > "$prefix/lib/pkgconfig/geds.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: geds
Description: GEDS, a Generic Ephemeral Data Store: the C ABI (geds.h) of libgeds
Version: 0.1.0
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lgeds
PC
echo "installed GEDS in $prefix (PKG_CONFIG_PATH=$prefix/lib/pkgconfig)"
