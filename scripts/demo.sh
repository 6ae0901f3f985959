#!/usr/bin/env bash
# The main job on a fresh machine: build libdirectmem (release), run the C examples, then the Java
# demo (directmem beside the JDK's allocateDirect: explicit free, 64 MiB allocation, drop loop, keep
# loop, 8 threads under a tight limit, the BufferPool MBean) on JDK 17 and on JDK 25 when present, and the
# JNI codec that shares the JVM's limit (c-examples/jni_codec).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)  # the C++ example
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q
echo "== C examples"
make -s -C c-examples run LIBDIR="$PWD/target/release" BUILD="$PWD/target/c-examples"
echo "== Java demo (one jar, the library inside it: no library path)"
B=target/java-demo
rm -rf "$B" && mkdir -p "$B"
bash scripts/build-jar.sh release target/directmem.jar
javac --release 17 -d "$B/examples" -cp target/directmem.jar java/examples/*.java
echo "-- on $(java -version 2>&1 | head -1)"
java -Ddirectmem.jmx=true -cp "target/directmem.jar:$B/examples" Demo
JDK25=$(ls -d /usr/lib/jvm/temurin-25* 2>/dev/null | head -1 || true)
if [ -n "$JDK25" ] && [ -x "$JDK25/bin/java" ]; then
  echo "-- on $("$JDK25/bin/java" -version 2>&1 | head -1)"
  "$JDK25/bin/java" --enable-native-access=ALL-UNNAMED -Ddirectmem.jmx=true -cp "target/directmem.jar:$B/examples" Demo
else
  echo "!!!!!!!! Temurin JDK 25 not found under /usr/lib/jvm: the demo ran on JDK 17 only !!!!!!!!" >&2
fi
echo "== one limit for Java and native code: a JNI codec of its own that links -ldirectmem"
bash c-examples/jni_codec/run.sh release
