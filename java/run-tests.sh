#!/usr/bin/env bash
# Builds the Java API jar against the debug libdirectmem (compiled once, for release 17), compiles the
# JUnit 5 tests and the examples, and runs the suite in a real JVM: on JDK 17, then on the Temurin
# JDK 25 beside it (said loudly when it is missing). Prints each launcher's summary, and
# "N passed, N failed" per JDK and in all.
set -euo pipefail
cd "$(dirname "$0")/.."
JUNIT=/usr/share/java/junit-platform-console-standalone.jar
B=java/build
rm -rf "$B/classes" "$B/test-classes" "$B/examples"
# The debug library inside, as users get the release one, with the natives only the tests call.
CARGO_FEATURES=test-natives bash scripts/build-jar.sh debug "$B/directmem.jar"
javac --release 17 -d "$B/examples" -cp "$B/directmem.jar" java/examples/*.java
javac --release 17 -d "$B/test-classes" -cp "$B/directmem.jar:$JUNIT" $(find java/src/test/java -name '*.java')
# directmem as a child JVM's own malloc (ChildJvmTest).
make -s -C tests/c shim LIBDIR="$PWD/target/debug" BUILD="$PWD/$B/shim"

total_passed=0 total_failed=0 rc=0
suite() { # label java-binary jvm-flags...
  local label=$1 java=$2; shift 2
  local log="$B/junit-$label.log"
  echo "== JUnit on $label ($("$java" -version 2>&1 | head -1))"
  set +e
  # A hung test fails the suite after 20 minutes (a whole run takes a few) instead of holding CI.
  timeout -k 30 20m "$java" -Xmx512m "$@" -Djava.library.path="$PWD/target/debug" \
    -Ddirectmem.test.jar="$PWD/$B/directmem.jar" -Ddirectmem.test.examples="$PWD/$B/examples" \
    -Ddirectmem.test.libdir="$PWD/target/debug" -Ddirectmem.test.classes="$PWD/$B/test-classes" \
    -Ddirectmem.test.shim="$PWD/$B/shim/libdm_malloc.so" \
    -jar "$JUNIT" --class-path "$B/test-classes:$B/directmem.jar" --scan-class-path \
    --disable-banner --details=tree 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then echo "$label: TIMED OUT after 20 minutes"; fi
  set -e
  local passed failed
  passed=$(grep -Eo '\[ +[0-9]+ tests successful' "$log" | grep -Eo '[0-9]+' || echo 0)
  failed=$(grep -Eo '\[ +[0-9]+ tests failed' "$log" | grep -Eo '[0-9]+' || echo 0)
  # -Xcheck:jni (below) reports a misuse of JNI by the library as a warning and goes on: a failure here.
  if grep -q "in native method" "$log"; then
    echo "$label: -Xcheck:jni reported a misuse of JNI:"; grep -A3 "in native method" "$log" | head -20
    failed=$((failed + 1)) status=1
  fi
  echo "$label: $passed passed, $failed failed"
  if [ "$passed" -eq 0 ]; then echo "$label: no Java test ran"; status=1; fi
  total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
  [ "$status" -eq 0 ] || rc=1
}

suite jdk17 java -Xcheck:jni
JDK25=$(ls -d /usr/lib/jvm/temurin-25* 2>/dev/null | head -1 || true)
if [ -n "$JDK25" ] && [ -x "$JDK25/bin/java" ]; then
  suite jdk25 "$JDK25/bin/java" -Xcheck:jni --enable-native-access=ALL-UNNAMED
else
  echo "!!!!!!!! Temurin JDK 25 not found under /usr/lib/jvm: the JUnit suite did NOT run on JDK 25 !!!!!!!!" >&2
fi
echo "$total_passed passed, $total_failed failed"
exit $rc
