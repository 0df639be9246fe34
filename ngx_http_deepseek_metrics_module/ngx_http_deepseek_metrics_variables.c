
/*
 * The $deepseek_* variables for access logs, and the hidden variable whose
 * value slot holds the request state.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_int_t ngx_http_dsm_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dsm_state_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_dsm_state_name =
    ngx_string("deepseek_metrics_internal_state");


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


static const ngx_str_t  ngx_http_dsm_finish_reasons[] = {
    ngx_string("-"),
    ngx_string("stop"),
    ngx_string("length"),
    ngx_string("tool_calls"),
    ngx_string("content_filter"),
    ngx_string("insufficient_system_resource"),
    ngx_string("other")
};


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
    u_char                    *s;
    uint64_t                   n, cost;
    ngx_msec_t                 t, start;
    ngx_http_dsm_req_t         q;
    ngx_http_dsm_ctx_t        *ctx;
    ngx_http_dsm_main_conf_t  *dmcf;
    ngx_http_dsm_parse_t      *p;

    if (ngx_http_dsm_resolve(r->main, &q) != NGX_OK)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_HTTP_DSM_VAR_ENDPOINT) {
        ngx_http_dsm_resolve_endpoint(r, &q);
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
