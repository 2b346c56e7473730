/*
 * web.c - static replies from the embedded files (web.h).
 *
 * The page's policy: everything from this origin and nothing else
 * (default-src 'self': no inline script or style, no CDN, no eval), and no
 * framing by another site, as the page holds an API key and can delete
 * tasks.  The same headers go on every static reply, the page's assets and
 * the OpenAPI document alike.
 */
#include <microhttpd.h>

#include "web.h"

#define WEB_CSP "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

enum MHD_Result srv_web_send(struct MHD_Connection *conn, const api_web_asset *a,
                             const char *request_id, int *status)
{
    const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");
    bool fresh = api_web_etag_matches(inm, a->etag);
    /* PERSISTENT: the bytes are static, nothing is copied */
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        fresh ? 0 : a->len, fresh ? (void *)"" : (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    bool ok =
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, a->etag) == MHD_YES &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") == MHD_YES &&
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES &&
        MHD_add_response_header(resp, "Content-Security-Policy", WEB_CSP) == MHD_YES &&
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer") == MHD_YES &&
        MHD_add_response_header(resp, "X-Request-Id", request_id) == MHD_YES;
    /* a 304 carries no Content-Type: there is no body it could describe */
    if (ok && !fresh)
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type) ==
             MHD_YES;
    *status = fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK;
    enum MHD_Result res = ok ? MHD_queue_response(conn, (unsigned)*status, resp) : MHD_NO;
    MHD_destroy_response(resp);
    return res;
}
