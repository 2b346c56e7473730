/*
 * test_openapi_check.c - openapi_check refuses what it should, and
 * api/openapi.yaml is a document it can check with.
 *
 *  1. YAML: the core schema's scalar types, quoted scalars as strings, keys
 *     unique, aliases expanded, a self-referencing alias and bad YAML
 *     refused with a line number.
 *  2. $ref pointers (~0 ~1 escapes, array indices, names that are missing).
 *  3. The validator: for every keyword it knows, a value that passes and one
 *     that fails, with the failure's instance path; unknown keywords are
 *     refused, not skipped.
 *  4. Replies against a small document: path templates (literal segments
 *     first), an undocumented status, a missing or malformed header, a
 *     Content-Type not listed, a body that is not JSON or does not match, a
 *     HEAD with a body, an unrouted path that is not 404, a 405 whose Allow
 *     differs from the document.
 *  5. api/openapi.yaml: it loads; every $ref in it names something; every
 *     pattern compiles as a POSIX extended regex; every schema's examples
 *     match it; every operation has responses that resolve.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "openapi_check.h"

static json_t *yaml(const char *text)
{
    char err[256];
    json_t *j = openapi_yaml_parse(text, strlen(text), err, sizeof err);
    if (!j)
        fprintf(stderr, "  yaml: %s\n", err);
    return j;
}

/* ---- 1. YAML --------------------------------------------------------------- */

static void test_yaml(void)
{
    json_t *j = yaml("a: 1\n"
                     "b: -2\n"
                     "c: 1.5\n"
                     "d: 1e3\n"
                     "e: '1'\n"
                     "f: \"true\"\n"
                     "g: true\n"
                     "h: null\n"
                     "i: ~\n"
                     "j:\n"
                     "k: yes\n"
                     "l: 0x10\n"
                     "m: [x, 2, {n: o}]\n"
                     "p: |\n  line one\n  line two\n"
                     "'200': two hundred\n"
                     "q: .5\n"
                     "r: 1.\n"
                     "s: 12abc\n");
    CHECK(j != NULL);
    CHECK(json_integer_value(json_object_get(j, "a")) == 1 && json_is_integer(json_object_get(j, "a")));
    CHECK(json_integer_value(json_object_get(j, "b")) == -2);
    CHECK(json_is_real(json_object_get(j, "c")) && json_real_value(json_object_get(j, "c")) == 1.5);
    CHECK(json_is_real(json_object_get(j, "d")) && json_real_value(json_object_get(j, "d")) == 1000);
    CHECK(json_is_string(json_object_get(j, "e")));
    CHECK(json_is_string(json_object_get(j, "f")));
    CHECK(json_is_true(json_object_get(j, "g")));
    CHECK(json_is_null(json_object_get(j, "h")));
    CHECK(json_is_null(json_object_get(j, "i")));
    CHECK(json_is_null(json_object_get(j, "j")));
    CHECK(json_is_string(json_object_get(j, "k"))); /* YAML 1.2: not a boolean */
    CHECK(json_is_string(json_object_get(j, "l")));
    CHECK(json_array_size(json_object_get(j, "m")) == 3 &&
          json_integer_value(json_array_get(json_object_get(j, "m"), 1)) == 2 &&
          json_is_string(json_object_get(json_array_get(json_object_get(j, "m"), 2), "n")));
    CHECK(strcmp(json_string_value(json_object_get(j, "p")), "line one\nline two\n") == 0);
    CHECK(json_is_string(json_object_get(j, "200")));
    CHECK(json_is_real(json_object_get(j, "q")) && json_real_value(json_object_get(j, "q")) == 0.5);
    CHECK(json_is_real(json_object_get(j, "r")));
    CHECK(json_is_string(json_object_get(j, "s")));
    json_decref(j);

    j = yaml("base: &b {x: 1}\nuse: *b\n");
    CHECK(j && json_equal(json_object_get(j, "base"), json_object_get(j, "use")));
    json_decref(j);

    char err[256] = "";
    static const char dup[] = "a: 1\nb: 2\na: 3\n";
    CHECK(!openapi_yaml_parse(dup, sizeof dup - 1, err, sizeof err));
    CHECKF(strstr(err, "duplicate key 'a'") && strstr(err, "line 3"), "%s", err);
    static const char loop[] = "a: &x [1, *x]\n";
    err[0] = '\0';
    json_t *l = openapi_yaml_parse(loop, sizeof loop - 1, err, sizeof err);
    CHECKF(!l && strstr(err, "deeper"), "a self-referencing alias: %s", err);
    json_decref(l);
    static const char bad[] = "a: [1, 2\nb: 3\n";
    err[0] = '\0';
    CHECK(!openapi_yaml_parse(bad, sizeof bad - 1, err, sizeof err));
    CHECKF(strstr(err, "line "), "%s", err);
    static const char complex_key[] = "? [1, 2]\n: x\n";
    CHECK(!openapi_yaml_parse(complex_key, sizeof complex_key - 1, err, sizeof err));
    CHECK(!openapi_yaml_parse("", 0, err, sizeof err));
}

/* ---- 2. $ref ----------------------------------------------------------------- */

static void test_ref(void)
{
    json_t *d = yaml("a:\n  b/c: {d: [10, 20]}\n  e~f: 3\n");
    CHECK(json_integer_value(openapi_ref(d, "#/a/b~1c/d/1")) == 20);
    CHECK(json_integer_value(openapi_ref(d, "#/a/e~0f")) == 3);
    CHECK(openapi_ref(d, "#") == d);
    CHECK(openapi_ref(d, "#/a/nope") == NULL);
    CHECK(openapi_ref(d, "#/a/b~1c/d/2") == NULL);
    CHECK(openapi_ref(d, "#/a/b~1c/d/x") == NULL);
    CHECK(openapi_ref(d, "other.yaml#/a") == NULL);
    CHECK(openapi_ref(d, NULL) == NULL);
    json_decref(d);
}

/* ---- 3. the validator ------------------------------------------------------ */

static json_t *vdoc; /* the document $refs resolve in */

/* validates the JSON text inst against the YAML schema; want: pass or fail;
 * when failing, why must contain `where` */
static void expect(const char *schema_yaml, const char *inst_json, bool want, const char *where)
{
    json_t *schema = yaml(schema_yaml);
    json_t *inst = json_loads(inst_json, JSON_DECODE_ANY, NULL);
    char why[1024] = "";
    CHECKF(schema && inst, "bad test input: %s / %s", schema_yaml, inst_json);
    bool got = schema && inst && openapi_validate(vdoc, schema, inst, why, sizeof why);
    CHECKF(got == want, "schema %s, instance %s: %s, want %s (%s)", schema_yaml, inst_json,
           got ? "passed" : "failed", want ? "pass" : "fail", why);
    if (!want && where)
        CHECKF(strstr(why, where), "schema %s, instance %s: the failure \"%s\" does not name %s",
               schema_yaml, inst_json, why, where);
    json_decref(schema);
    json_decref(inst);
}

static void test_validator(void)
{
    vdoc = yaml("components:\n"
                "  schemas:\n"
                "    Pos: {type: integer, minimum: 1}\n"
                "    Node: {type: object, properties: {next: {$ref: '#/components/schemas/Node'}}}\n"
                "    Loop: {$ref: '#/components/schemas/Loop'}\n");
    CHECK(vdoc != NULL);
    /* type */
    expect("{type: string}", "\"a\"", true, NULL);
    expect("{type: string}", "1", false, "$");
    expect("{type: integer}", "1", true, NULL);
    expect("{type: integer}", "1.0", true, NULL); /* JSON Schema: integral numbers */
    expect("{type: integer}", "1.5", false, "not integer");
    expect("{type: number}", "1", true, NULL);
    expect("{type: number}", "\"1\"", false, NULL);
    expect("{type: boolean}", "false", true, NULL);
    expect("{type: boolean}", "0", false, NULL);
    expect("{type: 'null'}", "null", true, NULL);
    expect("{type: array}", "{}", false, NULL);
    expect("{type: object}", "[]", false, NULL);
    expect("{type: [string, 'null']}", "null", true, NULL);
    expect("{type: [string, 'null']}", "3", false, "not one of");
    expect("{type: []}", "3", false, "schema");
    /* enum, const */
    expect("{enum: [a, 1, null]}", "null", true, NULL);
    expect("{enum: [a, 1, null]}", "1.0", true, NULL);
    expect("{enum: [a, 1, null]}", "\"b\"", false, "not in the enum");
    expect("{const: ok}", "\"ok\"", true, NULL);
    expect("{const: ok}", "\"OK\"", false, "const");
    /* objects */
    const char *obj = "{type: object, required: [a], additionalProperties: false, "
                      "properties: {a: {type: integer}, b: {type: string}}}";
    expect(obj, "{\"a\": 1, \"b\": \"x\"}", true, NULL);
    expect(obj, "{\"b\": \"x\"}", false, "required member 'a'");
    expect(obj, "{\"a\": 1, \"c\": 2}", false, "'c' is not allowed");
    expect(obj, "{\"a\": \"1\"}", false, "at $.a:");
    expect("{additionalProperties: {type: string}}", "{\"x\": \"y\"}", true, NULL);
    expect("{additionalProperties: {type: string}}", "{\"x\": 1}", false, "at $.x:");
    expect("{properties: {a: {type: integer}}}", "{\"z\": []}", true, NULL);
    expect(obj, "[1]", false, "is array, not object");
    /* arrays */
    const char *arr = "{type: array, items: {type: integer}, minItems: 1, maxItems: 2}";
    expect(arr, "[1, 2]", true, NULL);
    expect(arr, "[]", false, "minItems");
    expect(arr, "[1, 2, 3]", false, "maxItems");
    expect(arr, "[1, \"2\"]", false, "at $[1]:");
    expect("{type: object, properties: {r: {type: array, items: {properties: {s: {type: "
           "array, items: {maximum: 1}}}}}}}",
           "{\"r\": [{\"s\": [0.5]}, {\"s\": [1, 2]}]}", false, "at $.r[1].s[1]:");
    /* numbers */
    expect("{minimum: 0, maximum: 1}", "0", true, NULL);
    expect("{minimum: 0, maximum: 1}", "1", true, NULL);
    expect("{minimum: 0, maximum: 1}", "1.0000001", false, "maximum");
    expect("{minimum: 0, maximum: 1}", "-0.1", false, "minimum");
    expect("{exclusiveMinimum: 0}", "0", false, "exclusiveMinimum");
    expect("{exclusiveMinimum: 0}", "1e-9", true, NULL);
    expect("{exclusiveMaximum: 1}", "1", false, "exclusiveMaximum");
    expect("{minimum: 5}", "\"3\"", true, NULL); /* applies to numbers only */
    /* strings */
    expect("{minLength: 2, maxLength: 3}", "\"ab\"", true, NULL);
    expect("{minLength: 2, maxLength: 3}", "\"a\"", false, "minLength");
    expect("{minLength: 2, maxLength: 3}", "\"abcd\"", false, "maxLength");
    expect("{maxLength: 2}", "\"\\u00e9\\u00e9\"", true, NULL); /* code points, not bytes */
    expect("{pattern: '^[a-z0-9][a-z0-9._-]{0,63}$'}", "\"task-1.b\"", true, NULL);
    expect("{pattern: '^[a-z0-9][a-z0-9._-]{0,63}$'}", "\"Task\"", false, "pattern");
    expect("{pattern: 'b'}", "\"abc\"", true, NULL); /* unanchored */
    { /* a NUL cannot hide a tail from the regex (header values may hold one) */
        json_t *schema = yaml("{pattern: '^[0-9]+$'}"), *nul = json_stringn("12\0x", 4);
        char why[256];
        CHECK(!openapi_validate(vdoc, schema, nul, why, sizeof why) && strstr(why, "pattern"));
        json_decref(schema);
        json_decref(nul);
    }
    expect("{pattern: '('}", "\"x\"", false, "POSIX");
    /* composition */
    expect("{allOf: [{type: integer}, {minimum: 3}]}", "4", true, NULL);
    expect("{allOf: [{type: integer}, {minimum: 3}]}", "2", false, "allOf[1]");
    expect("{anyOf: [{type: string}, {type: integer}]}", "2", true, NULL);
    expect("{anyOf: [{type: string}, {type: integer}]}", "[]", false, "none of anyOf");
    expect("{oneOf: [{type: integer}, {minimum: 3}]}", "2", true, NULL);
    expect("{oneOf: [{type: integer}, {minimum: 3}]}", "4", false, "2 branches of oneOf");
    expect("{oneOf: [{type: string}, {type: 'null'}]}", "1", false, "none of oneOf");
    /* oneOf names the branch that came closest (the deepest failure) */
    expect("{oneOf: [{type: string}, {type: object, properties: {a: {properties: {b: "
           "{type: integer}}}}}]}",
           "{\"a\": {\"b\": \"x\"}}", false, "at $.a.b:");
    expect("{oneOf: []}", "1", false, "non-empty");
    /* $ref, with siblings, recursion and a loop */
    expect("{$ref: '#/components/schemas/Pos'}", "2", true, NULL);
    expect("{$ref: '#/components/schemas/Pos'}", "0", false, "minimum");
    expect("{$ref: '#/components/schemas/Pos', maximum: 5}", "6", false, "maximum");
    expect("{$ref: '#/components/schemas/Nope'}", "1", false, "names nothing");
    expect("{$ref: '#/components/schemas/Node'}", "{\"next\": {\"next\": {\"next\": 1}}}", false,
           "at $.next.next.next:");
    expect("{$ref: '#/components/schemas/Loop'}", "1", false, "deeper");
    /* boolean schemas, annotations, unknown keywords */
    expect("true", "[1]", true, NULL);
    expect("false", "1", false, "nothing is allowed");
    expect("{description: d, title: t, examples: [1], format: int32, x-any: 1}", "\"s\"", true,
           NULL);
    expect("{maxProperties: 1}", "{}", false, "unsupported keyword 'maxProperties'");
    expect("{type: object, properties: {a: {if: {}}}}", "{\"a\": 1}", false,
           "unsupported keyword 'if'");
    json_decref(vdoc);
    vdoc = NULL;
}

/* ---- 4. replies ------------------------------------------------------------ */

static const char reply_doc[] =
    "openapi: 3.1.0\n"
    "paths:\n"
    "  /v1/things:\n"
    "    get:\n"
    "      responses:\n"
    "        '200': {$ref: '#/components/responses/Thing'}\n"
    "    head:\n"
    "      responses:\n"
    "        '200': {$ref: '#/components/responses/Thing'}\n"
    "  /v1/things/{id}:\n"
    "    get:\n"
    "      responses:\n"
    "        '200': {$ref: '#/components/responses/Thing'}\n"
    "        '429':\n"
    "          description: busy\n"
    "          headers:\n"
    "            Retry-After: {required: true, schema: {type: integer, minimum: 1}}\n"
    "          content:\n"
    "            application/json:\n"
    "              schema: {$ref: '#/components/schemas/Error'}\n"
    "    delete:\n"
    "      responses:\n"
    "        '204': {description: gone}\n"
    "  /v1/things/special:\n"
    "    get:\n"
    "      responses:\n"
    "        '200':\n"
    "          description: text\n"
    "          content:\n"
    "            text/plain: {schema: {type: string, pattern: '^ok'}}\n"
    "            image/*: {schema: {type: string, contentMediaType: 'image/*'}}\n"
    "  /v2/gadget:\n"
    "    x-method-not-allowed: '#/components/responses/OtherNotAllowed'\n"
    "    get:\n"
    "      responses:\n"
    "        '200': {$ref: '#/components/responses/Thing'}\n"
    "components:\n"
    "  headers:\n"
    "    Id: {required: true, schema: {type: string, minLength: 1}}\n"
    "  responses:\n"
    "    Thing:\n"
    "      description: a thing\n"
    "      headers:\n"
    "        X-Request-Id: {$ref: '#/components/headers/Id'}\n"
    "      content:\n"
    "        application/json:\n"
    "          schema: {type: object, required: [n], properties: {n: {type: integer}}}\n"
    "    NotFound:\n"
    "      description: no route\n"
    "      content:\n"
    "        application/json: {schema: {$ref: '#/components/schemas/Error'}}\n"
    "    MethodNotAllowed:\n"
    "      description: wrong method\n"
    "      headers:\n"
    "        Allow: {required: true, schema: {type: string}}\n"
    "      content:\n"
    "        application/json: {schema: {$ref: '#/components/schemas/Error'}}\n"
    "    OtherNotAllowed:\n"
    "      description: wrong method, another error shape\n"
    "      headers:\n"
    "        Allow: {required: true, schema: {type: string}}\n"
    "      content:\n"
    "        application/json:\n"
    "          schema: {type: object, required: [error], properties: {error: {type: string}}}\n"
    "  schemas:\n"
    "    Error:\n"
    "      type: object\n"
    "      required: [error]\n"
    "      properties: {error: {type: object, required: [code]}}\n";

#define JSON_HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
#define ERROR_BODY "{\"error\": {\"code\": \"x\"}}"

/* checks one reply; want: pass or fail; a failure's why must contain where */
static void reply(const json_t *doc, const char *method, const char *path, int status,
                  const char *head, const char *body, bool want, const char *where)
{
    openapi_reply r = {.method = method, .path = path, .status = status, .head = head,
                       .body = body, .body_len = body ? strlen(body) : 0};
    char why[2048] = "", key[256] = "";
    bool got = openapi_check_reply(doc, &r, key, sizeof key, why, sizeof why);
    CHECKF(got == want, "%s %s %d: %s, want %s (%s)", method, path, status,
           got ? "passed" : "failed", want ? "pass" : "fail", why);
    if (!want && where)
        CHECKF(strstr(why, where), "%s %s %d: the failure \"%s\" does not name %s", method, path,
               status, why, where);
    if (!want)
        CHECKF(strstr(why, method) && strstr(why, path), "the failure \"%s\" does not name the "
               "method and path", why);
}

static void test_replies(void)
{
    json_t *d = yaml(reply_doc);
    CHECK(d != NULL);
    if (!d)
        return;
    /* templates: literal segments win; a parameter is one non-empty segment */
    CHECK(strcmp(openapi_match_path(d, "/v1/things/special"), "/v1/things/special") == 0);
    CHECK(strcmp(openapi_match_path(d, "/v1/things/7?x=/y"), "/v1/things/{id}") == 0);
    CHECK(strcmp(openapi_match_path(d, "/v1/things"), "/v1/things") == 0);
    CHECK(openapi_match_path(d, "/v1/things/") == NULL);
    CHECK(openapi_match_path(d, "/v1/things/7/more") == NULL);
    CHECK(openapi_match_path(d, "/v1/thing") == NULL);
    CHECK(openapi_match_path(d, "/v1/things//") == NULL);
    CHECK(openapi_match_path(d, "/v1/things/a%2Fb") == NULL); /* decoded: two segments */
    CHECK(strcmp(openapi_match_path(d, "/v1/things/%73pecial"), "/v1/things/special") == 0);
    CHECK(strcmp(openapi_match_path(d, "/v1/things/x%00y"), "/v1/things/{id}") == 0);
    CHECK(strcmp(openapi_match_path(d, "/v1/things/x%2"), "/v1/things/{id}") == 0);

    const char *ok_head = JSON_HEAD "X-Request-Id: abc\r\n";
    reply(d, "GET", "/v1/things/7", 200, ok_head, "{\"n\": 1}", true, NULL);
    reply(d, "GET", "/v1/things?limit=2", 200, ok_head, "{\"n\": 1}", true, NULL);
    /* key for coverage counts */
    openapi_reply r = {.method = "GET", .path = "/v1/things/7", .status = 200, .head = ok_head,
                       .body = "{\"n\": 1}", .body_len = 8};
    char why[512], key[256];
    CHECK(openapi_check_reply(d, &r, key, sizeof key, why, sizeof why) &&
          strcmp(key, "GET /v1/things/{id} 200") == 0);
    /* statuses */
    reply(d, "GET", "/v1/things/7", 404, ok_head, ERROR_BODY, false, "status 404 is not documented");
    reply(d, "DELETE", "/v1/things/7", 204, "HTTP/1.1 204 No Content\r\n", NULL, true, NULL);
    reply(d, "DELETE", "/v1/things/7", 204, JSON_HEAD, "{}", false, "no content");
    /* headers */
    reply(d, "GET", "/v1/things/7", 200, JSON_HEAD, "{\"n\": 1}", false,
          "required header X-Request-Id is missing");
    reply(d, "GET", "/v1/things/7", 200, JSON_HEAD "x-request-id: abc\r\n", "{\"n\": 1}", true,
          NULL); /* names are case-insensitive */
    reply(d, "GET", "/v1/things/7", 200, JSON_HEAD "X-Request-Id: \r\n", "{\"n\": 1}", false,
          "minLength");
    reply(d, "GET", "/v1/things/7", 429, JSON_HEAD "Retry-After: 2\r\n", ERROR_BODY, true, NULL);
    reply(d, "GET", "/v1/things/7", 429, JSON_HEAD "Retry-After: 0\r\n", ERROR_BODY, false,
          "Retry-After");
    reply(d, "GET", "/v1/things/7", 429, JSON_HEAD "Retry-After: soon\r\n", ERROR_BODY, false,
          "Retry-After");
    /* content types and bodies */
    reply(d, "GET", "/v1/things/7", 200, "HTTP/1.1 200 OK\r\nX-Request-Id: a\r\n", "{\"n\": 1}",
          false, "no Content-Type");
    reply(d, "GET", "/v1/things/7", 200,
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-Id: a\r\n", "{\"n\": 1}",
          false, "text/plain is none of");
    reply(d, "GET", "/v1/things/7", 200, ok_head, "{\"n\": 1", false, "not JSON");
    reply(d, "GET", "/v1/things/7", 200, ok_head, "{\"n\": 1, \"n\": 2}", false, "not JSON");
    reply(d, "GET", "/v1/things/7", 200, ok_head, "{\"n\": \"1\"}", false, "at $.n:");
    reply(d, "GET", "/v1/things/7", 200, ok_head, "", false, "not JSON");
    reply(d, "GET", "/v1/things/special", 200, "Content-Type: text/plain; version=1\r\n",
          "ok fine", true, NULL);
    reply(d, "GET", "/v1/things/special", 200, "Content-Type: text/plain\r\n", "not ok", false,
          "pattern");
    reply(d, "GET", "/v1/things/special", 200, "Content-Type: image/png\r\n", "\x89PNG", true,
          NULL);
    reply(d, "GET", "/v1/things/special", 200, "Content-Type: imagery/png\r\n", "x", false,
          "none of");
    /* HEAD: headers only */
    reply(d, "HEAD", "/v1/things", 200, ok_head, NULL, true, NULL);
    reply(d, "HEAD", "/v1/things", 200, ok_head, "{\"n\": 1}", false, "HEAD reply with a body");
    /* unrouted: NotFound */
    reply(d, "GET", "/nowhere", 404, JSON_HEAD, ERROR_BODY, true, NULL);
    reply(d, "GET", "/nowhere", 200, JSON_HEAD, "{\"n\": 1}", false, "no path template");
    reply(d, "GET", "/nowhere", 404, JSON_HEAD, "{\"n\": 1}", false, "required member 'error'");
    /* undocumented method: MethodNotAllowed, Allow exactly the documented ones */
    reply(d, "POST", "/v1/things/7", 405, JSON_HEAD "Allow: GET, DELETE\r\n", ERROR_BODY, true,
          NULL);
    reply(d, "POST", "/v1/things/7", 405, JSON_HEAD "Allow: DELETE, GET\r\n", ERROR_BODY, true,
          NULL);
    reply(d, "POST", "/v1/things/7", 405, JSON_HEAD "Allow: GET\r\n", ERROR_BODY, false,
          "Allow lists 1 methods, the document 2");
    reply(d, "POST", "/v1/things/7", 405, JSON_HEAD "Allow: GET, DELETE, PUT\r\n", ERROR_BODY,
          false, "Allow lists PUT");
    reply(d, "POST", "/v1/things/7", 405, JSON_HEAD, ERROR_BODY, false, "Allow");
    reply(d, "POST", "/v1/things/7", 400, JSON_HEAD, ERROR_BODY, false, "not 405");
    /* a path item naming its own 405 (x-method-not-allowed): that one, not the default */
    reply(d, "PUT", "/v2/gadget", 405, JSON_HEAD "Allow: GET\r\n", "{\"error\": \"no\"}", true,
          NULL);
    reply(d, "PUT", "/v2/gadget", 405, JSON_HEAD "Allow: GET\r\n", ERROR_BODY, false, "at $.error");
    reply(d, "PUT", "/v1/things/7", 405, JSON_HEAD "Allow: GET, DELETE\r\n",
          "{\"error\": \"no\"}", false, "at $.error");
    json_decref(d);
}

/* ---- 5. the real document -------------------------------------------------- */

static int refs_checked, patterns_checked, examples_checked;

/* Every $ref names something and every pattern compiles, anywhere in v. */
static void walk(const json_t *doc, const json_t *v, const char *where)
{
    if (json_is_object(v)) {
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            if (strcmp(k, "$ref") == 0) {
                refs_checked++;
                CHECKF(json_is_string(x) && openapi_ref(doc, json_string_value(x)),
                       "%s: $ref %s names nothing", where,
                       json_is_string(x) ? json_string_value(x) : "(not a string)");
            } else if (strcmp(k, "pattern") == 0 && json_is_string(x)) {
                regex_t re;
                patterns_checked++;
                int rc = regcomp(&re, json_string_value(x), REG_EXTENDED | REG_NOSUB);
                CHECKF(rc == 0, "%s: pattern %s is not a POSIX extended regex", where,
                       json_string_value(x));
                if (rc == 0)
                    regfree(&re);
            }
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", where, k);
            walk(doc, x, sub);
        }
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *x;
        json_array_foreach(v, i, x) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%zu", where, i);
            walk(doc, x, sub);
        }
    }
}

static void test_document(void)
{
    const char *root = getenv("VITFIT_SOURCE_ROOT");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/api/openapi.yaml", root ? root : ".");
    json_t *doc = openapi_yaml_load(path, err, sizeof err);
    CHECKF(doc != NULL, "%s", err);
    if (!doc)
        return;
    CHECK(strcmp(json_string_value(json_object_get(doc, "openapi")), "3.1.0") == 0);
    walk(doc, doc, "#");
    /* every schema's examples match it */
    const char *name;
    const json_t *schema;
    json_object_foreach(json_object_get(json_object_get(doc, "components"), "schemas"), name,
                        schema) {
        size_t i;
        const json_t *ex;
        json_array_foreach(json_object_get(schema, "examples"), i, ex) {
            char why[1024];
            examples_checked++;
            CHECKF(openapi_validate(doc, schema, ex, why, sizeof why),
                   "components/schemas/%s: example %zu does not match: %s", name, i, why);
        }
    }
    /* every operation's responses resolve to objects with a description */
    const char *p;
    const json_t *item;
    int operations = 0;
    json_object_foreach(json_object_get(doc, "paths"), p, item) {
        const char *m;
        const json_t *op;
        json_object_foreach((json_t *)item, m, op) {
            if (strcmp(m, "x-method-not-allowed") == 0) { /* a path's own 405 */
                const json_t *r = openapi_ref(doc, json_string_value(op));
                CHECKF(r && json_is_string(json_object_get(r, "description")),
                       "%s: x-method-not-allowed names no response", p);
                continue;
            }
            if (strcmp(m, "parameters") == 0)
                continue;
            operations++;
            const json_t *responses = json_object_get(op, "responses");
            CHECKF(json_object_size(responses) > 0, "%s %s: no responses", m, p);
            const char *status;
            const json_t *resp;
            json_object_foreach((json_t *)responses, status, resp) {
                const json_t *ref = json_object_get(resp, "$ref");
                const json_t *r = ref ? openapi_ref(doc, json_string_value(ref)) : resp;
                CHECKF(json_is_string(json_object_get(r, "description")),
                       "%s %s %s: the response has no description", m, p, status);
            }
        }
    }
    fprintf(stderr, "api/openapi.yaml: %d operations, %d $refs, %d patterns, %d examples checked\n",
            operations, refs_checked, patterns_checked, examples_checked);
    CHECK(operations > 20 && refs_checked > 100 && patterns_checked > 5 && examples_checked > 3);
    json_decref(doc);
}

int main(void)
{
    test_yaml();
    test_ref();
    test_validator();
    test_replies();
    test_document();
    return check_result();
}
