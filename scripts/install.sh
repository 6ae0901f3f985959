#!/usr/bin/env bash
# Installs directmem for C and C++ users, as `make install` does for zstd or libcurl:
#   PREFIX=/usr/local (default) DESTDIR= (staging root) bash scripts/install.sh
# lib/libdirectmem.so.MAJOR.MINOR.PATCH with its soname links, lib/libdirectmem.a,
# include/directmem.h (+ directmem.hpp when present), lib/pkgconfig/directmem.pc, and a CMake package
# lib/cmake/directmem/ (imported target directmem::directmem). Then, from any folder:
#   cc app.c $(pkg-config --cflags --libs directmem)          or   find_package(directmem) in CMake
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
root="$DESTDIR$PREFIX"
cargo build --release -q
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
lib="$root/lib" inc="$root/include"
mkdir -p "$lib/pkgconfig" "$lib/cmake/directmem" "$inc"

install -m 755 target/release/libdirectmem.so "$lib/libdirectmem.so.$version"
ln -sf "libdirectmem.so.$version" "$lib/libdirectmem.so.$major"   # the soname: what programs load
ln -sf "libdirectmem.so.$major" "$lib/libdirectmem.so"             # what -ldirectmem links
install -m 644 target/release/libdirectmem.a "$lib/libdirectmem.a"
install -m 644 include/directmem.h "$inc/directmem.h"
[ ! -f include/directmem.hpp ] || install -m 644 include/directmem.hpp "$inc/directmem.hpp"

# What a static link needs besides the archive: the Rust standard library's system libraries.
static_libs="-lpthread -ldl -lm -lrt -lutil -lgcc_s -lc"
cat > "$lib/pkgconfig/directmem.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: directmem
Description: Tracked, quota-limited, zeroed off-heap memory shared by C and the JVM
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -ldirectmem
Libs.private: $static_libs
PC

cat > "$lib/cmake/directmem/directmemConfig.cmake" <<'CMAKE'
# find_package(directmem) gives the imported target directmem::directmem (the shared library) and
# directmem::static (the archive, with the system libraries it needs).
get_filename_component(_directmem_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET directmem::directmem)
  add_library(directmem::directmem SHARED IMPORTED)
  set_target_properties(directmem::directmem PROPERTIES
    IMPORTED_LOCATION "${_directmem_prefix}/lib/libdirectmem.so"
    IMPORTED_SONAME "libdirectmem.so.@MAJOR@"
    INTERFACE_INCLUDE_DIRECTORIES "${_directmem_prefix}/include")
  add_library(directmem::static STATIC IMPORTED)
  set_target_properties(directmem::static PROPERTIES
    IMPORTED_LOCATION "${_directmem_prefix}/lib/libdirectmem.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_directmem_prefix}/include"
    INTERFACE_LINK_LIBRARIES "pthread;dl;m;rt;util;gcc_s")
endif()
set(directmem_VERSION "@VERSION@")
unset(_directmem_prefix)
CMAKE
sed -i "s/@MAJOR@/$major/; s/@VERSION@/$version/" "$lib/cmake/directmem/directmemConfig.cmake"

cat > "$lib/cmake/directmem/directmemConfigVersion.cmake" <<CMAKE
# Same major version, and at least the one asked for, as CMake's SameMajorVersion.
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION_MAJOR STREQUAL "$major" AND NOT PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
CMAKE
echo "installed directmem $version into $root"
