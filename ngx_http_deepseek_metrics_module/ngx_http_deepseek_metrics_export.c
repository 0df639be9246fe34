
/*
 * The exporter: a content handler that copies every zone's counters into a
 * pool snapshot without taking any lock, then writes Prometheus text 0.0.4
 * or OpenMetrics 1.0.0 from that snapshot alone.
 */


#include "ngx_http_deepseek_metrics.h"


typedef struct {
    u_char                       *text;
    size_t                        text_len;
    u_char                       *currency;
    size_t                        currency_len;
    ngx_uint_t                    status;
    ngx_atomic_uint_t            *v;
} ngx_http_dsm_entry_t;


typedef struct {
    ngx_http_dsm_zone_t          *zone;
    ngx_http_dsm_layout_t        *layout;
    ngx_http_dsm_entry_t         *entries;
    ngx_uint_t                    n;
    ngx_atomic_uint_t             in_flight[NGX_HTTP_DSM_MAX_ENDPOINTS + 1];
    ngx_uint_t                    nendpoints;
    ngx_str_t                     prefix;        /* zone="..", or empty */
} ngx_http_dsm_snap_t;


typedef struct {
    ngx_http_request_t           *r;
    ngx_chain_t                  *out;
    ngx_chain_t                 **last;
    ngx_buf_t                    *b;
    off_t                         size;
    ngx_uint_t                    om;
    ngx_uint_t                    error;
} ngx_http_dsm_out_t;


typedef struct {
    ngx_str_t                     reason;
    ngx_uint_t                    inband;        /* or NGX_HTTP_DSM_NINBAND */
} ngx_http_dsm_reason_t;


static ngx_int_t ngx_http_dsm_export_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dsm_snapshot(ngx_http_request_t *r,
    ngx_http_dsm_zone_t *zone, ngx_http_dsm_snap_t *snap, ngx_uint_t multi);
static int ngx_libc_cdecl ngx_http_dsm_cmp(const void *one,
    const void *two);
static u_char *ngx_http_dsm_reserve(ngx_http_dsm_out_t *o, size_t n);
static void ngx_http_dsm_family(ngx_http_dsm_out_t *o, char *name,
    char *type, char *help);
static void ngx_http_dsm_requests(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap);
static void ngx_http_dsm_histogram(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, ngx_uint_t h, char *name);
static void ngx_http_dsm_tokens(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, ngx_uint_t what);
static void ngx_http_dsm_reasons(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, ngx_uint_t missing);
static u_char *ngx_http_dsm_seconds(u_char *p, uint64_t us);
static ngx_uint_t ngx_http_dsm_status_reason(ngx_uint_t status);


static ngx_http_dsm_reason_t  ngx_http_dsm_reasons_list[] = {
    { ngx_string("invalid_request"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("auth"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("insufficient_balance"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("not_found"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("rate_limited"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("client_error"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("server_error"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("upstream_unavailable"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("overloaded"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("upstream_timeout"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("client_closed"), NGX_HTTP_DSM_INBAND_CLIENT_CLOSED },
    { ngx_string("stream_truncated"), NGX_HTTP_DSM_INBAND_TRUNCATED },
    { ngx_string("queue_timeout"), NGX_HTTP_DSM_INBAND_QUEUE_TIMEOUT },
    { ngx_string("content_filter"), NGX_HTTP_DSM_INBAND_CONTENT_FILTER },
    { ngx_string("insufficient_system_resource"),
      NGX_HTTP_DSM_INBAND_INSUFFICIENT },
    { ngx_string("empty_response"), NGX_HTTP_DSM_INBAND_EMPTY },
    { ngx_null_string, 0 }
};

#define NGX_HTTP_DSM_NREASONS                                                \
    (sizeof(ngx_http_dsm_reasons_list) / sizeof(ngx_http_dsm_reason_t) - 1)


static ngx_str_t  ngx_http_dsm_missing_list[] = {
    ngx_string("compressed"),
    ngx_string("truncated"),
    ngx_string("client_abort"),
    ngx_string("invalid_json"),
    ngx_string("absent")
};


static char *ngx_http_dsm_hist_metric[] = {
    "deepseek_request_latency_seconds",
    "deepseek_time_to_first_token_seconds",
    "deepseek_time_to_first_answer_token_seconds",
    "deepseek_queue_wait_seconds",
    "deepseek_time_per_output_token_seconds"
};


static char *ngx_http_dsm_hist_help[] = {
    "Request start to last byte sent ($request_time).",
    "Streaming: request start to the first event with content, "
    "reasoning_content or tool_calls.",
    "Streaming: request start to the first answer token (content or "
    "tool_calls, after any reasoning).",
    "Streaming: request start to the first data event (time queued at "
    "DeepSeek sending keep-alives).",
    "Streaming: first token to last byte, divided by output tokens - 1."
};


char *
ngx_http_dsm_export(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_loc_conf_t *dlcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_dsm_zone_t      **zp;
    ngx_http_core_loc_conf_t  *clcf;

    if (dlcf->export == 1) {
        return "is duplicate";
    }

    dlcf->export = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dsm_export_handler;

    if (cf->args->nelts == 1) {
        return NGX_CONF_OK;
    }

    dlcf->export_zones = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                          sizeof(ngx_http_dsm_zone_t *));
    if (dlcf->export_zones == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        zp = ngx_array_push(dlcf->export_zones);
        if (zp == NULL) {
            return NGX_CONF_ERROR;
        }

        *zp = ngx_http_dsm_zone_lookup(cf, &value[i]);
        if (*zp == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_uint_t
ngx_http_dsm_wants_openmetrics(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == 6
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Accept", 6) == 0
            && ngx_strlcasestrn(h[i].value.data,
                                h[i].value.data + h[i].value.len,
                                (u_char *) "application/openmetrics-text",
                                28 - 1)
               != NULL)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_dsm_export_handler(ngx_http_request_t *r)
{
    u_char                    *p;
    ngx_int_t                  rc;
    ngx_str_t                  text;
    ngx_uint_t                 i, j, nzones, h;
    ngx_http_dsm_out_t         o;
    ngx_http_dsm_endpoint_t   *ep;
    ngx_http_dsm_snap_t       *snaps;
    ngx_http_dsm_zone_t      **zones;
    ngx_http_dsm_loc_conf_t   *dlcf;
    ngx_http_dsm_main_conf_t  *dmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_deepseek_metrics_module);
    dmcf = ngx_http_get_module_main_conf(r, ngx_http_deepseek_metrics_module);

    if (dlcf->export_zones) {
        zones = dlcf->export_zones->elts;
        nzones = dlcf->export_zones->nelts;

    } else {
        zones = dmcf->zones.elts;
        nzones = dmcf->zones.nelts;
    }

    snaps = ngx_pcalloc(r->pool, (nzones + 1) * sizeof(ngx_http_dsm_snap_t));
    if (snaps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < nzones; i++) {
        if (ngx_http_dsm_snapshot(r, zones[i], &snaps[i], nzones > 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_memzero(&o, sizeof(ngx_http_dsm_out_t));
    o.r = r;
    o.last = &o.out;
    o.om = ngx_http_dsm_wants_openmetrics(r);

    ngx_http_dsm_family(&o, "deepseek_requests_total", "counter",
                        "Requests finished, by status sent to the client.");
    for (i = 0; i < nzones; i++) {
        ngx_http_dsm_requests(&o, &snaps[i]);
    }

    for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
        for (i = 0; i < nzones; i++) {
            if (snaps[i].layout->nbuckets[h]) {
                break;
            }
        }

        if (i == nzones) {
            continue;
        }

        ngx_http_dsm_family(&o, ngx_http_dsm_hist_metric[h], "histogram",
                            ngx_http_dsm_hist_help[h]);
        for (i = 0; i < nzones; i++) {
            ngx_http_dsm_histogram(&o, &snaps[i], h,
                                   ngx_http_dsm_hist_metric[h]);
        }
    }

    ngx_http_dsm_family(&o, "deepseek_tokens_total", "counter",
                        "Tokens by type: input_cache_hit, input_cache_miss, "
                        "output (they sum to total_tokens).");
    for (i = 0; i < nzones; i++) {
        ngx_http_dsm_tokens(&o, &snaps[i], 0);
    }

    ngx_http_dsm_family(&o, "deepseek_reasoning_tokens_total", "counter",
                        "Reasoning tokens, a part of the output tokens.");
    for (i = 0; i < nzones; i++) {
        ngx_http_dsm_tokens(&o, &snaps[i], 1);
    }

    if (dmcf->prices) {
        ngx_http_dsm_family(&o, "deepseek_cost_total", "counter",
                            "Money spent by the configured price table.");
        for (i = 0; i < nzones; i++) {
            ngx_http_dsm_tokens(&o, &snaps[i], 2);
        }
    }

    ngx_http_dsm_family(&o, "deepseek_requests_in_flight", "gauge",
                        "Requests started and not yet finished.");
    for (i = 0; i < nzones; i++) {
        for (j = 0; j <= NGX_HTTP_DSM_MAX_ENDPOINTS; j++) {
            if (j < snaps[i].nendpoints) {
                ep = &snaps[i].zone->sh->endpoints[j];
                text.data = ep->text;
                text.len = ep->text_len;

            } else if (j == NGX_HTTP_DSM_MAX_ENDPOINTS
                       && snaps[i].in_flight[j])
            {
                ngx_str_set(&text, "__overflow__");

            } else {
                continue;
            }

            p = ngx_http_dsm_reserve(&o, text.len + snaps[i].prefix.len
                                         + 128);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            o.b->last = ngx_sprintf(p, "deepseek_requests_in_flight{%V"
                                    "endpoint=\"%V\"} %uA\n",
                                    &snaps[i].prefix, &text,
                                    snaps[i].in_flight[j]);
        }
    }

    ngx_http_dsm_family(&o, "deepseek_errors_total", "counter",
                        "Failed requests: HTTP-level by status, and in-band "
                        "failures under a 200.");
    for (i = 0; i < nzones; i++) {
        ngx_http_dsm_reasons(&o, &snaps[i], 0);
    }

    ngx_http_dsm_family(&o, "deepseek_usage_missing_total", "counter",
                        "Responses whose token usage could not be read.");
    for (i = 0; i < nzones; i++) {
        ngx_http_dsm_reasons(&o, &snaps[i], 1);
    }

    ngx_http_dsm_family(&o, "deepseek_metrics_series", "gauge",
                        "Series in use and the zone's capacity.");
    for (i = 0; i < nzones; i++) {
        p = ngx_http_dsm_reserve(&o, 2 * zones[i]->name.len + 160);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        o.b->last = ngx_sprintf(p,
                       "deepseek_metrics_series{zone=\"%V\",state=\"used\"} "
                       "%ui\n"
                       "deepseek_metrics_series{zone=\"%V\","
                       "state=\"capacity\"} %ui\n",
                       &zones[i]->name, snaps[i].n - 1, &zones[i]->name,
                       snaps[i].layout->max_series);
    }

    ngx_http_dsm_family(&o, "deepseek_metrics_dropped_total", "counter",
                        "Observations that found no free series and went "
                        "to the overflow series.");
    for (i = 0; i < nzones; i++) {
        p = ngx_http_dsm_reserve(&o, zones[i]->name.len + 80);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        o.b->last = ngx_sprintf(p, "deepseek_metrics_dropped_total"
                                "{zone=\"%V\"} %uA\n", &zones[i]->name,
                                zones[i]->sh->dropped);
    }

    ngx_http_dsm_family(&o, "deepseek_metrics_zone_start_time_seconds",
                        "gauge", "When the zone was created: its counters "
                        "started at zero then.");
    for (i = 0; i < nzones; i++) {
        p = ngx_http_dsm_reserve(&o, zones[i]->name.len + 80);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        o.b->last = ngx_sprintf(p, "deepseek_metrics_zone_start_time_seconds"
                                "{zone=\"%V\"} %T\n", &zones[i]->name,
                                zones[i]->sh->start_time);
    }

    ngx_http_dsm_family(&o, "deepseek_metrics_reloads_total", "counter",
                        "Configuration reloads that kept the zone.");
    for (i = 0; i < nzones; i++) {
        p = ngx_http_dsm_reserve(&o, zones[i]->name.len + 80);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        o.b->last = ngx_sprintf(p, "deepseek_metrics_reloads_total"
                                "{zone=\"%V\"} %uA\n", &zones[i]->name,
                                zones[i]->sh->reloads);
    }

    ngx_http_dsm_family(&o, "deepseek_metrics_last_reload_time_seconds",
                        "gauge", "When the last reload that kept the zone "
                        "happened (0: none yet).");
    for (i = 0; i < nzones; i++) {
        p = ngx_http_dsm_reserve(&o, zones[i]->name.len + 80);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        o.b->last = ngx_sprintf(p, "deepseek_metrics_last_reload_time_seconds"
                                "{zone=\"%V\"} %uA\n", &zones[i]->name,
                                zones[i]->sh->last_reload);
    }

    ngx_http_dsm_family(&o, "deepseek_build_info", "gauge",
                        "Module and nginx versions.");

    p = ngx_http_dsm_reserve(&o, 128);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.b->last = ngx_sprintf(p, "deepseek_build_info{version=\""
                            NGX_HTTP_DSM_VERSION "\",nginx_version=\""
                            NGINX_VERSION "\"} 1\n");

    if (o.om) {
        p = ngx_http_dsm_reserve(&o, 8);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        o.b->last = ngx_cpymem(p, "# EOF\n", 6);
    }

    if (o.error) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* sizes are known only now: fix up and send */

    o.size += o.b->last - o.b->pos;
    o.b->last_buf = (r == r->main) ? 1 : 0;
    o.b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o.size;

    if (o.om) {
        ngx_str_set(&r->headers_out.content_type,
                   "application/openmetrics-text; version=1.0.0; "
                   "charset=utf-8");

    } else {
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, o.out);
}


/*
 * One pass over the zone's published series, each counter read once; no
 * lock is taken, so a scrape never makes a worker wait.
 */

static ngx_int_t
ngx_http_dsm_snapshot(ngx_http_request_t *r, ngx_http_dsm_zone_t *zone,
    ngx_http_dsm_snap_t *snap, ngx_uint_t multi)
{
    size_t                      nv, len;
    ngx_uint_t                  i, j, n;
    ngx_http_dsm_sh_t          *sh;
    ngx_http_dsm_entry_t       *e;
    ngx_http_dsm_series_t      *s;
    ngx_atomic_uint_t          *v;
    volatile ngx_atomic_uint_t *src;

    sh = zone->sh;

    snap->zone = zone;
    snap->layout = &sh->layout;

    if (multi) {
        len = sizeof("zone=\"\",") - 1
              + ngx_http_dsm_escape(NULL, zone->name.data, zone->name.len);

        snap->prefix.data = ngx_pnalloc(r->pool, len);
        if (snap->prefix.data == NULL) {
            return NGX_ERROR;
        }

        snap->prefix.len = ngx_sprintf(snap->prefix.data, "zone=\"")
                           - snap->prefix.data;
        snap->prefix.len += ngx_http_dsm_escape(snap->prefix.data
                                                + snap->prefix.len,
                                                zone->name.data,
                                                zone->name.len);
        snap->prefix.data[snap->prefix.len++] = '"';
        snap->prefix.data[snap->prefix.len++] = ',';
    }

    n = sh->nseries + 1;

    ngx_memory_barrier();

    nv = (sh->layout.series_size - offsetof(ngx_http_dsm_series_t, v))
         / sizeof(ngx_atomic_t);

    snap->entries = ngx_palloc(r->pool, n * sizeof(ngx_http_dsm_entry_t));
    v = ngx_palloc(r->pool, n * nv * sizeof(ngx_atomic_uint_t));

    if (snap->entries == NULL || v == NULL) {
        return NGX_ERROR;
    }

    snap->n = n;

    for (i = 0; i < n; i++) {
        s = ngx_http_dsm_series(sh, i);
        e = &snap->entries[i];

        e->text = s->text;
        e->text_len = s->text_len;
        e->currency = s->currency;
        e->currency_len = s->currency_len;
        e->status = s->status;
        e->v = v;

        src = s->v;
        for (j = 0; j < nv; j++) {
            v[j] = src[j];
        }

        v += nv;
    }

    ngx_qsort(snap->entries, n, sizeof(ngx_http_dsm_entry_t),
              ngx_http_dsm_cmp);

    (void) ngx_http_dsm_slots_reap(zone);

    snap->nendpoints = sh->nendpoints;

    for (i = 0; i <= sh->nslots; i++) {
        for (j = 0; j <= NGX_HTTP_DSM_MAX_ENDPOINTS; j++) {
            snap->in_flight[j] += sh->slots[i].in_flight[j];
        }
    }

    /* a request that started in one worker generation may not be negative */

    for (j = 0; j <= NGX_HTTP_DSM_MAX_ENDPOINTS; j++) {
        if ((ngx_atomic_int_t) snap->in_flight[j] < 0) {
            snap->in_flight[j] = 0;
        }
    }

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_dsm_cmp(const void *one, const void *two)
{
    const ngx_http_dsm_entry_t  *a = one;
    const ngx_http_dsm_entry_t  *b = two;

    int  rc;

    rc = ngx_memn2cmp(a->text, b->text, a->text_len, b->text_len);
    if (rc) {
        return rc;
    }

    rc = ngx_memn2cmp(a->currency, b->currency, a->currency_len,
                      b->currency_len);
    if (rc) {
        return rc;
    }

    return (int) a->status - (int) b->status;
}


static u_char *
ngx_http_dsm_reserve(ngx_http_dsm_out_t *o, size_t n)
{
    size_t        size;
    ngx_chain_t  *cl;

    if (o->error) {
        return NULL;
    }

    if (o->b && (size_t) (o->b->end - o->b->last) >= n) {
        return o->b->last;
    }

    if (o->b) {
        o->size += o->b->last - o->b->pos;
    }

    size = ngx_max(n, 64 * 1024);

    cl = ngx_alloc_chain_link(o->r->pool);
    if (cl == NULL) {
        o->error = 1;
        return NULL;
    }

    cl->buf = ngx_create_temp_buf(o->r->pool, size);
    if (cl->buf == NULL) {
        o->error = 1;
        return NULL;
    }

    cl->next = NULL;
    *o->last = cl;
    o->last = &cl->next;
    o->b = cl->buf;

    return o->b->last;
}


/* HELP and TYPE; OpenMetrics names a counter family without "_total" */

static void
ngx_http_dsm_family(ngx_http_dsm_out_t *o, char *name, char *type,
    char *help)
{
    u_char  *p;
    size_t   len;

    len = ngx_strlen(name);

    if (o->om && len > 6 && ngx_strcmp(name + len - 6, "_total") == 0) {
        len -= 6;
    }

    p = ngx_http_dsm_reserve(o, 2 * len + ngx_strlen(type)
                                + ngx_strlen(help) + 32);
    if (p == NULL) {
        return;
    }

    o->b->last = ngx_sprintf(p, "# HELP %*s %s\n# TYPE %*s %s\n",
                             len, name, help, len, name, type);
}


static void
ngx_http_dsm_requests(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap)
{
    u_char                *p;
    uint64_t               count;
    ngx_uint_t             i, b, h;
    ngx_http_dsm_entry_t  *e;

    h = snap->layout->offset[NGX_HTTP_DSM_H_LATENCY];

    for (i = 0; i < snap->n; i++) {
        e = &snap->entries[i];

        count = 0;
        for (b = 0; b <= snap->layout->nbuckets[NGX_HTTP_DSM_H_LATENCY];
             b++)
        {
            count += e->v[h + b];
        }

        if (count == 0) {
            continue;
        }

        p = ngx_http_dsm_reserve(o, snap->prefix.len + e->text_len + 96);
        if (p == NULL) {
            return;
        }

        if (e->status == NGX_HTTP_DSM_STATUS_OVERFLOW) {
            o->b->last = ngx_sprintf(p, "deepseek_requests_total{%V%*s,"
                                     "status=\"__overflow__\"} %uL\n",
                                     &snap->prefix, e->text_len, e->text,
                                     count);

        } else {
            o->b->last = ngx_sprintf(p, "deepseek_requests_total{%V%*s,"
                                     "status=\"%03ui\"} %uL\n",
                                     &snap->prefix, e->text_len, e->text,
                                     e->status, count);
        }
    }
}


/* the entries of one label set without status: [i, *end) */

static ngx_uint_t
ngx_http_dsm_group(ngx_http_dsm_snap_t *snap, ngx_uint_t i,
    ngx_uint_t currency)
{
    ngx_http_dsm_entry_t  *a, *b;

    a = &snap->entries[i];

    for (i++; i < snap->n; i++) {
        b = &snap->entries[i];

        if (a->text_len != b->text_len
            || ngx_memcmp(a->text, b->text, a->text_len) != 0)
        {
            break;
        }

        if (currency
            && (a->currency_len != b->currency_len
                || ngx_memcmp(a->currency, b->currency, a->currency_len)
                   != 0))
        {
            break;
        }
    }

    return i;
}


static void
ngx_http_dsm_histogram(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_uint_t h, char *name)
{
    u_char                *p, le[32];
    uint64_t               counts[NGX_HTTP_DSM_MAX_BUCKETS + 1], sum, cum;
    ngx_uint_t             i, j, end, b, nb, off;
    ngx_http_dsm_entry_t  *e;

    nb = snap->layout->nbuckets[h];
    off = snap->layout->offset[h];

    if (nb == 0) {
        return;
    }

    for (i = 0; i < snap->n; i = end) {
        end = ngx_http_dsm_group(snap, i, 0);

        ngx_memzero(counts, sizeof(counts));
        sum = 0;

        for (j = i; j < end; j++) {
            e = &snap->entries[j];

            for (b = 0; b <= nb; b++) {
                counts[b] += e->v[off + b];
            }

            sum += e->v[off + nb + 1];
        }

        e = &snap->entries[i];

        cum = 0;
        for (b = 0; b <= nb; b++) {
            cum += counts[b];
        }

        if (cum == 0) {
            continue;
        }

        p = ngx_http_dsm_reserve(o, (nb + 3)
                                    * (snap->prefix.len + e->text_len + 128));
        if (p == NULL) {
            return;
        }

        cum = 0;

        for (b = 0; b <= nb; b++) {
            cum += counts[b];

            if (b < nb) {
                *ngx_http_dsm_seconds(le, snap->layout->bounds[h][b]) = '\0';

            } else {
                ngx_memcpy(le, "+Inf", sizeof("+Inf"));
            }

            p = ngx_sprintf(p, "%s_bucket{%V%*s,le=\"%s\"} %uL\n",
                            name, &snap->prefix, e->text_len, e->text, le,
                            cum);
        }

        p = ngx_sprintf(p, "%s_sum{%V%*s} ", name, &snap->prefix,
                        e->text_len, e->text);
        p = ngx_http_dsm_seconds(p, sum);
        p = ngx_sprintf(p, "\n%s_count{%V%*s} %uL\n", name, &snap->prefix,
                        e->text_len, e->text, cum);

        o->b->last = p;
    }
}


/* what: 0 tokens by type, 1 reasoning tokens, 2 cost */

static void
ngx_http_dsm_tokens(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_uint_t what)
{
    u_char                *p;
    uint64_t               hit, miss, out, reasoning, cost;
    ngx_uint_t             i, j, end;
    ngx_http_dsm_entry_t  *e;

    for (i = 0; i < snap->n; i = end) {
        end = ngx_http_dsm_group(snap, i, what == 2);

        hit = 0;
        miss = 0;
        out = 0;
        reasoning = 0;
        cost = 0;

        for (j = i; j < end; j++) {
            e = &snap->entries[j];
            hit += e->v[NGX_HTTP_DSM_C_HIT];
            miss += e->v[NGX_HTTP_DSM_C_MISS];
            out += e->v[NGX_HTTP_DSM_C_OUTPUT];
            reasoning += e->v[NGX_HTTP_DSM_C_REASONING];
            cost += e->v[NGX_HTTP_DSM_C_COST];
        }

        if (hit + miss + out == 0) {
            continue;
        }

        e = &snap->entries[i];

        p = ngx_http_dsm_reserve(o, 3 * (snap->prefix.len + e->text_len
                                         + e->currency_len + 96));
        if (p == NULL) {
            return;
        }

        switch (what) {

        case 0:
            p = ngx_sprintf(p, "deepseek_tokens_total{%V%*s,"
                            "type=\"input_cache_hit\"} %uL\n"
                            "deepseek_tokens_total{%V%*s,"
                            "type=\"input_cache_miss\"} %uL\n"
                            "deepseek_tokens_total{%V%*s,"
                            "type=\"output\"} %uL\n",
                            &snap->prefix, e->text_len, e->text, hit,
                            &snap->prefix, e->text_len, e->text, miss,
                            &snap->prefix, e->text_len, e->text, out);
            break;

        case 1:
            p = ngx_sprintf(p, "deepseek_reasoning_tokens_total{%V%*s} "
                            "%uL\n", &snap->prefix, e->text_len, e->text,
                            reasoning);
            break;

        default:
            if (e->currency_len == 0) {
                break;
            }

            /* 1e-12 units: print with 12 decimals, exactly */

            p = ngx_sprintf(p, "deepseek_cost_total{%V%*s,currency=\"%*s\"} "
                            "%uL.%012uL\n", &snap->prefix, e->text_len,
                            e->text, e->currency_len, e->currency,
                            cost / 1000000000000ULL,
                            cost % 1000000000000ULL);
            break;
        }

        o->b->last = p;
    }
}


static ngx_uint_t
ngx_http_dsm_status_reason(ngx_uint_t status)
{
    switch (status) {
    case 400:
    case 413:
    case 414:
    case 422:
    case 431:
        return 0;
    case 401:
    case 403:
        return 1;
    case 402:
        return 2;
    case 404:
        return 3;
    case 429:
        return 4;
    case 499:
        return 10;
    case 502:
        return 7;
    case 503:
        return 8;
    case 504:
        return 9;
    }

    if (status >= 400 && status < 500) {
        return 5;
    }

    if (status >= 500 && status < 600) {
        return 6;
    }

    return NGX_HTTP_DSM_NREASONS;
}


/* missing: 0 errors by reason, 1 usage missing by reason */

static void
ngx_http_dsm_reasons(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_uint_t missing)
{
    u_char                *p;
    uint64_t               n[NGX_HTTP_DSM_NREASONS], count;
    ngx_uint_t             i, j, end, b, r, nr, h;
    ngx_str_t             *reason;
    ngx_http_dsm_entry_t  *e;

    nr = missing ? NGX_HTTP_DSM_NMISSING : NGX_HTTP_DSM_NREASONS;
    h = snap->layout->offset[NGX_HTTP_DSM_H_LATENCY];

    for (i = 0; i < snap->n; i = end) {
        end = ngx_http_dsm_group(snap, i, 0);

        ngx_memzero(n, sizeof(n));

        for (j = i; j < end; j++) {
            e = &snap->entries[j];

            if (missing) {
                for (r = 0; r < NGX_HTTP_DSM_NMISSING; r++) {
                    n[r] += e->v[NGX_HTTP_DSM_C_MISSING + r];
                }

                continue;
            }

            for (r = 0; r < NGX_HTTP_DSM_NREASONS; r++) {
                b = ngx_http_dsm_reasons_list[r].inband;

                if (b < NGX_HTTP_DSM_NINBAND) {
                    n[r] += e->v[NGX_HTTP_DSM_C_INBAND + b];
                }
            }

            r = ngx_http_dsm_status_reason(e->status);

            if (r < NGX_HTTP_DSM_NREASONS) {
                count = 0;
                for (b = 0; b <= snap->layout->nbuckets[0]; b++) {
                    count += e->v[h + b];
                }

                n[r] += count;
            }
        }

        e = &snap->entries[i];

        for (r = 0; r < nr; r++) {
            if (n[r] == 0) {
                continue;
            }

            reason = missing ? &ngx_http_dsm_missing_list[r]
                             : &ngx_http_dsm_reasons_list[r].reason;

            p = ngx_http_dsm_reserve(o, snap->prefix.len + e->text_len
                                        + reason->len + 96);
            if (p == NULL) {
                return;
            }

            o->b->last = ngx_sprintf(p, "%s{%V%*s,reason=\"%V\"} %uL\n",
                                     missing ? "deepseek_usage_missing_total"
                                             : "deepseek_errors_total",
                                     &snap->prefix, e->text_len, e->text,
                                     reason, n[r]);
        }
    }
}


/* microseconds as seconds, shortest exact form, at least one decimal */

static u_char *
ngx_http_dsm_seconds(u_char *p, uint64_t us)
{
    p = ngx_sprintf(p, "%uL.%06uL", us / 1000000, us % 1000000);

    /* keep at least one decimal: "1.0", "0.05" */

    while (p[-1] == '0' && p[-2] != '.') {
        p--;
    }

    return p;
}
