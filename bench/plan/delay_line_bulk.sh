#!/bin/bash
# bench/plan/delay_line_bulk.sh LINE_A [LINE_B] [US] [MB] [REPS]: how late a delay line
# (bench/plan/delay_line) lets packets leave under a steady stream in. Two "hosts" joined
# through the line (netns_lib.sh, 1500-byte frames) move MB MiB (default 200) over one TCP
# connection with the line at US us each way (default 1000); REPS (default 2) times per
# binary, alternating LINE_A and LINE_B (e.g. an old and a new build). Prints, per run, the
# transfer time and the line's closing line (packets, drops, lateness median and max).
# Needs root, iproute2, /dev/net/tun. About 3 s per run.
set -u
a=$(realpath "$1") b=$(realpath "${2:-$1}") us=${3:-1000} mb=${4:-200} reps=${5:-2}
. "$(dirname "$0")/netns_lib.sh"
[ "$(id -u)" = 0 ] || { echo "delay_line_bulk: needs root (network namespaces)"; exit 77; }
tag=dlb$$
log=$(mktemp /tmp/lockstep-delay-bulk-XXXXXX)
trap 'router_delete $tag-sw $tag-a $tag-b; rm -f "$log"' EXIT
router_setup $tag-sw 10.219.0 1500 $tag-a $tag-b || exit 1
port=29650
for r in $(seq "$reps"); do
  for bin in "$a" "$b"; do
    : >"$log"
    start_delay $tag-sw "$bin" "$us" "$log" || exit 1
    port=$((port + 1))
    ip netns exec $tag-a timeout 120 python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); c, _ = s.accept()
while c.recv(1 << 20): pass' 10.219.0.1 $port &
    spid=$!
    took=$(ip netns exec $tag-b timeout 120 python3 -c 'import socket, sys, time
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); break
    except OSError:
        time.sleep(0.05)
buf, t = b"x" * (1 << 20), time.perf_counter()
for _ in range(int(sys.argv[3])): c.sendall(buf)
c.shutdown(socket.SHUT_WR); c.recv(1); print("%.2f s" % (time.perf_counter() - t))' 10.219.0.1 $port "$mb")
    wait "$spid"
    stop_delay
    echo "rep $r $bin: $mb MiB in $took; $(grep -v 'each way' "$log" | sed 's/^delay_line: //')"
  done
done
