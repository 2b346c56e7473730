/*
 * test_api_classify.c - POST /v1/classify's parsing and reply building
 * (api/classify.h), without a server.
 *
 * 1. JSON: every accepted shape gives the request it should (each image's
 *    kind and bytes or URL, each task name, top_k, the two form flags), and
 *    every refusal in classify.h's table answers its status and error code,
 *    with the field named in the message.
 * 2. Base64: padding present and absent, 1/2/3-byte tails, wrapped lines,
 *    both alphabets, all 256 byte values, every malformed spelling, and the
 *    size limit at its edge (padded and not).
 * 3. multipart/form-data fields and raw bodies: the same, field by field.
 * 4. api_classify_result: softmax values against hand-computed ones, order,
 *    ties, top_k > K, K = 1, non-finite logits, labels that are not UTF-8,
 *    the scores equal to vit_softmax bit for bit, and the top-k selection
 *    against the CLI's (brute force) on random logits with many ties.
 * 5. api_classify_reply: the four shapes, results in the right places, a
 *    NULL result.
 * Under ASan (test.sh's asan stage) every path also runs leak-checked.
 */
#include "classify.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "vit.h"

static const api_classify_limits lim = {
    .max_images = 4, .max_image_bytes = 64, .max_tasks = 4, .max_top_k = 100};

/* ---- helpers ------------------------------------------------------------ */

/* Checks a refused request: rc -1, q emptied, r's status and error.code, and
 * a message that contains needle (NULL: anything). */
static void expect_error_(int line, const char *what, int rc, const api_classify_req *q,
                          api_reply *r, int status, const char *code, const char *needle)
{
    json_error_t jerr;
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
    const char *got_code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    fprintf(stderr, "  %-40.40s -> %d %s: %s\n", what, r->status, got_code ? got_code : "?",
            msg ? msg : "?");
    CHECKF(rc == -1, "line %d: %s: rc %d", line, what, rc);
    CHECKF(q->images == NULL && q->num_images == 0 && q->tasks == NULL && q->num_tasks == 0,
           "line %d: %s: the request is not emptied", line, what);
    CHECKF(r->status == status, "line %d: %s: status %d, want %d", line, what, r->status, status);
    CHECKF(got_code && strcmp(got_code, code) == 0, "line %d: %s: code %s, want %s", line, what,
           got_code ? got_code : "(none)", code);
    CHECKF(!needle || (msg && strstr(msg, needle)), "line %d: %s: message '%s' lacks '%s'", line,
           what, msg ? msg : "(none)", needle ? needle : "");
    json_decref(j);
    api_reply_free(r);
}
#define expect_error(...) expect_error_(__LINE__, __VA_ARGS__)

/* Parses a NUL-terminated JSON body with limits l; rc. */
static int parse_json_l(api_classify_req *q, const char *body, const api_classify_limits *l,
                        api_reply *r)
{
    api_reply_init(r);
    return api_classify_from_json(q, body, strlen(body), l, r);
}

static int parse_json(api_classify_req *q, const char *body, api_reply *r)
{
    return parse_json_l(q, body, &lim, r);
}

/* JSON body {"image": "<image>"} (image inserted verbatim). */
static char *image_body(const char *image)
{
    size_t n = strlen(image) + 32;
    char *b = malloc(n);
    VIT_ASSERT(b);
    snprintf(b, n, "{\"image\": \"%s\"}", image);
    return b;
}

/* Is image i of q the bytes want[0..n)? */
static bool image_is(const api_classify_req *q, int i, const void *want, size_t n)
{
    return i < q->num_images && q->images[i].kind == API_IMAGE_BYTES && q->images[i].len == n &&
           q->images[i].bytes && memcmp(q->images[i].bytes, want, n) == 0 && !q->images[i].url;
}

static bool url_is(const api_classify_req *q, int i, const char *want)
{
    return i < q->num_images && q->images[i].kind == API_IMAGE_URL && q->images[i].url &&
           strcmp(q->images[i].url, want) == 0 && !q->images[i].bytes;
}

/* Are q's tasks exactly the n names of want? */
static bool tasks_are(const api_classify_req *q, int n, const char *const *want)
{
    if (q->num_tasks != n)
        return false;
    for (int i = 0; i < n; i++)
        if (strcmp(q->tasks[i], want[i]) != 0)
            return false;
    return true;
}

/* ---- 1. JSON: accepted shapes ------------------------------------------- */

static void test_json_accepted(void)
{
    api_classify_req q;
    api_reply r;

    /* one bare-base64 image, all defaults */
    CHECK(parse_json(&q, "{\"image\": \"aGVsbG8=\"}", &r) == 0);
    CHECK(q.num_images == 1 && image_is(&q, 0, "hello", 5));
    CHECK(q.num_tasks == 0 && q.tasks == NULL && q.top_k == 5);
    CHECK(!q.images_form && !q.tasks_form && r.status == 0 && r.body == NULL);
    api_classify_req_free(&q);
    api_classify_req_free(&q); /* twice is safe */

    /* a URL, one task, top_k */
    CHECK(parse_json(&q, "{\"top_k\": 3, \"task\": \"cats.v2\", \"image\": "
                         "\"https://example.com/a.jpg?x=1\"}", &r) == 0);
    CHECK(q.num_images == 1 && url_is(&q, 0, "https://example.com/a.jpg?x=1"));
    CHECK(tasks_are(&q, 1, (const char *[]){"cats.v2"}) && q.top_k == 3);
    CHECK(!q.images_form && !q.tasks_form);
    api_classify_req_free(&q);

    /* the scheme in any case, kept verbatim */
    CHECK(parse_json(&q, "{\"image\": \"HtTp://Example.com/A\"}", &r) == 0);
    CHECK(url_is(&q, 0, "HtTp://Example.com/A"));
    api_classify_req_free(&q);

    /* data URIs: any media type, parameters, any case of the marker */
    static const char *const uris[] = {
        "data:image/png;base64,aGVsbG8=", "DATA:image/jpeg;BASE64,aGVsbG8",
        "data:;base64,aGVsbG8=", "data:image/png;name=a.png;base64,aGVs\\nbG8=",
        "data:application/octet-stream;base64,aGVsbG8=",
    };
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        char *b = image_body(uris[i]);
        int rc = parse_json(&q, b, &r);
        CHECKF(rc == 0 && image_is(&q, 0, "hello", 5), "%s", uris[i]);
        api_classify_req_free(&q);
        api_reply_free(&r);
        free(b);
    }

    /* images + tasks: both forms, every value in order */
    CHECK(parse_json(&q, "{\"images\": [\"aGk=\", \"http://h/x.png\", \"data:image/gif;base64,"
                         "eW8=\"], \"tasks\": [\"b\", \"a\", \"c-1\"], \"top_k\": 100}", &r) == 0);
    CHECK(q.num_images == 3 && image_is(&q, 0, "hi", 2) && url_is(&q, 1, "http://h/x.png") &&
          image_is(&q, 2, "yo", 2));
    CHECK(tasks_are(&q, 3, (const char *[]){"b", "a", "c-1"}));
    CHECK(q.images_form && q.tasks_form && q.top_k == 100);
    api_classify_req_free(&q);

    /* one-element arrays still ask for the list replies */
    CHECK(parse_json(&q, "{\"images\": [\"aGk=\"], \"tasks\": [\"x\"], \"top_k\": 1}", &r) == 0);
    CHECK(q.num_images == 1 && image_is(&q, 0, "hi", 2) && tasks_are(&q, 1, (const char *[]){"x"}));
    CHECK(q.images_form && q.tasks_form && q.top_k == 1);
    api_classify_req_free(&q);

    /* null counts as absent */
    CHECK(parse_json(&q, "{\"image\": \"aGk=\", \"images\": null, \"task\": null, \"tasks\": null,"
                         " \"top_k\": null}", &r) == 0);
    CHECK(q.num_images == 1 && image_is(&q, 0, "hi", 2) && q.num_tasks == 0 && q.top_k == 5 &&
          !q.images_form && !q.tasks_form);
    api_classify_req_free(&q);

    /* exactly the limits: 4 images, 4 tasks */
    CHECK(parse_json(&q, "{\"images\": [\"YQ==\", \"Yg==\", \"Yw==\", \"ZA==\"], "
                         "\"tasks\": [\"t1\", \"t2\", \"t3\", \"t4\"]}", &r) == 0);
    CHECK(q.num_images == 4 && image_is(&q, 0, "a", 1) && image_is(&q, 1, "b", 1) &&
          image_is(&q, 2, "c", 1) && image_is(&q, 3, "d", 1));
    CHECK(tasks_are(&q, 4, (const char *[]){"t1", "t2", "t3", "t4"}));
    api_classify_req_free(&q);

    /* a body that is not NUL-terminated: only len bytes are read */
    static const char trailing[] = "{\"image\": \"aGk=\"}garbage";
    api_reply_init(&r);
    CHECK(api_classify_from_json(&q, trailing, 17, &lim, &r) == 0 && image_is(&q, 0, "hi", 2));
    api_classify_req_free(&q);

    /* a default top_k above a smaller max_top_k is that max */
    api_classify_limits small = lim;
    small.max_top_k = 3;
    CHECK(parse_json_l(&q, "{\"image\": \"aGk=\"}", &small, &r) == 0 && q.top_k == 3);
    api_classify_req_free(&q);
}

/* ---- 1. JSON: refusals -------------------------------------------------- */

/* One refused JSON body: status, code, and a needle of the message. */
typedef struct json_case {
    const char *body;
    int status;
    const char *code, *needle;
} json_case;

static void test_json_refused(void)
{
    static const json_case cases[] = {
        /* not JSON, not an object */
        {"{\"image\": ", 400, "bad_json", "line 1"},
        {"{\"image\": \"aGk=\",\n \"top_k\": 5,,}", 400, "bad_json", "line 2"},
        {"", 400, "bad_json", "line"},
        {"[\"aGk=\"]", 400, "bad_json", "object"},
        {"{\"image\": \"aGk=\", \"image\": \"aGk=\"}", 400, "bad_json", "duplicate"},
        /* keys */
        {"{\"image\": \"aGk=\", \"imgae\": 1}", 400, "invalid_request", "imgae"},
        {"{\"image\": \"aGk=\", \"Task\": \"a\"}", 400, "invalid_request", "Task"},
        {"{\"image\": \"aGk=\", \"images\": [\"aGk=\"]}", 400, "invalid_request", "not both"},
        {"{}", 400, "invalid_request", "no \"image\""},
        {"{\"task\": \"a\", \"top_k\": 2}", 400, "invalid_request", "no \"image\""},
        {"{\"image\": null}", 400, "invalid_request", "no \"image\""},
        {"{\"image\": \"aGk=\", \"task\": \"a\", \"tasks\": [\"b\"]}", 400, "invalid_request",
         "not both"},
        /* types */
        {"{\"image\": 12}", 400, "invalid_request", "image: must be a string"},
        {"{\"image\": [\"aGk=\"]}", 400, "invalid_request", "image: must be a string"},
        {"{\"images\": \"aGk=\"}", 400, "invalid_request", "images: must be an array"},
        {"{\"images\": [\"aGk=\", 7]}", 400, "invalid_request", "images[1]: must be a string"},
        {"{\"image\": \"aGk=\", \"top_k\": \"5\"}", 400, "invalid_request", "top_k"},
        {"{\"image\": \"aGk=\", \"top_k\": 5.0}", 400, "invalid_request", "top_k"},
        {"{\"image\": \"aGk=\", \"top_k\": true}", 400, "invalid_request", "top_k"},
        {"{\"image\": \"aGk=\", \"task\": 3}", 400, "invalid_request", "task: must be a string"},
        {"{\"image\": \"aGk=\", \"tasks\": \"a\"}", 400, "invalid_request", "tasks: must be"},
        {"{\"image\": \"aGk=\", \"tasks\": [\"a\", 1]}", 400, "invalid_request", "tasks[1]"},
        {"{\"image\": \"aGk=\", \"tasks\": [[\"a\"]]}", 400, "invalid_request", "tasks[0]"},
        /* top_k range */
        {"{\"image\": \"aGk=\", \"top_k\": 0}", 422, "invalid_top_k", "0 is not in [1, 100]"},
        {"{\"image\": \"aGk=\", \"top_k\": -1}", 422, "invalid_top_k", "-1"},
        {"{\"image\": \"aGk=\", \"top_k\": 101}", 422, "invalid_top_k", "101"},
        {"{\"image\": \"aGk=\", \"top_k\": 9223372036854775807}", 422, "invalid_top_k", NULL},
        /* counts */
        {"{\"images\": []}", 400, "invalid_request", "images: empty"},
        {"{\"images\": [\"YQ==\", \"Yg==\", \"Yw==\", \"ZA==\", \"ZQ==\"]}", 413,
         "too_many_images", "5 images, more than 4"},
        {"{\"image\": \"aGk=\", \"tasks\": []}", 400, "invalid_request", "tasks: empty"},
        {"{\"image\": \"aGk=\", \"tasks\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", 413,
         "too_many_tasks", "more than 4"},
        /* task names */
        {"{\"image\": \"aGk=\", \"task\": \"Cats\"}", 422, "invalid_task_name", "task: 'Cats'"},
        {"{\"image\": \"aGk=\", \"task\": \"\"}", 422, "invalid_task_name", "task: ''"},
        {"{\"image\": \"aGk=\", \"task\": \"../etc\"}", 422, "invalid_task_name", NULL},
        {"{\"image\": \"aGk=\", \"task\": \"a b\"}", 422, "invalid_task_name", NULL},
        {"{\"image\": \"aGk=\", \"task\": \"_a\"}", 422, "invalid_task_name", NULL},
        {"{\"image\": \"aGk=\", \"task\": \"a\\u00e9\"}", 422, "invalid_task_name", NULL},
        {"{\"image\": \"aGk=\", \"task\": "
         "\"a1234567890123456789012345678901234567890123456789012345678901234\"}",
         422, "invalid_task_name", NULL}, /* 65 bytes */
        {"{\"image\": \"aGk=\", \"tasks\": [\"ok\", \"-x\"]}", 422, "invalid_task_name",
         "tasks[1]: '-x'"},
        {"{\"image\": \"aGk=\", \"tasks\": [\"a\", \"b\", \"a\"]}", 422, "duplicate_task",
         "tasks[2]: task 'a'"},
        /* image values */
        {"{\"image\": \"\"}", 400, "invalid_request", "image: empty"},
        {"{\"images\": [\"aGk=\", \" \\n \"]}", 400, "invalid_request", "images[1]: empty"},
        {"{\"images\": [\"aGk=\", \"aGk=\", \"aGk=\", \"aGVs*G8=\"]}", 400, "invalid_base64",
         "images[3]: invalid base64: character '*' at offset 4"},
        {"{\"image\": \"aGVs\\u00e9G8=\"}", 400, "invalid_base64", "\\xC3 at offset 4"},
        {"{\"image\": \"data:image/png,aGk=\"}", 400, "invalid_data_uri", "image: "},
        {"{\"image\": \"data:image/png;base64\"}", 400, "invalid_data_uri", NULL},
        {"{\"image\": \"data:base64,aGk=\"}", 400, "invalid_data_uri", NULL},
        {"{\"image\": \"data:image/png;base64x,aGk=\"}", 400, "invalid_data_uri", NULL},
        {"{\"image\": \"data:image/png;base64,\"}", 400, "invalid_request", "image: empty"},
        {"{\"image\": \"data:image/png;base64,aG*=\"}", 400, "invalid_base64", "offset 2"},
        {"{\"image\": \"http://\"}", 400, "invalid_url", NULL},
        {"{\"image\": \"https:example.com\"}", 400, "invalid_url", NULL},
        {"{\"image\": \"http:/x\"}", 400, "invalid_url", NULL},
        {"{\"image\": \"ftp://example.com/a.jpg\"}", 400, "url_forbidden", "'ftp:'"},
        {"{\"image\": \"file:///etc/passwd\"}", 400, "url_forbidden", "'file:'"},
        {"{\"images\": [\"aGk=\", \"FILE:///etc/passwd\"]}", 400, "url_forbidden", "images[1]"},
        {"{\"image\": \"gopher://x:70/\"}", 400, "url_forbidden", NULL},
        {"{\"image\": \"javascript:alert(1)\"}", 400, "url_forbidden", NULL},
        {"{\"image\": \"httpx://example.com\"}", 400, "url_forbidden", NULL},
        {"{\"image\": \"svn+ssh://example.com\"}", 400, "url_forbidden", "'svn+ssh:'"},
        {"{\"image\": \"1http://example.com\"}", 400, "invalid_base64", "':'"},
        {"{\"image\": \"ab:cd\"}", 400, "url_forbidden", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        api_classify_req q;
        api_reply r;
        int rc = parse_json(&q, cases[i].body, &r);
        expect_error(cases[i].body, rc, &q, &r, cases[i].status, cases[i].code,
                     cases[i].needle);
    }
}

/* URLs at and over API_CLASSIFY_MAX_URL. */
static void test_json_url_length(void)
{
    for (int over = 0; over <= 1; over++) {
        size_t n = API_CLASSIFY_MAX_URL + (size_t)over;
        char *url = malloc(n + 1);
        VIT_ASSERT(url);
        memcpy(url, "https://example.com/", 20);
        memset(url + 20, 'a', n - 20);
        url[n] = '\0';
        char *b = image_body(url);
        api_classify_req q;
        api_reply r;
        int rc = parse_json(&q, b, &r);
        if (over) {
            expect_error("URL of 8193 bytes", rc, &q, &r, 400, "invalid_url", "8193 bytes");
        } else {
            CHECKF(rc == 0 && url_is(&q, 0, url), "a URL of %zu bytes: rc %d", n, rc);
            api_classify_req_free(&q);
        }
        free(b);
        free(url);
    }
}

/* ---- 2. base64 ---------------------------------------------------------- */

/* Standard base64 of data[0..n), '=' padded unless !pad, a newline every
 * wrap characters when wrap > 0 (caller frees). */
static char *b64_encode(const uint8_t *data, size_t n, bool pad, size_t wrap, bool url_safe)
{
    const char *abc = url_safe ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                               : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n * 3 + 8), *o = out;
    VIT_ASSERT(out);
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < n)
            v |= data[i + 2];
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        for (size_t c = 0; c < 4; c++) {
            if (c < chars)
                *o++ = abc[(v >> (18 - 6 * c)) & 63];
            else if (pad)
                *o++ = '=';
            else
                continue;
            if (wrap && ++col % wrap == 0)
                *o++ = '\n';
        }
    }
    *o = '\0';
    return out;
}

/* Decodes text as the "image" of a JSON request (text as the JSON string's
 * content, escapes allowed) with limits l; 0 with the bytes in *out (caller
 * frees) or the reply's status. */
static int decode_l(const char *text, const api_classify_limits *l, uint8_t **out, size_t *len,
                    char code[32])
{
    json_t *body = json_pack("{s:s}", "image", text);
    char *s = json_dumps(body, 0);
    VIT_ASSERT(body && s);
    api_classify_req q;
    api_reply r;
    int rc = parse_json_l(&q, s, l, &r);
    *out = NULL;
    *len = 0;
    code[0] = '\0';
    if (rc == 0) {
        VIT_ASSERT(q.num_images == 1 && q.images[0].kind == API_IMAGE_BYTES);
        *out = q.images[0].bytes;
        *len = q.images[0].len;
        q.images[0].bytes = NULL;
        api_classify_req_free(&q);
    } else {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        snprintf(code, 32, "%s",
                 json_string_value(json_object_get(json_object_get(j, "error"), "code")));
        json_decref(j);
        rc = r.status;
    }
    api_reply_free(&r);
    json_decref(body);
    free(s);
    return rc;
}

static int decode(const char *text, uint8_t **out, size_t *len, char code[32])
{
    return decode_l(text, &lim, out, len, code);
}

static void test_base64(void)
{
    static const struct {
        const char *text, *want; /* want NULL: refused with status/code */
        int status;
        const char *code;
    } cases[] = {
        /* 1-, 2-, 3-byte tails, padded and not */
        {"Zg==", "f", 0, NULL}, {"Zm8=", "fo", 0, NULL}, {"Zm9v", "foo", 0, NULL},
        {"Zg", "f", 0, NULL}, {"Zm8", "fo", 0, NULL}, {"Zm9vYg==", "foob", 0, NULL},
        {"Zm9vYmE=", "fooba", 0, NULL}, {"Zm9vYmFy", "foobar", 0, NULL},
        {"Zm9vYg", "foob", 0, NULL},
        /* whitespace anywhere, as encoders wrap */
        {"Zm9v\nYmFy\r\n", "foobar", 0, NULL}, {" Zm 9v\tYg=\n= ", "foob", 0, NULL},
        {"\r\nZm8=\r\n", "fo", 0, NULL},
        /* unused bits of the last character ignored */
        {"Zh==", "f", 0, NULL}, {"Zm9=", "fo", 0, NULL},
        /* broken padding and lengths */
        {"Z", NULL, 400, "invalid_base64"}, {"Zm9vY", NULL, 400, "invalid_base64"},
        {"Zg=", NULL, 400, "invalid_base64"}, {"Zg===", NULL, 400, "invalid_base64"},
        {"Zm9v=", NULL, 400, "invalid_base64"}, {"Zm9v==", NULL, 400, "invalid_base64"},
        {"Z===", NULL, 400, "invalid_base64"}, {"=", NULL, 400, "invalid_base64"},
        {"==", NULL, 400, "invalid_base64"}, {"====", NULL, 400, "invalid_base64"},
        {"Zg==Zg==", NULL, 400, "invalid_base64"}, {"Zg=a", NULL, 400, "invalid_base64"},
        {"Z=g=", NULL, 400, "invalid_base64"},
        /* characters outside both alphabets */
        {"Zm9v.mFy", NULL, 400, "invalid_base64"}, {"Zm9v\\YmFy", NULL, 400, "invalid_base64"},
        {"Zm9v\vYmFy", NULL, 400, "invalid_base64"}, {"Zm9v\x7fYmFy", NULL, 400, "invalid_base64"},
        {"Zm9v\xc3\xa9", NULL, 400, "invalid_base64"}, {"Zm9v%3D", NULL, 400, "invalid_base64"},
        /* nothing at all */
        {"  \n ", NULL, 400, "invalid_request"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *got;
        size_t len;
        char code[32];
        int rc = decode(cases[i].text, &got, &len, code);
        if (cases[i].want) {
            size_t n = strlen(cases[i].want);
            CHECKF(rc == 0 && len == n && memcmp(got, cases[i].want, n) == 0,
                   "base64 '%s': rc %d len %zu, want '%s'", cases[i].text, rc, len,
                   cases[i].want);
        } else {
            CHECKF(rc == cases[i].status && strcmp(code, cases[i].code) == 0,
                   "base64 case %zu: rc %d code %s, want %d %s", i, rc, code, cases[i].status,
                   cases[i].code);
        }
        free(got);
    }

    /* the two alphabets: 0xFB 0xFF is "+/8=" or "-_8=", either per character */
    static const char *const both[] = {"+/8=", "-_8=", "+_8", "-/8="};
    for (size_t i = 0; i < 4; i++) {
        uint8_t *got;
        size_t len;
        char code[32];
        int rc = decode(both[i], &got, &len, code);
        CHECKF(rc == 0 && len == 2 && got[0] == 0xFB && got[1] == 0xFF, "'%s': rc %d", both[i],
               rc);
        free(got);
    }

    /* every byte value, every tail, wrapped at 76 and not, both alphabets */
    api_classify_limits big = lim;
    big.max_image_bytes = 1024;
    uint8_t all[259];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 256; n <= 259; n++)
        for (int variant = 0; variant < 8; variant++) {
            char *text = b64_encode(all, n, variant & 1, variant & 2 ? 76 : 0, variant & 4);
            uint8_t *got;
            size_t len;
            char code[32];
            int rc = decode_l(text, &big, &got, &len, code);
            CHECKF(rc == 0 && len == n && memcmp(got, all, n) == 0,
                   "%zu bytes, variant %d: rc %d len %zu", n, variant, rc, len);
            free(got);
            free(text);
        }

    /* the size limit (64 bytes) from the encoded length: 64 decoded bytes
     * pass, 65 are refused with or without padding, however wrapped */
    for (size_t n = 63; n <= 66; n++)
        for (int variant = 0; variant < 4; variant++) {
            char *text = b64_encode(all, n, variant & 1, variant & 2 ? 4 : 0, false);
            uint8_t *got;
            size_t len;
            char code[32];
            int rc = decode(text, &got, &len, code);
            if (n <= 64)
                CHECKF(rc == 0 && len == n && memcmp(got, all, n) == 0, "%zu bytes: rc %d", n,
                       rc);
            else
                CHECKF(rc == 413 && strcmp(code, "image_too_large") == 0,
                       "%zu bytes, variant %d: rc %d %s, want 413 image_too_large", n, variant,
                       rc, code);
            free(got);
            free(text);
        }
    /* and inside a data URI */
    char *text = b64_encode(all, 65, true, 0, false), uri[256];
    snprintf(uri, sizeof uri, "data:image/png;base64,%s", text);
    uint8_t *got;
    size_t len;
    char code[32];
    int rc = decode(uri, &got, &len, code);
    CHECKF(rc == 413 && strcmp(code, "image_too_large") == 0, "data URI of 65 bytes: %d %s", rc,
           code);
    free(got);
    free(text);
}

/* ---- 3. multipart/form-data --------------------------------------------- */

#define FILE_PART(name, s) {name, (const uint8_t *)(s), sizeof(s) - 1, true}
#define TEXT_PART(name, s) {name, (const uint8_t *)(s), sizeof(s) - 1, false}

static int parse_form(api_classify_req *q, const api_form_part *parts, int n, api_reply *r)
{
    api_reply_init(r);
    return api_classify_from_form(q, parts, n, &lim, r);
}

static void test_form(void)
{
    api_classify_req q;
    api_reply r;
    static const uint8_t png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const size_t png_len = sizeof png - 1;

    /* one file, task, top_k */
    api_form_part one[] = {
        TEXT_PART("task", "dogs"), {"image", png, png_len, true}, TEXT_PART("top_k", "7")};
    CHECK(parse_form(&q, one, 3, &r) == 0);
    CHECK(q.num_images == 1 && image_is(&q, 0, png, png_len) && q.images[0].bytes != png);
    CHECK(tasks_are(&q, 1, (const char *[]){"dogs"}) && q.top_k == 7);
    CHECK(!q.images_form && !q.tasks_form);
    api_classify_req_free(&q);

    /* two files, the task field twice */
    api_form_part two[] = {FILE_PART("image", "AAA"), TEXT_PART("task", "x"),
                           FILE_PART("image", "BB"), TEXT_PART("task", "y")};
    CHECK(parse_form(&q, two, 4, &r) == 0);
    CHECK(q.num_images == 2 && image_is(&q, 0, "AAA", 3) && image_is(&q, 1, "BB", 2));
    CHECK(tasks_are(&q, 2, (const char *[]){"x", "y"}) && q.top_k == 5);
    CHECK(q.images_form && q.tasks_form);
    api_classify_req_free(&q);

    /* "tasks" comma-separated, spaces trimmed; a single name still a list */
    api_form_part list[] = {FILE_PART("image", "A"), TEXT_PART("tasks", "a, b ,c")};
    CHECK(parse_form(&q, list, 2, &r) == 0);
    CHECK(tasks_are(&q, 3, (const char *[]){"a", "b", "c"}) && q.tasks_form && !q.images_form);
    api_classify_req_free(&q);
    api_form_part list1[] = {FILE_PART("image", "A"), TEXT_PART("tasks", "solo")};
    CHECK(parse_form(&q, list1, 2, &r) == 0);
    CHECK(tasks_are(&q, 1, (const char *[]){"solo"}) && q.tasks_form);
    api_classify_req_free(&q);

    /* non-file image fields: a URL or data URI as text, anything else as bytes */
    api_form_part text[] = {TEXT_PART("image", "HTTPS://h/a.jpg"),
                            TEXT_PART("image", "data:image/png;base64,aGk="),
                            {"image", png, png_len, false}, TEXT_PART("image", "aGk=")};
    CHECK(parse_form(&q, text, 4, &r) == 0);
    CHECK(q.num_images == 4 && url_is(&q, 0, "HTTPS://h/a.jpg") && image_is(&q, 1, "hi", 2) &&
          image_is(&q, 2, png, png_len) && image_is(&q, 3, "aGk=", 4));
    CHECK(q.images_form);
    api_classify_req_free(&q);
    /* a file field that holds a URL is the file's bytes, never fetched */
    api_form_part file_url[] = {FILE_PART("image", "http://h/x")};
    CHECK(parse_form(&q, file_url, 1, &r) == 0 && image_is(&q, 0, "http://h/x", 10));
    api_classify_req_free(&q);

    /* empty task / tasks / top_k fields count as absent */
    api_form_part empty[] = {FILE_PART("image", "A"), TEXT_PART("task", ""),
                             TEXT_PART("top_k", ""), TEXT_PART("tasks", "")};
    CHECK(parse_form(&q, empty, 4, &r) == 0);
    CHECK(q.num_tasks == 0 && q.top_k == 5 && !q.tasks_form);
    api_classify_req_free(&q);

    /* refusals */
    static const struct {
        api_form_part parts[6];
        int n, status;
        const char *code, *needle;
    } bad[] = {
        {{TEXT_PART("task", "a")}, 1, 400, "invalid_request", "no \"image\""},
        {{{0}}, 0, 400, "invalid_request", "no \"image\""},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "abc")}, 2, 400, "invalid_request",
         "top_k: 'abc' is not an integer"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "5x")}, 2, 400, "invalid_request", "top_k"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", " 5")}, 2, 400, "invalid_request", "top_k"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "-")}, 2, 400, "invalid_request", "top_k"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "0")}, 2, 422, "invalid_top_k", "0"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "-3")}, 2, 422, "invalid_top_k", "-3"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "101")}, 2, 422, "invalid_top_k", "101"},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "99999999999999999999999")}, 2, 422,
         "invalid_top_k", NULL},
        {{FILE_PART("image", "A"), TEXT_PART("top_k", "5"), TEXT_PART("top_k", "6")}, 3, 400,
         "invalid_request", "\"top_k\" is given twice"},
        {{FILE_PART("image", "A"), TEXT_PART("tasks", "a"), TEXT_PART("tasks", "b")}, 3, 400,
         "invalid_request", "\"tasks\" is given twice"},
        {{FILE_PART("image", "A"), TEXT_PART("task", "a"), TEXT_PART("tasks", "b")}, 3, 400,
         "invalid_request", "not both"},
        {{FILE_PART("image", "A"), TEXT_PART("file", "a")}, 2, 400, "invalid_request", "'file'"},
        {{FILE_PART("image", "A"), {NULL, NULL, 0, false}}, 2, 400, "invalid_request",
         "unknown form field"},
        {{FILE_PART("image", "A"), FILE_PART("image", "B"), FILE_PART("image", "C"),
          FILE_PART("image", "D"), FILE_PART("image", "E")},
         5, 413, "too_many_images", "5 image fields"},
        {{FILE_PART("image", "A"), {"image", NULL, 0, true}}, 2, 400, "invalid_request",
         "image[1]: empty"},
        {{FILE_PART("image",
                    "0123456789012345678901234567890123456789012345678901234567890123X")},
         1, 413, "image_too_large", "image: the image is 65 bytes"},
        {{TEXT_PART("image", "ftp://h/a")}, 1, 400, "url_forbidden", NULL},
        {{TEXT_PART("image", "data:image/png;base64,a*")}, 1, 400, "invalid_base64", NULL},
        {{TEXT_PART("image", "http://")}, 1, 400, "invalid_url", NULL},
        {{TEXT_PART("image", "http://h/\0x")}, 1, 400, "invalid_url", "NUL"},
        {{FILE_PART("image", "A"), TEXT_PART("task", "Dogs")}, 2, 422, "invalid_task_name",
         "task: 'Dogs'"},
        {{FILE_PART("image", "A"), TEXT_PART("task", "a\0b")}, 2, 422, "invalid_task_name",
         NULL},
        {{FILE_PART("image", "A"), TEXT_PART("task", "a"), TEXT_PART("task", "a")}, 3, 422,
         "duplicate_task", NULL},
        {{FILE_PART("image", "A"), TEXT_PART("tasks", "a,,b")}, 2, 422, "invalid_task_name",
         "tasks[1]: ''"},
        {{FILE_PART("image", "A"), TEXT_PART("tasks", "a,b,")}, 2, 422, "invalid_task_name",
         "tasks[2]"},
        {{FILE_PART("image", "A"), TEXT_PART("tasks", "a,b,a")}, 2, 422, "duplicate_task",
         "tasks[2]"},
        {{FILE_PART("image", "A"), TEXT_PART("tasks", "a,b,c,d,e")}, 2, 413, "too_many_tasks",
         NULL},
        {{FILE_PART("image", "A"), TEXT_PART("task", "a"), TEXT_PART("task", "b"),
          TEXT_PART("task", "c"), TEXT_PART("task", "d"), TEXT_PART("task", "e")},
         6, 413, "too_many_tasks", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[48];
        snprintf(what, sizeof what, "form case %zu", i);
        int rc = parse_form(&q, bad[i].parts, bad[i].n, &r);
        expect_error(what, rc, &q, &r, bad[i].status, bad[i].code, bad[i].needle);
    }
}

/* ---- 3. raw bodies ------------------------------------------------------ */

static int parse_raw(api_classify_req *q, const void *body, size_t len, const char *task,
                     const char *tasks, const char *top_k, api_reply *r)
{
    api_reply_init(r);
    return api_classify_from_raw(q, body, len, task, tasks, top_k, &lim, r);
}

static void test_raw(void)
{
    api_classify_req q;
    api_reply r;
    uint8_t body[16] = "\xff\xd8\xff\xe0 jpeg bytes";

    CHECK(parse_raw(&q, body, sizeof body, NULL, NULL, NULL, &r) == 0);
    uint8_t copy[16];
    memcpy(copy, body, sizeof body);
    body[0] = 0; /* the body is copied */
    CHECK(q.num_images == 1 && image_is(&q, 0, copy, sizeof copy) && q.num_tasks == 0 &&
          q.top_k == 5 && !q.images_form && !q.tasks_form);
    api_classify_req_free(&q);

    CHECK(parse_raw(&q, body, 3, "birds", NULL, "12", &r) == 0);
    CHECK(image_is(&q, 0, body, 3) && tasks_are(&q, 1, (const char *[]){"birds"}) &&
          q.top_k == 12 && !q.tasks_form);
    api_classify_req_free(&q);

    CHECK(parse_raw(&q, body, 3, NULL, "a,b", NULL, &r) == 0);
    CHECK(tasks_are(&q, 2, (const char *[]){"a", "b"}) && q.tasks_form && !q.images_form);
    api_classify_req_free(&q);

    /* empty arguments count as absent */
    CHECK(parse_raw(&q, body, 3, "", "", "", &r) == 0);
    CHECK(q.num_tasks == 0 && q.top_k == 5 && !q.tasks_form);
    api_classify_req_free(&q);

    /* a raw body is bytes even when it reads like a URL */
    CHECK(parse_raw(&q, "http://h/", 9, NULL, NULL, NULL, &r) == 0 &&
          image_is(&q, 0, "http://h/", 9));
    api_classify_req_free(&q);

    uint8_t big[65] = {1};
    int rc = parse_raw(&q, body, 0, NULL, NULL, NULL, &r);
    expect_error("raw: empty body", rc, &q, &r, 400, "invalid_request", "empty");
    rc = parse_raw(&q, big, 65, NULL, NULL, NULL, &r);
    expect_error("raw: 65 bytes", rc, &q, &r, 413, "image_too_large", "body: the image is 65");
    CHECK(parse_raw(&q, big, 64, NULL, NULL, NULL, &r) == 0 && image_is(&q, 0, big, 64));
    api_classify_req_free(&q);
    rc = parse_raw(&q, body, 3, "a", "b", NULL, &r);
    expect_error("raw: task and tasks", rc, &q, &r, 400, "invalid_request", "not both");
    rc = parse_raw(&q, body, 3, NULL, NULL, "x", &r);
    expect_error("raw: top_k x", rc, &q, &r, 400, "invalid_request", "top_k");
    rc = parse_raw(&q, body, 3, NULL, NULL, "1000", &r);
    expect_error("raw: top_k 1000", rc, &q, &r, 422, "invalid_top_k", "1000");
    rc = parse_raw(&q, body, 3, "A", NULL, NULL, &r);
    expect_error("raw: task A", rc, &q, &r, 422, "invalid_task_name", "task: 'A'");
    rc = parse_raw(&q, body, 3, NULL, "a,b,a", NULL, &r);
    expect_error("raw: tasks a,b,a", rc, &q, &r, 422, "duplicate_task", NULL);
}

/* ---- 4. api_classify_result --------------------------------------------- */

/* Checks result j: its task, labels and scores (to 1e-6) are the n given. */
static void expect_result_(int line, json_t *j, const char *task, int n, const char *const *labels,
                           const double *scores)
{
    CHECKF(json_is_object(j) && json_object_size(j) == 3, "line %d: not a 3-key object", line);
    json_t *t = json_object_get(j, "task");
    CHECKF(task ? json_is_string(t) && strcmp(json_string_value(t), task) == 0 : json_is_null(t),
           "line %d: task", line);
    json_t *lab = json_object_get(j, "labels"), *sc = json_object_get(j, "scores");
    CHECKF(json_array_size(lab) == (size_t)n && json_array_size(sc) == (size_t)n,
           "line %d: %zu labels, %zu scores, want %d", line, json_array_size(lab),
           json_array_size(sc), n);
    for (int i = 0; i < n && i < (int)json_array_size(lab); i++) {
        const char *l = json_string_value(json_array_get(lab, i));
        double s = json_real_value(json_array_get(sc, i));
        CHECKF(l && strcmp(l, labels[i]) == 0, "line %d: label %d is '%s', want '%s'", line, i,
               l ? l : "(null)", labels[i]);
        CHECKF(json_is_real(json_array_get(sc, i)) && fabs(s - scores[i]) <= 1e-6,
               "line %d: score %d is %.9g, want %.9g", line, i, s, scores[i]);
    }
}
#define expect_result(...) expect_result_(__LINE__, __VA_ARGS__)

/* The CLI's top-k (server/cli_classify.c top_k_indices), brute force. */
static void top_k_brute(const float *probs, int n, int k, int *idx)
{
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int taken = 0;
            for (int t = 0; t < j && !taken; t++)
                taken = idx[t] == i;
            if (!taken && (best < 0 || probs[i] > probs[best]))
                best = i;
        }
        idx[j] = best;
    }
}

static void test_result(void)
{
    static const char *const abc[] = {"a", "b", "c", "d"};
    /* softmax(1, 2, 3) = e^(x-3) / (e^-2 + e^-1 + 1), by hand */
    double z = exp(-2.0) + exp(-1.0) + 1.0;
    double p[3] = {exp(-2.0) / z, exp(-1.0) / z, 1.0 / z}; /* 0.0900306, 0.2447285, 0.6652410 */
    CHECKF(fabs(p[2] - 0.66524096) < 1e-7, "hand value %.9f", p[2]);
    const float logits[3] = {1, 2, 3};

    json_t *j = api_classify_result("pets", abc, logits, 3, 5); /* top_k > K */
    expect_result(j, "pets", 3, (const char *[]){"c", "b", "a"}, (double[]){p[2], p[1], p[0]});
    json_decref(j);
    j = api_classify_result(NULL, abc, logits, 3, 2);
    expect_result(j, NULL, 2, (const char *[]){"c", "b"}, (double[]){p[2], p[1]});
    /* the keys in the pipeline's order */
    char *text = json_dumps(j, JSON_COMPACT);
    const char *head = "{\"task\":null,\"labels\":[\"c\",\"b\"],\"scores\":[";
    CHECKF(text && strncmp(text, head, strlen(head)) == 0, "dump %s", text ? text : "(null)");
    free(text);
    json_decref(j);
    j = api_classify_result("t", abc, logits, 3, 1);
    expect_result(j, "t", 1, (const char *[]){"c"}, (double[]){p[2]});
    json_decref(j);

    /* shifted logits (max subtracted): the same probabilities, no overflow */
    const float shifted[3] = {1001, 1002, 1003};
    j = api_classify_result(NULL, abc, shifted, 3, 3);
    expect_result(j, NULL, 3, (const char *[]){"c", "b", "a"}, (double[]){p[2], p[1], p[0]});
    json_decref(j);

    /* K = 1 */
    j = api_classify_result(NULL, abc, (const float[]){-40}, 1, 5);
    expect_result(j, NULL, 1, (const char *[]){"a"}, (double[]){1.0});
    json_decref(j);

    /* ties: equal probabilities keep the lower index first */
    const float tie[4] = {0, 5, 5, 0};
    double e5 = exp(5.0), zt = 2 + 2 * e5;
    j = api_classify_result(NULL, abc, tie, 4, 4);
    expect_result(j, NULL, 4, (const char *[]){"b", "c", "a", "d"},
                  (double[]){e5 / zt, e5 / zt, 1 / zt, 1 / zt});
    json_decref(j);
    j = api_classify_result(NULL, abc, tie, 4, 3); /* the cut inside a tie */
    expect_result(j, NULL, 3, (const char *[]){"b", "c", "a"},
                  (double[]){e5 / zt, e5 / zt, 1 / zt});
    json_decref(j);
    const float flat[4] = {2, 2, 2, 2};
    j = api_classify_result(NULL, abc, flat, 4, 2);
    expect_result(j, NULL, 2, (const char *[]){"a", "b"}, (double[]){0.25, 0.25});
    json_decref(j);

    /* non-finite logits */
    const float bad[4][3] = {{1, NAN, 2}, {INFINITY, 1, 2}, {1, 2, -INFINITY}, {NAN, NAN, NAN}};
    for (int i = 0; i < 4; i++) {
        j = api_classify_result("t", abc, bad[i], 3, 3);
        CHECKF(j == NULL, "non-finite logits case %d gave a result", i);
        json_decref(j);
    }

    /* labels that are not UTF-8 come out as U+FFFD; a task name too */
    static const char *const raw[] = {"ok", "bad\xff", "caf\xc3\xa9"};
    j = api_classify_result("t\xfe", raw, (const float[]){3, 2, 1}, 3, 3);
    expect_result(j, "t\xef\xbf\xbd", 3, (const char *[]){"ok", "bad\xef\xbf\xbd", "caf\xc3\xa9"},
                  (double[]){p[2], p[1], p[0]});
    json_decref(j);

    /* random logits with many ties, every k: the CLI's order and vit_softmax's
     * values, bit for bit */
    enum { K = 300 };
    static float lg[K], probs[K];
    static const char *names[K];
    static char name_buf[K][8];
    int idx[K];
    uint32_t seed = 12345;
    for (int i = 0; i < K; i++) {
        seed = seed * 1664525u + 1013904223u;
        lg[i] = (float)((seed >> 24) % 17) * 0.5f - 4.0f; /* 17 values: ties everywhere */
        snprintf(name_buf[i], sizeof name_buf[i], "c%d", i);
        names[i] = name_buf[i];
    }
    vit_softmax(lg, K, probs);
    int mismatches = 0;
    static const int ks[] = {1, 2, 5, 17, 100, 299, 300, 301};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        int k = ks[t] < K ? ks[t] : K;
        top_k_brute(probs, K, k, idx);
        j = api_classify_result(NULL, names, lg, K, ks[t]);
        json_t *lab = json_object_get(j, "labels"), *sc = json_object_get(j, "scores");
        CHECKF(json_array_size(lab) == (size_t)k, "k %d: %zu labels", ks[t],
               json_array_size(lab));
        for (int i = 0; i < k && i < (int)json_array_size(lab); i++) {
            const char *l = json_string_value(json_array_get(lab, i));
            double s = json_real_value(json_array_get(sc, i));
            if (!l || strcmp(l, names[idx[i]]) != 0 || s != (double)probs[idx[i]]) {
                if (mismatches++ < 5)
                    fprintf(stderr, "k %d: [%d] %s %.9g, want %s %.9g\n", ks[t], i,
                            l ? l : "(null)", s, names[idx[i]], (double)probs[idx[i]]);
            }
        }
        json_decref(j);
    }
    CHECKF(mismatches == 0, "%d entries differ from the CLI's top-k", mismatches);
}

/* ---- 5. api_classify_reply ---------------------------------------------- */

/* Marker result i: {"n": i}. */
static json_t *marker(int i)
{
    return json_pack("{si}", "n", i);
}

static int marker_of(json_t *j)
{
    json_t *n = json_object_get(j, "n");
    return json_is_integer(n) && json_object_size(j) == 1 ? (int)json_integer_value(n) : -1;
}

static void test_reply(void)
{
    json_t *res[12];
    api_classify_req q = {.num_images = 1, .top_k = 5};

    /* one image, one task (named or not): the result itself */
    res[0] = marker(0);
    json_t *j = api_classify_reply(&q, res, 1);
    CHECKF(marker_of(j) == 0, "single: got %d", marker_of(j));
    json_decref(j);

    /* one image, tasks: {"results": [per task]} */
    q.tasks_form = true;
    q.num_tasks = 3;
    for (int i = 0; i < 3; i++)
        res[i] = marker(i);
    j = api_classify_reply(&q, res, 3);
    json_t *list = json_object_get(j, "results");
    CHECK(json_object_size(j) == 1 && json_array_size(list) == 3);
    for (int i = 0; i < 3; i++)
        CHECKF(marker_of(json_array_get(list, i)) == i, "tasks: [%d] is %d", i,
               marker_of(json_array_get(list, i)));
    json_decref(j);

    /* images, no tasks form: {"results": [per image]} */
    q.tasks_form = false;
    q.num_tasks = 1; /* one "task" named: still one object per image */
    q.images_form = true;
    q.num_images = 4;
    for (int i = 0; i < 4; i++)
        res[i] = marker(10 + i);
    j = api_classify_reply(&q, res, 1);
    list = json_object_get(j, "results");
    CHECK(json_object_size(j) == 1 && json_array_size(list) == 4);
    for (int i = 0; i < 4; i++)
        CHECKF(marker_of(json_array_get(list, i)) == 10 + i, "images: [%d] is %d", i,
               marker_of(json_array_get(list, i)));
    json_decref(j);

    /* images and tasks: {"results": [{"results": [per task]} per image]},
     * result i*T + j at [i][j] */
    q.tasks_form = true;
    q.num_tasks = 3;
    for (int i = 0; i < 12; i++)
        res[i] = marker(i);
    j = api_classify_reply(&q, res, 3);
    list = json_object_get(j, "results");
    CHECK(json_object_size(j) == 1 && json_array_size(list) == 4);
    for (int i = 0; i < 4; i++) {
        json_t *per = json_array_get(list, i), *inner = json_object_get(per, "results");
        CHECKF(json_object_size(per) == 1 && json_array_size(inner) == 3, "image %d", i);
        for (int t = 0; t < 3; t++)
            CHECKF(marker_of(json_array_get(inner, t)) == i * 3 + t, "[%d][%d] is %d", i, t,
                   marker_of(json_array_get(inner, t)));
    }
    json_decref(j);

    /* one image in the images form still gets a list */
    q.num_images = 1;
    q.tasks_form = false;
    q.num_tasks = 0;
    res[0] = marker(7);
    j = api_classify_reply(&q, res, 1);
    list = json_object_get(j, "results");
    CHECK(json_array_size(list) == 1 && marker_of(json_array_get(list, 0)) == 7);
    json_decref(j);

    /* a NULL result: NULL, every other reference released (ASan: no leak) */
    q.num_images = 4;
    q.tasks_form = true;
    q.num_tasks = 3;
    for (int i = 0; i < 12; i++)
        res[i] = i == 5 ? NULL : marker(i);
    CHECK(api_classify_reply(&q, res, 3) == NULL);
    q = (api_classify_req){.num_images = 1};
    res[0] = NULL;
    CHECK(api_classify_reply(&q, res, 1) == NULL);

    /* end to end: a parsed request and real results, dumped as api_json does */
    api_classify_req p;
    api_reply r;
    CHECK(parse_json(&p, "{\"images\": [\"aGk=\", \"aGk=\"], \"tasks\": [\"x\", \"y\"], "
                         "\"top_k\": 1}", &r) == 0);
    static const char *const lab2[] = {"no", "yes"};
    for (int i = 0; i < 4; i++)
        res[i] = api_classify_result(p.tasks[i % 2], lab2, (const float[]){0, (float)i}, 2,
                                     p.top_k);
    CHECK(api_json(&r, 200, api_classify_reply(&p, res, 2)) == 0 && r.status == 200);
    const char *want_start = "{\"results\":[{\"results\":[{\"task\":\"x\",\"labels\":[\"no\"],"
                             "\"scores\":[0.5]},{\"task\":\"y\",\"labels\":[\"yes\"],";
    CHECKF(r.body && strncmp(r.body, want_start, strlen(want_start)) == 0, "body %s",
           r.body ? r.body : "(null)");
    api_reply_free(&r);
    api_classify_req_free(&p);
}

int main(void)
{
    test_json_accepted();
    test_json_refused();
    test_json_url_length();
    test_base64();
    test_form();
    test_raw();
    test_result();
    test_reply();
    return check_result();
}
