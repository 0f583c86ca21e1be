#!/usr/bin/env bash
# Moonlight benchmark suite: installs the comparison proxies, the load generator and redis-server (for
# the cluster phase) if missing, raises the open-file limit for the WebSocket agents, then runs
# bench/run.ts with your arguments.
#   bench/run.sh [--quick] [--rounds N] [--duration S] [--only http,latency,balancer,connections,broadcast,fetch-cap,cluster] [--before REF]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH:/usr/sbin:/sbin"

missing=()
for tool in wrk nginx haproxy redis-server; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]} (apt-get)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v bun >/dev/null || { echo "bench: bun not found; run npm install first" >&2; exit 1; }

# Each idle WebSocket agent is a socket in the server and one in an agent process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec bun bench/run.ts "$@"
