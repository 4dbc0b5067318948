#!/usr/bin/env bash
# Start a root and two leaves on loopback (ports 4443, 4444, 4445), stop them all on Ctrl-C.
# The relay is $MOQ_RELAY, else moq-relay from PATH, else the project's .venv/bin/moq-relay.
# Logs go to $MOQ_CLUSTER_LOGS (default: this directory), one file per relay.
set -euo pipefail
cd "$(dirname "$0")"
logs=${MOQ_CLUSTER_LOGS:-.}
if [[ -n "${MOQ_RELAY:-}" ]]; then
  relay=$MOQ_RELAY
elif command -v moq-relay >/dev/null 2>&1; then
  relay=moq-relay
elif [[ -x ../../.venv/bin/moq-relay ]]; then
  relay=../../.venv/bin/moq-relay
else
  echo "run.sh: moq-relay is not on PATH and ../../.venv/bin/moq-relay does not exist;" \
       "install it first: python3 -m venv .venv && .venv/bin/pip install -e ." >&2
  exit 1
fi
pids=()
cleanup() { if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait until the relay's TCP port (its HTTP listener, opened after QUIC) accepts, or it dies.
wait_up() {
  local pid=$1 port=$2 node=$3 log=$4
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: $node exited before listening on port $port; its log ($log):" >&2
      tail -n 5 "$log" >&2 || true
      exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "run.sh: $node did not answer on 127.0.0.1:$port within 10s; its log ($log):" >&2
  tail -n 5 "$log" >&2 || true
  exit 1
}

port=4443
for node in root leaf-a leaf-b; do
  log="$logs/$node.log"
  "$relay" "$node.toml" 2> "$log" &
  pids+=($!)
  wait_up "$!" "$port" "$node" "$log"
  echo "started $node on port $port (log: $log)"
  port=$((port + 1))
done
echo "publish:  .venv/bin/python examples/clock_publish.py --url moql://localhost:4444/anon"
echo "watch:    .venv/bin/python examples/clock_subscribe.py --url moql://localhost:4445/anon"
wait
