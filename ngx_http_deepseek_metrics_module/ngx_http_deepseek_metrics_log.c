
/*
 * The hot path: the request state, the in-flight gauge (preaccess phase,
 * given back in the log phase) and counting a finished request.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_uint_t ngx_http_dsm_classify(ngx_str_t *uri);
static size_t ngx_http_dsm_unescape(u_char *dst, u_char *src, size_t len);
static ngx_int_t ngx_http_dsm_key(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q, ngx_http_dsm_key_t *k);
static void ngx_http_dsm_count_body(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q, ngx_http_dsm_series_t *s, ngx_msec_t now);


static ngx_http_deepseek_metrics_parse_t  ngx_http_dsm_noparse;

static ngx_http_variable_value_t  ngx_http_dsm_state_init = {
    0, 1, 1, 0, 0, NULL
};

static ngx_str_t  ngx_http_dsm_other = ngx_string("other");
static ngx_str_t  ngx_http_dsm_unknown = ngx_string("unknown");
static ngx_str_t  ngx_http_dsm_overflow_ep = ngx_string("__overflow__");
static uint32_t   ngx_http_dsm_other_hash;
static uint32_t   ngx_http_dsm_unknown_hash;
static uint32_t   ngx_http_dsm_overflow_hash;
static ngx_str_t  ngx_http_dsm_label_endpoint = ngx_string("endpoint");
static ngx_str_t  ngx_http_dsm_label_model = ngx_string("model");


void
ngx_http_dsm_log_init(void)
{
    ngx_http_dsm_other_hash = ngx_murmur_hash2(ngx_http_dsm_other.data,
                                               ngx_http_dsm_other.len);
    ngx_http_dsm_unknown_hash = ngx_murmur_hash2(ngx_http_dsm_unknown.data,
                                                 ngx_http_dsm_unknown.len);
    ngx_http_dsm_overflow_hash =
                         ngx_murmur_hash2(ngx_http_dsm_overflow_ep.data,
                                          ngx_http_dsm_overflow_ep.len);
}


/* the request's context, allocated on first need and found from anywhere */

ngx_http_dsm_ctx_t *
ngx_http_dsm_ctx(ngx_http_request_t *r)
{
    ngx_http_dsm_ctx_t         *ctx;
    ngx_http_variable_value_t  *st;

    st = ngx_http_dsm_state(r);

    if (!st->valid) {
        return NULL;
    }

    if (st->len & NGX_HTTP_DSM_ST_CTX) {
        return (ngx_http_dsm_ctx_t *) st->data;
    }

    ctx = ngx_palloc(r->main->pool, sizeof(ngx_http_dsm_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    /* the scanner state is initialised only if the body is read */
    ngx_memzero(ctx, offsetof(ngx_http_dsm_ctx_t, parse));

    ctx->dlcf = (ngx_http_dsm_loc_conf_t *) st->data;

    st->data = (u_char *) ctx;
    st->len |= NGX_HTTP_DSM_ST_CTX;

    return ctx;
}


/* the endpoint, once per request, when the location starts counting it */

void
ngx_http_dsm_start(ngx_http_request_t *r, ngx_http_dsm_loc_conf_t *dlcf,
    ngx_http_variable_value_t *st)
{
    ngx_str_t            value, *b;
    ngx_uint_t           kind, index;
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

            st->len = index | kind << NGX_HTTP_DSM_ST_KIND_SHIFT;

            ctx = ngx_http_dsm_ctx(r);
            if (ctx) {
                ctx->ext = 1;
                ctx->endpoint = value;
                ctx->endpoint_hash = ngx_murmur_hash2(value.data, value.len);
            }

            return;
        }
    }

    st->len = index | kind << NGX_HTTP_DSM_ST_KIND_SHIFT;
}


/* everything the state says, with no allocation */

ngx_int_t
ngx_http_dsm_resolve(ngx_http_request_t *r, ngx_http_dsm_req_t *q)
{
    ngx_http_variable_value_t  *st;

    st = ngx_http_dsm_state(r);

    if (!st->valid) {
        return NGX_DECLINED;
    }

    if (st->len & NGX_HTTP_DSM_ST_CTX) {
        q->ctx = (ngx_http_dsm_ctx_t *) st->data;
        q->dlcf = q->ctx->dlcf;
        q->parse = q->ctx->parsing ? &q->ctx->parse : &ngx_http_dsm_noparse;

    } else {
        q->ctx = NULL;
        q->dlcf = (ngx_http_dsm_loc_conf_t *) st->data;
        q->parse = &ngx_http_dsm_noparse;
    }

    q->zone = q->dlcf->zone;
    q->kind = st->len >> NGX_HTTP_DSM_ST_KIND_SHIFT;
    q->endpoint_index = st->len & NGX_HTTP_DSM_ST_ENDPOINT;
    q->price = NULL;
    q->endpoint.len = 0;

    return NGX_OK;
}


/* the endpoint label value: needed for a new series, not to count */

void
ngx_http_dsm_resolve_endpoint(ngx_http_dsm_req_t *q)
{
    ngx_http_dsm_endpoint_t  *ep;

    if (q->endpoint_index < NGX_HTTP_DSM_MAX_ENDPOINTS) {
        ep = &q->zone->sh->endpoints[q->endpoint_index];
        q->endpoint.data = ep->name;
        q->endpoint.len = ep->len;
        q->endpoint_hash = ep->hash;

    } else if (q->ctx && q->ctx->ext) {
        q->endpoint = q->ctx->endpoint;
        q->endpoint_hash = q->ctx->endpoint_hash;

    } else {
        q->endpoint = ngx_http_dsm_overflow_ep;
        q->endpoint_hash = ngx_http_dsm_overflow_hash;
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

    st->len |= NGX_HTTP_DSM_ST_IN_FLIGHT;

    (void) ngx_atomic_fetch_add(
               &dlcf->zone->slot->in_flight[st->len & NGX_HTTP_DSM_ST_ENDPOINT],
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

/* memcmp() of a constant length against 0 compiles to a few loads */

#define ngx_http_dsm_ends(s)                                                 \
    (len >= sizeof(s) - 1                                                    \
     && ngx_memcmp(p + len - (sizeof(s) - 1), s, sizeof(s) - 1) == 0)

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


static ngx_inline void
ngx_http_dsm_observe(ngx_http_dsm_layout_t *l, ngx_http_dsm_series_t *s,
    ngx_uint_t h, uint64_t us)
{
    ngx_uint_t     i, n;
    ngx_atomic_t  *v;

    n = l->nbuckets[h];

    if (n == 0) {
        return;
    }

    for (i = 0; i < n && us > l->bounds[h][i]; i++) { /* void */ }

    v = &s->v[l->offset[h]];

    (void) ngx_atomic_fetch_add(&v[i], 1);
    (void) ngx_atomic_fetch_add(&v[n + 1], us);
}


ngx_int_t
ngx_http_dsm_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                  status;
    ngx_msec_t                  now, start;
    ngx_time_t                 *tp;
    ngx_http_dsm_req_t          q;
    ngx_http_dsm_key_t          k;
    ngx_http_dsm_zone_t        *zone;
    ngx_http_dsm_series_t      *s, **cache;
    ngx_http_dsm_loc_conf_t    *dlcf;
    ngx_http_dsm_main_conf_t   *dmcf;
    ngx_http_variable_value_t  *st;

    if (r != r->main) {
        return NGX_OK;
    }

    st = ngx_http_dsm_state(r);

    if (!st->valid) {

        /* ended before the preaccess phase: a bad request, a rewrite */

        dlcf = ngx_http_get_module_loc_conf(r,
                                            ngx_http_deepseek_metrics_module);
        if (dlcf->zone == NULL || dlcf->zone->sh == NULL) {
            return NGX_OK;
        }

        ngx_http_dsm_start(r, dlcf, st);
    }

    if (st->len & NGX_HTTP_DSM_ST_COUNTED) {
        return NGX_OK;
    }

    st->len |= NGX_HTTP_DSM_ST_COUNTED;

    (void) ngx_http_dsm_resolve(r, &q);

    zone = q.zone;

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;
    start = (ngx_msec_t) r->start_sec * 1000 + r->start_msec;

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_deepseek_metrics_module);

    ngx_http_dsm_model(r, &q, dmcf);

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status > 999) {
        status = 0;
    }

    /*
     * Without user labels a series is fixed by (endpoint, model): this
     * worker remembers it, series never move or go away, and a full zone
     * stays full, so the overflow series is remembered too.
     */

    cache = NULL;
    s = NULL;

    if (q.dlcf->labels == NULL && q.endpoint_index < NGX_HTTP_DSM_MAX_ENDPOINTS)
    {
        cache = &zone->cache[q.endpoint_index * zone->cache_models
                             + q.model_index];
        s = *cache;
    }

    if (s == NULL) {
        ngx_http_dsm_resolve_endpoint(&q);

        if (ngx_http_dsm_key(r, &q, &k) != NGX_OK) {
            goto done;
        }

        s = ngx_http_dsm_series_get(zone, &k);

        if (cache) {
            *cache = s;
        }
    }

    /* a status with no slot left takes the request to the overflow series */

    s = ngx_http_dsm_count_status(zone->sh, s, status);

    ngx_http_dsm_observe(&zone->layout, s, NGX_HTTP_DSM_H_LATENCY,
                         ngx_http_dsm_elapsed(start, now) * 1000);

    if (q.ctx && (q.ctx->parsing || q.ctx->compressed)) {
        ngx_http_dsm_count_body(r, &q, s, now);
    }

done:

    /* given back last: once a request is not in flight, it is counted */

    if (st->len & NGX_HTTP_DSM_ST_IN_FLIGHT) {
        st->len &= ~NGX_HTTP_DSM_ST_IN_FLIGHT;
        (void) ngx_atomic_fetch_add(&zone->slot->in_flight[q.endpoint_index],
                                    -1);
    }

    return NGX_OK;
}


/* the model label: from the response, else the request body; allowlisted */

void
ngx_http_dsm_model(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_main_conf_t *dmcf)
{
    u_char                             *model, buf[64];
    size_t                              len;
    ngx_str_t                          *m;
    ngx_uint_t                          i;
    ngx_chain_t                        *cl;
    ngx_http_dsm_price_t               *price;
    ngx_http_deepseek_metrics_parse_t  *p;

    model = q->parse->model;
    len = q->parse->model_set ? q->parse->model_len : 0;

    if (len == 0 && q->dlcf->request_body
        && r->request_body && r->request_body->bufs)
    {
        /* the scan stops as soon as the top-level "model" is read */

        p = ngx_palloc(r->pool, sizeof(ngx_http_deepseek_metrics_parse_t));
        if (p == NULL) {
            return;
        }

        ngx_http_deepseek_metrics_parse_init(p, NGX_HTTP_DSM_PARSE_REQUEST);

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (!ngx_buf_in_memory(cl->buf)) {
                break;
            }

            if (ngx_http_deepseek_metrics_parse(p, cl->buf->pos,
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

    q->model = ngx_http_dsm_unknown;
    q->model_hash = ngx_http_dsm_unknown_hash;
    q->model_index = dmcf->models->nelts + 1;

    if (len && ngx_strlchr(model, model + len, '\\')) {
        len = ngx_http_dsm_unescape(buf, model, len);
        model = buf;
    }

    if (len) {
        q->model = ngx_http_dsm_other;
        q->model_hash = ngx_http_dsm_other_hash;
        q->model_index = dmcf->models->nelts;

        m = dmcf->models->elts;
        for (i = 0; i < dmcf->models->nelts; i++) {
            if (m[i].len == len && ngx_memcmp(m[i].data, model, len) == 0) {
                q->model = m[i];
                q->model_hash = dmcf->model_hashes[i];
                q->model_index = i;
                break;
            }
        }
    }

    if (dmcf->prices) {
        price = ngx_http_dsm_price_find(dmcf, &q->model);
        if (price) {
            q->price = price;
        }
    }
}


/*
 * The key: label-set id, then each label value as a length byte and the
 * bytes: endpoint, model, user labels.  Values are cut at
 * NGX_HTTP_DSM_MAX_VALUE bytes.
 */

static ngx_int_t
ngx_http_dsm_key(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_key_t *k)
{
    u_char                   *p;
    uint32_t                  hash;
    ngx_str_t                 value;
    ngx_uint_t                i;
    ngx_http_dsm_label_t     *label;
    ngx_http_dsm_loc_conf_t  *dlcf;

    dlcf = q->dlcf;
    p = k->buf;

    hash = ngx_http_dsm_mix(dlcf->labels_id, q->endpoint_hash);
    hash = ngx_http_dsm_mix(hash, q->model_hash);

    *(uint32_t *) p = dlcf->labels_id;
    p += sizeof(uint32_t);

    k->names[0] = ngx_http_dsm_label_endpoint;
    k->values[0] = q->endpoint;
    k->names[1] = ngx_http_dsm_label_model;
    k->values[1] = q->model;
    k->nvalues = 2;

    if (q->price) {
        k->currency = q->price->currency;

    } else {
        ngx_str_null(&k->currency);
    }

    *p++ = (u_char) q->endpoint.len;
    p = ngx_cpymem(p, q->endpoint.data, q->endpoint.len);
    *p++ = (u_char) q->model.len;
    p = ngx_cpymem(p, q->model.data, q->model.len);

    if (dlcf->labels) {
        label = dlcf->labels->elts;

        for (i = 0; i < dlcf->labels->nelts; i++) {
            if (ngx_http_complex_value(r, &label[i].value, &value)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (value.len > NGX_HTTP_DSM_MAX_VALUE) {
                value.len = NGX_HTTP_DSM_MAX_VALUE;
            }

            k->names[k->nvalues] = label[i].name;
            k->values[k->nvalues++] = value;

            hash = ngx_http_dsm_mix(hash,
                                    ngx_murmur_hash2(value.data, value.len));

            *p++ = (u_char) value.len;
            p = ngx_cpymem(p, value.data, value.len);
        }
    }

    k->len = p - k->buf;
    k->hash = hash;

    return NGX_OK;
}


/*
 * Counters never decrease: each value added is below 2^54 (usage values
 * below 2^53, a cost below NGX_HTTP_DSM_COST_MAX), so stopping 2^62 short
 * of 2^64 leaves room for 256 concurrent adders and a counter never wraps.
 */

#define NGX_HTTP_DSM_COUNTER_LIMIT    ((uint64_t) -1 - ((uint64_t) 1 << 62))

static ngx_inline void
ngx_http_dsm_add_counter(ngx_atomic_t *v, uint64_t n)
{
    if (n && *v < NGX_HTTP_DSM_COUNTER_LIMIT) {
        (void) ngx_atomic_fetch_add(v, n);
    }
}


/* what the body filter read: timings, tokens, cost, failures */

static void
ngx_http_dsm_count_body(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_series_t *s, ngx_msec_t now)
{
    uint64_t                            out, cost;
    ngx_msec_t                          start;
    ngx_uint_t                          status, outcome, missing, inband;
    ngx_connection_t                   *c;
    ngx_http_dsm_sh_t                  *sh;
    ngx_http_dsm_ctx_t                 *ctx;
    ngx_http_dsm_layout_t              *l;
    ngx_http_dsm_main_conf_t           *dmcf;
    ngx_http_deepseek_metrics_parse_t  *p;

    static ngx_uint_t  inband_errors[] = {
        NGX_HTTP_DSM_INBAND_STREAM_ERROR,   /* NGX_HTTP_DSM_ERROR_NONE */
        NGX_HTTP_DSM_INBAND_STREAM_ERROR,   /* NGX_HTTP_DSM_ERROR_OTHER */
        NGX_HTTP_DSM_INBAND_RATE_LIMITED,
        NGX_HTTP_DSM_INBAND_OVERLOADED,
        NGX_HTTP_DSM_INBAND_SERVER_ERROR
    };

    status = r->err_status ? r->err_status : r->headers_out.status;
    ctx = q->ctx;
    p = q->parse;
    l = &q->zone->layout;
    c = r->connection;
    start = (ngx_msec_t) r->start_sec * 1000 + r->start_msec;

    if (ctx->stream) {
        if (ctx->first_token) {
            ngx_http_dsm_observe(l, s, NGX_HTTP_DSM_H_TTFT,
                          ngx_http_dsm_elapsed(start, ctx->first_token) * 1000);
        }

        if (ctx->first_answer) {
            ngx_http_dsm_observe(l, s, NGX_HTTP_DSM_H_ANSWER,
                         ngx_http_dsm_elapsed(start, ctx->first_answer) * 1000);
        }

        if (ctx->first_data) {
            ngx_http_dsm_observe(l, s, NGX_HTTP_DSM_H_QUEUE,
                           ngx_http_dsm_elapsed(start, ctx->first_data) * 1000);
        }

        if (ctx->first_token && p->completion_tokens > 1) {
            ngx_http_dsm_observe(l, s, NGX_HTTP_DSM_H_TPOT,
                            ngx_http_dsm_elapsed(ctx->first_token, now) * 1000
                            / (p->completion_tokens - 1));
        }
    }

    /* usage_fields is 0 if a usage value was invalid: nothing is added */

    if (p->usage_fields) {
        out = p->completion_tokens;

        ngx_http_dsm_add_counter(&s->v[NGX_HTTP_DSM_C_HIT],
                                 p->cache_hit_tokens);
        ngx_http_dsm_add_counter(&s->v[NGX_HTTP_DSM_C_MISS],
                                 p->cache_miss_tokens);
        ngx_http_dsm_add_counter(&s->v[NGX_HTTP_DSM_C_OUTPUT], out);
        ngx_http_dsm_add_counter(&s->v[NGX_HTTP_DSM_C_REASONING],
                                 p->reasoning_tokens);

        if (q->price) {
            dmcf = ngx_http_get_module_main_conf(r,
                                             ngx_http_deepseek_metrics_module);

            cost = ngx_http_dsm_cost(dmcf, q->price, r->start_sec,
                                     p->cache_hit_tokens,
                                     p->cache_miss_tokens, out);
            if (ngx_http_dsm_currency(q->zone, s, &q->price->currency)
                == NGX_OK)
            {
                ngx_http_dsm_add_counter(&s->v[NGX_HTTP_DSM_C_COST], cost);
            }
        }
    }

    if (status != NGX_HTTP_OK) {
        return;
    }

    missing = NGX_HTTP_DSM_NMISSING;
    inband = NGX_HTTP_DSM_NINBAND;

    if (ctx->compressed) {
        missing = NGX_HTTP_DSM_MISSING_COMPRESSED;
        goto count;
    }

    outcome = ngx_http_deepseek_metrics_parse_outcome(p);

    if ((c->timedout || c->error) && !ctx->last_buf) {

        /*
         * The client went away, or stopped reading until send_timeout:
         * nginx cut the stream, not DeepSeek.
         */

        inband = c->timedout ? NGX_HTTP_DSM_INBAND_CLIENT_TIMEOUT
                             : NGX_HTTP_DSM_INBAND_CLIENT_CLOSED;
        missing = NGX_HTTP_DSM_MISSING_CLIENT_ABORT;
        goto usage;
    }

    switch (outcome) {

    case NGX_HTTP_DSM_OUTCOME_ERROR_BODY:

        /* an error response: like an error status, no usage expected */

        inband = inband_errors[p->error_class];
        goto usage;

    case NGX_HTTP_DSM_OUTCOME_TRUNCATED:

        if (!p->seen && ctx->last_buf) {
            /* a body that ended cleanly without a single byte */
            inband = NGX_HTTP_DSM_INBAND_EMPTY;
            break;
        }

        inband = NGX_HTTP_DSM_INBAND_TRUNCATED;
        missing = NGX_HTTP_DSM_MISSING_TRUNCATED;
        break;

    case NGX_HTTP_DSM_OUTCOME_QUEUE_TIMEOUT:
        inband = NGX_HTTP_DSM_INBAND_QUEUE_TIMEOUT;
        missing = NGX_HTTP_DSM_MISSING_TRUNCATED;
        break;

    case NGX_HTTP_DSM_OUTCOME_CONTENT_FILTER:
        inband = NGX_HTTP_DSM_INBAND_CONTENT_FILTER;
        break;

    case NGX_HTTP_DSM_OUTCOME_INSUFFICIENT:
        inband = NGX_HTTP_DSM_INBAND_INSUFFICIENT;
        break;

    case NGX_HTTP_DSM_OUTCOME_EMPTY_RESPONSE:
        inband = NGX_HTTP_DSM_INBAND_EMPTY;
        break;

    case NGX_HTTP_DSM_OUTCOME_INVALID_JSON:
        missing = NGX_HTTP_DSM_MISSING_INVALID_JSON;
        break;

    default: /* NGX_HTTP_DSM_OUTCOME_COMPLETE */
        break;
    }

    if (missing == NGX_HTTP_DSM_NMISSING && p->usage_fields == 0) {
        /* the usage may have been in an event skipped as invalid */
        missing = p->bad_events ? NGX_HTTP_DSM_MISSING_INVALID_JSON
                                : NGX_HTTP_DSM_MISSING_ABSENT;
    }

usage:

    if (p->usage_invalid) {
        missing = NGX_HTTP_DSM_MISSING_INVALID_USAGE;
    }

count:

    sh = q->zone->sh;

    if (inband < NGX_HTTP_DSM_NINBAND) {
        ngx_http_dsm_count(sh, s,
                           ngx_http_dsm_tag(NGX_HTTP_DSM_SLOT_INBAND, inband));
    }

    /*
     * An Anthropic stream carries input usage first and output usage last:
     * cut in between, what was read is partial.
     */

    if (missing < NGX_HTTP_DSM_NMISSING
        && (p->usage_fields == 0
            || (missing == NGX_HTTP_DSM_MISSING_TRUNCATED
                && (p->mode & NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC))))
    {
        ngx_http_dsm_count(sh, s,
                         ngx_http_dsm_tag(NGX_HTTP_DSM_SLOT_MISSING, missing));
    }
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
