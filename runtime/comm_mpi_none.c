/* The MPI transport of a build without MPI: an mpirun launch is refused with what to install.
 * (CMake builds this file instead of comm_mpi.c when it finds no MPI, or with -DFILO_MPI=OFF.) */
#include "comm_internal.h"
#include "error.h"

filo_status comm_mpi_open(const filo_dist_env *env, comm_host **out)
{
    (void)env;
    *out = NULL;
    return FILO_FAIL(FILO_ERR_UNSUPPORTED, "this filo was built without MPI: install libopenmpi-dev openmpi-bin "
                                           "(scripts/install-deps) and rebuild");
}

int comm_mpi_available(void) { return 0; }
