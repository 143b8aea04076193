/* filo_dist_env_detect: how this process was launched, read from the environment that mpirun or
 * a torchrun-style launcher leaves. Values are parsed strictly (digits only, in range), because a
 * typo here otherwise surfaces as a hang at the rendezvous. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"
#include "error.h"

#define ENV_FAIL(...) filo_error_set(FILO_ERR_INVALID_ARG, "filo_dist_env_detect", __VA_ARGS__)

/* *out = the variable's value as a non-negative int; *present = whether it is set. */
static filo_status env_int(const char *name, int *present, int *out)
{
    const char *v = getenv(name);
    *present = v != NULL;
    if (!v)
        return FILO_OK;
    long long x = 0;
    const char *p = v;
    if (!*p)
        return ENV_FAIL("%s is set but empty (expected a non-negative integer)", name);
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return ENV_FAIL("%s='%s' is not a non-negative integer", name, v);
        if (x <= INT_MAX)
            x = x * 10 + (*p - '0');
    }
    if (x > INT_MAX)
        return ENV_FAIL("%s='%s' is out of range", name, v);
    *out = (int)x;
    return FILO_OK;
}

static filo_status env_require_int(const char *name, const char *launcher, int *out)
{
    int present;
    FILO_TRY(env_int(name, &present, out));
    if (!present)
        return ENV_FAIL("%s is not set (a %s launch needs it)", name, launcher);
    return FILO_OK;
}

/* rank < world, local_rank < local_world <= world; each message names the variable at fault. */
static filo_status check_ranks(const filo_dist_env *e, const char *rank_name, const char *world_name,
                               const char *local_rank_name, const char *local_world_name)
{
    if (e->world_size < 1)
        return ENV_FAIL("%s=%d: the world needs at least one rank", world_name, e->world_size);
    if (e->rank >= e->world_size)
        return ENV_FAIL("%s=%d is not below %s=%d", rank_name, e->rank, world_name,
                         e->world_size);
    if (e->local_world_size < 1 || e->local_world_size > e->world_size)
        return ENV_FAIL("%s=%d must be between 1 and %s=%d", local_world_name,
                         e->local_world_size, world_name, e->world_size);
    if (e->local_rank >= e->local_world_size)
        return ENV_FAIL("%s=%d is not below %s=%d", local_rank_name, e->local_rank,
                         local_world_name, e->local_world_size);
    return FILO_OK;
}

/* Local rank and size when given; a launcher that leaves them out runs every rank on one host. */
static filo_status local_ranks(const char *rank_name, const char *size_name, filo_dist_env *e)
{
    int have_rank, have_size;
    e->local_rank = e->rank;
    e->local_world_size = e->world_size;
    FILO_TRY(env_int(rank_name, &have_rank, &e->local_rank));
    FILO_TRY(env_int(size_name, &have_size, &e->local_world_size));
    if (have_rank != have_size)
        return ENV_FAIL("%s is set without %s", have_rank ? rank_name : size_name,
                         have_rank ? size_name : rank_name);
    return FILO_OK;
}

static filo_status detect_mpi(filo_dist_env *e)
{
    e->launcher = FILO_LAUNCH_MPI;
    FILO_TRY(env_require_int("OMPI_COMM_WORLD_RANK", "mpirun", &e->rank));
    FILO_TRY(env_require_int("OMPI_COMM_WORLD_SIZE", "mpirun", &e->world_size));
    FILO_TRY(local_ranks("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", e));
    return check_ranks(e, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                       "OMPI_COMM_WORLD_LOCAL_SIZE");
}

static filo_status detect_env(filo_dist_env *e)
{
    const char *launcher = "RANK/WORLD_SIZE";
    e->launcher = FILO_LAUNCH_ENV;
    FILO_TRY(env_require_int("RANK", launcher, &e->rank));
    FILO_TRY(env_require_int("WORLD_SIZE", launcher, &e->world_size));
    FILO_TRY(local_ranks("LOCAL_RANK", "LOCAL_WORLD_SIZE", e));
    FILO_TRY(check_ranks(e, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"));
    const char *addr = getenv("MASTER_ADDR");
    if (!addr || !*addr)
        return ENV_FAIL("MASTER_ADDR is %s (a %s launch needs rank 0's address)",
                         addr ? "empty" : "not set", launcher);
    if (strlen(addr) >= sizeof e->master_addr)
        return ENV_FAIL("MASTER_ADDR is longer than %zu characters",
                         sizeof e->master_addr - 1);
    snprintf(e->master_addr, sizeof e->master_addr, "%s", addr);
    FILO_TRY(env_require_int("MASTER_PORT", launcher, &e->master_port));
    if (e->master_port < 1 || e->master_port > 65535)
        return ENV_FAIL("MASTER_PORT=%d is not a TCP port (1-65535)", e->master_port);
    return FILO_OK;
}

filo_status filo_dist_env_detect(filo_dist_env *out)
{
    if (!out)
        return ENV_FAIL("out must not be NULL");
    filo_dist_env e;
    memset(&e, 0, sizeof e);
    e.launcher = FILO_LAUNCH_SINGLE;
    e.world_size = 1;
    e.local_world_size = 1;
    filo_status s = FILO_OK;
    if (getenv("OMPI_COMM_WORLD_RANK") || getenv("OMPI_COMM_WORLD_SIZE"))
        s = detect_mpi(&e);
    else if (getenv("RANK") || getenv("WORLD_SIZE"))
        s = detect_env(&e);
    if (s != FILO_OK)
        return s;
    *out = e;
    return FILO_OK;
}
