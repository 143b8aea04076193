/* What the BERT files share: config checks and config.json writing (bert_config.c), model
 * creation for a loader and which parameters belong to a task head (bert.c), which the loader
 * (bert_io.c) initializes fresh when a checkpoint lacks them. */
#ifndef FILO_MODELS_BERT_INTERNAL_H
#define FILO_MODELS_BERT_INTERNAL_H

#include "filo/bert.h"

/* FILO_ERR_INVALID_ARG naming the first field of cfg that transformers' BertConfig could not
 * hold (a non-positive size, hidden not divisible by heads, a dropout outside [0, 1], ...). */
filo_status filo_bert_config_check(const filo_bert_config *cfg);

/* Writes cfg as transformers' config.json (every BertConfig field, "architectures" =
 * [architecture], "model_type": "bert", id2label/label2id, problem_type) atomically to path. */
filo_status filo_bert_config_save(const filo_bert_config *cfg, const char *architecture, const char *path);

/* filo_bert_new; init_encoder 0 leaves the encoder's values as the nn modules drew them, for a
 * loader that overwrites them (the heads are initialized either way, identically). */
filo_status filo_bert_create(const filo_bert_config *cfg, filo_bert_task task, filo_device device, uint64_t seed,
                             int init_encoder, filo_bert **out);

/* 1 for the task's pooler and head parameters (those from_pretrained initializes fresh when a
 * checkpoint of the bare encoder lacks them), given the model's own parameter name. */
int filo_bert_is_head_param(const filo_bert *m, const char *name);

#endif
