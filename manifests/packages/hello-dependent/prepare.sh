#!/bin/sh
# Run by `start-cli s9pk pack` before it builds the images (working directory: this package
# directory; $S9PK_ARCHES: the architectures being packed, space-separated).
#
# Builds the `main` image's root filesystem in build/rootfs/ as hello-world's prepare.sh
# does: the skeleton in rootfs/ (with the /run the effects directory is bound on) plus the
# host's static busybox (Debian: apt-get install busybox-static) and the applets the
# package uses. The result is host-architecture only, so it refuses to pack other ones.
set -eu

host=$(uname -m)
for arch in ${S9PK_ARCHES:-$host}; do
    if [ "$arch" != "$host" ]; then
        echo "prepare.sh: cannot build a $arch image on a $host host (busybox comes from the host); pack with --arch $host" >&2
        exit 1
    fi
done

busybox=${BUSYBOX:-/bin/busybox}
if ! [ -x "$busybox" ]; then
    echo "prepare.sh: $busybox not found (apt-get install busybox-static)" >&2
    exit 1
fi
# A dynamically linked busybox would need the host's libc inside the image.
if command -v ldd >/dev/null 2>&1 && ldd "$busybox" >/dev/null 2>&1; then
    echo "prepare.sh: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

rm -rf build/rootfs
mkdir -p build
cp -R rootfs build/rootfs
find build/rootfs -name .keep -delete    # placeholders that keep empty directories in git
cp "$busybox" build/rootfs/bin/busybox
chmod 0755 build/rootfs/bin/busybox
for applet in sh httpd mv; do
    ln -sf busybox "build/rootfs/bin/$applet"
done
# The oneshot writes Hello World's interface into the `data` volume (mounted at /data).
ln -sf /data/hello-world.json build/rootfs/www/hello-world.json
chmod 1777 build/rootfs/tmp
