#!/usr/bin/env bash
# benches/c/limit_stall.c: how long an allocation waits at the limit while many threads allocate
# small blocks (quota credit collected from busy or descheduled threads). Prints a table.
# Usage: scripts/bench-limit.sh [FILLS]   (about a minute with the default 8 fills)
set -euo pipefail
cd "$(dirname "$0")/.."
fills="${1:-8}"
cargo build --release -q
ln -sf libdirectmem.so "target/release/libdirectmem.so.$(sed -n 's/^#define DM_VERSION_MAJOR //p' include/directmem.h)"  # the soname
mkdir -p target/bench-c
gcc -O2 -pthread -Wall -Werror -Iinclude benches/c/limit_stall.c -Ltarget/release -ldirectmem \
  -Wl,-rpath,"$PWD/target/release" -o target/bench-c/limit_stall
echo "| threads | small blocks | fills | fewest blocks held | slowest allocation of a fill, median (s) | largest (s) |"
echo "|---|---|---|---|---|---|"
for run in "100 busy" "300 paced" "1000 paced" "1000 busy"; do
  set -- $run
  target/bench-c/limit_stall "$1" "$2" "$fills"
done
