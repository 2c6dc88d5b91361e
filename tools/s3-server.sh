#!/usr/bin/env bash
# A local S3 service for GEDS (moto_server from PyPI `moto[server]`) on loopback.
#   tools/s3-server.sh start [PORT]   start it (default port 4569) and print its endpoint
#   tools/s3-server.sh stop           stop the one this script started
#   tools/s3-server.sh status         print its endpoint, or fail when none is running
# Its state is in memory: stopping it forgets every bucket. The Swift tests start their own servers.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.build/s3-server
PIDFILE=$STATE/pid
PORTFILE=$STATE/port
LOG=$STATE/log
mkdir -p "$STATE"

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
start)
  if running; then echo "http://127.0.0.1:$(cat "$PORTFILE")"; exit 0; fi
  PORT=${2:-4569}
  python3 -c 'import moto.server' 2>/dev/null || {
    echo "s3-server: moto is not installed (python3 -m pip install 'moto[server]')" >&2; exit 1; }
  setsid python3 -c "from moto.server import main; main(['-H', '127.0.0.1', '-p', '$PORT'])" >"$LOG" 2>&1 < /dev/null &
  echo $! >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then echo "http://127.0.0.1:$PORT"; exit 0; fi
    running || break
    sleep 0.1
  done
  echo "s3-server: moto_server did not start on port $PORT; its log:" >&2
  tail -n 20 "$LOG" >&2
  kill -- "-$(cat "$PIDFILE")" 2>/dev/null || true
  rm -f "$PIDFILE"
  exit 1
  ;;
stop)
  if running; then
    PID=$(cat "$PIDFILE")
    kill -- "-$PID" 2>/dev/null || kill "$PID"   # its own process group (setsid)
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$PID" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$PORTFILE"
  ;;
status)
  running && echo "http://127.0.0.1:$(cat "$PORTFILE")" || { echo "s3-server: not running" >&2; exit 1; }
  ;;
*)
  echo "usage: tools/s3-server.sh start [PORT] | stop | status" >&2
  exit 2
  ;;
esac
