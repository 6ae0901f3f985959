#!/usr/bin/env bash
# Prints the path of a JDK tool (java, javac) of at least the given feature release, from the
# JDKs in /usr/lib/jvm, the newest first (the Temurin JDK 25 this project's machines carry, when
# present); exits 1 when there is none. Usage: bash scripts/find-jdk.sh 22 javac
set -euo pipefail
min=$1 tool=$2
for home in $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -rV); do
  [ -x "$home/bin/$tool" ] && [ -f "$home/release" ] || continue
  feature=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$home/release")
  if [ -n "$feature" ] && [ "$feature" -ge "$min" ]; then
    echo "${home%/}/bin/$tool"
    exit 0
  fi
done
exit 1
