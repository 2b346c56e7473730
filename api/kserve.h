/*
 * kserve.h - the Open Inference Protocol (KServe V2) REST encoding of the
 * native API: server and model metadata, model readiness, and an inference
 * request and reply, without the I/O.
 *
 * The V2 routes are another encoding of the same service, not a second one:
 * an infer request parses into the native api_classify_req (classify.h) and
 * runs through the same pipeline, limits and metrics as POST /v1/classify;
 * its reply is laid out from the native result objects
 * (api_classify_result), so the labels and scores are the native ones bit
 * for bit.  ref: kserve docs/predict-api/v2/required_api.md,
 * open-inference-protocol specification/protocol/inference_rest.md
 *
 * ---- Models ----
 * A model is a task: /v2/models/<task>.  The backbone's own head is the
 * model "_backbone" (API_KSERVE_BACKBONE), a name no task can have.  The
 * server's default_task does not apply: a V2 request always names its model.
 * No versions: /v2/models/<m>/versions/<v>/... is not routed (404).
 *
 *   input   "image"   BYTES  [-1]      (or [-1, 1]) one encoded image (JPEG,
 *                                      PNG, BMP) per element
 *   output  "labels"  BYTES  [-1, -1]  [batch, top_k] best first
 *   output  "scores"  FP32   [-1, -1]  [batch, top_k] softmax probabilities
 *
 * ---- How the image bytes travel ----
 * JSON: each element of the input's "data" (flat, or nested as the shape)
 * is a string read exactly as a native "images" element: bare base64
 * (standard or URL-safe alphabet; what V2 clients send for binary BYTES over
 * JSON), a data: URI, or an http(s) URL that the server fetches under the
 * native URL guard.
 * Binary (the protocol's binary tensor data extension, "binary_tensor_data"):
 * the body is the JSON header of Inference-Header-Content-Length bytes
 * followed by the tensor's bytes; the input's parameters carry
 * "binary_data_size" (the bytes after the header: one input, so all of
 * them), and each BYTES element is a 4-byte little-endian length and that
 * many raw image bytes.  Outputs come back binary when requested ("outputs":
 * [{"name": ..., "parameters": {"binary_data": true}}], or the request
 * parameter "binary_data_output": true): the reply is then
 * application/octet-stream, its JSON header's length in the reply's
 * Inference-Header-Content-Length, each binary output's size in its
 * parameters.binary_data_size, labels as length-prefixed strings and scores
 * as little-endian float32, in the order of "outputs".
 *
 * ---- The request ----
 *   {"id"?: str, "parameters"?: {"top_k"?: int, "binary_data_output"?: bool},
 *    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [N] | [N, 1],
 *                "parameters"?: {"binary_data_size"?: int}, "data"?: [...]}],
 *    "outputs"?: [{"name": "labels" | "scores", "parameters"?: {"binary_data"?: bool}}]}
 * top_k: the native default (5) and bounds, clamped to the task's classes.
 * "outputs" absent, null or empty: both, labels first.  "id" is echoed; with
 * none, the reply's "id" is the request's X-Request-Id.  Other parameters
 * are ignored (the protocol leaves them to each server; clients add their
 * own); an unknown key of the request, an input or an output is refused.
 *
 * ---- Errors ----
 * {"error": "human sentence", "code": "snake_case"}: the protocol's error
 * object, plus the native code (api_kserve_error_body converts every native
 * error of a V2 route).  Statuses as the native API's: 400 for a request
 * that cannot be read, 404 model_not_found, 413 over a limit, 429, 503...
 */
#ifndef VIT_API_KSERVE_H
#define VIT_API_KSERVE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "api.h"
#include "classify.h"
#include "task_store.h"
#include "vit.h"

#define API_KSERVE_BACKBONE "_backbone" /* the model of the backbone's own head */
#define API_KSERVE_INPUT "image"
#define API_KSERVE_BINARY_TYPE "application/octet-stream"

/* The outputs, as indices. */
typedef enum api_kserve_output { API_KSERVE_LABELS, API_KSERVE_SCORES } api_kserve_output;

/* What an infer request asks of the reply (the rest is the api_classify_req). */
typedef struct api_kserve_infer {
    char *id;                   /* the request's "id" (owned), NULL when none */
    int num_outputs;            /* 1 or 2 */
    api_kserve_output outputs[2]; /* in the order asked */
    bool binary[2];             /* per output (by api_kserve_output): binary data */
} api_kserve_infer;

/* Frees what v owns and empties it (safe on an empty v, twice too). */
void api_kserve_infer_free(api_kserve_infer *v);

/* GET /v2: {"name": "vitfit", "version", "extensions": ["binary_tensor_data"]}. */
int api_kserve_server_metadata(api_reply *r);

/* Whether name can be a model: a valid task name or API_KSERVE_BACKBONE,
 * and for the latter a backbone with a head.  Cheap (no I/O): the HTTP
 * thread asks before anything is queued.  0, or -1 with r filled (404
 * model_not_found). */
int api_kserve_model_check(const vit_model *m, const char *name, api_reply *r);

/* GET /v2/models/{name} and /v2/models/{name}/ready, for a name that passed
 * api_kserve_model_check: the task is loaded from the store (file I/O: not
 * on an HTTP thread), so "ready" means an infer would run.  Failures map as
 * the task routes' (404 model_not_found, 422 task_mismatch, 400
 * bad_task_file, 413 task_too_large, 500), in the native error shape. */
int api_kserve_model_metadata(const vit_model *m, task_store *s, const char *name, api_reply *r);
int api_kserve_model_ready(const vit_model *m, task_store *s, const char *name, api_reply *r);

/* Parses POST /v2/models/{model}/infer: body[0..len), whose first json_len
 * bytes are the JSON (json_len < 0: all of it; else the binary data
 * follows), for model (which passed api_kserve_model_check).  Fills q (its
 * images, top_k, and the task: model, or none for the backbone) and v.
 * Returns 0, or -1 with q and v empty and r holding the error (native
 * shape).  q and v are overwritten, not freed, on entry. */
int api_kserve_infer_parse(api_classify_req *q, api_kserve_infer *v, const char *body,
                           size_t len, long long json_len, const char *model,
                           const api_classify_limits *lim, api_reply *r);

/* The reply to v for model from the native result of each image
 * (results[0..n), borrowed: {"labels", "scores"} of equal lengths, the same
 * for every image).  id_fallback is the "id" when the request gave none.
 * 0, or -1 with r holding a 500. */
int api_kserve_infer_reply(const api_kserve_infer *v, const char *model, const char *id_fallback,
                           json_t *const *results, int n, api_reply *r);

/* Rewrites the native error body in r ({"error": {"code", "message"}}) as
 * the protocol's {"error": message, "code": code}; any other body (a
 * success, an error already converted) is left alone. */
void api_kserve_error_body(api_reply *r);

#endif
