
/*
 * Header and body filters: decide whether a response is read, then feed
 * the scanner the bytes nginx already has and pass the chain on as it is.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_int_t ngx_http_dsm_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_dsm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_dsm_body_read(ngx_http_dsm_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_dsm_body_balance(ngx_http_dsm_ctx_t *ctx,
    ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


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
    ngx_uint_t                  mode, kind, stream;
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

    if (ngx_http_dsm_st_counted(st)) {
        return ngx_http_next_header_filter(r);
    }

    kind = ngx_http_dsm_st_kind(st);

    switch (kind) {
    case NGX_HTTP_DSM_EP_CHAT:
    case NGX_HTTP_DSM_EP_COMPLETIONS:
    case NGX_HTTP_DSM_EP_MESSAGES:
    case NGX_HTTP_DSM_EP_BALANCE:
        break;
    default:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "deepseek metrics: body not read, endpoint kind %ui",
                       kind);
        return ngx_http_next_header_filter(r);
    }

    ct = &r->headers_out.content_type;

    stream = (ct->len >= 17
              && ngx_strlcasestrn(ct->data, ct->data + ct->len,
                                  (u_char *) "text/event-stream", 17 - 1)
                 != NULL);

    ctx = ngx_http_dsm_ctx(r, st, stream);

    if (ctx == NULL || ctx->parsing || ctx->balance || ctx->compressed) {
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

            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "deepseek metrics: body not read, "
                           "Content-Encoding \"%V\"", ce);

            return ngx_http_next_header_filter(r);
        }
    }

    if (kind == NGX_HTTP_DSM_EP_BALANCE) {
        ctx->balance = ngx_http_dsm_balance_init(r->main->pool);
        if (ctx->balance == NULL) {
            return ngx_http_next_header_filter(r);
        }

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "deepseek metrics: body read as a balance");

        ngx_http_set_ctx(r, ctx, ngx_http_deepseek_metrics_module);
        r->filter_need_in_memory = 1;

        return ngx_http_next_header_filter(r);
    }

    ctx->stream = stream;

    if (kind == NGX_HTTP_DSM_EP_MESSAGES) {
        mode = ctx->stream ? NGX_HTTP_DSM_PARSE_ANTHROPIC_SSE
                           : NGX_HTTP_DSM_PARSE_ANTHROPIC_JSON;

    } else {
        mode = ctx->stream ? NGX_HTTP_DSM_PARSE_SSE : NGX_HTTP_DSM_PARSE_JSON;
    }

    ngx_http_dsm_parse_init(&ctx->parse, mode);
    ctx->parsing = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "deepseek metrics: body read as %s%s",
                   kind == NGX_HTTP_DSM_EP_MESSAGES ? "Anthropic " : "",
                   ctx->stream ? "SSE" : "JSON");

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

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "deepseek metrics: SSE proxied unbuffered");
    }

    return ngx_http_next_header_filter(r);
}


/* every response passes here: the check must be cheap */

static ngx_int_t
ngx_http_dsm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_http_dsm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_deepseek_metrics_module);

    if (ctx && in) {
        if (ctx->parsing) {
            ngx_http_dsm_body_read(ctx, in);

        } else if (ctx->balance) {
            ngx_http_dsm_body_balance(ctx, in);
        }
    }

    return ngx_http_next_body_filter(r, in);
}


static void
ngx_http_dsm_body_read(ngx_http_dsm_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t              rc;
    ngx_msec_t             now, gap;
    ngx_uint_t             events;
    ngx_time_t            *tp;
    ngx_chain_t           *cl;
    ngx_http_dsm_parse_t  *p;

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

        events = p->events;

        rc = ngx_http_dsm_parse(p, cl->buf->pos, cl->buf->last);

        if (rc != NGX_OK) {
            ctx->parse_done = 1;
        }

        if (!(p->mode & NGX_HTTP_DSM_PARSE_MODE_SSE)) {
            /* JSON sent as text/event-stream: no stream timings */
            ctx->stream = 0;
        }

        /* the timings are of streams only */

        if (!ctx->stream) {
            continue;
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

        /* the longest pause between two data events, for stalls */

        if (p->events != events) {
            tp = ngx_timeofday();
            now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

            if (ctx->last_event) {
                gap = ngx_http_dsm_elapsed(ctx->last_event, now);

                if (gap > ctx->max_gap) {
                    ctx->max_gap = gap;
                }
            }

            ctx->last_event = now;
        }
    }
}


static void
ngx_http_dsm_body_balance(ngx_http_dsm_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_chain_t  *cl;

    for (cl = in; cl; cl = cl->next) {

        if (cl->buf->last_buf) {
            ctx->last_buf = 1;
        }

        if (ngx_buf_in_memory(cl->buf)) {
            ngx_http_dsm_balance_read(ctx->balance, cl->buf->pos,
                                      cl->buf->last);
        }
    }
}
