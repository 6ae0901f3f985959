#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is missing, then the Rust unit and
# integration tests, the fault-injection tests, the C examples under valgrind, and the Java suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || need+=(junit5)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A stage that hangs fails after its limit, saying so, rather than holding the run past CI's own
# limit (a unit test once hung a clean-clone run). The limits are several times what each takes.
within() { # limit command...
  local limit=$1 rc=0
  shift
  timeout -k 30 "$limit" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "== TIMED OUT after $limit: $*" >&2; fi
  return "$rc"
}

echo "== formatting (rustfmt.toml) and lints (clippy and rustdoc, warnings are errors)"
for tool in rustfmt clippy; do
  cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$tool" >/dev/null 2>&1 || true
done
cargo fmt --check
cargo clippy -q --all-targets -- -D warnings
cargo clippy -q --all-targets --features fault-injection,test-natives -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps  # broken or private intra-doc links fail

echo "== cargo test (unit, C ABI contract, C programs, model tests)"
within 30m cargo test --no-fail-fast 2>&1

echo "== cargo test --features fault-injection (injected allocation failures and panics)"
within 15m cargo test --features fault-injection --test faults 2>&1

echo "== C examples and C test programs under valgrind"
cargo build -q
within 20m make -s -C c-examples valgrind LIBDIR="$PWD/target/debug" BUILD="$PWD/target/c-examples-valgrind"
within 30m make -s -C tests/c valgrind LIBDIR="$PWD/target/debug" BUILD="$PWD/target/c-tests-valgrind"

echo "== the release build on threads with PTHREAD_STACK_MIN stacks (tests/c/small_stacks.c)"
cargo build --release -q
make -s -C tests/c LIBDIR="$PWD/target/release" BUILD="$PWD/target/c-tests-release" "$PWD/target/c-tests-release/small_stacks"
within 5m target/c-tests-release/small_stacks

echo "== the library's unit tests where every membarrier call fails (tests/c/no_membarrier.c), release build"
# The fallback of kernels before 4.14 and of seccomp filters; optimised, the barrier's own test
# catches an owner that would not fence its bracket (9 of 10 runs; unoptimised code hides the race).
make -s -C tests/c BUILD="$PWD/target/c-tests-release" "$PWD/target/c-tests-release/no_membarrier"
unit_tests=$(cargo test --release --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")))')
within 10m target/c-tests-release/no_membarrier "$unit_tests"

echo "== install into a temporary prefix, then link from outside the tree: pkg-config, static, CMake"
within 15m bash tests/install/run.sh

echo "== a JNI library of its own sharing the JVM's limit (c-examples/jni_codec)"
within 10m bash c-examples/jni_codec/run.sh debug | tee /tmp/directmem-codec.log
grep -q "codec: OK" /tmp/directmem-codec.log

if [ -x java/run-tests.sh ]; then
  echo "== Java suite (JUnit 5, real JVM, real library)"
  java/run-tests.sh
fi
echo "== all test stages passed"
