#!/usr/bin/env bash
# Runs the lockstep training benchmark and its PyTorch peer in the same run, on the same
# machine, data, model, batch and thread count, and prints the throughput ratios.
#
#   bench/nn/run.sh [BUILD_DIR]      (default: build; build target nn_train_bench first)
#   STEPS=200 REPS=3 BATCH=64 bench/nn/run.sh build/release
#
# Each side runs REPS times, alternating, so that a burst of load on a shared machine hits
# both; the summary gives the best and the median run of each. Wall-clock figures follow
# the machine's load; the cpu figures (process CPU time, one compute thread on both sides)
# are steadier on a shared machine. The per-layer tables come from the first repetition.
#
# The peer runs twice per repetition: stock ("torch"), and "torch-tm" with glibc malloc
# told never to return memory to the kernel. Stock PyTorch allocates its activations anew
# every step; large blocks go through mmap/munmap, and the page faults that follow cost it
# 2-4x on some VMs (here: a PVM guest). lockstep allocates nothing per step, so "torch"
# is the out-of-the-box comparison and "torch-tm" the compute-only one.
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bin="$build/bench/nn/nn_train_bench"
if [[ ! -x "$bin" ]]; then
  echo "run.sh: $bin not found; build it with: cmake --build $build --target nn_train_bench" >&2
  exit 1
fi
steps="${STEPS:-200}"
reps="${REPS:-3}"
batch="${BATCH:-64}"
echo "# command: STEPS=$steps REPS=$reps BATCH=$batch bench/nn/run.sh $build"
echo "# machine: $(nproc --all) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)," \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
export LOCKSTEP_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for model in fmnist-mlp fmnist-cnn; do
  for ((r = 1; r <= reps; ++r)); do
    prof=0
    [[ $r == 1 ]] && prof=30
    out_l=$("$bin" --model "$model" --batch "$batch" --steps "$steps" --profile-steps "$prof")
    out_t=$(/usr/bin/python3 bench/nn/torch_peer.py --model "$model" --batch "$batch" --steps "$steps" \
            --profile-steps "$prof" 2>/dev/null)
    out_m=$(MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456 \
            /usr/bin/python3 bench/nn/torch_peer.py --model "$model" --batch "$batch" --steps "$steps" \
            --profile-steps 0 2>/dev/null | sed 's/^torch /torch-tm /')
    echo "$out_l"
    echo "$out_t"
    echo "$out_m"
    for out in "$out_l" "$out_t" "$out_m"; do
      sed -n 's/^\([a-z-]*\) \([a-z-]*\) .*steps=[0-9]*: \([0-9.]*\) samples\/s.*cpu: \([0-9.]*\) samples\/s.*/\1 \2 \3 \4/p' \
        <<<"$out" >>"$results"
    done
  done
done
echo
# best and median (of REPS) for wall and cpu throughput, then ratios lockstep / torch.
awk '
  { key = $1 " " $2; n[key]++; wall[key, n[key]] = $3; cpu[key, n[key]] = $4; models[$2] = 1 }
  function stat(arr, key, k, want,   i, j, t, v, c) {
    c = n[key]; for (i = 1; i <= c; i++) v[i] = arr[key, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] > v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return want == "best" ? v[1] : v[int((c + 1) / 2)]
  }
  END {
    printf "%-11s %-6s %11s %11s %7s   %11s %11s %7s\n", "samples/s", "", "lockstep", "torch", "ratio", "lockstep", "torch", "ratio"
    printf "%-11s %-6s %11s %11s %7s   %11s %11s %7s\n", "", "", "wall", "wall", "", "cpu", "cpu", ""
    split("fmnist-mlp fmnist-cnn", order, " ")
    split("torch torch-tm", peers, " ")
    for (p = 1; p <= 2; p++) for (m = 1; m <= 2; m++) for (s = 1; s <= 2; s++) {
      model = order[m]; w = s == 1 ? "best" : "median"; peer = peers[p]
      lw = stat(wall, "lockstep " model, 0, w); tw = stat(wall, peer " " model, 0, w)
      lc = stat(cpu, "lockstep " model, 0, w); tc = stat(cpu, peer " " model, 0, w)
      printf "%-11s %-6s %11.1f %11.1f %6.2fx   %11.1f %11.1f %6.2fx  vs %s\n", model, w, lw, tw, lw / tw, lc, tc, lc / tc, peer
    }
  }' "$results"
