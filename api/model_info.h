/*
 * model_info.h - GET /v1/model: what backbone this server runs.
 */
#ifndef VIT_API_MODEL_INFO_H
#define VIT_API_MODEL_INFO_H

#include "api.h"
#include "vit.h"

/* The model as JSON: architecture, parameter and bias counts, preprocessing,
 * fingerprint, class labels.  NULL when out of memory. */
json_t *api_model_json(const vit_model *m, const char *fingerprint);

/* 200 with api_model_json.  Returns 0, or -1 after an error reply. */
int api_model_reply(const vit_model *m, const char *fingerprint, api_reply *r);

#endif
