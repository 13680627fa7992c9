#!/bin/sh
# Runs, in one go on this machine, lockstep's all-reduce (bench_collectives, shm and tcp),
# torch.distributed gloo and Open MPI's MPI_Allreduce over the same sizes (float32, sum), and
# prints one table with the ratios. lockstep's ranks are bound to CPUs as `lockstep run` binds
# workers (bench_collectives --cpu-bind auto), Open MPI's as mpirun binds them (to cores for
# up to 2 ranks); gloo's stay unbound, as under torchrun. Usage:
#   bench/comm/peers.sh [BUILD_DIR] [NPROC] [MIN_BYTES] [MAX_BYTES] [FACTOR] [BENCH FLAGS...]
#   bench/comm/peers.sh build/h-comm 2 8 268435456 4
#   bench/comm/peers.sh build/release 2 1048576 268435456 2 --shared-buffers
# Flags after FACTOR go to both bench_collectives runs (e.g. --shared-buffers: lockstep's
# buffers from ProcessGroup::alloc_shared, as nccl-tests' -R registers them).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build/h-comm}
NPROC=${2:-2}
MIN=${3:-8}
MAX=${4:-268435456}
FACTOR=${5:-4}
ARGS="$*"
[ $# -gt 5 ] && shift 5 || set --
TMP=$(mktemp -d /tmp/lockstep-peers-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
BENCH="$BUILD/bench/comm/bench_collectives"
[ -x "$BENCH" ] || { echo "peers.sh: $BENCH not built (cmake --build $BUILD --target bench_collectives)"; exit 2; }

echo "# peers.sh $ARGS  ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg))"
"$BENCH" --transport shm --op allreduce --nproc "$NPROC" --min-bytes "$MIN" --max-bytes "$MAX" \
  --step-factor "$FACTOR" "$@" > "$TMP/shm.txt"
"$BENCH" --transport tcp --op allreduce --nproc "$NPROC" --min-bytes "$MIN" --max-bytes "$MAX" \
  --step-factor "$FACTOR" "$@" > "$TMP/tcp.txt"
if /usr/bin/python3 -c "import torch.distributed" 2>/dev/null; then
  /usr/bin/python3 "$HERE/torch_allreduce.py" --nproc "$NPROC" --min-bytes "$MIN" --max-bytes "$MAX" \
    --factor "$FACTOR" > "$TMP/gloo.txt" 2> "$TMP/gloo.err" || echo "# torch gloo failed: $(tail -1 "$TMP/gloo.err")"
fi
if command -v mpicc > /dev/null && command -v mpirun > /dev/null; then
  mpicc -O2 "$HERE/mpi_allreduce.c" -o "$TMP/mpi_allreduce"
  mpirun --allow-run-as-root --oversubscribe -n "$NPROC" "$TMP/mpi_allreduce" "$MIN" "$MAX" "$FACTOR" \
    > "$TMP/mpi.txt" 2> "$TMP/mpi.err" || echo "# mpi failed: $(tail -1 "$TMP/mpi.err")"
fi
grep '^#' "$TMP/shm.txt"
/usr/bin/python3 - "$TMP" "$NPROC" <<'PY'
import os, sys
tmp, n = sys.argv[1], int(sys.argv[2])
def ours(name):
    rows = {}
    for line in open(os.path.join(tmp, name)):
        f = line.split()
        # size count type redop root, out-of-place (N/A for all-reduce) and in-place time algbw
        # busbw #wrong, memcpy, [rawtcp on tcp], xcore
        if f and f[0].isdigit(): rows[int(f[0])] = (float(f[9]), int(f[12]), float(f[13]),
                                float(f[14]) if len(f) > 15 else 0.0, float(f[-1]))
    return rows
def peer(name):
    p = os.path.join(tmp, name)
    if not os.path.exists(p): return {}
    return {int(a): float(b) for a, b in (l.split() for l in open(p) if l.strip())}
shm, tcp, gloo, mpi = ours("shm.txt"), ours("tcp.txt"), peer("gloo.txt"), peer("mpi.txt")
bus = 2 * (n - 1) / n
print(f"{'size(B)':>10} {'shm us':>9} {'algbw':>7} {'busbw':>7} {'#wr':>4} {'bound':>7} "
      f"{'xcore':>7} {'tcp us':>9} {'tcp busbw':>9} {'rawtcp':>7} {'gloo us':>9} {'mpi us':>9} {'shm/bound':>9} {'shm/xcore':>9} {'x gloo':>7} {'x mpi':>7} {'tcp x gloo':>10}")
for s in sorted(shm):
    us, wrong, mc, _, xc = shm[s]
    alg = s / us / 1e3
    bound = mc / n  # every byte read once and written once by P ranks sharing the bus
    t, _, _, raw, _ = tcp.get(s, (float('nan'), 0, 0, 0.0, 0.0))
    g, m = gloo.get(s, float('nan')), mpi.get(s, float('nan'))
    print(f"{s:>10} {us:>9.2f} {alg:>7.3f} {alg*bus:>7.3f} {wrong:>4} {bound:>7.3f} {xc:>7.3f} {t:>9.2f} {s/t/1e3*bus:>9.3f} {raw:>7.3f} "
          f"{g:>9.2f} {m:>9.2f} {alg/bound if bound else 0:>9.2f} {alg/xc if xc else 0:>9.2f} {g/us:>7.2f} {m/us:>7.2f} {g/t:>10.2f}")
print("# algbw/busbw/rawtcp in GB/s; rawtcp = one TCP stream rank 0 -> 1 of that size; bound = memcpy(GB/s)/P; xcore = rank 0 reading what rank 1 just wrote (GB/s); 'x gloo' = gloo time / lockstep shm time (higher is better)")
PY
