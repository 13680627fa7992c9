#!/bin/bash
# bench/plan/validate_netns.sh [BUILD_DIR] [OUT_DIR] [WORLD] [RATES] [MODELS] [REPS]
# Checks `lockstep plan` against measured DDP steps on shaped links (docs/scaling.md). Needs root.
#   WORLD "hosts" (network namespaces, one worker each) hang off a bridge in a switch namespace;
#   each host's eth0 egress is rate limited with tc tbf (RATES, e.g. "1gbit 100mbit").
#   DELAY_US=D (environment): this kernel has no netem, so the hosts are joined instead by a
#   router namespace that passes every packet through bench/plan/delay_line (a tun device
#   holding each packet D us; netns_lib.sh): D each way, 2D per round trip, on every TCP
#   connection between hosts (the store's and the ranks'). The 1-byte TCP round trip is
#   measured and printed: over the bridge, or through the line at 0 and at D.
#   BUCKET_MB="C1 C2 ..." (environment): each model runs (profile and measured run) at each of
#   these bucket caps in turn, --bucket-cap-mb C (default: DDP's 25 MiB, no flag).
#   For each rate: `lockstep bench collectives` (ring forced) across the hosts -> `lockstep
#   plan calibrate` -> alpha, beta of that link (with the delay in alpha). For each rep and
#   model: a compute profile on the host (`lockstep train --profile`, WORLD workers, shm, 1
#   thread each) and, right after, the measured run on the shaped link (`lockstep run
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
delay=${DELAY_US:-}
bucket=${BUCKET_MB:-}
L=$build/apps/lockstep
B=$build/bench/comm/bench_collectives
D=$build/bench/plan/delay_line
tag=lsv$$
port=29700
mkdir -p "$out"
. "$(dirname "$0")/netns_lib.sh"
hosts=()
for i in $(seq 0 $((W - 1))); do hosts+=($tag-h$i); done
trap 'router_delete $tag-sw "${hosts[@]}"' EXIT
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, tc)"; exit 77; }
if [ -n "$delay" ]; then
  # Jumbo frames (9000 bytes, as data-centre Ethernet): the line moves every packet through
  # user space, and at 1 Gbit/s with 1500-byte frames (~90k packets/s with the ACKs) on this
  # loaded 2-core VM it fell behind (packets late by 0.38 ms median, 0.33 s worst).
  router_setup $tag-sw 10.216.0 9000 "${hosts[@]}" || exit 77
  start_delay $tag-sw "$D" 0 "$out/delay_line.log" || exit 1
else
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
fi
printf '{"delay_us": %s}\n' "${delay:-0}" >"$out/setting.json"
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
echo "# $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $W hosts, rates: $rates;" \
  "delay: ${delay:-none (bridge)} us each way; bucket caps: ${bucket:-default} MiB"
rtt() {  # prints the 1-byte TCP round trip host 1 -> host 0, through the delay line at 0 and D
  if [ -z "$delay" ]; then
    echo "# $1: tcp 1-byte round trip over the bridge: $(tcp_rtt $tag-h0 10.216.0.1 $tag-h1 29699 200)"
    return
  fi
  start_delay $tag-sw "$D" 0 "$out/delay_line.log"  # not in $(...): DELAY_PID stays ours
  local zero=$(tcp_rtt $tag-h0 10.216.0.1 $tag-h1 29698 200)
  start_delay $tag-sw "$D" "$delay" "$out/delay_line.log"
  echo "# $1: tcp 1-byte round trip through the delay line at 0: $zero; at $delay us each way:" \
    "$(tcp_rtt $tag-h0 10.216.0.1 $tag-h1 29699 200)"
}
for rate in $rates; do
  shape "$rate"
  rtt "$rate"
  # Up to 8 MiB at Gbit/s rates: a ring step of a 1 MiB all-reduce at 4 hosts sends 256 KiB,
  # less than the 512 KiB token bucket, so smaller sizes measure the burst, not the rate
  # (4 hosts up to 1 MiB fitted 1.17 Gbit/s on a 1 Gbit/s link).
  max=1M
  case $rate in *gbit) max=8M ;; esac
  LOCKSTEP_ALGO=ring job "$out/bench-$rate.txt" "$B" --transport tcp --op allreduce --min-bytes 4K \
    --max-bytes $max --iters 3 --reps 3 --warmup 1 || { cat "$out/bench-$rate.txt".*; exit 1; }
  "$L" plan calibrate --bench "$out/bench-$rate.txt.0" --world $W --transport "tcp-$rate" \
    --out "$out/link-$rate.json" | sed "s/^/# /"
done
for rep in $(seq 1 "$reps"); do
  for m in $models; do
    for cap in ${bucket:-default}; do  # several caps: alternating, each with its own profile
      c=-c$cap flag="--bucket-cap-mb $cap"
      [ $cap = default ] && c= flag=
      "$L" train --config "$cfg" $(args $m) $flag --nproc $W --run-dir "$out/run-prof" --overwrite \
        --profile "$out/prof-$m$c-$rep.json" >"$out/prof-$m$c-$rep.log" 2>&1 || { cat "$out/prof-$m$c-$rep.log"; exit 1; }
      for rate in $rates; do
        shape "$rate"
        job "$out/meas-$m-$rate$c-$rep.log" "$L" train --config "$cfg" $(args $m) $flag --run-dir "$out/run-meas" \
          --overwrite --profile "$out/meas-$m-$rate$c-$rep.json" || { cat "$out/meas-$m-$rate$c-$rep.log".*; exit 1; }
      done
    done
  done
done
echo "# done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$(dirname "$0")/tabulate.py" "$out" "$L" $W | tee "$out/validation.tsv"
