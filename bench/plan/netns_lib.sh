# Sourced by bench/plan/validate_netns.sh and tests/plan/delay_line_test: "hosts" as network
# namespaces, joined by a router namespace whose forwarding passes through a delay line
# (delay_line.cpp on a tun device), because this kernel has no netem. Needs root and iproute2.
#
#   router_setup SW NET MTU H0 H1 ...   # Hk: eth0 = NET.(k+1)/24; SW routes them via dl0
#   start_delay SW DELAY_LINE US LOG    # (re)starts the delay line (pid in DELAY_PID)
#   tcp_rtt NS_SRV ADDR NS_CLI PORT N   # "median X us, min Y us" of N 1-byte round trips
#   stop_delay; router_delete SW H0 H1 ...
#
# Every packet from one host to another comes in on SW's veth vk, is routed (policy rule
# "iif vk") into dl0, held US microseconds by the delay line, written back into dl0 and
# routed by destination to the other host's veth: every TCP connection between hosts (the
# store's and the ranks') is delayed US each way, so a round trip gains 2 x US.

router_setup() {
  local sw=$1 net=$2 mtu=$3 k=0 h
  shift 3
  ip netns add "$sw" || return 1
  ip netns exec "$sw" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.send_redirects=0 || return 1
  ip -n "$sw" link set lo up
  # A source address for the router's own ARP requests (it has none on its veths).
  ip -n "$sw" addr add 10.255.255.1/32 dev lo
  for h in "$@"; do
    ip netns add "$h" || return 1
    ip -n "$h" link add eth0 mtu "$mtu" type veth peer name v$k mtu "$mtu" netns "$sw" || return 1
    ip -n "$h" link set lo up
    ip -n "$h" link set eth0 up
    ip -n "$h" addr add "$net.$((k + 1))/24" dev eth0
    ip -n "$sw" link set v$k up
    # Proxy ARP: the router answers for the other hosts of the /24, so they route through it.
    ip netns exec "$sw" sysctl -qw net.ipv4.conf.v$k.proxy_arp=1 net.ipv4.conf.v$k.rp_filter=0
    ip -n "$sw" route add "$net.$((k + 1))/32" dev v$k
    ip -n "$sw" rule add iif v$k lookup 100
    k=$((k + 1))
  done
  ROUTER_MTU=$mtu
}

stop_delay() {
  if [ -n "${DELAY_PID:-}" ]; then
    kill -TERM "$DELAY_PID" 2>/dev/null
    wait "$DELAY_PID" 2>/dev/null
  fi
  DELAY_PID=
}

# start_delay's failures: what failed, what to check, the delay line's log; stops the line.
delay_failed() {
  echo "start_delay: $1" >&2
  echo "start_delay: check: $2" >&2
  [ -s "$3" ] && { echo "start_delay: last lines of $3:" >&2; tail -n 3 "$3" >&2; }
  stop_delay
  return 1
}

start_delay() {
  local sw=$1 bin=$2 us=$3 log=$4 i
  stop_delay
  [ -x "$bin" ] || { delay_failed "the delay line $bin is not an executable file" \
    "build it: cmake --build BUILD_DIR --target delay_line (LOCKSTEP_BUILD_BENCH=ON)" "$log"; return 1; }
  ip netns exec "$sw" "$bin" dl0 "$us" 2>>"$log" &
  DELAY_PID=$!
  for i in $(seq 100); do
    ip -n "$sw" link show dl0 >/dev/null 2>&1 && break
    kill -0 "$DELAY_PID" 2>/dev/null || break
    sleep 0.05
  done
  if ! ip -n "$sw" link show dl0 >/dev/null 2>&1; then
    local state="still runs"
    kill -0 "$DELAY_PID" 2>/dev/null || state="exited"
    delay_failed "'ip netns exec $sw $bin dl0 $us' made no tun device dl0 within 5 s (it $state)" \
      "root, /dev/net/tun (modprobe tun), that namespace $sw exists (router_setup)" "$log"
    return 1
  fi
  ip -n "$sw" link set dl0 mtu "${ROUTER_MTU:-1500}" txqueuelen 10000 up ||
    { delay_failed "'ip -n $sw link set dl0 mtu ${ROUTER_MTU:-1500} txqueuelen 10000 up' failed" \
      "the MTU (router_setup's MTU) is one the tun device takes (68..65535)" "$log"; return 1; }
  ip netns exec "$sw" sysctl -qw net.ipv4.conf.dl0.rp_filter=0 ||
    { delay_failed "'sysctl net.ipv4.conf.dl0.rp_filter=0' in namespace $sw failed" \
      "that /proc/sys is writable in $sw (root)" "$log"; return 1; }
  ip -n "$sw" route replace default dev dl0 table 100 ||
    { delay_failed "'ip -n $sw route replace default dev dl0 table 100' failed" \
      "that dl0 is up in $sw (ip -n $sw link show dl0)" "$log"; return 1; }
}

router_delete() {
  local h
  stop_delay
  for h in "$@"; do ip netns delete "$h" 2>/dev/null; done
}

tcp_rtt() {  # no ping(8) on this machine: a 1-byte TCP ping-pong (TCP_NODELAY) in Python
  local srv=$1 addr=$2 cli=$3 port=$4 n=$5
  ip netns exec "$srv" timeout 60 python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while (b := c.recv(1)): c.sendall(b)' "$addr" "$port" &
  local spid=$!
  ip netns exec "$cli" timeout 60 python3 -c 'import socket, sys, time, statistics
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); break
    except OSError:
        time.sleep(0.05)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); t = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); c.sendall(b"x"); c.recv(1); t.append(time.perf_counter() - t0)
print("median %.1f us, min %.1f us" % (statistics.median(t) * 1e6, min(t) * 1e6))' "$addr" "$port" "$n"
  wait "$spid"
}
