#!/usr/bin/env bash
# Pack-time benchmark (a measurement, not a test): packs a ~200 MiB image tree with
# `start-cli s9pk pack` and compares it with what the same work costs with the standard
# tools: `mksquashfs` of the tree plus a SHA-256 of the result.
#
# Usage: scripts/bench-pack.sh [SIZE_MIB]   (default 200; needs squashfs-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-200}"
cargo build --release -q -p startbox
cli="$PWD/target/release/startbox"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A tree shaped like a service image: 40 % incompressible binaries of mixed sizes, 60 %
# text-like files (base64 is ~75 % compressible), thousands of small files, deterministic.
tree="$work/pkg/rootfs"
mkdir -p "$tree/bin" "$tree/share"
python3 - "$tree" "$size_mib" <<'PY'
import base64, os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
rng = random.Random(42)
binary, text = int(total * 0.4), int(total * 0.6)
i = 0
while binary > 0:
    n = min(binary, rng.choice([64 << 10, 512 << 10, 4 << 20]))
    with open(f"{root}/bin/blob{i:05}", "wb") as f:
        f.write(rng.randbytes(n))
    binary -= n; i += 1
i = 0
while text > 0:
    n = min(text, rng.randint(1 << 10, 64 << 10))
    d = f"{root}/share/d{i // 200:03}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06}.txt", "wb") as f:
        f.write(base64.b64encode(rng.randbytes(n * 3 // 4))[:n])
    text -= n; i += 1
PY
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)

cat > "$work/pkg/manifest.yaml" <<'YAML'
id: bench
title: Pack benchmark
version: "1.0.0:0"
license: MIT
description: {short: Pack benchmark., long: A tree of files to pack.}
arch: [x86_64]
images:
  main:
    source: {directory: rootfs}
    cmd: [/bin/sh]
volumes: []
YAML
printf '# MIT\n' > "$work/pkg/LICENSE.md"
printf 'Nothing to do.\n' > "$work/pkg/instructions.md"
printf '<svg xmlns="http://www.w3.org/2000/svg"/>\n' > "$work/pkg/icon.svg"
"$cli" cli s9pk init-key --key "$work/key.pem" > /dev/null

sync
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

t0=$(now); "$cli" cli s9pk pack "$work/pkg" -o "$work/out.s9pk" --key "$work/key.pem" --no-prepare > /dev/null; t1=$(now)
t2=$(now); mksquashfs "$tree" "$work/plain.squashfs" -noappend -comp zstd -quiet > /dev/null; t3=$(now)
t4=$(now); sha256sum "$work/plain.squashfs" > /dev/null; t5=$(now)
t6=$(now); openssl dgst -sha256 "$work/plain.squashfs" > /dev/null; t7=$(now)
t8=$(now); "$cli" cli s9pk verify "$work/out.s9pk" > /dev/null; t9=$(now)

echo "pack benchmark: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "tree: $((bytes / 1048576)) MiB in $files files; archive $(( $(stat -c %s "$work/out.s9pk") / 1048576 )) MiB"
echo "start-cli s9pk pack                     $(secs "$t0" "$t1") s"
echo "mksquashfs alone                        $(secs "$t2" "$t3") s"
echo "mksquashfs + sha256sum                  $(secs "$t2" "$t5") s   (sha256sum $(secs "$t4" "$t5") s)"
echo "mksquashfs + openssl dgst -sha256       $(python3 -c "print(f'{($t3 - $t2) + ($t7 - $t6):.2f}')") s   (openssl $(secs "$t6" "$t7") s)"
echo "start-cli s9pk verify                   $(secs "$t8" "$t9") s"
