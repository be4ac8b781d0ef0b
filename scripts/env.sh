# Shared settings of the project's scripts (sourced, not run).
export PAIIO_CACHE="${PAIIO_CACHE:-$HOME/.cache/paiio-rs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PAIIO_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$PAIIO_CACHE"

# Rust: the toolchain pinned by rust-toolchain.toml, installed with rustup when missing.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    elif command -v rustup >/dev/null 2>&1; then
      rustup toolchain install stable --profile minimal
    else
      echo "error: no Rust toolchain found; install rustup (https://rustup.rs) and rerun" >&2
      exit 1
    fi
  fi
  if ! command -v cc >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
    else
      echo "error: a C compiler (cc) is needed to build zstd; install build-essential" >&2
      exit 1
    fi
  fi
}

# Python: a virtual environment under the cache with the packages of a requirements file.
ensure_venv() {
  local requirements="$1"
  export PAIIO_VENV="${PAIIO_VENV:-$PAIIO_CACHE/venv}"
  if ! command -v python3 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
    else
      echo "error: python3 is needed for the Python tests" >&2
      exit 1
    fi
  fi
  if [ ! -x "$PAIIO_VENV/bin/python" ]; then
    if ! python3 -m venv "$PAIIO_VENV" 2>/dev/null; then
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$PAIIO_VENV"
      else
        echo "error: python3 -m venv failed; install python3-venv" >&2
        exit 1
      fi
    fi
  fi
  local stamp="$PAIIO_VENV/.requirements-$(sha256sum "$requirements" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$PAIIO_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$PAIIO_VENV/bin/python" -m pip install -q -r "$requirements"
    touch "$stamp"
  fi
}
