/*
 * openapi_check.h - api/openapi.yaml as the tests read it: the YAML turned
 * into jansson values, a validator for the part of JSON Schema the document
 * uses, and the check of one HTTP reply against the operation it answers.
 *
 * Tests only: the server never links libyaml.  Used by the API harness
 * (serve_harness.c validates every reply serve_request receives), by
 * test_openapi_routes.c (the router's routes are the document's) and by
 * test_openapi_check.c (this module refuses what it should).
 *
 * The schema subset (JSON Schema 2020-12 as OpenAPI 3.1 uses it): $ref (a
 * local JSON pointer "#/..."; siblings are checked too), type (a name or an
 * array of names), enum, const, properties, required, additionalProperties
 * (false or a schema), items, minItems, maxItems, minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern (POSIX
 * extended regex, unanchored as JSON Schema's), allOf, anyOf, oneOf, and the
 * boolean schemas true and false.  Annotations (description, title,
 * examples, default, format, deprecated, readOnly, writeOnly, $comment,
 * contentMediaType, contentEncoding, x-*) are ignored.  Any other keyword
 * fails validation, so the document cannot state a rule this checker would
 * silently skip.
 *
 * Replies: the request's path (query cut) picks the path template (literal
 * segments before {params}, as OpenAPI says); the method its operation and
 * the status its response - an undocumented one fails.  A path no template
 * matches must be answered as components/responses/NotFound, a method the
 * path does not document as components/responses/MethodNotAllowed (or the
 * response the path item's x-method-not-allowed names, a "#/..." reference)
 * with an Allow header listing exactly the documented methods.  Then: every header
 * the response marks required is present (and matches its schema), the
 * Content-Type is one of the response's media types (a range such as image/{any}
 * allowed), and the body matches that media type's schema -- JSON parsed
 * (duplicate keys refused), text (text/..., application/yaml) as a string,
 * other types (images) not read; a HEAD reply's body must be empty, and so
 * must the body of a response without content.
 *
 * All functions are thread-safe on a document nobody modifies (they only
 * read it).
 */
#ifndef VIT_TESTS_API_OPENAPI_CHECK_H
#define VIT_TESTS_API_OPENAPI_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* YAML text (one document) as a new JSON value.  Plain scalars follow the
 * YAML 1.2 core schema (null, booleans, integers, floats; everything else a
 * string); quoted and block scalars are strings; mapping keys must be
 * scalars and unique; aliases are expanded (at most 64 levels deep).  NULL
 * with err filled ("line L, column C: ...") on any error. */
json_t *openapi_yaml_parse(const char *text, size_t len, char *err, size_t err_len);

/* openapi_yaml_parse of the file at path. */
json_t *openapi_yaml_load(const char *path, char *err, size_t err_len);

/* The value a local reference "#/a/b~1c" names in doc (JSON pointer, ~0 and
 * ~1 unescaped), or NULL.  Borrowed from doc. */
const json_t *openapi_ref(const json_t *doc, const char *ref);

/* Whether inst matches schema (its $refs resolved in doc).  On false, why
 * holds the first mismatch: "at $.results[0].scores: ...". */
bool openapi_validate(const json_t *doc, const json_t *schema, const json_t *inst, char *why,
                      size_t why_len);

/* The key of doc's "paths" that path (a query after '?' is ignored)
 * matches, or NULL.  Borrowed from doc.  Matched as the server routes it,
 * after %XX decoding ("a%2Fb" is two segments) but for %00, kept as it is. */
const char *openapi_match_path(const json_t *doc, const char *path);

/* One HTTP exchange as the client saw it. */
typedef struct openapi_reply {
    const char *method;   /* "GET", "HEAD", ... */
    const char *path;     /* as requested, query included */
    int status;
    const char *head;     /* the reply's header lines ("Name: value\r\n"); a status line is
                             skipped */
    const char *body;     /* body_len bytes (may be NULL when 0) */
    size_t body_len;
} openapi_reply;

/* Whether r is a reply doc documents (see the top).  On false, why names
 * the method, the path template, the status and the first mismatch.  *key,
 * when not NULL, receives "METHOD template status" (or "METHOD (unrouted)
 * status") for coverage counts, also on false. */
bool openapi_check_reply(const json_t *doc, const openapi_reply *r, char *key, size_t key_len,
                         char *why, size_t why_len);

/* The value of header `name` (any case) in the raw header block head,
 * trimmed, into buf (truncated to len - 1); NULL when absent. */
const char *openapi_header_value(const char *head, const char *name, char *buf, size_t len);

#endif
