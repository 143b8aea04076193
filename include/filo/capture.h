/* Define-and-run: capture a static-shape training step once, replay it many times.
 *
 * A step is a function (forward, backward, optimizer step, ...) that reads its inputs from and
 * writes its results to tensors that outlive it, so that every replay can do the same work on
 * the same memory: copy each new batch into the input tensors before a replay, read the loss
 * tensor after it.
 *
 * On CUDA, filo_step_capture records every kernel, copy and library call that `step` enqueues
 * on the device's current stream into a CUDA graph (stream capture) without running any of it;
 * filo_step_replay launches the whole graph with one call, removing the per-kernel launch cost
 * and the host work of the step (building the autograd graph, dispatch) from every later step.
 * Memory that the step allocates while being captured comes from a pool private to the capture,
 * so its addresses stay valid for every replay; memory the step frees that was allocated before
 * the capture is kept until filo_step_free, because the graph may still read it. Rules, as for
 * any CUDA graph: run the step eagerly once before capturing (cuDNN and cuBLASLt pick their
 * algorithms on first use), keep shapes fixed, do not read device memory to the host and do not
 * enqueue on other streams inside the step (a host synchronization fails the capture with an
 * error), and keep host-side values that change per step on the device (the optimizer's step
 * count: filo_adam_options.step_count; a learning rate changed on the host between replays is
 * not seen by the graph).
 *
 * On the CPU, kernels are plain function calls with no launch cost to remove: capture keeps
 * `step` and replay runs it again, so the same program runs unchanged on either device and gets
 * the same numbers as calling the step eagerly (bitwise on the CPU). */
#ifndef FILO_CAPTURE_H
#define FILO_CAPTURE_H

#include "filo/device.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_captured_step filo_captured_step;
typedef filo_status (*filo_step_fn)(void *user);

/* Captures one call of step(user) on `device` (see above; nothing runs on CUDA until replay).
 * A failing step or capture returns its error and no captured step. */
filo_status filo_step_capture(filo_device device, filo_step_fn step, void *user, filo_captured_step **out);
/* Runs the captured step on the device's current stream (asynchronously on CUDA). */
filo_status filo_step_replay(filo_captured_step *c);
/* 1 when replay launches a CUDA graph, 0 when it calls the step again (the CPU). */
int filo_step_is_graph(const filo_captured_step *c);
void filo_step_free(filo_captured_step *c);

#ifdef __cplusplus
}
#endif
#endif
