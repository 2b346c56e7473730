/*
 * openapi_check.c - YAML to jansson, the schema validator and the reply
 * check (openapi_check.h has the contract and the supported subset).
 */
#include "openapi_check.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

/* ======================================================================== */
/* YAML -> JSON                                                             */
/* ======================================================================== */

#define YAML_MAX_DEPTH 64

static bool all_match(const char *s, size_t n, const char *set)
{
    return n > 0 && strspn(s, set) == n;
}

/* A plain scalar by the YAML 1.2 core schema (yaml.org/spec/1.2.2 10.3.2). */
static json_t *plain_scalar(const char *s, size_t n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    static const char *const trues[] = {"true", "True", "TRUE"};
    static const char *const falses[] = {"false", "False", "FALSE"};
    for (size_t i = 0; i < sizeof nulls / sizeof *nulls; i++)
        if (strcmp(s, nulls[i]) == 0)
            return json_null();
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, trues[i]) == 0)
            return json_true();
        if (strcmp(s, falses[i]) == 0)
            return json_false();
    }
    size_t sign = s[0] == '-' || s[0] == '+';
    if (all_match(s + sign, n - sign, "0123456789")) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno == 0)
            return json_integer(v);
    }
    /* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
    const char *p = s + sign;
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (*p == '.') {
        size_t frac = strspn(p + 1, "0123456789");
        digits += frac;
        p += 1 + frac;
    }
    if (digits > 0 && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1 + (p[1] == '-' || p[1] == '+');
        size_t exp = strspn(q, "0123456789");
        p = exp ? q + exp : p;
    }
    if (digits > 0 && *p == '\0' && p == s + n) {
        double v = strtod(s, NULL);
        if (isfinite(v))
            return json_real(v);
    }
    return json_stringn(s, n);
}

static json_t *node_json(yaml_document_t *d, yaml_node_t *node, int depth, char *err,
                         size_t err_len)
{
    if (depth > YAML_MAX_DEPTH) {
        snprintf(err, err_len, "line %zu: nesting (or an alias) deeper than %d",
                 node->start_mark.line + 1, YAML_MAX_DEPTH);
        return NULL;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)node->data.scalar.value;
        size_t n = node->data.scalar.length;
        if (strlen(s) != n) {
            snprintf(err, err_len, "line %zu: a NUL in a scalar", node->start_mark.line + 1);
            return NULL;
        }
        json_t *v = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain_scalar(s, n)
                                                                      : json_stringn(s, n);
        if (!v)
            snprintf(err, err_len, "line %zu: not valid UTF-8 (or out of memory)",
                     node->start_mark.line + 1);
        return v;
    }
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             a && it < node->data.sequence.items.top; it++) {
            json_t *v = node_json(d, yaml_document_get_node(d, *it), depth + 1, err, err_len);
            if (!v || json_array_append_new(a, v) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start;
             o && pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(d, pr->key);
            if (k->type != YAML_SCALAR_NODE) {
                snprintf(err, err_len, "line %zu: a mapping key that is not a scalar",
                         k->start_mark.line + 1);
                json_decref(o);
                return NULL;
            }
            const char *key = (const char *)k->data.scalar.value;
            if (json_object_get(o, key)) {
                snprintf(err, err_len, "line %zu: duplicate key '%.100s'",
                         k->start_mark.line + 1, key);
                json_decref(o);
                return NULL;
            }
            json_t *v = node_json(d, yaml_document_get_node(d, pr->value), depth + 1, err,
                                  err_len);
            if (!v || json_object_set_new(o, key, v) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    default:
        snprintf(err, err_len, "an empty YAML node");
        return NULL;
    }
}

json_t *openapi_yaml_parse(const char *text, size_t len, char *err, size_t err_len)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    json_t *out = NULL;
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, err_len, "line %zu, column %zu: %s%s%s", parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "bad YAML",
                 parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root)
        snprintf(err, err_len, "an empty YAML document");
    else
        out = node_json(&doc, root, 0, err, err_len);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

json_t *openapi_yaml_load(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = 2 * (n + 65536);
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                snprintf(err, err_len, "out of memory");
                return NULL;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    json_t *j = NULL;
    if (bad)
        snprintf(err, err_len, "cannot read %s", path);
    else if (!(j = openapi_yaml_parse(buf, n, err, err_len))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, err_len, "%s: %s", path, msg);
    }
    free(buf);
    return j;
}

/* ======================================================================== */
/* $ref                                                                     */
/* ======================================================================== */

const json_t *openapi_ref(const json_t *doc, const char *ref)
{
    if (!ref || ref[0] != '#')
        return NULL;
    const json_t *at = doc;
    const char *p = ref + 1;
    while (at && *p == '/') {
        p++;
        char token[256];
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char c = *p;
            if (c == '~' && (p[1] == '0' || p[1] == '1'))
                c = *++p == '0' ? '~' : '/';
            if (n + 1 >= sizeof token)
                return NULL;
            token[n++] = c;
        }
        token[n] = '\0';
        if (json_is_object(at)) {
            at = json_object_get(at, token);
        } else if (json_is_array(at)) {
            char *end;
            unsigned long i = strtoul(token, &end, 10);
            at = n && !*end ? json_array_get(at, i) : NULL;
        } else {
            at = NULL;
        }
    }
    return *p ? NULL : at;
}

/* ======================================================================== */
/* the validator                                                            */
/* ======================================================================== */

#define VALIDATE_MAX_DEPTH 64

/* One validation: where it fails is written once, first mismatch wins. */
typedef struct vctx {
    const json_t *doc;
    char *why;
    size_t why_len;
    bool failed;
    int depth;          /* $ref and composition nesting */
    int failed_depth;   /* length of the instance path at the failure (oneOf picks the deepest) */
} vctx;

static bool fail(vctx *c, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(vctx *c, const char *at, const char *fmt, ...)
{
    if (c->failed)
        return false;
    c->failed = true;
    c->failed_depth = (int)strlen(at);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->why, c->why_len, "at %s: %s", at, msg);
    return false;
}

/* A short text of v for messages. */
static const char *shown(const json_t *v, char *buf, size_t len)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(buf, len, "%.80s%s", s ? s : "(nothing)", s && strlen(s) > 80 ? "..." : "");
    free(s);
    return buf;
}

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static bool type_is(const json_t *v, const char *t)
{
    if (strcmp(t, "integer") == 0)
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    if (strcmp(t, "number") == 0)
        return json_is_number(v);
    return strcmp(type_of(v), t) == 0;
}

/* JSON Schema equality: numbers by value (1 == 1.0), the rest structurally. */
static bool same_value(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    return json_equal((json_t *)a, (json_t *)b);
}

static size_t utf8_length(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += ((unsigned char)s[i] & 0xC0) != 0x80;
    return count;
}

static bool validate(vctx *c, const json_t *schema, const json_t *inst, const char *at);

static const char *const annotations[] = {
    "description", "title",           "examples",        "example",  "default", "format",
    "deprecated",  "readOnly",        "writeOnly",       "$comment", "contentMediaType",
    "contentEncoding",
};

static const char *const keywords[] = {
    "$ref",      "type",      "enum",           "const",       "properties",
    "required",  "additionalProperties",        "items",       "minItems",
    "maxItems",  "minimum",   "maximum",        "exclusiveMinimum",
    "exclusiveMaximum",       "minLength",      "maxLength",   "pattern",
    "allOf",     "anyOf",     "oneOf",
};

static bool known_keyword(const char *k)
{
    if (strncmp(k, "x-", 2) == 0)
        return true;
    for (size_t i = 0; i < sizeof annotations / sizeof *annotations; i++)
        if (strcmp(k, annotations[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof keywords / sizeof *keywords; i++)
        if (strcmp(k, keywords[i]) == 0)
            return true;
    return false;
}

/* The instance path of a member or an element. */
static void at_member(char *out, size_t len, const char *at, const char *key)
{
    snprintf(out, len, "%s.%s", at, key);
}

static void at_index(char *out, size_t len, const char *at, size_t i)
{
    snprintf(out, len, "%s[%zu]", at, i);
}

static bool check_type(vctx *c, const json_t *t, const json_t *inst, const char *at)
{
    char b[128];
    if (json_is_string(t)) {
        if (type_is(inst, json_string_value(t)))
            return true;
        return fail(c, at, "%s is %s, not %s", shown(inst, b, sizeof b), type_of(inst),
                    json_string_value(t));
    }
    if (!json_is_array(t) || json_array_size(t) == 0)
        return fail(c, at, "schema: 'type' must be a name or a non-empty array of names");
    size_t i;
    const json_t *one;
    json_array_foreach(t, i, one) {
        if (!json_is_string(one))
            return fail(c, at, "schema: 'type' holds a non-string");
        if (type_is(inst, json_string_value(one)))
            return true;
    }
    char want[128];
    return fail(c, at, "%s is %s, not one of %s", shown(inst, b, sizeof b), type_of(inst),
                shown(t, want, sizeof want));
}

static bool check_object(vctx *c, const json_t *schema, const json_t *inst, const char *at)
{
    const json_t *props = json_object_get(schema, "properties");
    const json_t *req = json_object_get(schema, "required");
    const json_t *addl = json_object_get(schema, "additionalProperties");
    if (props && !json_is_object(props))
        return fail(c, at, "schema: 'properties' must be an object");
    if (req && !json_is_array(req))
        return fail(c, at, "schema: 'required' must be an array");
    if (!json_is_object(inst))
        return true;
    size_t i;
    const json_t *name;
    json_array_foreach(req, i, name) {
        if (!json_is_string(name))
            return fail(c, at, "schema: 'required' holds a non-string");
        if (!json_object_get(inst, json_string_value(name)))
            return fail(c, at, "the required member '%s' is missing", json_string_value(name));
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)inst, key, v) {
        char sub[512];
        at_member(sub, sizeof sub, at, key);
        const json_t *ps = json_object_get(props, key);
        if (ps) {
            if (!validate(c, ps, v, sub))
                return false;
        } else if (json_is_false(addl)) {
            return fail(c, at, "the member '%s' is not allowed (additionalProperties: false)",
                        key);
        } else if (addl && !json_is_true(addl)) {
            if (!validate(c, addl, v, sub))
                return false;
        }
    }
    return true;
}

static bool check_array(vctx *c, const json_t *schema, const json_t *inst, const char *at)
{
    if (!json_is_array(inst))
        return true;
    const json_t *items = json_object_get(schema, "items");
    const json_t *mn = json_object_get(schema, "minItems"), *mx = json_object_get(schema, "maxItems");
    size_t n = json_array_size(inst);
    if ((mn && !json_is_integer(mn)) || (mx && !json_is_integer(mx)))
        return fail(c, at, "schema: minItems and maxItems must be integers");
    if (mn && n < (size_t)json_integer_value(mn))
        return fail(c, at, "%zu items, fewer than minItems %" JSON_INTEGER_FORMAT, n,
                    json_integer_value(mn));
    if (mx && n > (size_t)json_integer_value(mx))
        return fail(c, at, "%zu items, more than maxItems %" JSON_INTEGER_FORMAT, n,
                    json_integer_value(mx));
    if (!items)
        return true;
    size_t i;
    const json_t *v;
    json_array_foreach(inst, i, v) {
        char sub[512];
        at_index(sub, sizeof sub, at, i);
        if (!validate(c, items, v, sub))
            return false;
    }
    return true;
}

static bool check_number(vctx *c, const json_t *schema, const json_t *inst, const char *at)
{
    if (!json_is_number(inst))
        return true;
    double x = json_number_value(inst);
    static const char *const names[] = {"minimum", "maximum", "exclusiveMinimum",
                                        "exclusiveMaximum"};
    for (int k = 0; k < 4; k++) {
        const json_t *b = json_object_get(schema, names[k]);
        if (!b)
            continue;
        if (!json_is_number(b))
            return fail(c, at, "schema: '%s' is not a number", names[k]);
        double y = json_number_value(b);
        bool ok = k == 0 ? x >= y : k == 1 ? x <= y : k == 2 ? x > y : x < y;
        if (!ok)
            return fail(c, at, "%.17g is outside %s %.17g", x, names[k], y);
    }
    return true;
}

static bool check_string(vctx *c, const json_t *schema, const json_t *inst, const char *at)
{
    if (!json_is_string(inst))
        return true;
    const char *s = json_string_value(inst);
    size_t len = utf8_length(s, json_string_length(inst));
    const json_t *mn = json_object_get(schema, "minLength"), *mx = json_object_get(schema, "maxLength");
    char b[128];
    if ((mn && !json_is_integer(mn)) || (mx && !json_is_integer(mx)))
        return fail(c, at, "schema: minLength and maxLength must be integers");
    if (mn && len < (size_t)json_integer_value(mn))
        return fail(c, at, "%s is shorter than minLength %" JSON_INTEGER_FORMAT,
                    shown(inst, b, sizeof b), json_integer_value(mn));
    if (mx && len > (size_t)json_integer_value(mx))
        return fail(c, at, "%s is longer than maxLength %" JSON_INTEGER_FORMAT,
                    shown(inst, b, sizeof b), json_integer_value(mx));
    const json_t *pat = json_object_get(schema, "pattern");
    if (!pat)
        return true;
    if (!json_is_string(pat))
        return fail(c, at, "schema: 'pattern' is not a string");
    regex_t re;
    if (regcomp(&re, json_string_value(pat), REG_EXTENDED | REG_NOSUB) != 0)
        return fail(c, at, "schema: pattern '%s' is not a POSIX extended regex",
                    json_string_value(pat));
    bool ok = strlen(s) == json_string_length(inst) && regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok ? true
              : fail(c, at, "%s does not match the pattern %s", shown(inst, b, sizeof b),
                     json_string_value(pat));
}

/* allOf, anyOf, oneOf.  A branch's failure is kept aside: for anyOf/oneOf
 * the message names the deepest branch failure (the branch that came
 * closest), so a typo deep in one variant is not reported as "matched no
 * variant" alone. */
static bool check_composition(vctx *c, const json_t *schema, const json_t *inst, const char *at)
{
    static const char *const names[] = {"allOf", "anyOf", "oneOf"};
    for (int k = 0; k < 3; k++) {
        const json_t *list = json_object_get(schema, names[k]);
        if (!list)
            continue;
        if (!json_is_array(list) || json_array_size(list) == 0)
            return fail(c, at, "schema: '%s' must be a non-empty array", names[k]);
        size_t i, matched = 0, first_match = 0;
        const json_t *sub;
        char best[1024] = "";
        int best_depth = -1;
        size_t best_branch = 0;
        json_array_foreach(list, i, sub) {
            char why[1024];
            vctx b = {.doc = c->doc, .why = why, .why_len = sizeof why, .depth = c->depth + 1};
            if (validate(&b, sub, inst, at)) {
                if (matched++ == 0)
                    first_match = i;
                continue;
            }
            if (k == 0) /* allOf: the first failing branch is the answer */
                return fail(c, at, "allOf[%zu]: %s", i, why);
            if (b.failed_depth > best_depth) {
                best_depth = b.failed_depth;
                best_branch = i;
                snprintf(best, sizeof best, "%s", why);
            }
        }
        if (k == 1 && matched == 0)
            return fail(c, at, "matches none of anyOf (closest, [%zu]: %s)", best_branch, best);
        if (k == 2 && matched == 0)
            return fail(c, at, "matches none of oneOf (closest, [%zu]: %s)", best_branch, best);
        if (k == 2 && matched > 1)
            return fail(c, at, "matches %zu branches of oneOf (the first: [%zu]), not one",
                        matched, first_match);
    }
    return true;
}

static bool validate(vctx *c, const json_t *schema, const json_t *inst, const char *at)
{
    if (c->failed)
        return false;
    if (json_is_true(schema))
        return true;
    if (json_is_false(schema))
        return fail(c, at, "nothing is allowed here (schema false)");
    if (!json_is_object(schema))
        return fail(c, at, "schema: not an object or a boolean");
    if (c->depth > VALIDATE_MAX_DEPTH)
        return fail(c, at, "schema: $ref or composition nested deeper than %d",
                    VALIDATE_MAX_DEPTH);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)schema, key, v) {
        if (!known_keyword(key))
            return fail(c, at, "schema: unsupported keyword '%s'", key);
    }
    const json_t *ref = json_object_get(schema, "$ref");
    if (ref) {
        const json_t *target = openapi_ref(c->doc, json_string_value(ref));
        if (!target)
            return fail(c, at, "schema: $ref '%s' names nothing",
                        json_string_value(ref) ? json_string_value(ref) : "(not a string)");
        c->depth++;
        bool ok = validate(c, target, inst, at);
        c->depth--;
        if (!ok)
            return false;
    }
    char b[128], w[128];
    const json_t *t = json_object_get(schema, "type");
    if (t && !check_type(c, t, inst, at))
        return false;
    const json_t *cst = json_object_get(schema, "const");
    if (cst && !same_value(cst, inst))
        return fail(c, at, "%s is not the const %s", shown(inst, b, sizeof b),
                    shown(cst, w, sizeof w));
    const json_t *en = json_object_get(schema, "enum");
    if (en) {
        if (!json_is_array(en))
            return fail(c, at, "schema: 'enum' is not an array");
        size_t i;
        const json_t *one;
        bool found = false;
        json_array_foreach(en, i, one) {
            if (same_value(one, inst))
                found = true;
        }
        if (!found)
            return fail(c, at, "%s is not in the enum %s", shown(inst, b, sizeof b),
                        shown(en, w, sizeof w));
    }
    c->depth++;
    bool ok = check_object(c, schema, inst, at) && check_array(c, schema, inst, at) &&
              check_number(c, schema, inst, at) && check_string(c, schema, inst, at) &&
              check_composition(c, schema, inst, at);
    c->depth--;
    return ok;
}

bool openapi_validate(const json_t *doc, const json_t *schema, const json_t *inst, char *why,
                      size_t why_len)
{
    vctx c = {.doc = doc, .why = why, .why_len = why_len};
    if (why_len)
        why[0] = '\0';
    return validate(&c, schema, inst, "$");
}

/* ======================================================================== */
/* replies                                                                  */
/* ======================================================================== */

/* Whether the segments of path [0, n) match template t; *literal counts
 * its literal segments (the more, the more specific). */
static bool template_matches(const char *t, const char *path, size_t n, int *literal)
{
    *literal = 0;
    const char *p = path, *end = path + n;
    for (;;) {
        if (*t != '/' || p >= end || *p != '/')
            return *t == '\0' && p == end;
        t++, p++;
        size_t tl = strcspn(t, "/");
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t pl = slash ? (size_t)(slash - p) : (size_t)(end - p);
        if (tl >= 2 && t[0] == '{' && t[tl - 1] == '}') {
            if (pl == 0)
                return false;
        } else {
            if (tl != pl || strncmp(t, p, tl) != 0)
                return false;
            (*literal)++;
        }
        t += tl, p += pl;
    }
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

const char *openapi_match_path(const json_t *doc, const char *raw)
{
    /* matched as a server routes it: after %XX decoding ("a%2Fb" is two
     * segments), but for "%00", which no server may turn into a NUL */
    char path[2048];
    size_t n = 0, end = strcspn(raw, "?#");
    for (size_t i = 0; i < end && n + 1 < sizeof path; i++) {
        int hi, lo;
        if (raw[i] == '%' && i + 2 < end && (hi = hex_digit(raw[i + 1])) >= 0 &&
            (lo = hex_digit(raw[i + 2])) >= 0 && (hi | lo) != 0) {
            path[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            path[n++] = raw[i];
        }
    }
    path[n] = '\0';
    const char *best = NULL;
    int best_literal = -1;
    const char *tmpl;
    const json_t *item;
    json_object_foreach((json_t *)json_object_get(doc, "paths"), tmpl, item) {
        int literal;
        if (template_matches(tmpl, path, n, &literal) && literal > best_literal) {
            best = tmpl;
            best_literal = literal;
        }
    }
    return best;
}

const char *openapi_header_value(const char *head, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *s = head; s && *s;) {
        const char *eol = strchr(s, '\n');
        size_t ll = eol ? (size_t)(eol - s) : strlen(s);
        if (ll > nl && strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            const char *v = s + nl + 1, *e = s + ll;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t n = (size_t)(e - v) < len - 1 ? (size_t)(e - v) : len - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
        s = eol ? eol + 1 : s + ll;
    }
    return NULL;
}

/* Follows $ref chains of an OpenAPI object (a response, a header...). */
static const json_t *deref(const json_t *doc, const json_t *o)
{
    for (int i = 0; i < 16 && json_is_object(o); i++) {
        const json_t *ref = json_object_get(o, "$ref");
        if (!ref)
            return o;
        o = openapi_ref(doc, json_string_value(ref));
    }
    return json_is_object(o) ? o : NULL;
}

/* Does the media range key (application/json, image/{any}, {any}/{any}) cover type? */
static bool media_matches(const char *key, const char *type)
{
    if (strcmp(key, "*/*") == 0)
        return true;
    size_t kl = strlen(key);
    if (kl >= 2 && strcmp(key + kl - 2, "/*") == 0)
        return strncasecmp(key, type, kl - 1) == 0;
    return strcasecmp(key, type) == 0;
}

static const char *const methods[] = {"get", "put", "post", "delete", "options", "head",
                                      "patch", "trace"};

/* The check of a reply against one response object; why gets the detail. */
static bool check_response(const json_t *doc, const json_t *resp, const openapi_reply *r,
                           char *why, size_t why_len)
{
    char buf[512];
    const char *head = r->head ? r->head : "";
    const char *name;
    const json_t *h;
    json_object_foreach((json_t *)json_object_get(resp, "headers"), name, h) {
        const json_t *hd = deref(doc, h);
        if (!hd) {
            snprintf(why, why_len, "the header '%s' has a $ref that names nothing", name);
            return false;
        }
        const char *value = openapi_header_value(head, name, buf, sizeof buf);
        if (!value) {
            if (json_is_true(json_object_get(hd, "required"))) {
                snprintf(why, why_len, "the required header %s is missing", name);
                return false;
            }
            continue;
        }
        const json_t *schema = json_object_get(hd, "schema");
        if (!schema)
            continue;
        /* a header is text: an integer schema reads it as one */
        json_t *inst = NULL;
        const json_t *ty = json_object_get(deref(doc, schema), "type");
        char *end;
        errno = 0;
        long long n = strtoll(value, &end, 10);
        if (json_is_string(ty) && strcmp(json_string_value(ty), "integer") == 0 && *value &&
            !*end && !errno)
            inst = json_integer(n);
        else
            inst = json_string(value);
        char sub[512];
        bool ok = openapi_validate(doc, schema, inst, sub, sizeof sub);
        json_decref(inst);
        if (!ok) {
            snprintf(why, why_len, "header %s: '%.100s': %s", name, value, sub);
            return false;
        }
    }

    const json_t *content = json_object_get(resp, "content");
    bool head_only = strcmp(r->method, "HEAD") == 0;
    if (head_only && r->body_len) {
        snprintf(why, why_len, "a HEAD reply with a body of %zu bytes", r->body_len);
        return false;
    }
    if (!content || json_object_size(content) == 0) {
        if (r->body_len) {
            snprintf(why, why_len, "a body of %zu bytes where the document has no content",
                     r->body_len);
            return false;
        }
        return true;
    }
    const char *ct = openapi_header_value(head, "Content-Type", buf, sizeof buf);
    if (!ct) {
        snprintf(why, why_len, "no Content-Type header");
        return false;
    }
    char type[128];
    size_t tl = strcspn(ct, "; \t");
    snprintf(type, sizeof type, "%.*s", (int)(tl < 127 ? tl : 127), ct);
    const char *key;
    const json_t *media = NULL;
    json_object_foreach((json_t *)content, key, media) {
        if (media_matches(key, type))
            break;
    }
    if (!key) {
        snprintf(why, why_len, "Content-Type %s is none of the documented media types", type);
        return false;
    }
    const json_t *schema = json_object_get(media, "schema");
    if (head_only || !schema)
        return true;
    json_t *inst;
    bool is_json = strcasecmp(type, "application/json") == 0 ||
                   (tl > 5 && strncasecmp(type + strlen(type) - 5, "+json", 5) == 0);
    bool is_text = strncasecmp(type, "text/", 5) == 0 || strcasecmp(type, "application/yaml") == 0;
    if (!is_json && !is_text)
        return true; /* an image, a file: opaque bytes, only their type is checked */
    if (is_json) {
        json_error_t jerr;
        inst = json_loadb(r->body ? r->body : "", r->body_len,
                          JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!inst) {
            snprintf(why, why_len, "the body is not JSON (%s): %.200s", jerr.text,
                     r->body ? r->body : "");
            return false;
        }
    } else {
        inst = json_stringn(r->body ? r->body : "", r->body_len);
        if (!inst) {
            snprintf(why, why_len, "a %s body that is not UTF-8 text", type);
            return false;
        }
    }
    char sub[1024];
    bool ok = openapi_validate(doc, schema, inst, sub, sizeof sub);
    if (!ok) {
        char *body = json_dumps(inst, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(why, why_len, "%s (body: %.300s%s)", sub, body ? body : "?",
                 body && strlen(body) > 300 ? "..." : "");
        free(body);
    }
    json_decref(inst);
    return ok;
}

/* The Allow header of a 405 names exactly the methods of item. */
static bool allow_matches(const json_t *item, const char *head, char *why, size_t why_len)
{
    char allow[256];
    if (!openapi_header_value(head, "Allow", allow, sizeof allow)) {
        snprintf(why, why_len, "a 405 without an Allow header");
        return false;
    }
    int listed = 0, documented = 0;
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++)
        documented += json_object_get(item, methods[m]) != NULL;
    for (char *save = NULL, *tok = strtok_r(allow, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        char lower[16];
        size_t n = strlen(tok);
        if (n >= sizeof lower) {
            snprintf(why, why_len, "Allow lists '%s'", tok);
            return false;
        }
        for (size_t i = 0; i <= n; i++)
            lower[i] = (char)tolower((unsigned char)tok[i]);
        if (!json_object_get(item, lower)) {
            snprintf(why, why_len, "Allow lists %s, which the document does not", tok);
            return false;
        }
        listed++;
    }
    if (listed != documented) {
        snprintf(why, why_len, "Allow lists %d methods, the document %d", listed, documented);
        return false;
    }
    return true;
}

/* The response for a path no template matches: the one x-unrouted names for
 * a prefix the path is or lies under, else NotFound. */
static const char *unrouted_response(const json_t *doc, const char *path)
{
    const char *prefix;
    const json_t *ref;
    json_object_foreach((json_t *)json_object_get(doc, "x-unrouted"), prefix, ref) {
        size_t n = strlen(prefix);
        if (json_is_string(ref) && strncmp(path, prefix, n) == 0 &&
            (path[n] == '\0' || path[n] == '/' || path[n] == '?'))
            return json_string_value(ref);
    }
    return "#/components/responses/NotFound";
}

bool openapi_check_reply(const json_t *doc, const openapi_reply *r, char *key, size_t key_len,
                         char *why, size_t why_len)
{
    char detail[1536], status[16], lower[16];
    snprintf(status, sizeof status, "%d", r->status);
    size_t ml = strlen(r->method);
    for (size_t i = 0; i <= ml && i < sizeof lower; i++)
        lower[i] = (char)tolower((unsigned char)r->method[i]);
    lower[sizeof lower - 1] = '\0';
    const char *tmpl = openapi_match_path(doc, r->path);
    const json_t *item = tmpl ? json_object_get(json_object_get(doc, "paths"), tmpl) : NULL;
    const json_t *op = item ? json_object_get(item, lower) : NULL;
    if (key)
        snprintf(key, key_len, "%s %s %d", r->method, tmpl ? tmpl : "(unrouted)", r->status);
    const json_t *resp = NULL;
    const char *what = NULL;
    bool ok = true;
    detail[0] = '\0';
    if (!tmpl) {
        what = unrouted_response(doc, r->path);
        resp = r->status == 404 ? deref(doc, openapi_ref(doc, what)) : NULL;
        if (!resp) {
            snprintf(detail, sizeof detail, "no path template matches and the status is not "
                                            "404 (or %s is missing)", what);
            ok = false;
        }
    } else if (!op) {
        /* a path item may name its own (the V2 routes answer in their
         * protocol's error shape) */
        const json_t *own = json_object_get(item, "x-method-not-allowed");
        what = json_is_string(own) ? json_string_value(own)
                                   : "#/components/responses/MethodNotAllowed";
        resp = r->status == 405 ? deref(doc, openapi_ref(doc, what)) : NULL;
        if (!resp) {
            snprintf(detail, sizeof detail,
                     "the method is not documented here and the status is not 405 (or %s is "
                     "missing)",
                     what);
            ok = false;
        } else {
            ok = allow_matches(item, r->head ? r->head : "", detail, sizeof detail);
        }
    } else {
        resp = deref(doc, json_object_get(json_object_get(op, "responses"), status));
        if (!resp) {
            snprintf(detail, sizeof detail, "status %d is not documented for this operation",
                     r->status);
            ok = false;
        }
    }
    if (ok)
        ok = check_response(doc, resp, r, detail, sizeof detail);
    if (!ok)
        snprintf(why, why_len, "%s %s (%.200s) %d: %s", r->method, tmpl ? tmpl : "(unrouted)",
                 r->path, r->status, detail);
    return ok;
}
