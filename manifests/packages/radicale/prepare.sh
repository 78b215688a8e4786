#!/bin/sh
# Run by `start-cli s9pk pack` before it builds the images (working directory: this package
# directory; $S9PK_ARCHES: the architectures being packed, space-separated).
#
# Builds the `main` image's root filesystem in build/rootfs/ with mmdebstrap: Debian bookworm,
# minbase, plus radicale and python3-bcrypt (the action hashes passwords with it). Docs, man
# pages and locales are never unpacked, and apt's lists and caches are dropped, to keep the
# image small. The compiled Python (__pycache__) stays: the image is read-only at run time,
# where it could not be written, and every start would compile Radicale again. The build
# takes about half a minute and needs the Debian mirror, so it is skipped
# when build/rootfs is newer than this script and config/ (delete build/ to force it).
#
# Environment: MIRROR (default: the host's Debian mirror, else deb.debian.org).
set -eu

host=$(uname -m)
case "$host" in
x86_64) debarch=amd64 ;;
aarch64) debarch=arm64 ;;
riscv64) debarch=riscv64 ;;
*) echo "prepare.sh: no Debian architecture known for host $host" >&2; exit 1 ;;
esac
for arch in ${S9PK_ARCHES:-$host}; do
    if [ "$arch" != "$host" ]; then
        echo "prepare.sh: cannot build a $arch image on a $host host without emulation; pack with --arch $host" >&2
        exit 1
    fi
done
if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "prepare.sh: mmdebstrap not found (apt-get install mmdebstrap)" >&2
    exit 1
fi

stamp=build/rootfs/.prepared
if [ -f "$stamp" ] && [ -z "$(find prepare.sh config -newer "$stamp")" ]; then
    echo "prepare.sh: build/rootfs is up to date" >&2
    exit 0
fi

# Only the Debian registry may be reachable: use the mirror the host's apt already uses.
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$MIRROR" ] || MIRROR=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\/debian\)[[:space:]].*/\1/p' \
        /etc/apt/sources.list 2>/dev/null | head -n 1)
    [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
fi

rm -rf build/rootfs build/rootfs.tmp
mkdir -p build
# mmdebstrap refuses a non-empty target directory; build beside and rename when complete, so
# an interrupted build never passes for a finished one.
mmdebstrap --variant=minbase --arch="$debarch" \
    --include=radicale,python3-bcrypt \
    --dpkgopt=path-exclude=/usr/share/man/* \
    --dpkgopt=path-exclude=/usr/share/doc/* \
    --dpkgopt=path-include=/usr/share/doc/*/copyright \
    --dpkgopt=path-exclude=/usr/share/locale/* \
    --dpkgopt=path-exclude=/usr/share/info/* \
    --dpkgopt=path-exclude=/usr/share/lintian/* \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*' \
    --customize-hook='copy-in config/radicale.conf /etc/radicale' \
    --customize-hook='mv "$1"/etc/radicale/radicale.conf "$1"/etc/radicale/config' \
    --customize-hook='copy-in config/set-password /usr/local/bin' \
    --customize-hook='chmod 0755 "$1"/usr/local/bin/set-password' \
    --customize-hook='mkdir -p "$1"/data' \
    bookworm build/rootfs.tmp "deb $MIRROR bookworm main"
mv build/rootfs.tmp build/rootfs
touch "$stamp"
