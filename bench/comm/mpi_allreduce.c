/* Open MPI's MPI_Allreduce (float32, sum, in place) timed like bench_collectives: per size,
 * warm-up (>= 20 ms), then the best of `reps` batches of >= 10 ms (slowest rank per batch). Prints "size time_us".
 *   mpicc -O2 mpi_allreduce.c -o mpi_allreduce
 *   mpirun --allow-run-as-root --oversubscribe -n 2 ./mpi_allreduce 8 268435456 4 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, world;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  size_t min_b = argc > 1 ? strtoull(argv[1], 0, 10) : 8;
  size_t max_b = argc > 2 ? strtoull(argv[2], 0, 10) : (256u << 20);
  size_t factor = argc > 3 ? strtoull(argv[3], 0, 10) : 2;
  int reps = 5, warmup = 3, iters_cap = 20 * 50;
  float* buf = NULL;
  if (posix_memalign((void**)&buf, 64, max_b + 64) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
  memset(buf, 0, max_b + 64); /* pre-fault our own buffer, as bench_collectives does */
  for (size_t b = min_b; b <= max_b; b *= factor) {
    int count = (int)(b / sizeof(float));
    size_t it = (1ull << 30) / (b ? b : 1) / 8 / reps;
    int iters = it < 2 ? 2 : (it > (size_t)iters_cap ? iters_cap : (int)it);
    for (int i = 0; i < count; ++i) buf[i] = (float)((rank + i) % 4);
    /* warm-up: >= warmup iterations and >= 20 ms in doubling batches (slowest rank decides);
     * then every batch lasts >= 10 ms — the same rule as bench_collectives */
    int warm = 0;
    double warm_us = 0;
    while (warm < warmup || warm_us < 20e3) {
      int n = warm > warmup ? warm : warmup;
      double t0 = MPI_Wtime(), t, tmax;
      for (int i = 0; i < n; ++i) MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      t = (MPI_Wtime() - t0) * 1e6;
      MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      warm_us += tmax;
      warm += n;
    }
    double by_time = 10e3 / (warm_us / warm) + 1;
    if (by_time > 1e6) by_time = 1e6;
    if (by_time > iters) iters = (int)by_time;
    double best = 1e300;
    for (int r = 0; r < reps; ++r) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      for (int i = 0; i < iters; ++i)
        MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double t = (MPI_Wtime() - t0) / iters * 1e6, tmax;
      MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (tmax < best) best = tmax;
    }
    if (rank == 0) {
      printf("%zu %.3f\n", b, best);
      fflush(stdout);
    }
  }
  free(buf);
  MPI_Finalize();
  return 0;
}
