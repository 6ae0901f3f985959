#!/usr/bin/env bash
# Builds directmem.jar: the Java API (compiled once, for release 17, with its module-info), and
# libdirectmem for this platform inside it, under dev/directmem/native/<os>-<arch>/.
# Usage: bash scripts/build-jar.sh [release|debug] [output jar]   (default: release, target/directmem.jar)
# Then: java -cp target/directmem.jar:. App   (JDK 22+: add --enable-native-access=ALL-UNNAMED)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
out=${2:-target/directmem.jar}
features=()
[ -z "${CARGO_FEATURES:-}" ] || features=(--features "$CARGO_FEATURES")  # java/run-tests.sh: test-natives
if [ "$profile" = release ]; then cargo build --release -q "${features[@]}"; else cargo build -q "${features[@]}"; fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case "$(uname -m)" in x86_64|amd64) arch=x86_64 ;; *) arch=$(uname -m) ;; esac
platform="$(uname -s | tr '[:upper:]' '[:lower:]')-$arch"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
classes=$work/classes
javac --release 17 -Xlint:all -Werror -d "$classes" $(find java/src/main/java -name '*.java')
# The JDK 22+ part (java/src/main/java22: plain FFM calls) goes to META-INF/versions/22, compiled by
# the first JDK 22+ compiler found; without one the jar still works, with the slower fallback.
javac22=$(bash scripts/find-jdk.sh 22 javac || true)
release22=() jar=jar
if [ -n "$javac22" ]; then
  jar=$(dirname "$javac22")/jar # an older jar tool cannot read the newer class files it checks
  "$javac22" --release 22 -Xlint:all -Werror -cp "$classes" -d "$work/classes22" $(find java/src/main/java22 -name '*.java')
  release22=(--release 22 -C "$work/classes22" .)
else
  echo "!!!!!!!! no JDK 22+ javac under /usr/lib/jvm: directmem.jar is built without its JDK 22 part (FfmBuffers) !!!!!!!!" >&2
fi
mkdir -p "$classes/dev/directmem/native/$platform"
cp "target/$profile/libdirectmem.so" "$classes/dev/directmem/native/$platform/"
# Its SHA-256 beside it: the name of the folder it is extracted to (NativeLibrary), not hashed at every start.
sha256sum "target/$profile/libdirectmem.so" | cut -c1-64 >"$classes/dev/directmem/native/$platform/libdirectmem.so.sha256"
printf '%s\n' "$version" > "$classes/dev/directmem/version"
printf 'Implementation-Title: directmem\nImplementation-Version: %s\n' "$version" > "$work/manifest"
mkdir -p "$(dirname "$out")"
rm -f "$out"
"$jar" --create --file "$out" --manifest "$work/manifest" --module-version "$version" -C "$classes" . "${release22[@]}"
echo "$out: directmem $version, libdirectmem for $platform inside"
