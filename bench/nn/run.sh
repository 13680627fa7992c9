#!/usr/bin/env bash
# Runs the lockstep training benchmark and its PyTorch peer in the same run, on the same
# machine, data, model, batch and thread count, and prints the throughput ratios.
#
#   bench/nn/run.sh [BUILD_DIR]      (default: build; build target nn_train_bench first)
#   STEPS=200 BATCH=64 bench/nn/run.sh build/release
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bin="$build/bench/nn/nn_train_bench"
if [[ ! -x "$bin" ]]; then
  echo "run.sh: $bin not found; build it with: cmake --build $build --target nn_train_bench" >&2
  exit 1
fi
steps="${STEPS:-200}"
batch="${BATCH:-64}"
echo "# command: STEPS=$steps BATCH=$batch bench/nn/run.sh $build"
echo "# machine: $(nproc --all) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)," \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
# Wall-clock figures follow the machine's load; the cpu figures (process CPU time, one
# compute thread on both sides) are the fairer comparison on a shared machine.
export LOCKSTEP_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
declare -A ours theirs ours_cpu theirs_cpu
for model in fmnist-mlp fmnist-cnn; do
  out_l=$("$bin" --model "$model" --batch "$batch" --steps "$steps")
  out_t=$(/usr/bin/python3 bench/nn/torch_peer.py --model "$model" --batch "$batch" --steps "$steps" 2>/dev/null)
  echo "$out_l"
  echo "$out_t"
  ours[$model]=$(sed -n 's/.*steps=[0-9]*: \([0-9.]*\) samples\/s.*/\1/p' <<<"$out_l" | head -1)
  theirs[$model]=$(sed -n 's/.*steps=[0-9]*: \([0-9.]*\) samples\/s.*/\1/p' <<<"$out_t" | head -1)
  ours_cpu[$model]=$(sed -n 's/.*cpu: \([0-9.]*\) samples\/s.*/\1/p' <<<"$out_l" | head -1)
  theirs_cpu[$model]=$(sed -n 's/.*cpu: \([0-9.]*\) samples\/s.*/\1/p' <<<"$out_t" | head -1)
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
printf "%-12s %12s %12s %7s   %12s %12s %7s\n" "samples/s" lockstep torch ratio "lockstep cpu" "torch cpu" ratio
for model in fmnist-mlp fmnist-cnn; do
  printf "%-12s %12.1f %12.1f %7s   %12.1f %12.1f %7s\n" "$model" "${ours[$model]}" "${theirs[$model]}" \
    "$(ratio "${ours[$model]}" "${theirs[$model]}")" "${ours_cpu[$model]}" "${theirs_cpu[$model]}" \
    "$(ratio "${ours_cpu[$model]}" "${theirs_cpu[$model]}")"
done
