#!/usr/bin/env bash
# The main job on a fresh machine: build libdirectmem (release), run the C examples, then the Java
# demo (directmem beside the JDK's allocateDirect: explicit free, 64 MiB allocation, drop loop, keep
# loop, 8 threads under a tight limit, the BufferPool MBean).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q
echo "== C examples"
make -s -C c-examples run LIBDIR="$PWD/target/release" BUILD="$PWD/target/c-examples"
echo "== Java demo"
B=target/java-demo
rm -rf "$B" && mkdir -p "$B"
javac -d "$B/classes" $(find java/src/main/java -name '*.java')
javac -d "$B/examples" -cp "$B/classes" java/examples/*.java
java -Djava.library.path="$PWD/target/release" -Ddirectmem.jmx=true -cp "$B/classes:$B/examples" Demo
