/* The autograd engine (filo/autograd.h): accumulation into leaves, hooks fired when a leaf's
 * gradient is final, retain_graph and the released-graph error, grad mode, detach, leaks of
 * variables and nodes, memory after backward, gradient checkpointing, the DOT export, and
 * backward on side streams. Runs on every backend. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filo_test.h"

static filo_var *leaf(filo_device dev, int ndim, const int64_t *shape, const double *values, int requires_grad)
{
    /* f64 on the CPU, f32 where some kernels have no f64 (CUDA) */
    filo_dtype dt = dev.type == FILO_DEVICE_CPU ? FILO_F64 : FILO_F32;
    filo_tensor *t = filo_test_upload(dev, dt, ndim, shape, values);
    filo_var *v;
    FILO_CHECK(filo_var_new(t, requires_grad, &v));
    filo_tensor_free(t);
    return v;
}

static double scalar_of(const filo_tensor *t)
{
    double *v = filo_test_download(t);
    double x = v[0];
    free(v);
    return x;
}

/* y = sum(w * x + w * w): dy/dw = x + 2w, reached through two paths that the engine sums. */
static filo_var *two_paths(filo_var *w, filo_var *x)
{
    filo_var *a, *b, *c, *y;
    FILO_CHECK(filo_ag_mul(w, x, &a));
    FILO_CHECK(filo_ag_mul(w, w, &b));
    FILO_CHECK(filo_ag_add(a, b, &c));
    FILO_CHECK(filo_ag_sum(c, FILO_ALL_DIMS, 0, &y));
    filo_var_free(a);
    filo_var_free(b);
    filo_var_free(c);
    return y;
}

Test(autograd, accumulates_over_paths_and_calls)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        int64_t n = 3;
        double wv[3] = {0.5, -1.0, 2.0}, xv[3] = {3.0, 4.0, -5.0};
        filo_var *w = leaf(devs[d], 1, &n, wv, 1), *x = leaf(devs[d], 1, &n, xv, 0);
        filo_var *y = two_paths(w, x);
        FILO_CHECK(filo_backward(y, NULL, 1));
        double *g = filo_test_download(filo_var_grad(w));
        for (int i = 0; i < 3; i++)
            cr_assert_float_eq(g[i], xv[i] + 2 * wv[i], 1e-6, "%s: dw[%d] = %g", filo_test_backend_name(devs[d]), i,
                               g[i]);
        free(g);
        cr_assert_null(filo_var_grad(x), "a constant gets no gradient");
        /* retain_graph kept the saved tensors: a second backward adds the same again */
        FILO_CHECK(filo_backward(y, NULL, 0));
        g = filo_test_download(filo_var_grad(w));
        for (int i = 0; i < 3; i++)
            cr_assert_float_eq(g[i], 2 * (xv[i] + 2 * wv[i]), 1e-6);
        free(g);
        /* ...and the second one released it */
        FILO_CHECK_FAILS(filo_backward(y, NULL, 0), FILO_ERR_STATE, "retain_graph");
        filo_var_zero_grad(w);
        cr_assert_null(filo_var_grad(w));
        filo_var_free(y);
        filo_var_free(w);
        filo_var_free(x);
    }
}

typedef struct hook_log {
    int calls[2];
    double seen[2];
    int order[2];
    int n;
} hook_log;

static filo_status record_hook(filo_var *v, filo_tensor *grad, void *user)
{
    hook_log *log = user;
    int which = strcmp(filo_var_name(v), "first") == 0 ? 0 : 1;
    log->calls[which]++;
    log->seen[which] = scalar_of(grad);
    log->order[log->n++] = which;
    return FILO_OK;
}

/* first -> exp -> * second -> sum: the hook of `second` (used last in the forward) fires first,
 * and each hook sees the final gradient, once. */
Test(autograd, hooks_fire_once_when_final)
{
    int64_t one = 1;
    double a = 0.3, b = 1.7;
    filo_var *first = leaf(filo_cpu(), 1, &one, &a, 1), *second = leaf(filo_cpu(), 1, &one, &b, 1);
    FILO_CHECK(filo_var_set_name(first, "first"));
    FILO_CHECK(filo_var_set_name(second, "second"));
    hook_log log = {0};
    FILO_CHECK(filo_var_add_hook(first, record_hook, &log));
    FILO_CHECK(filo_var_add_hook(second, record_hook, &log));
    filo_var *e, *p, *q, *y;
    FILO_CHECK(filo_ag_unary(FILO_UNARY_EXP, first, &e));
    FILO_CHECK(filo_ag_mul(e, second, &p));
    FILO_CHECK(filo_ag_mul(p, first, &q)); /* first is used twice: its hook waits for both */
    FILO_CHECK(filo_ag_sum(q, FILO_ALL_DIMS, 0, &y));
    FILO_CHECK(filo_backward(y, NULL, 0));
    cr_assert_eq(log.calls[0], 1);
    cr_assert_eq(log.calls[1], 1);
    cr_assert_eq(log.order[0], 1, "second's gradient is final first");
    /* y = e^a * b * a: dy/da = b e^a (1 + a), dy/db = a e^a */
    cr_assert_float_eq(log.seen[0], b * exp(a) * (1 + a), 1e-12);
    cr_assert_float_eq(log.seen[1], a * exp(a), 1e-12);
    FILO_CHECK_FAILS(filo_var_add_hook(y, record_hook, &log), FILO_ERR_STATE, "leaves");
    filo_var_free(e);
    filo_var_free(p);
    filo_var_free(q);
    filo_var_free(y);
    filo_var_free(first);
    filo_var_free(second);
}

Test(autograd, no_grad_and_detach)
{
    int64_t n = 2;
    double v[2] = {1.0, 2.0};
    filo_var *w = leaf(filo_cpu(), 1, &n, v, 1), *y, *s, *dw;
    int prev = filo_grad_set_enabled(0);
    FILO_CHECK(filo_ag_mul(w, w, &y));
    filo_grad_set_enabled(prev);
    cr_assert(filo_grad_enabled());
    cr_assert_not(filo_var_requires_grad(y), "no graph is recorded with grad mode off");
    cr_assert(filo_var_is_leaf(y));
    FILO_CHECK(filo_ag_sum(y, FILO_ALL_DIMS, 0, &s));
    FILO_CHECK_FAILS(filo_backward(s, NULL, 0), FILO_ERR_STATE, "does not require a gradient");
    filo_var_free(s);
    FILO_CHECK(filo_var_detach(w, &dw));
    cr_assert_not(filo_var_requires_grad(dw));
    cr_assert_eq(filo_tensor_data(filo_var_value(dw)), filo_tensor_data(filo_var_value(w)), "detach shares memory");
    filo_var_free(dw);
    filo_var_free(y);
    /* A non-scalar root needs an explicit gradient. */
    FILO_CHECK(filo_ag_mul(w, w, &y));
    FILO_CHECK_FAILS(filo_backward(y, NULL, 0), FILO_ERR_SHAPE, "gradient for it is needed");
    filo_var_free(y);
    filo_var_free(w);
}

/* Variables and nodes are all freed, whatever order the user frees them in. */
Test(autograd, no_leaks)
{
    int64_t base_vars = filo_autograd_live_vars(), base_nodes = filo_autograd_live_nodes();
    int64_t n = 4;
    double v[4] = {1, 2, 3, 4};
    filo_var *w = leaf(filo_cpu(), 1, &n, v, 1), *x = leaf(filo_cpu(), 1, &n, v, 0);
    filo_var *y = two_paths(w, x);
    filo_var_free(w); /* the graph keeps the leaf alive */
    FILO_CHECK(filo_backward(y, NULL, 0));
    cr_assert_gt(filo_autograd_live_nodes(), base_nodes);
    filo_var_free(y);
    filo_var_free(x);
    cr_assert_eq(filo_autograd_live_vars(), base_vars);
    cr_assert_eq(filo_autograd_live_nodes(), base_nodes);
}

/* After a backward that released its graph, the device holds the parameters, their gradients
 * and nothing else. */
Test(autograd, memory_returns_to_parameters_and_gradients)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        int64_t n = 1000;
        double *v = malloc(sizeof *v * 1000);
        filo_test_fill_random(v, 1000, 5, -1, 1);
        filo_var *w = leaf(devs[d], 1, &n, v, 1), *x = leaf(devs[d], 1, &n, v, 0);
        free(v);
        filo_alloc_stats before, after;
        FILO_CHECK(filo_device_synchronize(devs[d]));
        FILO_CHECK(filo_alloc_stats_get(devs[d], &before));
        for (int step = 0; step < 3; step++) {
            filo_var *t, *u, *y;
            FILO_CHECK(filo_ag_unary(FILO_UNARY_TANH, w, &t));
            FILO_CHECK(filo_ag_mul(t, x, &u));
            FILO_CHECK(filo_ag_sum(u, FILO_ALL_DIMS, 0, &y));
            filo_var_free(t);
            filo_var_free(u);
            FILO_CHECK(filo_backward(y, NULL, 0));
            filo_var_free(y);
        }
        FILO_CHECK(filo_device_synchronize(devs[d]));
        FILO_CHECK(filo_alloc_stats_get(devs[d], &after));
        size_t grad_bytes = filo_tensor_nbytes(filo_var_grad(w));
        size_t block = (grad_bytes + 511) / 512 * 512;
        cr_assert_eq(after.allocated_bytes - before.allocated_bytes, block,
                     "%s: %zu bytes more than before the steps, the gradient takes %zu",
                     filo_test_backend_name(devs[d]), after.allocated_bytes - before.allocated_bytes, block);
        filo_var_free(w);
        filo_var_free(x);
    }
}

typedef struct ckpt_user {
    filo_var *w;
    filo_generator *gen;
} ckpt_user;

/* out = sum over a block of dropout(tanh(x * w)) * x */
static filo_status ckpt_block(void *user, filo_var *const *in, filo_var **out)
{
    ckpt_user *u = user;
    filo_var *a, *t, *dr;
    filo_status s = filo_ag_mul(in[0], u->w, &a);
    if (s != FILO_OK)
        return s;
    s = filo_ag_unary(FILO_UNARY_TANH, a, &t);
    filo_var_free(a);
    if (s != FILO_OK)
        return s;
    s = filo_ag_dropout(t, 0.4, u->gen, &dr);
    filo_var_free(t);
    if (s != FILO_OK)
        return s;
    s = filo_ag_mul(dr, in[0], &out[0]);
    filo_var_free(dr);
    return s;
}

/* The same gradients with and without checkpointing, dropout included, and the generator ends
 * where the plain run leaves it. */
Test(autograd, checkpoint_matches_plain_backward)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        int64_t n = 37;
        double xv[37], wv[37];
        filo_test_fill_random(xv, n, 1, -2, 2);
        filo_test_fill_random(wv, n, 2, -2, 2);
        double *grads[2][2];
        uint64_t offsets[2];
        for (int use_ckpt = 0; use_ckpt < 2; use_ckpt++) {
            filo_var *x = leaf(devs[d], 1, &n, xv, 1), *w = leaf(devs[d], 1, &n, wv, 1), *o, *y;
            filo_generator gen;
            filo_generator_init(&gen, 99);
            ckpt_user u = {w, &gen};
            if (use_ckpt) {
                int64_t nodes = filo_autograd_live_nodes();
                FILO_CHECK(filo_checkpoint(ckpt_block, &u, &gen, 1, &x, 1, &o));
                cr_assert_eq(filo_autograd_live_nodes(), nodes + 1, "one node stands for the block");
                cr_assert_str_eq(filo_var_op_name(o), "checkpoint");
            } else {
                FILO_CHECK(ckpt_block(&u, &x, &o));
            }
            FILO_CHECK(filo_ag_sum(o, FILO_ALL_DIMS, 0, &y));
            FILO_CHECK(filo_backward(y, NULL, 0));
            offsets[use_ckpt] = gen.offset;
            grads[use_ckpt][0] = filo_test_download(filo_var_grad(x));
            grads[use_ckpt][1] = filo_test_download(filo_var_grad(w));
            filo_var_free(y);
            filo_var_free(o);
            filo_var_free(x);
            filo_var_free(w);
        }
        cr_assert_eq(offsets[0], offsets[1]);
        for (int k = 0; k < 2; k++) {
            cr_assert_eq(memcmp(grads[0][k], grads[1][k], sizeof(double) * (size_t)n), 0,
                         "%s: gradient %d differs with checkpointing", filo_test_backend_name(devs[d]), k);
            free(grads[0][k]);
            free(grads[1][k]);
        }
    }
}

Test(autograd, dot_export)
{
    int64_t n = 3;
    double v[3] = {1, 2, 3};
    filo_var *w = leaf(filo_cpu(), 1, &n, v, 1), *x = leaf(filo_cpu(), 1, &n, v, 0);
    FILO_CHECK(filo_var_set_name(w, "weight"));
    filo_var *y = two_paths(w, x);
    char path[] = "/tmp/filo-dot-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    FILO_CHECK(filo_graph_write_dot(1, &y, path));
    FILE *fp = fopen(path, "r");
    cr_assert(fp);
    char buf[4096];
    size_t len = fread(buf, 1, sizeof buf - 1, fp);
    buf[len] = 0;
    fclose(fp);
    unlink(path);
    cr_assert(strstr(buf, "digraph"));
    cr_assert(strstr(buf, "weight\\nf64[3]"), "%s", buf);
    cr_assert(strstr(buf, "sum\\nf64[]"), "%s", buf);
    int muls = 0;
    for (const char *p = buf; (p = strstr(p, "label=\"mul")); p++)
        muls++;
    cr_assert_eq(muls, 2, "%s", buf);
    FILO_CHECK_FAILS(filo_graph_write_dot(1, &y, "/nonexistent-dir/g.dot"), FILO_ERR_IO, "nonexistent-dir");
    filo_var_free(y);
    filo_var_free(w);
    filo_var_free(x);
}

/* A forward that puts two branches on two side streams: the backward runs each branch's nodes on
 * its stream, ordered by events, and gives the single-stream gradients. */
Test(autograd, side_stream_branches)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        if (devs[d].type != FILO_DEVICE_CUDA)
            continue;
        int64_t n = 257;
        double wv[257];
        filo_test_fill_random(wv, n, 3, -1, 1);
        double *grads[2];
        for (int streams = 0; streams < 2; streams++) {
            filo_var *w = leaf(devs[d], 1, &n, wv, 1), *a, *b, *c, *y;
            filo_stream *s1 = NULL, *s2 = NULL;
            if (streams) {
                FILO_CHECK(filo_stream_create(devs[d], &s1));
                FILO_CHECK(filo_stream_create(devs[d], &s2));
                FILO_CHECK(filo_stream_set_current(devs[d], s1));
            }
            FILO_CHECK(filo_ag_unary(FILO_UNARY_TANH, w, &a));
            if (streams)
                FILO_CHECK(filo_stream_set_current(devs[d], s2));
            FILO_CHECK(filo_ag_unary(FILO_UNARY_SIGMOID, w, &b));
            if (streams)
                FILO_CHECK(filo_stream_set_current(devs[d], NULL));
            FILO_CHECK(filo_ag_mul(a, b, &c));
            FILO_CHECK(filo_ag_sum(c, FILO_ALL_DIMS, 0, &y));
            FILO_CHECK(filo_backward(y, NULL, 0));
            grads[streams] = filo_test_download(filo_var_grad(w));
            filo_var_free(a);
            filo_var_free(b);
            filo_var_free(c);
            filo_var_free(y);
            filo_var_free(w);
            FILO_CHECK(filo_device_synchronize(devs[d]));
            filo_stream_destroy(s1);
            filo_stream_destroy(s2);
        }
        cr_assert_eq(memcmp(grads[0], grads[1], sizeof(double) * (size_t)n), 0);
        free(grads[0]);
        free(grads[1]);
    }
}
