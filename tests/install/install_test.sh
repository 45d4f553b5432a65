#!/usr/bin/env bash
# `cmake --install` of the build into a scratch prefix, then a separate CMake project
# (tests/install/consumer) that finds it with find_package(weft), links weft::weft, builds and
# runs; and the installed `weft` binary runs. Label "install".
set -euo pipefail
: "${WEFT_BUILD_DIR:?the weft build directory}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/weft_install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cmake --install "$WEFT_BUILD_DIR" --prefix "$work/prefix" >"$work/install.log"
for f in bin/weft lib/cmake/weft/weftConfig.cmake lib/cmake/weft/weftConfigVersion.cmake \
  lib/cmake/weft/weftTargets.cmake lib/libweft_train.a include/weft/runtime/core/tensor.h \
  include/weft/runtime/io/run_config.pb.h; do
  [ -e "$work/prefix/$f" ] || { echo "FAIL: cmake --install did not install $f"; exit 1; }
done
"$work/prefix/bin/weft" --version | grep -q '^weft 0\.' || { echo "FAIL: installed weft --version"; exit 1; }

# The consumer sees the installed prefix only (a copy of the project, outside the source tree).
cp -r "$here/consumer" "$work/consumer"
cmake -S "$work/consumer" -B "$work/consumer/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; echo "FAIL: find_package(weft)"; exit 1; }
cmake --build "$work/consumer/build" -j"$(nproc)" >"$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log"; echo "FAIL: building against weft::weft"; exit 1; }
out="$("$work/consumer/build/consumer")"
echo "$out"
expected="matmul 19 22 43 50
sha256 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
lr 0.500000"
[ "$out" = "$expected" ] || { echo "FAIL: the consumer printed something else"; exit 1; }
# A version the package does not satisfy is refused.
sed -i 's/find_package(weft 0.4 REQUIRED)/find_package(weft 9.0 REQUIRED)/' "$work/consumer/CMakeLists.txt"
if cmake -S "$work/consumer" -B "$work/consumer/build9" -DCMAKE_PREFIX_PATH="$work/prefix" \
  >"$work/configure9.log" 2>&1; then
  echo "FAIL: find_package(weft 9.0) accepted version 0.4"; exit 1
fi
echo "PASS: cmake --install, find_package(weft), weft::weft, the installed weft binary"
