#!/usr/bin/env bash
# Builds startbox (release) and runs the daemon as root.
#   ./scripts/run.sh [startd options...]      e.g. --listen 127.0.0.1:5959
# Data directory: $STARTOS_DATA_DIR, default /var/lib/startos. The build runs as you; only
# the daemon runs as root (through sudo when you are not root).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir="${STARTOS_DATA_DIR:-/var/lib/startos}"
cargo build --release -p startbox
bin="$PWD/target/release/startbox"
# The two personalities, as symlinks beside the binary: add target/release to PATH to use them.
ln -sf startbox target/release/startd
ln -sf startbox target/release/start-cli
# The static supervisor startd runs as each container's init (`--containers on`, the
# default, refuses to start without it); a flag given to this script still wins.
STARTOS_START_CONTAINER="$PWD/$(./scripts/build-start-container.sh)"
export STARTOS_START_CONTAINER

echo "startbox: starting startd with data directory $data_dir (Ctrl-C stops it)"
if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=RUST_LOG,STARTOS_START_CONTAINER "$bin" startd --data-dir "$data_dir" "$@"
fi
exec "$bin" startd --data-dir "$data_dir" "$@"
