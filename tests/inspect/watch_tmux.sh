#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# shm-inspect --watch in a real terminal: a tmux pane runs it against a live host process; the pane must show
# the segment and keep refreshing in place, and the tool must quit cleanly (exit 0) on q and on Ctrl-C.
# Every wait polls for its condition, with a generous deadline. Usage: watch_tmux.sh SHM_INSPECT SHM_TEST_PEER
set -euo pipefail
inspect=$1
peer=$2
name="shm-insp-watch-$$"
server="shm-insp-$$"  # a private tmux server: nothing of the user's tmux is touched
work=$(mktemp -d)
host_pid=
cleanup() {
  tmux -L "$server" kill-server 2>/dev/null || true
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; wait "$host_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local limit=$1
  shift
  local end=$((SECONDS + limit))
  until "$@"; do
    if [ "$SECONDS" -ge "$end" ]; then return 1; fi
    sleep 0.05
  done
}
pane() { tmux -L "$server" capture-pane -p -t w 2>/dev/null || true; }
pane_has() { pane | grep -qF -- "$1"; }

"$peer" host --name "$name" >"$work/host.out" </dev/null &
host_pid=$!
wait_for 60 grep -q "INIT OK" "$work/host.out" || { echo "FAIL: the host did not start"; exit 1; }

for quit in q C-c; do
  rm -f "$work/exit"
  tmux -L "$server" new-session -d -s w -x 132 -y 60 \
    "'$inspect' --watch '$name' --interval-ms 100; echo EXIT=\$? >'$work/exit'"
  wait_for 60 pane_has "segment $name" || { echo "FAIL: no view"; pane; exit 1; }
  wait_for 60 pane_has "refresh every 100 ms" || { echo "FAIL: no footer"; pane; exit 1; }
  pane_has "alive (holds the name)" || { echo "FAIL: host not shown alive"; pane; exit 1; }
  # Refreshes in place: the host's age changes between captures, and the view stays one screen.
  first=$(pane)
  changed() { [ "$(pane)" != "$first" ]; }
  wait_for 60 changed || { echo "FAIL: the view never refreshed"; pane; exit 1; }
  [ "$(pane | grep -c "^segment $name")" -eq 1 ] || { echo "FAIL: not refreshed in place"; pane; exit 1; }
  echo "--- pane before $quit:"
  pane | sed -n '1,8p'
  tmux -L "$server" send-keys -t w "$quit"
  wait_for 60 test -s "$work/exit" || { echo "FAIL: $quit did not quit"; pane; exit 1; }
  grep -qx "EXIT=0" "$work/exit" || { echo "FAIL: $quit quit with $(cat "$work/exit")"; exit 1; }
  echo "quit on $quit: $(cat "$work/exit")"
done
echo "OK"
