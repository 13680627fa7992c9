#!/bin/bash
# bench/plan/validate_netns.sh [BUILD_DIR] [OUT_DIR] [WORLD] [RATES] [MODELS] [REPS]
# Checks `lockstep plan` against measured DDP steps on shaped links (docs/scaling.md). Needs root.
#   WORLD "hosts" (network namespaces, one worker each) hang off a bridge in a switch namespace;
#   each host's eth0 egress is rate limited with tc tbf (RATES, e.g. "1gbit 100mbit"; this
#   kernel has no netem, so no delay is added: the link's latency is whatever veth + the
#   bridge + TCP give, and is measured). For each rate: `lockstep bench collectives` (ring
#   forced) across the hosts -> `lockstep plan calibrate` -> alpha, beta of that link. For each
#   rep and model: a compute profile on the host (`lockstep train --profile`, WORLD workers,
#   shm, 1 thread each) and, right after, the measured run on the shaped link (`lockstep run
#   --nnodes WORLD` -> `lockstep train --profile`, whose median step is the measurement);
#   `lockstep plan --algo auto` predicts it from the profile (and from the run's own compute)
#   and the calibration.
# Prints the table of tabulate.py (both predictions, measured step, hidden share) and writes
# it to OUT_DIR/validation.tsv.
set -u
build=$(realpath "${1:-build/release}")
out=$(realpath -m "${2:-/tmp/lockstep-scaling}")
W=${3:-2}
rates=${4:-"1gbit 100mbit"}
models=${5:-"fmnist-mlp fmnist-cnn char-gpt"}
reps=${6:-2}
L=$build/apps/lockstep
B=$build/bench/comm/bench_collectives
tag=lsv$$
port=29700
mkdir -p "$out"
cleanup() {
  for i in $(seq 0 $((W - 1))); do ip netns delete $tag-h$i 2>/dev/null; done
  ip netns delete $tag-sw 2>/dev/null
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, tc)"; exit 77; }
ip netns add $tag-sw || exit 77
ip -n $tag-sw link add br0 type bridge && ip -n $tag-sw link set br0 up
for i in $(seq 0 $((W - 1))); do
  ip netns add $tag-h$i
  ip -n $tag-h$i link add eth0 type veth peer name v$i netns $tag-sw
  ip -n $tag-sw link set v$i master br0
  ip -n $tag-sw link set v$i up
  ip -n $tag-h$i link set lo up
  ip -n $tag-h$i link set eth0 up
  ip -n $tag-h$i addr add 10.216.0.$((i + 1))/24 dev eth0
done
shape() {  # rate: tbf on each host's egress, its bucket about 4 ms of the rate (64 KiB at
  # 100 Mbit/s, 512 KiB at 1 Gbit/s). Smaller, the loaded VM's timer cannot keep the rate up
  # (1 Gbit/s with 64 KiB: the bench still reached 0.76 Gbit/s, training steps a quarter of
  # that); larger, the first burst of every step passes at memory speed after the link idled
  # through backward (100 Mbit/s with 512 KiB: steps a third below the model).
  local burst=64kb
  case $1 in *gbit) burst=512kb ;; esac
  for i in $(seq 0 $((W - 1))); do
    tc -n $tag-h$i qdisc replace dev eth0 root tbf rate "$1" burst $burst latency 100ms || exit 1
  done
}
job() {  # log, command...: one worker per host under `lockstep run --nnodes W`
  local log=$1 pids=() i
  shift
  port=$((port + 1))
  export LOCKSTEP_STORE_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  for i in $(seq $((W - 1)) -1 0); do
    LOCKSTEP_HOST_ID=host$i timeout 600 ip netns exec $tag-h$i "$L" run --no-prefix --nproc-per-node 1 \
      --nnodes $W --node-rank $i --master-addr 10.216.0.1 --master-port $port -- "$@" >"$log.$i" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
cfg=$out/t1.toml
printf 'threads = 1\ntest_limit = 256\nlog_every = 100\n' >"$cfg"
args() {  # model -> its training flags
  case $1 in
    char-gpt) echo "--model char-gpt --batch 8 --data /usr/share/common-licenses/GPL-3" ;;
    *) echo "--model $1" ;;
  esac
}
echo "# $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $W hosts, rates: $rates"
rtt() {  # median round trip of a 1-byte TCP ping-pong, host 1 -> host 0 (no ping(8) here)
  ip netns exec $tag-h0 timeout 20 python3 -c 'import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.216.0.1", 29699)); s.listen(1)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while (b := c.recv(1)): c.sendall(b)' &
  sleep 0.5
  ip netns exec $tag-h1 timeout 20 python3 -c 'import socket, time, statistics
c = socket.create_connection(("10.216.0.1", 29699)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); t = []
for _ in range(200):
    t0 = time.perf_counter(); c.sendall(b"x"); c.recv(1); t.append(time.perf_counter() - t0)
print("tcp 1-byte round trip: median %.1f us, min %.1f us (200 trips)" % (statistics.median(t) * 1e6, min(t) * 1e6))'
  wait
}
for rate in $rates; do
  shape "$rate"
  echo "# $rate: $(rtt)"
  LOCKSTEP_ALGO=ring job "$out/bench-$rate.txt" "$B" --transport tcp --op allreduce --min-bytes 4K \
    --max-bytes 1M --iters 3 --reps 3 --warmup 1 || { cat "$out/bench-$rate.txt".*; exit 1; }
  "$L" plan calibrate --bench "$out/bench-$rate.txt.0" --world $W --transport "tcp-$rate" \
    --out "$out/link-$rate.json" | sed "s/^/# /"
done
for rep in $(seq 1 "$reps"); do
  for m in $models; do
    "$L" train --config "$cfg" $(args $m) --nproc $W --run-dir "$out/run-prof" --overwrite \
      --profile "$out/prof-$m-$rep.json" >"$out/prof-$m-$rep.log" 2>&1 || { cat "$out/prof-$m-$rep.log"; exit 1; }
    for rate in $rates; do
      shape "$rate"
      job "$out/meas-$m-$rate-$rep.log" "$L" train --config "$cfg" $(args $m) --run-dir "$out/run-meas" \
        --overwrite --profile "$out/meas-$m-$rate-$rep.json" || { cat "$out/meas-$m-$rate-$rep.log".*; exit 1; }
    done
  done
done
echo "# done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$(dirname "$0")/tabulate.py" "$out" "$L" $W | tee "$out/validation.tsv"
