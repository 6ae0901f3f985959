#!/usr/bin/env bash
# Lua 5.4 (Debian's liblua5.4-dev) with directmem as its allocator beside glibc's realloc:
# benches/c/lua_growth.c. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
dpkg -s liblua5.4-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq liblua5.4-dev; }
cargo build --release -q
ln -sf libdirectmem.so "target/release/libdirectmem.so.$(sed -n 's/^#define DM_VERSION_MAJOR //p' include/directmem.h)"
mkdir -p target/bench-c
gcc -O2 -Wall -Werror -Iinclude -I/usr/include/lua5.4 benches/c/lua_growth.c -Ltarget/release -ldirectmem \
  -Wl,-rpath,"$PWD/target/release" -llua5.4 -lm -o target/bench-c/lua_growth
target/bench-c/lua_growth
