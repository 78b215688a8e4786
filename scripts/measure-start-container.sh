#!/bin/bash
# Measures the static `start-container` (run as root, needs /bin/busybox): binary size,
# time from start to its first daemon ready (an http probe on busybox httpd), and the
# resident memory of the idle supervisor with two daemons (VmRSS, VmHWM from /proc).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$(scripts/build-start-container.sh)")
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir"/root/{bin,www,dev,proc,sys}
cp /bin/busybox "$dir/root/bin/"
echo hello >"$dir/root/www/index.html"
port=$(( (RANDOM % 20000) + 20000 ))
cat >"$dir/config.json" <<JSON
{"images": {"main": "$dir/root"}, "statusFile": "$dir/status.json", "logDir": "$dir/logs",
 "daemons": {
  "web": {"image": "main", "command": ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:$port", "-h", "/www"],
          "ready": {"http": {"port": $port}}},
  "worker": {"image": "main", "requires": ["web"], "command": ["/bin/busybox", "sleep", "1000"]}}}
JSON
start=$(date +%s%N)
"$bin" run --config "$dir/config.json" 2>"$dir/stderr" &
pid=$!
until grep -q '"ready": true' "$dir/status.json" 2>/dev/null; do sleep 0.005; done
ready=$(date +%s%N)
until [ "$(grep -c '"ready": true' "$dir/status.json")" = 2 ]; do sleep 0.05; done
sleep 3 # idle: a few probe periods
echo "binary: $(stat -c %s "$bin") bytes ($bin)"
echo "startup to first daemon ready: $(( (ready - start) / 1000000 )) ms"
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
kill -TERM "$pid"
wait "$pid"
echo "exit after SIGTERM: $?"
