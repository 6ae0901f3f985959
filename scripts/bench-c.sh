#!/usr/bin/env bash
# The C benchmarks: criterion (`cargo bench --bench alloc`, the library linked in statically),
# then benches/c/pairs.c through libdirectmem.so as C programs use it. Prints both tables.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench alloc "$@"
python3 scripts/bench-c-table.py
cargo build --release -q
ln -sf libdirectmem.so "target/release/libdirectmem.so.$(sed -n 's/^#define DM_VERSION_MAJOR //p' include/directmem.h)"  # the soname
mkdir -p target/bench-c
gcc -O2 -pthread -Wall -Werror -Iinclude benches/c/pairs.c -Ltarget/release -ldirectmem \
  -Wl,-rpath,"$PWD/target/release" -o target/bench-c/pairs
echo
echo "Through libdirectmem.so (benches/c/pairs.c): median per pair [min-max] over 21 alternating rounds"
target/bench-c/pairs
