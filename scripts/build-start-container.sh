#!/bin/sh
# Builds the static `start-container` binary that is mounted read-only into every package
# container. glibc links statically for it (it uses no NSS: users are read from the
# image's /etc/passwd, probes connect to addresses); a separate target dir keeps the
# crt-static flags from invalidating the normal build. Prints the binary's path.
set -eu
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
# With an explicit --target, RUSTFLAGS reach only the target code, not proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
CARGO_PROFILE_RELEASE_DEBUG=false \
CARGO_PROFILE_RELEASE_STRIP=symbols \
CARGO_PROFILE_RELEASE_LTO=true \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
    cargo build --release --locked -p container-runtime --bin start-container \
    --target "$target" --target-dir target/static >&2
bin="target/static/$target/release/start-container"
case "$(ldd "$bin" 2>&1)" in
*"statically linked"* | *"not a dynamic executable"*) ;;
*)
    echo "error: $bin is dynamically linked" >&2
    exit 1
    ;;
esac
echo "$bin"
