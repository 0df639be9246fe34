
/*
 * Header and body filters: decide whether a response is read, then feed
 * the scanner the bytes nginx already has and pass the chain on as it is.
 * Also the $deepseek_* variables for access logs.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_int_t ngx_http_dsm_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_dsm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_dsm_body_read(ngx_http_dsm_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_dsm_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dsm_state_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_dsm_state_name =
    ngx_string("deepseek_metrics_internal_state");


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


enum {
    NGX_HTTP_DSM_VAR_ENDPOINT = 0,
    NGX_HTTP_DSM_VAR_MODEL,
    NGX_HTTP_DSM_VAR_PROMPT,
    NGX_HTTP_DSM_VAR_COMPLETION,
    NGX_HTTP_DSM_VAR_TOTAL,
    NGX_HTTP_DSM_VAR_HIT,
    NGX_HTTP_DSM_VAR_MISS,
    NGX_HTTP_DSM_VAR_REASONING,
    NGX_HTTP_DSM_VAR_TTFT,
    NGX_HTTP_DSM_VAR_ANSWER,
    NGX_HTTP_DSM_VAR_QUEUE,
    NGX_HTTP_DSM_VAR_FINISH,
    NGX_HTTP_DSM_VAR_COST
};


static ngx_http_variable_t  ngx_http_dsm_vars[] = {

    { ngx_string("deepseek_endpoint"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_ENDPOINT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_model"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_prompt_tokens"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_PROMPT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_completion_tokens"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_COMPLETION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_total_tokens"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_TOTAL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_cache_hit_tokens"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_HIT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_cache_miss_tokens"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_MISS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_reasoning_tokens"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_REASONING, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_ttft"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_ttfat"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_ANSWER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_queue_wait"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_QUEUE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_finish_reason"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_FINISH, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("deepseek_cost"), NULL, ngx_http_dsm_variable,
      NGX_HTTP_DSM_VAR_COST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_dsm_finish_reasons[] = {
    ngx_string("-"),
    ngx_string("stop"),
    ngx_string("length"),
    ngx_string("tool_calls"),
    ngx_string("content_filter"),
    ngx_string("insufficient_system_resource"),
    ngx_string("other")
};


ngx_int_t
ngx_http_dsm_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_dsm_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_dsm_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dsm_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                  *ce, *ct;
    ngx_uint_t                  mode, kind;
    ngx_http_dsm_ctx_t         *ctx;
    ngx_http_dsm_loc_conf_t    *dlcf;
    ngx_http_variable_value_t  *st;

    if (r != r->main || r->headers_out.status != NGX_HTTP_OK
        || r->header_only)
    {
        return ngx_http_next_header_filter(r);
    }

    st = ngx_http_dsm_state(r);

    if (!st->valid) {
        dlcf = ngx_http_get_module_loc_conf(r,
                                            ngx_http_deepseek_metrics_module);
        if (dlcf->zone == NULL || dlcf->zone->sh == NULL) {
            return ngx_http_next_header_filter(r);
        }

        ngx_http_dsm_start(r, dlcf, st);
    }

    if (st->len & NGX_HTTP_DSM_ST_COUNTED) {
        return ngx_http_next_header_filter(r);
    }

    kind = st->len >> NGX_HTTP_DSM_ST_KIND_SHIFT;

    switch (kind) {
    case NGX_HTTP_DSM_EP_CHAT:
    case NGX_HTTP_DSM_EP_COMPLETIONS:
    case NGX_HTTP_DSM_EP_MESSAGES:
        break;
    default:
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_dsm_ctx(r);

    if (ctx == NULL || ctx->parsing || ctx->compressed) {
        return ngx_http_next_header_filter(r);
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->hash)
    {
        ce = &r->headers_out.content_encoding->value;

        if (!(ce->len == 8
              && ngx_strncasecmp(ce->data, (u_char *) "identity", 8) == 0))
        {
            /* not read, counted as usage missing; the bytes pass as they are */
            ctx->compressed = 1;
            return ngx_http_next_header_filter(r);
        }
    }

    ct = &r->headers_out.content_type;

    if (ct->len >= 17
        && ngx_strlcasestrn(ct->data, ct->data + ct->len,
                            (u_char *) "text/event-stream", 17 - 1)
           != NULL)
    {
        ctx->stream = 1;
    }

    if (kind == NGX_HTTP_DSM_EP_MESSAGES) {
        mode = ctx->stream ? NGX_HTTP_DSM_PARSE_ANTHROPIC_SSE
                           : NGX_HTTP_DSM_PARSE_ANTHROPIC_JSON;

    } else {
        mode = ctx->stream ? NGX_HTTP_DSM_PARSE_SSE : NGX_HTTP_DSM_PARSE_JSON;
    }

    ngx_http_deepseek_metrics_parse_init(&ctx->parse, mode);
    ctx->parsing = 1;

    /* the body filter's quick way in */
    ngx_http_set_ctx(r, ctx, ngx_http_deepseek_metrics_module);

    /* file buffers (proxy temp files) are read for us by the copy filter */
    r->filter_need_in_memory = 1;

    /*
     * A buffered proxy holds partial buffers until they fill, which delays
     * both the client and our token timings: stream SSE through unbuffered,
     * as "X-Accel-Buffering: no" would.
     */

    if (ctx->stream && ctx->dlcf->unbuffered && r->upstream
        && r->upstream->buffering && !r->upstream->cacheable
        && !r->upstream->store)
    {
        r->upstream->buffering = 0;
    }

    return ngx_http_next_header_filter(r);
}


/* every response passes here: the check must be cheap */

static ngx_int_t
ngx_http_dsm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_http_dsm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_deepseek_metrics_module);

    if (ctx && ctx->parsing && in) {
        ngx_http_dsm_body_read(ctx, in);
    }

    return ngx_http_next_body_filter(r, in);
}


static void
ngx_http_dsm_body_read(ngx_http_dsm_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t                           rc;
    ngx_msec_t                          now;
    ngx_time_t                         *tp;
    ngx_chain_t                        *cl;
    ngx_http_deepseek_metrics_parse_t  *p;

    p = &ctx->parse;

    for (cl = in; cl; cl = cl->next) {

        if (cl->buf->last_buf) {
            ctx->last_buf = 1;
        }

        if (ctx->parse_done || !ngx_buf_in_memory(cl->buf)
            || cl->buf->pos == cl->buf->last)
        {
            continue;
        }

        rc = ngx_http_deepseek_metrics_parse(p, cl->buf->pos, cl->buf->last);

        if (rc != NGX_OK) {
            ctx->parse_done = 1;
        }

        if (!(p->mode & NGX_HTTP_DSM_PARSE_MODE_SSE)) {
            /* JSON sent as text/event-stream: no stream timings */
            ctx->stream = 0;
        }

        if ((p->first_data && !ctx->first_data)
            || (p->first_token && !ctx->first_token)
            || (p->first_answer && !ctx->first_answer))
        {
            tp = ngx_timeofday();
            now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

            if (p->first_data && !ctx->first_data) {
                ctx->first_data = now;
            }

            if (p->first_token && !ctx->first_token) {
                ctx->first_token = now;
            }

            if (p->first_answer && !ctx->first_answer) {
                ctx->first_answer = now;
            }
        }
    }
}


ngx_int_t
ngx_http_dsm_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t       *var, *v;
    ngx_http_dsm_main_conf_t  *dmcf;

    for (v = ngx_http_dsm_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    /* the request state's slot: never evaluated, only written by us */

    var = ngx_http_add_variable(cf, &ngx_http_dsm_state_name,
                                NGX_HTTP_VAR_NOHASH|NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_dsm_state_variable;

    dmcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_deepseek_metrics_module);

    dmcf->state_index = ngx_http_get_variable_index(cf,
                                                    &ngx_http_dsm_state_name);
    if (dmcf->state_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dsm_state_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->not_found = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dsm_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                             *s;
    uint64_t                            n, cost;
    ngx_msec_t                          t, start;
    ngx_http_dsm_req_t                  q;
    ngx_http_dsm_ctx_t                 *ctx;
    ngx_http_dsm_main_conf_t           *dmcf;
    ngx_http_deepseek_metrics_parse_t  *p;

    if (ngx_http_dsm_resolve(r->main, &q) != NGX_OK)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_HTTP_DSM_VAR_ENDPOINT) {
        ngx_http_dsm_resolve_endpoint(&q);
        v->data = q.endpoint.data;
        v->len = q.endpoint.len;
        goto found;
    }

    ctx = q.ctx;

    if (ctx == NULL || !ctx->parsing) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = &ctx->parse;
    t = 0;
    n = 0;

    switch (data) {

    case NGX_HTTP_DSM_VAR_MODEL:
        if (!p->model_set) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = p->model;
        v->len = p->model_len;
        goto found;

    case NGX_HTTP_DSM_VAR_FINISH:
        n = p->finish_reason;
        if (n >= sizeof(ngx_http_dsm_finish_reasons) / sizeof(ngx_str_t)) {
            n = sizeof(ngx_http_dsm_finish_reasons) / sizeof(ngx_str_t) - 1;
        }

        v->data = ngx_http_dsm_finish_reasons[n].data;
        v->len = ngx_http_dsm_finish_reasons[n].len;
        goto found;

    case NGX_HTTP_DSM_VAR_TTFT:
        t = ctx->stream ? ctx->first_token : 0;
        goto time;

    case NGX_HTTP_DSM_VAR_ANSWER:
        t = ctx->stream ? ctx->first_answer : 0;
        goto time;

    case NGX_HTTP_DSM_VAR_QUEUE:
        t = ctx->stream ? ctx->first_data : 0;
        goto time;

    case NGX_HTTP_DSM_VAR_COST:
        dmcf = ngx_http_get_module_main_conf(r,
                                             ngx_http_deepseek_metrics_module);

        if (dmcf->prices == NULL || p->usage_fields == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        /* access logs run before our log handler: resolve the model here */

        ngx_http_dsm_model(r->main, &q, dmcf);

        if (q.price == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        cost = ngx_http_dsm_cost(dmcf, q.price, r->main->start_sec,
                                 p->cache_hit_tokens, p->cache_miss_tokens,
                                 p->completion_tokens);

        s = ngx_pnalloc(r->pool, NGX_INT64_LEN + 16);
        if (s == NULL) {
            return NGX_ERROR;
        }

        /* 1e-12 units to currency units with 9 decimals */
        cost /= 1000;
        v->data = s;
        v->len = ngx_sprintf(s, "%uL.%09uL", cost / 1000000000,
                             cost % 1000000000) - s;
        goto found;
    }

    if (p->usage_fields == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {
    case NGX_HTTP_DSM_VAR_PROMPT:
        n = p->prompt_tokens;
        break;
    case NGX_HTTP_DSM_VAR_COMPLETION:
        n = p->completion_tokens;
        break;
    case NGX_HTTP_DSM_VAR_TOTAL:
        n = p->total_tokens;
        break;
    case NGX_HTTP_DSM_VAR_HIT:
        n = p->cache_hit_tokens;
        break;
    case NGX_HTTP_DSM_VAR_MISS:
        n = p->cache_miss_tokens;
        break;
    default: /* NGX_HTTP_DSM_VAR_REASONING */
        n = p->reasoning_tokens;
        break;
    }

    s = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (s == NULL) {
        return NGX_ERROR;
    }

    v->data = s;
    v->len = ngx_sprintf(s, "%uL", n) - s;
    goto found;

time:

    if (t == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    start = (ngx_msec_t) r->main->start_sec * 1000 + r->main->start_msec;
    t = ngx_http_dsm_elapsed(start, t);

    s = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (s == NULL) {
        return NGX_ERROR;
    }

    v->data = s;
    v->len = ngx_sprintf(s, "%T.%03M", (time_t) t / 1000, t % 1000) - s;

found:

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
