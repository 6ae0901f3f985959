#!/usr/bin/env bash
# Builds the codec (codec.c, a JNI library linking -ldirectmem) and runs CodecDemo beside directmem.jar.
# Usage: bash c-examples/jni_codec/run.sh [release|debug]
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-release}
out=target/jni-codec-$profile
mkdir -p "$out"
bash scripts/build-jar.sh "$profile" "$out/directmem.jar" >/dev/null
lib=$PWD/target/$profile
ln -sf libdirectmem.so "$lib/libdirectmem.so.$(sed -n 's/^#define DM_VERSION_MAJOR //p' include/directmem.h)"
java_home=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
cc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror -I"$java_home/include" -I"$java_home/include/linux" -Iinclude \
  c-examples/jni_codec/codec.c -L"$lib" -ldirectmem -Wl,-rpath,"$lib" -o "$out/libcodec.so"
javac --release 17 -d "$out" -cp "$out/directmem.jar" c-examples/jni_codec/CodecDemo.java
java -Djava.library.path="$out" -cp "$out/directmem.jar:$out" CodecDemo
