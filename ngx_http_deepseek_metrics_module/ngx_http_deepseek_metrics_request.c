
/*
 * The request lifecycle: the request state (a hidden variable that survives
 * internal redirects), the endpoint at the preaccess phase, the in-flight
 * gauge, the context when a body is read, and the model label.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_uint_t ngx_http_dsm_classify(ngx_str_t *uri);
static size_t ngx_http_dsm_unescape(u_char *dst, u_char *src, size_t len);
static ngx_inline ngx_uint_t ngx_http_dsm_same(u_char *a, u_char *b,
    size_t len);
static void ngx_http_dsm_model_scan(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q, ngx_http_dsm_main_conf_t *dmcf);
static ngx_inline ngx_uint_t ngx_http_dsm_model_find(
    ngx_http_dsm_main_conf_t *dmcf, u_char *name, size_t len);


/* what a request whose body is not read reads as: nothing seen */

ngx_http_dsm_parse_t  ngx_http_dsm_noparse;


/* a worker's spare contexts: [0] JSON-sized, [1] with the stream state */

#define NGX_HTTP_DSM_SPARE_MAX  64

static ngx_http_dsm_ctx_t  *ngx_http_dsm_spare[2];
static ngx_uint_t           ngx_http_dsm_nspare[2];
static ngx_http_dsm_ctx_t  *ngx_http_dsm_doomed;

static ngx_str_t  ngx_http_dsm_other = ngx_string("other");
static ngx_str_t  ngx_http_dsm_unknown = ngx_string("unknown");
static ngx_str_t  ngx_http_dsm_overflow_ep = ngx_string("__overflow__");

static const ngx_http_variable_value_t  ngx_http_dsm_state_init = {
    0, 1, 1, 0, 0, NULL
};


/* the label values the hot path names without hashing them per request */

void
ngx_http_dsm_request_init(ngx_http_dsm_main_conf_t *dmcf)
{
    dmcf->other_hash = ngx_murmur_hash2(ngx_http_dsm_other.data,
                                        ngx_http_dsm_other.len);
    dmcf->unknown = ngx_http_dsm_unknown;
    dmcf->unknown_hash = ngx_murmur_hash2(ngx_http_dsm_unknown.data,
                                          ngx_http_dsm_unknown.len);
    dmcf->overflow_hash = ngx_murmur_hash2(ngx_http_dsm_overflow_ep.data,
                                           ngx_http_dsm_overflow_ep.len);
}

/*
 * The request's context (st: its state), allocated on first need;
 * a JSON body needs only the first part of the scanner state.
 *
 * A proxied request has all but about 130 bytes of its 4 KB pool blocks in
 * use: a context from the pool would cost a pool block or a large
 * allocation, and a malloc() and free(), per response read.  So a worker
 * keeps the contexts of finished requests for the next ones, up to
 * NGX_HTTP_DSM_SPARE_MAX of each size.  The log handler gives a context
 * back (ngx_http_dsm_ctx_release()); it runs once for every main request,
 * a pool cleanup would cost as much again.
 */

ngx_http_dsm_ctx_t *
ngx_http_dsm_ctx(ngx_http_request_t *r, ngx_http_variable_value_t *st,
    ngx_uint_t stream)
{
    size_t               size;
    ngx_http_dsm_ctx_t  *ctx;

    if (!st->valid) {
        return NULL;
    }

    if (ngx_http_dsm_st_has_ctx(st)) {
        return (ngx_http_dsm_ctx_t *) st->data;
    }

    stream = stream ? 1 : 0;

    ctx = ngx_http_dsm_spare[stream];

    if (ctx) {
        ngx_http_dsm_spare[stream] = ctx->next;
        ngx_http_dsm_nspare[stream]--;

    } else {
        size = stream ? sizeof(ngx_http_dsm_ctx_t)
                      : offsetof(ngx_http_dsm_ctx_t, parse)
                        + NGX_HTTP_DSM_PARSE_JSON_SIZE;

        ctx = ngx_alloc(size, r->connection->log);
        if (ctx == NULL) {
            return NULL;
        }
    }

    /* the scanner state is initialised only if the body is read */
    ngx_memzero(ctx, offsetof(ngx_http_dsm_ctx_t, parse));

    ctx->dlcf = (ngx_http_dsm_loc_conf_t *) st->data;
    ctx->full = stream;

    ngx_http_dsm_st_set_ctx(st, ctx);

    return ctx;
}


/*
 * Called last in the request's log handler.  Log handlers after ours may
 * still read the context through the $deepseek_* variables, so it stays
 * as it is until another request takes it, after this log phase; one past
 * the limit is freed only when the next one is given back.
 */

void
ngx_http_dsm_ctx_release(ngx_http_dsm_ctx_t *ctx)
{
    ngx_uint_t  full;

    if (ctx->released) {
        return;
    }

    ctx->released = 1;
    full = ctx->full;

    if (ngx_http_dsm_nspare[full] == NGX_HTTP_DSM_SPARE_MAX) {
        if (ngx_http_dsm_doomed) {
            ngx_free(ngx_http_dsm_doomed);
        }

        ngx_http_dsm_doomed = ctx;
        return;
    }

    ctx->next = ngx_http_dsm_spare[full];
    ngx_http_dsm_spare[full] = ctx;
    ngx_http_dsm_nspare[full]++;
}


/* the endpoint, once per request, when the location starts counting it */

void
ngx_http_dsm_start(ngx_http_request_t *r, ngx_http_dsm_loc_conf_t *dlcf,
    ngx_http_variable_value_t *st)
{
    ngx_str_t            value;
    ngx_uint_t           kind, index;
    const ngx_str_t     *b;
    ngx_http_dsm_ctx_t  *ctx;

    kind = ngx_http_dsm_classify(&r->uri);
    index = kind;

    *st = ngx_http_dsm_state_init;
    st->data = (u_char *) dlcf;

    if (dlcf->endpoint
        && ngx_http_complex_value(r, dlcf->endpoint, &value) == NGX_OK
        && value.len)
    {
        if (value.len > NGX_HTTP_DSM_MAX_VALUE) {
            value.len = NGX_HTTP_DSM_MAX_VALUE;
        }

        /* a built-in name: the location reads like that endpoint */

        for (b = ngx_http_dsm_builtin_endpoints; b->len; b++) {
            if (b->len == value.len
                && ngx_strncmp(b->data, value.data, value.len) == 0)
            {
                kind = b - ngx_http_dsm_builtin_endpoints;
                break;
            }
        }

        index = ngx_http_dsm_endpoint_get(dlcf->zone, &value);

        if (index == NGX_HTTP_DSM_MAX_ENDPOINTS) {

            /* the endpoint table is full: the request keeps the value */

            ngx_http_dsm_st_set(st, index, kind);

            ctx = ngx_http_dsm_ctx(r, st, 1);
            if (ctx) {
                ctx->ext = 1;
                ctx->endpoint = value;
                ctx->endpoint_hash = ngx_murmur_hash2(value.data, value.len);
            }

            return;
        }
    }

    ngx_http_dsm_st_set(st, index, kind);
}


/* the endpoint label value: needed for a new series, not to count */

void
ngx_http_dsm_resolve_endpoint(ngx_http_request_t *r, ngx_http_dsm_req_t *q)
{
    ngx_http_dsm_endpoint_t   *ep;
    ngx_http_dsm_main_conf_t  *dmcf;

    if (q->endpoint_index < NGX_HTTP_DSM_MAX_ENDPOINTS) {
        ep = &q->zone->sh->endpoints[q->endpoint_index];
        q->endpoint.data = ep->name;
        q->endpoint.len = ep->len;
        q->endpoint_hash = ep->hash;

    } else if (q->ctx && q->ctx->ext) {
        q->endpoint = q->ctx->endpoint;
        q->endpoint_hash = q->ctx->endpoint_hash;

    } else {
        dmcf = ngx_http_get_module_main_conf(r,
                                             ngx_http_deepseek_metrics_module);
        q->endpoint = ngx_http_dsm_overflow_ep;
        q->endpoint_hash = dmcf->overflow_hash;
    }
}


ngx_int_t
ngx_http_dsm_preaccess_handler(ngx_http_request_t *r)
{
    ngx_http_dsm_loc_conf_t    *dlcf;
    ngx_http_variable_value_t  *st;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_deepseek_metrics_module);

    if (dlcf->zone == NULL || dlcf->zone->slot == NULL) {
        return NGX_DECLINED;
    }

    st = ngx_http_dsm_state(r);

    /* an internal redirect runs this phase again */

    if (st->valid) {
        return NGX_DECLINED;
    }

    ngx_http_dsm_start(r, dlcf, st);

    ngx_http_dsm_st_set_in_flight(st, 1);

    (void) ngx_atomic_fetch_add(
               &dlcf->zone->slot->in_flight[ngx_http_dsm_st_endpoint(st)],
               1);

    return NGX_DECLINED;
}


/* the endpoint by path suffix; a closed set whatever the client sends */

static ngx_uint_t
ngx_http_dsm_classify(ngx_str_t *uri)
{
    u_char  *p;
    size_t   len;

    p = uri->data;
    len = uri->len;

    /* a request nginx rejected before parsing its line has no $uri */

    if (len == 0) {
        return NGX_HTTP_DSM_EP_OTHER;
    }

    if (len > 1 && p[len - 1] == '/') {
        len--;
    }

/* a constant length: a few word compares, no call to memcmp() */

#define ngx_http_dsm_ends(s)                                                 \
    (len >= sizeof(s) - 1                                                    \
     && ngx_http_dsm_eq(p + len - (sizeof(s) - 1), s, sizeof(s) - 1))

    switch (p[len - 1]) {

    case 's':
        if (ngx_http_dsm_ends("/chat/completions")) {
            return NGX_HTTP_DSM_EP_CHAT;
        }

        if (ngx_http_dsm_ends("/completions")) {
            return NGX_HTTP_DSM_EP_COMPLETIONS;
        }

        if (ngx_http_dsm_ends("/models")) {
            return NGX_HTTP_DSM_EP_MODELS;
        }

        if (ngx_http_dsm_ends("/messages")) {
            return NGX_HTTP_DSM_EP_MESSAGES;
        }

        if (ngx_http_dsm_ends("/responses")) {
            return NGX_HTTP_DSM_EP_RESPONSES;
        }

        break;

    case 'e':
        if (ngx_http_dsm_ends("/user/balance")) {
            return NGX_HTTP_DSM_EP_BALANCE;
        }

        break;
    }

#undef ngx_http_dsm_ends

    return NGX_HTTP_DSM_EP_OTHER;
}

/*
 * The model label from the response, else the request body, allowlisted;
 * q has "unknown" already (ngx_http_dsm_model()).  The usual case, an
 * allowlisted name read from the response, takes no stack frame.
 */

void
ngx_http_dsm_model_read(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_main_conf_t *dmcf)
{
    ngx_uint_t  i;

    if (q->parse->model_set && q->parse->model_len && dmcf->models_plain) {
        i = ngx_http_dsm_model_find(dmcf, q->parse->model,
                                    q->parse->model_len);

        if (i < dmcf->models->nelts) {
            q->model_index = i;
            q->model = ((ngx_str_t *) dmcf->models->elts)[i];
            q->model_hash = dmcf->model_hashes[i];
            return;
        }
    }

    ngx_http_dsm_model_scan(r, q, dmcf);
}


/* the other cases: the request body, escapes, a name not allowlisted */

static void
ngx_http_dsm_model_scan(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_main_conf_t *dmcf)
{
    u_char                *model, buf[64];
    size_t                 len;
    ngx_uint_t             i, raw;
    ngx_chain_t           *cl;
    ngx_http_dsm_parse_t  *p;

    model = q->parse->model;
    len = q->parse->model_set ? q->parse->model_len : 0;

    if (len == 0) {

        /*
         * Only with deepseek_metrics_request_body and a body in memory
         * (ngx_http_dsm_model()); the scan stops as soon as the top-level
         * "model" is read.
         */

        p = ngx_palloc(r->pool, NGX_HTTP_DSM_PARSE_JSON_SIZE);
        if (p == NULL) {
            return;
        }

        ngx_http_dsm_parse_init(p, NGX_HTTP_DSM_PARSE_REQUEST);

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (!ngx_buf_in_memory(cl->buf)) {
                break;
            }

            if (ngx_http_dsm_parse(p, cl->buf->pos,
                                                cl->buf->last)
                != NGX_OK)
            {
                break;
            }
        }

        if (p->model_set) {
            len = p->model_len;
            model = p->model;
        }
    }

    /*
     * The raw JSON bytes first: when no allowlisted name has a backslash,
     * a raw match is the decoded value, and an escape is looked for only
     * in a model that did not match.
     */

    if (len) {
        i = dmcf->models->nelts;
        raw = dmcf->models_plain;

        if (raw) {
            i = ngx_http_dsm_model_find(dmcf, model, len);
        }

        if (i == dmcf->models->nelts && memchr(model, '\\', len) != NULL) {
            len = ngx_http_dsm_unescape(buf, model, len);
            model = buf;
            raw = 0;
        }

        if (!raw) {
            i = ngx_http_dsm_model_find(dmcf, model, len);
        }

        q->model_index = i;

        if (i < dmcf->models->nelts) {
            q->model = ((ngx_str_t *) dmcf->models->elts)[i];
            q->model_hash = dmcf->model_hashes[i];

        } else {
            q->model = ngx_http_dsm_other;
            q->model_hash = dmcf->other_hash;
        }
    }
}


/* len equal bytes, len > 0: 8 at a time, the last 8 overlapping */

static ngx_inline ngx_uint_t
ngx_http_dsm_same(u_char *a, u_char *b, size_t len)
{
    size_t    k;
    uint64_t  x, y;

    if (len < 8) {
        return ngx_memcmp(a, b, len) == 0;
    }

    for (k = 0; k + 8 < len; k += 8) {
        ngx_memcpy(&x, a + k, 8);
        ngx_memcpy(&y, b + k, 8);

        if (x != y) {
            return 0;
        }
    }

    ngx_memcpy(&x, a + len - 8, 8);
    ngx_memcpy(&y, b + len - 8, 8);

    return x == y;
}


/* the allowlist index of a model name, or the number of names */

static ngx_inline ngx_uint_t
ngx_http_dsm_model_find(ngx_http_dsm_main_conf_t *dmcf, u_char *name,
    size_t len)
{
    ngx_str_t   *m;
    ngx_uint_t   i, n;

    static ngx_uint_t  last;

    m = dmcf->models->elts;
    n = dmcf->models->nelts;

    /* a worker's traffic is mostly one model: the last one found first */

    if (last < n && m[last].len == len
        && ngx_http_dsm_same(name, m[last].data, len))
    {
        return last;
    }

    for (i = 0; i < n; i++) {
        if (m[i].len == len && ngx_http_dsm_same(name, m[i].data, len)) {
            last = i;
            break;
        }
    }

    return i;
}


/*
 * The scanner keeps the model as raw JSON string bytes: decode the escapes
 * (\uXXXX to UTF-8, surrogate pairs too) before matching the allowlist.
 * The result is never longer than the input.
 */

static size_t
ngx_http_dsm_unescape(u_char *dst, u_char *src, size_t len)
{
    u_char      *p, *last;
    uint32_t     u, lo;
    ngx_uint_t   i;
    ngx_int_t    n;

    p = dst;
    last = src + len;

    while (src < last) {

        if (*src != '\\' || src + 1 == last) {
            *p++ = *src++;
            continue;
        }

        src++;

        if (*src != 'u') {
            switch (*src) {
            case 'n':
                *p++ = '\n';
                break;
            case 't':
                *p++ = '\t';
                break;
            case 'r':
                *p++ = '\r';
                break;
            case 'b':
                *p++ = '\b';
                break;
            case 'f':
                *p++ = '\f';
                break;
            default:
                *p++ = *src;
            }

            src++;
            continue;
        }

        if (last - src < 5) {
            break;
        }

        n = ngx_hextoi(src + 1, 4);
        if (n == NGX_ERROR) {
            break;
        }

        u = (uint32_t) n;
        src += 5;

        if (u >= 0xd800 && u <= 0xdbff && last - src >= 6
            && src[0] == '\\' && src[1] == 'u')
        {
            n = ngx_hextoi(src + 2, 4);
            if (n != NGX_ERROR && n >= 0xdc00 && n <= 0xdfff) {
                lo = (uint32_t) n;
                u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                src += 6;
            }
        }

        if (u < 0x80) {
            *p++ = (u_char) u;

        } else if (u < 0x800) {
            *p++ = (u_char) (0xc0 | (u >> 6));
            *p++ = (u_char) (0x80 | (u & 0x3f));

        } else if (u < 0x10000) {
            *p++ = (u_char) (0xe0 | (u >> 12));
            *p++ = (u_char) (0x80 | ((u >> 6) & 0x3f));
            *p++ = (u_char) (0x80 | (u & 0x3f));

        } else {
            *p++ = (u_char) (0xf0 | (u >> 18));
            for (i = 3; i > 0; i--) {
                *p++ = (u_char) (0x80 | ((u >> (6 * (i - 1))) & 0x3f));
            }
        }
    }

    return p - dst;
}
