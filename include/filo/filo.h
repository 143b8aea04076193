/* filo: a GPU-first deep-learning library. One header for all of the public API. */
#ifndef FILO_H
#define FILO_H

#include "filo/status.h"
#include "filo/dtype.h"
#include "filo/device.h"
#include "filo/alloc.h"
#include "filo/rng.h"
#include "filo/tensor.h"
#include "filo/elementwise.h"
#include "filo/reduce.h"
#include "filo/norm.h"
#include "filo/optim.h"
#include "filo/attention.h"
#include "filo/dropout.h"
#include "filo/bias_act.h"
#include "filo/conv.h"
#include "filo/pool.h"
#include "filo/loss.h"
#include "filo/layout.h"
#include "filo/indexing.h"
#include "filo/matmul.h"
#include "filo/rnn_cell.h"
#include "filo/autograd.h"
#include "filo/ag.h"
#include "filo/capture.h"
#include "filo/params.h"
#include "filo/nn.h"
#include "filo/rnn.h"
#include "filo/losses.h"
#include "filo/optimizer.h"
#include "filo/safetensors.h"
#include "filo/train_checkpoint.h"
#include "filo/tokenizer.h"
#include "filo/table.h"
#include "filo/bert.h"
#include "filo/metrics.h"
#include "filo/dist.h"
#include "filo/ddp.h"

#define FILO_VERSION_MAJOR 0
#define FILO_VERSION_MINOR 1
#define FILO_VERSION_PATCH 0

#endif
