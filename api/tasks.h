/*
 * tasks.h - the task routes: list, inspect, upload and remove task bias sets
 * while the server runs (GET /v1/tasks, GET/PUT/DELETE /v1/tasks/{name}).
 *
 * Each handler fills an api_reply: 200/201 with JSON, or the error shape
 * with task_not_found (404), invalid_task_name (422), task_mismatch (422: made
 * for another backbone), bad_task_file (400), body_too_large (413).
 */
#ifndef VIT_API_TASKS_H
#define VIT_API_TASKS_H

#include "api.h"
#include "task_store.h"

int api_tasks_list(task_store *s, api_reply *r);
int api_task_get(task_store *s, const char *name, api_reply *r);
/* body[0..len) is a task safetensors file; 201 when new, 200 when replaced. */
int api_task_put(task_store *s, const char *name, const void *body, size_t len, api_reply *r);
int api_task_delete(task_store *s, const char *name, api_reply *r);

#endif
