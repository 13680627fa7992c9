#!/bin/bash
# bench/comm/netns_tcp.sh [BUILD_DIR] [MAX_BYTES]: the tcp transport between two "hosts" made
# of network namespaces joined by a veth pair (root; private addresses that exist only in
# them), one rank in each under `lockstep run --nnodes 2`. Prints the all-reduce table with
# the raw TCP throughput between the two namespaces measured in the same run (last column):
# the target is busbw >= 0.8 x raw TCP for sizes >= 16 MiB. Cleans up its namespaces.
set -eu
build=${1:-build/release}
max=${2:-256M}
tag=lsb$$
trap 'ip netns delete $tag-a 2>/dev/null; ip netns delete $tag-b 2>/dev/null' EXIT
ip netns add $tag-a
ip netns add $tag-b
ip -n $tag-a link add eth0 type veth peer name eth0 netns $tag-b
for ns in a b; do ip -n $tag-$ns link set lo up; ip -n $tag-$ns link set eth0 up; done
ip -n $tag-a addr add 10.214.0.1/24 dev eth0
ip -n $tag-b addr add 10.214.0.2/24 dev eth0
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
run() {  # node namespace
  LOCKSTEP_STORE_TOKEN=$token LOCKSTEP_HOST_ID=host$1 ip netns exec $tag-$2 \
    "$build/apps/lockstep" run --no-prefix --nproc-per-node 1 --nnodes 2 --node-rank $1 \
    --master-addr 10.214.0.1 --master-port 29612 -- \
    "$build/bench/comm/bench_collectives" --transport tcp --op allreduce --min-bytes 1M \
    --max-bytes "$max" --iters 10
}
echo "# tcp between two network namespaces (veth), 1 rank each; $(date -u +%F), $(nproc) cores"
run 1 b > /dev/null &
run 0 a
wait
