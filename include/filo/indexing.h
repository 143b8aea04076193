/* Indexing ops and their backward: index_select / index_add, gather / scatter_add, embedding
 * lookup and its gradient, masked_fill.
 *
 * Index tensors are i64 or i32, any strides. Values follow PyTorch (torch.index_select,
 * Tensor.index_add, torch.gather, Tensor.scatter_add, F.embedding, Tensor.masked_fill).
 * Outputs are new contiguous tensors on the inputs' device, owned by the caller; inputs may be any
 * strided view. Calls are non-blocking on the device's current stream: no host synchronization.
 *
 * dtypes: the moving ops (index_select, gather, embedding, masked_fill) take any dtype and are
 * exact. The accumulating ones (index_add, scatter_add, embedding_backward) take f32, f64, bf16
 * or f16, accumulate in f32 (f64 for f64) and round once at the store.
 *
 * Determinism: the accumulating ops use no float atomics and add in a fixed order that the CPU
 * and CUDA share, so results are bitwise identical run to run and between the two backends.
 * scatter_add adds each output element's contributions in increasing source position.
 * index_add and embedding_backward add them in increasing source position in chunks of at most
 * 32, then add the chunk sums in order (the chunks are cut in the list of all contributions
 * sorted by (row, position): at each row's first entry and at every 32nd entry), which lets the
 * GPU spread a frequent id over several warps.
 *
 * Out-of-range indices (negative, or >= the indexed size): the CPU path fails with
 * FILO_ERR_INVALID_ARG naming the op, the index value and its position. CUDA kernels cannot report
 * without a host synchronization, so they never touch memory out of bounds and instead:
 *   index_select, gather, embedding: write 0 for an element whose index is out of range;
 *   index_add, scatter_add, embedding_backward: drop that contribution.
 * Callers wanting the check on a GPU run the op once on the CPU, or validate ids beforehand. */
#ifndef FILO_INDEXING_H
#define FILO_INDEXING_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out = x.index_select(dim, index): index is 1-D with K entries in [0, x.shape[dim]); out has
 * x's shape with shape[dim] = K. Backward: filo_index_add(dy, dim, index, x.shape[dim]). */
filo_status filo_index_select(const filo_tensor *x, int dim, const filo_tensor *index, filo_tensor **out);

/* dx = zeros(src shape with shape[dim] = size).index_add(dim, index, dy): dy has index_select's
 * output shape (shape[dim] = K, the index length); dx[..., n, ...] = sum over k with index[k] == n
 * of dy[..., k, ...] (order above). size >= 0. CUDA: the algorithm of embedding_backward, with
 * K <= 2^31 - 1 and size <= 2^31 - 1 (FILO_ERR_UNSUPPORTED beyond), and scratch of K keys plus,
 * when K > 32, numel(dy) f32 (f64) partial sums. */
filo_status filo_index_add(const filo_tensor *dy, int dim, const filo_tensor *index, int64_t size, filo_tensor **dx);

/* out = torch.gather(x, dim, index): index has x's ndim, index.shape[d] <= x.shape[d] for d != dim,
 * out has index's shape and out[i][j][k] = x[i][index[i][j][k]][k] (dim = 1). Backward:
 * filo_scatter_add(zeros like x, dim, index, dy). */
filo_status filo_gather(const filo_tensor *x, int dim, const filo_tensor *index, filo_tensor **out);

/* out = self.scatter_add(dim, index, src) (out of place; self is not modified): out = self, then
 * out[i][index[i][j][k]][k] += src[i][j][k] (dim = 1) for every position of index. index has
 * self's ndim, index.shape[d] <= src.shape[d] for all d and <= self.shape[d] for d != dim; src
 * and self share a dtype.
 * Cost on CUDA: each output element scans the index entries that may hit it (those along dim at
 * its other coordinates): numel(self) * index.shape[dim] index reads. Cheap as gather's backward
 * over a small dim (e.g. the targets of a loss); long index dims are better done as index_add. */
filo_status filo_scatter_add(const filo_tensor *self, int dim, const filo_tensor *index, const filo_tensor *src,
                             filo_tensor **out);

/* out = weight[ids]: weight [V, D], ids of any shape (values in [0, V)), out [ids..., D]. */
filo_status filo_embedding(const filo_tensor *weight, const filo_tensor *ids, filo_tensor **out);

/* dweight [V, D] = sum of the dy rows [ids..., D] of each id (order above); rows never
 * named (or named by padding_idx, when padding_idx >= 0) are zero. dweight has dy's dtype and is
 * accumulated in f32 (f64 for f64). padding_idx: -1 for none, else in [0, V).
 * CUDA: a device-side sort of (id, position) keys, then one warp per distinct id: see
 * kernels/cuda/indexing.cu for the algorithm and its cost. */
filo_status filo_embedding_backward(const filo_tensor *dy, const filo_tensor *ids, int64_t num_weights,
                                    int64_t padding_idx, filo_tensor **dweight);

/* out = x with value where mask is nonzero: mask is u8, broadcastable to x's shape; x any dtype.
 * value is converted to x's dtype as filo_pad does (an integer dtype must hold it).
 * Backward: dx = filo_masked_fill(dy, mask, 0). */
filo_status filo_masked_fill(const filo_tensor *x, const filo_tensor *mask, double value, filo_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
