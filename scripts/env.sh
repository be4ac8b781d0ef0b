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
