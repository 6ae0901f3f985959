#!/usr/bin/env bash
# Builds the Java API jar against the debug libdirectmem, compiles the JUnit 5 tests and the
# examples, and runs the suite in a real JVM. Prints the launcher's summary and "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
JUNIT=/usr/share/java/junit-platform-console-standalone.jar
B=java/build
cargo build -q
rm -rf "$B/classes" "$B/test-classes" "$B/examples"
javac -Xlint:all -Werror -d "$B/classes" $(find java/src/main/java -name '*.java')
jar --create --file "$B/directmem.jar" -C "$B/classes" .
javac -d "$B/examples" -cp "$B/directmem.jar" java/examples/*.java
javac -d "$B/test-classes" -cp "$B/directmem.jar:$JUNIT" $(find java/src/test/java -name '*.java')

set +e
java -Xmx512m -Djava.library.path="$PWD/target/debug" \
  -Ddirectmem.test.jar="$PWD/$B/directmem.jar" -Ddirectmem.test.examples="$PWD/$B/examples" \
  -Ddirectmem.test.libdir="$PWD/target/debug" -Ddirectmem.test.classes="$PWD/$B/test-classes" \
  -jar "$JUNIT" --class-path "$B/test-classes:$B/directmem.jar" --scan-class-path \
  --disable-banner --details=tree 2>&1 | tee "$B/junit.log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '\[ +[0-9]+ tests successful' "$B/junit.log" | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo '\[ +[0-9]+ tests failed' "$B/junit.log" | grep -Eo '[0-9]+' || echo 0)
echo "$passed passed, $failed failed"
if [ "$passed" -eq 0 ]; then echo "no Java test ran"; exit 1; fi
exit $rc
