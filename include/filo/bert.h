/* BERT (Devlin et al.) in Hugging Face's layout: BertModel and its task heads, loaded from and
 * saved to a transformers model directory (config.json + model.safetensors).
 *
 * Parameters live in one filo_params store under transformers' names, so a saved model loads
 * with from_pretrained and a Hugging Face checkpoint loads here:
 *   the encoder   "bert.embeddings.{word,position,token_type}_embeddings.weight",
 *                 "bert.embeddings.LayerNorm.{weight,bias}",
 *                 "bert.encoder.layer.N.<filo_nn_transformer_layer names>",
 *                 "bert.pooler.dense.{weight,bias}"   (sequence classification only, as in HF)
 *   the heads     "classifier.{weight,bias}"          sequence / token classification
 *                 "qa_outputs.{weight,bias}"          question answering ([start, end] logits)
 *                 "cls.predictions.transform.dense.*", "cls.predictions.transform.LayerNorm.*",
 *                 "cls.predictions.bias"              masked LM; the decoder is tied to the
 *                                                     word embeddings
 * A bare BertModel (FILO_BERT_ENCODER) has the encoder names without "bert." and a pooler.
 *
 * Loading accepts names with or without "bert.", LayerNorm "gamma"/"beta" (old TF ports), and
 * ignores legacy buffers (embeddings.position_ids). Tensors a model needs but the file lacks, or
 * of the wrong shape, are an error listing every such name and both shapes. Head tensors the
 * file lacks (classifier, qa_outputs, pooler) are initialized fresh, as from_pretrained does for
 * a pretrained encoder, and listed on stderr; tensors of other heads (cls.*, pooler, NSP) that
 * the task does not use are skipped with a warning; any other unknown tensor is an error. */
#ifndef FILO_BERT_H
#define FILO_BERT_H

#include <stdint.h>

#include "filo/nn.h"
#include "filo/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_bert_task {
    FILO_BERT_ENCODER = 0,       /* BertModel: sequence output and pooled output */
    FILO_BERT_SEQUENCE_CLASSIFY, /* BertForSequenceClassification: logits [B, num_labels] */
    FILO_BERT_TOKEN_CLASSIFY,    /* BertForTokenClassification: logits [B, L, num_labels] */
    FILO_BERT_QUESTION_ANSWER,   /* BertForQuestionAnswering: logits [B, L, 2] (start, end) */
    FILO_BERT_MASKED_LM,         /* BertForMaskedLM: logits [B, L, vocab_size] */
} filo_bert_task;

typedef enum filo_bert_problem {
    FILO_PROBLEM_UNSET = 0,      /* HF infers it: regression when num_labels == 1, else single label */
    FILO_PROBLEM_SINGLE_LABEL,   /* "single_label_classification": cross-entropy over labels */
    FILO_PROBLEM_MULTI_LABEL,    /* "multi_label_classification": BCE with logits per label */
    FILO_PROBLEM_REGRESSION,     /* "regression": MSE */
} filo_bert_problem;

typedef struct filo_bert_config {
    int64_t vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size;
    int64_t max_position_embeddings, type_vocab_size, pad_token_id;
    filo_activation hidden_act;       /* "gelu", "gelu_new"/"gelu_pytorch_tanh", "relu", ... */
    double layer_norm_eps, hidden_dropout_prob, attention_probs_dropout_prob, initializer_range;
    double classifier_dropout;        /* < 0: null in config.json (hidden_dropout_prob is used) */
    int num_labels;                   /* 2 when config.json has none */
    char **id2label;                  /* num_labels names ("LABEL_0"... when config.json has none) */
    filo_bert_problem problem_type;
} filo_bert_config;

/* Google's compact BERTs and BERT-base (all 64-dim heads, intermediate 4 x hidden, max 512
 * positions, 2 token types, GELU, eps 1e-12, dropout 0.1), with vocab_size and num_labels set
 * (labels named "LABEL_i"):
 *   tiny 2 layers x 128, mini 4 x 256, small 4 x 512, medium 8 x 512, base 12 x 768. */
filo_status filo_bert_config_preset(const char *name, int64_t vocab_size, int num_labels, filo_bert_config *out);
/* Parses config.json: missing keys take transformers' BertConfig defaults; a wrong type or an
 * impossible value (hidden not divisible by heads, unsupported activation) is FILO_ERR_FORMAT
 * naming the key. id2label/label2id must agree. */
filo_status filo_bert_config_load(const char *path, filo_bert_config *out);
/* Sets num_labels and names (copied; NULL names: "LABEL_i"), replacing the current ones. */
filo_status filo_bert_config_set_labels(filo_bert_config *cfg, int num_labels, const char *const *names);
/* Deep copy. */
filo_status filo_bert_config_copy(const filo_bert_config *src, filo_bert_config *dst);
void filo_bert_config_free(filo_bert_config *cfg);
/* Label index of `name`, or -1. */
int filo_bert_config_label(const filo_bert_config *cfg, const char *name);

typedef struct filo_bert {
    filo_bert_config config;
    filo_bert_task task;
    filo_params *params;              /* owns every parameter */
    filo_nn_embedding word_embeddings, position_embeddings, token_type_embeddings;
    filo_nn_layernorm embeddings_norm;
    filo_nn_transformer_layer *layers; /* num_hidden_layers */
    int has_pooler;
    filo_nn_linear pooler;            /* tanh(dense(h[:, 0])) */
    filo_nn_linear head;              /* classifier or qa_outputs */
    filo_nn_linear mlm_transform;     /* masked LM: dense -> act -> LayerNorm -> tied decoder + bias */
    filo_nn_layernorm mlm_norm;
    filo_var *mlm_bias;
} filo_bert;

/* A model with fresh weights initialized as transformers does (normal(0, initializer_range)
 * for weights and embeddings, zero biases, unit LayerNorms, a zero padding row), from seed. */
filo_status filo_bert_new(const filo_bert_config *cfg, filo_bert_task task, filo_device device, uint64_t seed,
                          filo_bert **out);
void filo_bert_free(filo_bert *m);

/* Loads dir/config.json and dir/model.safetensors (any of f32, f16, bf16; converted to f32) as
 * the model for `task`. Fresh head weights draw from seed. */
filo_status filo_bert_load(const char *dir, filo_bert_task task, filo_device device, uint64_t seed, filo_bert **out);
/* Copies the tensors of a safetensors file into m's parameters under the rules above. */
filo_status filo_bert_load_weights(filo_bert *m, const char *safetensors_path);
/* Writes dir/config.json (with architectures, model_type "bert", id2label/label2id, problem_type)
 * and dir/model.safetensors (f32, metadata format "pt"), each atomically; creates dir. */
filo_status filo_bert_save(const filo_bert *m, const char *dir);

/* A right-padded batch. */
typedef struct filo_bert_inputs {
    const filo_tensor *input_ids;      /* i32 or i64 [B, L], on the model's device */
    const filo_tensor *token_type_ids; /* NULL: all 0; else like input_ids */
    const filo_tensor *lengths;        /* NULL: no padding; else i32/i64 [B], tokens before padding */
} filo_bert_inputs;

/* The encoder: sequence output [B, L, hidden] and, when pooled is non-NULL and the model has a
 * pooler, the pooled output [B, hidden]. L must be <= max_position_embeddings. */
filo_status filo_bert_encode(const filo_bert *m, const filo_nn_ctx *ctx, const filo_bert_inputs *in,
                             filo_var **sequence, filo_var **pooled);
/* The head's logits (shapes at filo_bert_task), f32. */
filo_status filo_bert_forward(const filo_bert *m, const filo_nn_ctx *ctx, const filo_bert_inputs *in,
                              filo_var **logits);

/* The task loss, mean over examples, as transformers computes it:
 *   sequence classify   single label: labels i32/i64 [B]; multi label: f32 [B, num_labels] in
 *                       {0, 1}; regression: f32 [B] (num_labels 1) or [B, num_labels]
 *   token classify      i32/i64 [B, L], -100 ignored
 *   question answer     i32/i64 [B, 2] start and end positions (clamped to [0, L], L ignored),
 *                       the mean of the start and end cross-entropies
 *   masked LM           i32/i64 [B, L], -100 ignored */
filo_status filo_bert_loss(const filo_bert *m, filo_var *logits, const filo_tensor *labels, filo_var **loss);

/* "BertForSequenceClassification" and so on, for config.json's architectures. */
const char *filo_bert_task_architecture(filo_bert_task task);

#ifdef __cplusplus
}
#endif
#endif
