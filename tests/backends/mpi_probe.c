/* mpi_probe: the smallest MPI job lockstep's mpi tests rely on (start with MPI_THREAD_MULTIPLE,
 * one all-reduce, finish), with no lockstep code in it. run_under_mpirun runs it first, so
 * that an environment where mpirun cannot start jobs at all is told apart from a bug. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char** argv) {
  int provided = 0, rank = 0, size = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) return 2;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long mine = rank + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  int ok = provided >= MPI_THREAD_MULTIPLE && sum == (long)size * (size + 1) / 2;
  if (!ok) fprintf(stderr, "mpi_probe rank %d: thread level %d, sum %ld\n", rank, provided, sum);
  MPI_Finalize();
  return ok ? 0 : 3;
}
