
/*
 * The log phase: counting a finished request into its series (the series
 * key, the request counters, histograms, tokens and cost).
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_inline void ngx_http_dsm_observe(ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, uint64_t us);
static ngx_inline void ngx_http_dsm_add_counter(ngx_atomic_t *v, uint64_t n);
static ngx_int_t ngx_http_dsm_series_key(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q, ngx_http_dsm_key_t *k);
static void ngx_http_dsm_count_body(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q, ngx_http_dsm_series_t *s, ngx_msec_t now);


static ngx_str_t  ngx_http_dsm_label_endpoint = ngx_string("endpoint");
static ngx_str_t  ngx_http_dsm_label_model = ngx_string("model");



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

    /* native first: a scrape reads it after the classic buckets */

    if (l->native[h]) {
        ngx_http_dsm_native_observe(l, s, h, us);
    }

    v = &s->v[l->offset[h]];

    (void) ngx_atomic_fetch_add(&v[i], 1);
    (void) ngx_atomic_fetch_add(&v[n + 1], us);

    if (ngx_http_dsm_exemplar_id.len) {
        ngx_http_dsm_exemplar_record(l, s, h, i, us);
    }
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

    if (ngx_http_dsm_st_counted(st)) {
        goto release;
    }

    ngx_http_dsm_st_set_counted(st);

    ngx_http_dsm_resolve_st(st, &q);

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
        ngx_http_dsm_resolve_endpoint(r, &q);

        if (ngx_http_dsm_series_key(r, &q, &k) != NGX_OK) {
            goto done;
        }

        s = ngx_http_dsm_series_get(zone, &k);

        ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "deepseek metrics: series key endpoint \"%V\" "
                       "model \"%V\" labels %ui hash %08xD in zone \"%V\""
                       "%s", &q.endpoint, &q.model, k.nvalues - 2, k.hash,
                       &zone->name, s->overflow ? ": overflow" : "");

        if (cache) {
            *cache = s;
        }
    }

    /* a status with no slot left takes the request to the overflow series */

    s = ngx_http_dsm_count_status(zone->sh, s, status);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "deepseek metrics: counted status %ui model index %ui%s",
                   status, q.model_index,
                   s->overflow ? " in the overflow series" : "");

    /* the id of the last request counted here may still be set */

    if (q.dlcf->exemplar || ngx_http_dsm_exemplar_id.len) {
        ngx_http_dsm_exemplar_start(r, &q, now);
    }

    ngx_http_dsm_observe(&zone->layout, s, NGX_HTTP_DSM_H_LATENCY,
                         ngx_http_dsm_elapsed(start, now) * 1000);

    if (q.ctx && q.ctx->balance) {
        if (status == NGX_HTTP_OK) {
            ngx_http_dsm_balance_count(r, &q, s);
        }

    } else if (q.ctx && (q.ctx->parsing || q.ctx->compressed)) {

#if (NGX_DEBUG)
        {
        ngx_http_dsm_parse_t  *p = q.parse;

        ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "deepseek metrics: body %s, events %ui, finish %ui, "
                       "error class %ui, usage %s fields %xi",
                       q.ctx->compressed ? "compressed"
                       : p->invalid ? "invalid"
                       : p->seen ? "parsed" : "empty",
                       p->events, p->finish_reason, p->error_class,
                       p->usage_seen ? "found" : "missing", p->usage_fields);

        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "deepseek metrics: usage prompt %uL completion %uL "
                       "hit %uL miss %uL reasoning %uL",
                       p->prompt_tokens, p->completion_tokens,
                       p->cache_hit_tokens, p->cache_miss_tokens,
                       p->reasoning_tokens);
        }
#endif

        ngx_http_dsm_count_body(r, &q, s, now);
    }

done:

    /* given back last: once a request is not in flight, it is counted */

    if (ngx_http_dsm_st_in_flight(st)) {
        ngx_http_dsm_st_set_in_flight(st, 0);
        (void) ngx_atomic_fetch_add(&zone->slot->in_flight[q.endpoint_index],
                                    -1);
    }

release:

    if (ngx_http_dsm_st_has_ctx(st)) {
        ngx_http_dsm_ctx_release((ngx_http_dsm_ctx_t *) st->data);
    }

    return NGX_OK;
}


/*
 * The key: label-set id, then each label value as a length byte and the
 * bytes: endpoint, model, user labels.  Values are cut at
 * NGX_HTTP_DSM_MAX_VALUE bytes.
 */

static ngx_int_t
ngx_http_dsm_series_key(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
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
    ngx_msec_t                          start, gap;
    ngx_uint_t                          status, outcome, missing, inband;
    ngx_connection_t          *c;
    ngx_http_dsm_sh_t         *sh;
    ngx_http_dsm_ctx_t        *ctx;
    ngx_http_dsm_layout_t     *l;
    ngx_http_dsm_main_conf_t  *dmcf;
    ngx_http_dsm_parse_t      *p;

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

        /*
         * A stream that did not end ([DONE], message_stop) stalled from
         * its last event to its end: that pause counts too.
         */

        if (ctx->last_event) {
            gap = ctx->max_gap;

            if (!p->done && ngx_http_dsm_elapsed(ctx->last_event, now) > gap) {
                gap = ngx_http_dsm_elapsed(ctx->last_event, now);
            }

            ngx_http_dsm_observe(l, s, NGX_HTTP_DSM_H_GAP, gap * 1000);
        }
    }

    ngx_http_dsm_add_counter(&s->v[NGX_HTTP_DSM_C_KEEPALIVE], p->comments);

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

    outcome = ngx_http_dsm_parse_outcome(p);

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
