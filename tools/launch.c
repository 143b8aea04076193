/* --nproc-per-node: N local ranks started and watched over like torchrun's (see launch.h).
 *
 * Everything a child needs (its arguments and environment) is built before fork: the parent may
 * already run threads (a CUDA context, the CPU pool), and between fork and exec a child may only
 * make async-signal-safe calls. The children share the parent's process group, so a Ctrl-C at
 * the terminal reaches them too; a SIGINT or SIGTERM sent to the parent alone is forwarded. */
#define _POSIX_C_SOURCE 200809L
#include "launch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <filo/dist.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"

extern char **environ;

#define MAX_NPROC 1024
/* After one rank failed, how long the others get to end on their own (their collectives fail as
 * soon as the dead rank's connection closes; a rank inside a long step notices at its end). */
#define GRACE_S 10.0
/* After SIGTERM, how long before SIGKILL. */
#define KILL_AFTER_S 5.0

static volatile sig_atomic_t pending_signal;

static void on_signal(int sig)
{
    pending_signal = sig;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int launch_take_nproc(const char *cmd, int *argc, char **argv)
{
    int n = 0, k = 0;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--nproc-per-node") != 0) {
            argv[k++] = argv[i];
            continue;
        }
        long v = 0;
        if (cli_parse_long(cmd, argv[i], i + 1 < *argc ? argv[i + 1] : NULL, 1, MAX_NPROC, &v))
            return -1;
        n = (int)v;
        i++;
    }
    *argc = k;
    return n;
}

/* A port no one listens on now: bind port 0 on the loopback and read which one the kernel gave.
 * Another program could take it before rank 0 listens; torchrun's standalone mode takes the same
 * small risk. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static const char *const rank_vars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                        "MASTER_PORT", "FILO_NUM_THREADS", "OMP_NUM_THREADS"};
#define N_RANK_VARS ((int)(sizeof rank_vars / sizeof rank_vars[0]))

static int is_rank_var(const char *entry)
{
    for (int i = 0; i < N_RANK_VARS; i++) {
        size_t n = strlen(rank_vars[i]);
        if (strncmp(entry, rank_vars[i], n) == 0 && entry[n] == '=')
            return 1;
    }
    return 0;
}

/* The parent's environment without the variables above, then this rank's. CPU threads: the
 * cores shared out between the ranks, unless the user set a count (as torchrun does with
 * OMP_NUM_THREADS), so N ranks on a CPU do not each start a thread per core. */
static char **rank_environment(int rank, int nproc, int port)
{
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + N_RANK_VARS + 1, sizeof *env);
    if (!env)
        return NULL;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!is_rank_var(environ[i]))
            env[k++] = environ[i];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long threads = cores > nproc ? cores / nproc : 1;
    const char *filo_threads = getenv("FILO_NUM_THREADS"), *omp_threads = getenv("OMP_NUM_THREADS");
    char buf[N_RANK_VARS][64];
    snprintf(buf[0], sizeof buf[0], "RANK=%d", rank);
    snprintf(buf[1], sizeof buf[1], "WORLD_SIZE=%d", nproc);
    snprintf(buf[2], sizeof buf[2], "LOCAL_RANK=%d", rank);
    snprintf(buf[3], sizeof buf[3], "LOCAL_WORLD_SIZE=%d", nproc);
    snprintf(buf[4], sizeof buf[4], "MASTER_ADDR=127.0.0.1");
    snprintf(buf[5], sizeof buf[5], "MASTER_PORT=%d", port);
    snprintf(buf[6], sizeof buf[6], "FILO_NUM_THREADS=%.40s", filo_threads ? filo_threads : "");
    snprintf(buf[7], sizeof buf[7], "OMP_NUM_THREADS=%.40s", omp_threads ? omp_threads : "");
    if (!filo_threads)
        snprintf(buf[6], sizeof buf[6], "FILO_NUM_THREADS=%ld", threads);
    if (!omp_threads)
        snprintf(buf[7], sizeof buf[7], "OMP_NUM_THREADS=%ld", threads);
    const int kept = k;
    for (int i = 0; i < N_RANK_VARS; i++)
        if (!(env[k++] = strdup(buf[i]))) {
            for (int j = kept; j < k; j++)
                free(env[j]);
            free(env);
            return NULL;
        }
    env[k] = NULL;
    return env;
}

static void free_environment(char **env)
{
    if (!env)
        return;
    int k = 0;
    while (env[k])
        k++;
    for (int i = k - N_RANK_VARS; i < k; i++)
        free(env[i]);
    free(env);
}

/* The child: dies with the launcher (PR_SET_PDEATHSIG, so a launcher killed by SIGKILL leaves no
 * rank behind), then becomes `filo CMD ARGS` with its rank's environment. */
static void exec_rank(const char *exe, char **argv, char **env, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1);
    execve(exe, argv, env);
    static const char msg[] = "filo: cannot start a rank: execve of this program failed\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
}

static void signal_all(const pid_t *pids, int n, int sig)
{
    for (int r = 0; r < n; r++)
        if (pids[r] > 0)
            kill(pids[r], sig);
}

/* Prints how a failed rank ended; returns 1 when it failed. */
static int report(int rank, int status, int terminated)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        fprintf(stderr, "filo: rank %d exited with status %d\n", rank, WEXITSTATUS(status));
    else if (WIFSIGNALED(status) && !terminated)
        fprintf(stderr, "filo: rank %d was killed by signal %d (%s)\n", rank, WTERMSIG(status),
                strsignal(WTERMSIG(status)));
    return 1;
}

static int supervise(pid_t *pids, int nproc)
{
    int alive = nproc, failed = 0, terminated = 0, interrupted = 0;
    double fail_at = 0, term_at = 0;
    while (alive > 0) {
        if (pending_signal) {
            interrupted = pending_signal;
            pending_signal = 0;
            signal_all(pids, nproc, interrupted);
        }
        int status = 0;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int r = 0; r < nproc; r++) {
                if (pids[r] != p)
                    continue;
                pids[r] = 0;
                alive--;
                if (report(r, status, terminated || interrupted) && !failed) {
                    failed = 1;
                    fail_at = now_s();
                }
            }
            continue;
        }
        if (p < 0 && errno != EINTR)
            break;
        double t = now_s();
        if (failed && !terminated && t - fail_at > GRACE_S) {
            fprintf(stderr, "filo: %d rank%s still running %.0f s after the failure: terminating\n", alive,
                    alive == 1 ? "" : "s", GRACE_S);
            signal_all(pids, nproc, SIGTERM);
            terminated = 1;
            term_at = t;
        } else if (terminated && t - term_at > KILL_AFTER_S) {
            signal_all(pids, nproc, SIGKILL);
            term_at = t;
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    if (interrupted)
        return 128 + interrupted;
    return failed ? 1 : 0;
}

int launch_local(int nproc, const char *cmd, int argc, char **argv)
{
    filo_dist_env env;
    if (filo_dist_env_detect(&env) != FILO_OK || env.launcher != FILO_LAUNCH_SINGLE) {
        fprintf(stderr,
                "filo %s: --nproc-per-node inside a distributed launch (mpirun's, or RANK/WORLD_SIZE set): "
                "use one or the other\n",
                cmd);
        return 2;
    }
    int port = free_port();
    if (port <= 0) {
        fprintf(stderr, "filo %s: --nproc-per-node: no free port on 127.0.0.1: %s\n", cmd, strerror(errno));
        return 1;
    }
    /* The program's own path rather than /proc/self/exe, so that ps shows the ranks as filo. */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0)
        exe[n] = '\0';
    else
        snprintf(exe, sizeof exe, "/proc/self/exe");
    char **child_argv = calloc((size_t)argc + 3, sizeof *child_argv);
    char **envs[MAX_NPROC] = {0};
    pid_t pids[MAX_NPROC] = {0};
    int rc = child_argv ? 0 : 1;
    for (int r = 0; r < nproc && !rc; r++)
        rc = !(envs[r] = rank_environment(r, nproc, port));
    if (rc) {
        fprintf(stderr, "filo %s: out of host memory starting %d ranks\n", cmd, nproc);
    } else {
        child_argv[0] = "filo";
        child_argv[1] = (char *)cmd;
        for (int i = 0; i < argc; i++)
            child_argv[2 + i] = argv[i];
        child_argv[argc + 2] = NULL;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        struct sigaction old_int, old_term;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        fflush(NULL);
        pid_t self = getpid();
        int started = 0;
        for (int r = 0; r < nproc; r++) {
            pid_t p = fork();
            if (p == 0)
                exec_rank(exe, child_argv, envs[r], self);
            if (p < 0) {
                fprintf(stderr, "filo %s: cannot start rank %d: %s\n", cmd, r, strerror(errno));
                signal_all(pids, r, SIGTERM);
                rc = 1;
                break;
            }
            pids[r] = p;
            started++;
        }
        int sup = supervise(pids, started);
        rc = rc ? rc : sup;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    for (int r = 0; r < nproc; r++)
        free_environment(envs[r]);
    free(child_argv);
    return rc;
}
