#!/usr/bin/env bash
# Start a root and two leaves on loopback (ports 4443, 4444, 4445), stop them all on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"
relay=${MOQ_RELAY:-moq-relay}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for node in root leaf-a leaf-b; do
  "$relay" "$node.toml" 2> "$node.log" &
  pids+=($!)
  echo "started $node (log: examples/cluster/$node.log)"
  sleep 1
done
echo "publish:  python examples/clock_publish.py --url moql://localhost:4444/anon"
echo "watch:    python examples/clock_subscribe.py --url moql://localhost:4445/anon"
wait
