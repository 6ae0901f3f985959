#!/usr/bin/env bash
# Installs directmem into a temporary prefix (scripts/install.sh), checks what was installed (files,
# soname links, only dm_* and JNI symbols exported), then builds c-examples/version_check.c from a
# folder outside the source tree three ways, and runs each: plain cc with the .pc file, CMake
# find_package (shared and static targets), and a static link of libdirectmem.a; and the C++ example
# with the installed directmem.hpp.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
PREFIX=$prefix bash scripts/install.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
fail() { echo "install test: $*" >&2; exit 1; }

for f in lib/libdirectmem.so.$version lib/libdirectmem.a include/directmem.h include/directmem.hpp lib/pkgconfig/directmem.pc \
         lib/cmake/directmem/directmemConfig.cmake lib/cmake/directmem/directmemConfigVersion.cmake; do
  [ -f "$prefix/$f" ] || fail "missing $f"
done
[ "$(readlink "$prefix/lib/libdirectmem.so.$major")" = "libdirectmem.so.$version" ] || fail "soname link"
[ "$(readlink "$prefix/lib/libdirectmem.so")" = "libdirectmem.so.$major" ] || fail "development link"
# (Output captured first: under pipefail, `grep -q` quitting early can make the writer fail with
# SIGPIPE, and the check with it, as happened once with ldd.)
dynamic=$(readelf -d "$prefix/lib/libdirectmem.so.$version")
grep -q "Library soname: \[libdirectmem.so.$major\]" <<<"$dynamic" || fail "no soname"
others=$(nm -D --defined-only "$prefix/lib/libdirectmem.so.$version" | awk '{print $3}' | grep -Ev '^(dm_|Java_dev_directmem_)' || true)
[ -z "$others" ] || fail "exports more than dm_* and the JNI entry points: $others"
echo "installed: $(nm -D --defined-only "$prefix/lib/libdirectmem.so.$version" | grep -c ' dm_') dm_* functions exported, nothing else but JNI"

# A user's project, outside the source tree.
mkdir -p "$work/app/cmake"
cp "$src/c-examples/version_check.c" "$src/c-examples/cpp_containers.cpp" "$work/app/"
cp "$src/c-examples/cmake/CMakeLists.txt" "$work/app/cmake/"
cd "$work/app"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig

echo "== cc with pkg-config"
cc -std=c99 -Wall -Wextra -Werror version_check.c $(pkg-config --cflags --libs directmem) -Wl,-rpath,"$prefix/lib" -o with_pc
./with_pc
linked=$(ldd ./with_pc)
grep -q "libdirectmem.so.$major => $prefix/lib/libdirectmem.so.$major" <<<"$linked" || fail "not linked to the installed soname: $linked"

echo "== C++ with pkg-config"
c++ -std=c++17 -Wall -Wextra -Werror cpp_containers.cpp $(pkg-config --cflags --libs directmem) -Wl,-rpath,"$prefix/lib" -o cpp
./cpp | tail -1

echo "== static link"
cc -std=c99 -Wall -Wextra -Werror version_check.c $(pkg-config --cflags directmem) "$prefix/lib/libdirectmem.a" \
  $(pkg-config --libs-only-l --static directmem | sed 's/-ldirectmem//') -o static
./static
linked=$(ldd ./static || true)
! grep -q libdirectmem <<<"$linked" || fail "the static program still needs libdirectmem.so"

echo "== CMake find_package"
cmake -S cmake -B build -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build >/dev/null
build/version_check
build/version_check_static
echo "install: OK"
