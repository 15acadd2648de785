#!/usr/bin/env bash
# Installs what Ordo needs on this machine, and nothing that is there already.
#
#   scripts/setup.sh build   what building Ordo needs (a C toolchain, librdkafka's
#                            TLS/SASL/OIDC libraries)
#   scripts/setup.sh demo    build + PostgreSQL's server binaries (`make demo`)
#   scripts/setup.sh test    demo + Prometheus and promtool, the Python
#                            packages of tests/producers in ./.venv, and the
#                            tansu broker (cargo install) (`make test`)
#
# Debian packages are installed with apt-get when run as root; otherwise the
# script stops with the exact command to run. Python packages go into the
# project's own virtual environment (.venv), never the system's. A second run
# finds everything in place and prints "setup: nothing to do".
set -euo pipefail
cd "$(dirname "$0")/.."

want=${1:-test}
case "$want" in
  build | demo | test) ;;
  *) echo "usage: scripts/setup.sh [build|demo|test]" >&2; exit 2 ;;
esac

# Debian packages per purpose. tests/setup.rs checks these lists against
# what the build links and what the tests start.
BUILD_PACKAGES=(gcc make pkg-config libssl-dev libsasl2-dev libsasl2-modules-gssapi-mit libcurl4-openssl-dev)
DEMO_PACKAGES=(postgresql)
TEST_PACKAGES=(prometheus python3-venv)
# The oldest Rust that builds Ordo (Cargo.toml's rust-version).
RUST_VERSION=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)

did=0
say() { echo "setup: $*"; }

# Rust is installed by the user (rustup), not by this script.
if ! command -v cargo >/dev/null 2>&1; then
  say "Rust is missing: install it with rustup (https://rustup.rs), version $RUST_VERSION or newer" >&2
  exit 1
fi
have_rust=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$RUST_VERSION" "$have_rust" | sort -V | head -n 1)" != "$RUST_VERSION" ]; then
  say "Rust $have_rust is older than $RUST_VERSION: run \`rustup update stable\`" >&2
  exit 1
fi

packages=("${BUILD_PACKAGES[@]}")
[ "$want" = build ] || packages+=("${DEMO_PACKAGES[@]}")
[ "$want" = test ] && packages+=("${TEST_PACKAGES[@]}")

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do
    # python3-venv is only needed when this Python has no working venv module.
    if [ "$p" = python3-venv ] && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
      continue
    fi
    installed "$p" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      say "missing Debian packages: ${missing[*]}" >&2
      say "run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    did=1
  fi
else
  say "not a Debian system: install by hand the equivalents of ${packages[*]}" >&2
fi

# PostgreSQL's server refuses to run as root: as root, the tests and the demo
# run it as the `postgres` user, which Debian's package creates.
if [ "$want" != build ] && [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  say "adding the system user postgres"
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
  did=1
fi

if [ "$want" = test ]; then
  # The Python producer of the tests (Confluent's client and Avro serializer),
  # in the project's own virtual environment. Reinstalled when the
  # requirements change.
  stamp=.venv/.requirements.sha256
  sum=$(sha256sum tests/producers/requirements.txt | awk '{print $1}')
  if [ ! -x .venv/bin/python3 ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    say "installing tests/producers/requirements.txt into .venv"
    [ -x .venv/bin/python3 ] || python3 -m venv .venv
    .venv/bin/python3 -m pip install --quiet --disable-pip-version-check -r tests/producers/requirements.txt
    echo "$sum" >"$stamp"
    did=1
  fi
  # tansu, a Kafka-API broker run as a process of its own, for the test of
  # offsets by timestamp (librdkafka's mock cluster has no time index).
  # Built from crates.io, once: about 20 minutes on 2 cores.
  tansu_version=0.6.0
  tansu_bin=$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")
  if ! "$tansu_bin" --version 2>/dev/null | grep -q " $tansu_version\b"; then
    say "installing tansu $tansu_version (cargo install; about 20 minutes on 2 cores)"
    tansu_build=$(mktemp -d)
    CARGO_TARGET_DIR="$tansu_build" cargo install tansu --version "$tansu_version" --locked --features dynostore,libsql --quiet
    rm -rf "$tansu_build"
    did=1
  fi
  for tool in runuser setsid prometheus promtool; do
    command -v "$tool" >/dev/null || { say "$tool is still missing after set-up" >&2; exit 1; }
  done
fi

if [ "$did" = 0 ]; then
  say "nothing to do ($want: everything is in place)"
else
  say "done ($want)"
fi
