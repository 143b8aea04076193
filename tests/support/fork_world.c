/* Worlds of forked ranks (fork_world.h). */
#define _POSIX_C_SOURCE 200809L
#include "fork_world.h"

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "filo/filo.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void run_rank(int rank, int world, int port, filo_test_rank_fn fn, void *arg, int out)
{
    filo_error_clear();
    double t0 = now_s();
    filo_status st = fn(rank, world, port, arg);
    filo_test_rank_result r = {.status = (int)st, .seconds = now_s() - t0};
    snprintf(r.msg, sizeof r.msg, "%s", st != FILO_OK ? filo_last_error() : "");
    ssize_t n = write(out, &r, sizeof r);
    _exit(n == (ssize_t)sizeof r ? 0 : 1);
}

static void world_run_once(int world, int port, const int *start, double limit_s, filo_test_rank_fn fn, void *arg,
                           filo_test_rank_result *res)
{
    pid_t pid[FILO_TEST_MAX_WORLD];
    int fds[FILO_TEST_MAX_WORLD][2];
    for (int r = 0; r < world; r++) {
        pid[r] = -1;
        res[r] = (filo_test_rank_result){.status = -1, .msg = "not started"};
        if (start && !start[r])
            continue;
        cr_assert_eq(pipe(fds[r]), 0);
        pid[r] = fork();
        cr_assert_geq(pid[r], 0);
        if (pid[r] == 0) {
            close(fds[r][0]);
            run_rank(r, world, port, fn, arg, fds[r][1]);
        }
        close(fds[r][1]);
    }
    double until = now_s() + limit_s;
    for (int r = 0; r < world; r++) {
        if (pid[r] < 0)
            continue;
        int wstatus = 0;
        while (waitpid(pid[r], &wstatus, WNOHANG) == 0) {
            if (now_s() > until) {
                kill(pid[r], SIGKILL);
                waitpid(pid[r], &wstatus, 0);
                break;
            }
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        filo_test_rank_result got;
        if (read(fds[r][0], &got, sizeof got) == (ssize_t)sizeof got)
            res[r] = got;
        else
            snprintf(res[r].msg, sizeof res[r].msg, "rank %d died or hung (wait status %d)", r, wstatus);
        close(fds[r][0]);
    }
}

void filo_test_world_run(int world, const int *start, double limit_s, filo_test_rank_fn fn, void *arg,
                         filo_test_rank_result *res)
{
    cr_assert(world >= 1 && world <= FILO_TEST_MAX_WORLD, "world of %d ranks", world);
    for (int attempt = 0; attempt < 5; attempt++) {
        world_run_once(world, free_port(), start, limit_s, fn, arg, res);
        if (!(res[0].status != FILO_OK && strstr(res[0].msg, "in use")))
            return;
    }
}
