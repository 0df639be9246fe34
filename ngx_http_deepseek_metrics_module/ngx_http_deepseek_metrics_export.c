
/*
 * The exporter: a content handler that writes Prometheus text 0.0.4,
 * OpenMetrics 1.0.0 or protobuf without taking any lock.  The body is
 * streamed: a few buffers are formatted from the live counters, sent, and
 * reused, and the scrape resumes on the write event when the client reads
 * slowly, so its memory does not grow with the label sets.
 */


#include "ngx_http_deepseek_metrics_export.h"


const char  *ngx_http_dsm_balance_types[NGX_HTTP_DSM_BALANCE_TYPES] = {
    "total", "granted", "topped_up"
};


typedef struct {
    ngx_str_t                     reason;
    ngx_uint_t                    inband;        /* or NGX_HTTP_DSM_NINBAND */
} ngx_http_dsm_reason_t;


/* a metric family: its lines for one zone's snapshot come from emit */

typedef struct ngx_http_dsm_family_s  ngx_http_dsm_family_t;

typedef void (*ngx_http_dsm_emit_pt)(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);

#define NGX_HTTP_DSM_FAMILY_ZONES     0   /* once per zone */
#define NGX_HTTP_DSM_FAMILY_HIST      1   /* if a zone has the histogram */
#define NGX_HTTP_DSM_FAMILY_PRICED    2   /* if prices are configured */
#define NGX_HTTP_DSM_FAMILY_ONCE      3   /* once, not per zone */
#define NGX_HTTP_DSM_FAMILY_BALANCE   4   /* if a zone has a balance */

struct ngx_http_dsm_family_s {
    ngx_str_t                     name;
    char                         *type;
    char                         *help;
    ngx_http_dsm_emit_pt          emit;
    ngx_uint_t                    arg;           /* for emit */
    ngx_uint_t                    when;
};


/* a streamed scrape: where it is, between write events */

typedef struct {
    ngx_http_dsm_out_t            out;
    ngx_http_dsm_snap_t          *snaps;
    ngx_uint_t                    nzones;
    ngx_uint_t                    family;        /* the position: family, */
    ngx_uint_t                    zone;          /* zone, out.series */
    unsigned                      started:1;     /* HELP and TYPE written */
    unsigned                      done:1;
} ngx_http_dsm_scrape_t;


#define NGX_HTTP_DSM_TAG  (ngx_buf_tag_t) &ngx_http_deepseek_metrics_module


static ngx_int_t ngx_http_dsm_export_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dsm_json_view(ngx_http_request_t *r);
static void ngx_http_dsm_scrape_cleanup(void *data);
static void ngx_http_dsm_scrape_writer(ngx_http_request_t *r);
static ngx_int_t ngx_http_dsm_scrape_wait(ngx_http_request_t *r);
static ngx_int_t ngx_http_dsm_scrape_send(ngx_http_request_t *r,
    ngx_http_dsm_scrape_t *sc);
static void ngx_http_dsm_scrape_emit(ngx_http_dsm_scrape_t *sc);
static ngx_uint_t ngx_http_dsm_spare(ngx_http_dsm_out_t *o);
static void ngx_http_dsm_export_uncount(ngx_http_request_t *r);
static ngx_http_dsm_snap_t *ngx_http_dsm_snapshots_read(ngx_http_request_t *r,
    ngx_uint_t *nzones, ngx_uint_t copy);
static ngx_int_t ngx_http_dsm_snapshot(ngx_http_request_t *r,
    ngx_http_dsm_zone_t *zone, ngx_http_dsm_snap_t *snap, ngx_uint_t multi,
    ngx_uint_t copy);
static void ngx_http_dsm_snapshot_overflow(ngx_http_dsm_sh_t *sh,
    ngx_http_dsm_entry_t *e, ngx_atomic_uint_t *w);
static void ngx_http_dsm_snapshot_in_flight(ngx_http_dsm_zone_t *zone,
    ngx_http_dsm_snap_t *snap);
static ngx_uint_t ngx_http_dsm_family_shown(ngx_http_dsm_out_t *o,
    const ngx_http_dsm_family_t *f, ngx_http_dsm_snap_t *snaps,
    ngx_uint_t nzones);
static void ngx_http_dsm_family(ngx_http_dsm_out_t *o,
    const ngx_http_dsm_family_t *f);
static u_char *ngx_http_dsm_open(u_char *p, const ngx_str_t *name,
    ngx_http_dsm_snap_t *snap, ngx_http_dsm_entry_t *e);
static void ngx_http_dsm_requests(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_histogram(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_tokens(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_in_flight(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_reasons(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_zone_value(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_zone_gauge(ngx_http_dsm_out_t *o,
    const ngx_str_t *name, ngx_http_dsm_snap_t *snap, char *state,
    uint64_t value);
static void ngx_http_dsm_snapshot_balance(ngx_http_dsm_sh_t *sh,
    ngx_http_dsm_snap_t *snap);
static void ngx_http_dsm_balance(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static void ngx_http_dsm_build_info(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, const ngx_http_dsm_family_t *f);
static ngx_uint_t ngx_http_dsm_status_reason(ngx_uint_t status);
static ngx_uint_t ngx_http_dsm_family_kind(const ngx_http_dsm_family_t *f);


static const ngx_http_dsm_reason_t
    ngx_http_dsm_reasons_list[NGX_HTTP_DSM_NREASONS + 1] =
{
    { ngx_string("invalid_request"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("auth"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("insufficient_balance"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("not_found"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("rate_limited"), NGX_HTTP_DSM_INBAND_RATE_LIMITED },
    { ngx_string("client_error"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("server_error"), NGX_HTTP_DSM_INBAND_SERVER_ERROR },
    { ngx_string("upstream_unavailable"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("overloaded"), NGX_HTTP_DSM_INBAND_OVERLOADED },
    { ngx_string("upstream_timeout"), NGX_HTTP_DSM_NINBAND },
    { ngx_string("client_closed"), NGX_HTTP_DSM_INBAND_CLIENT_CLOSED },
    { ngx_string("stream_truncated"), NGX_HTTP_DSM_INBAND_TRUNCATED },
    { ngx_string("queue_timeout"), NGX_HTTP_DSM_INBAND_QUEUE_TIMEOUT },
    { ngx_string("content_filter"), NGX_HTTP_DSM_INBAND_CONTENT_FILTER },
    { ngx_string("insufficient_system_resource"),
      NGX_HTTP_DSM_INBAND_INSUFFICIENT },
    { ngx_string("empty_response"), NGX_HTTP_DSM_INBAND_EMPTY },
    { ngx_string("stream_error"), NGX_HTTP_DSM_INBAND_STREAM_ERROR },
    { ngx_string("client_timeout"), NGX_HTTP_DSM_INBAND_CLIENT_TIMEOUT },
    { ngx_null_string, 0 }
};


/* deepseek_usage_missing_total reasons: NGX_HTTP_DSM_MISSING_* order */

static const ngx_str_t  ngx_http_dsm_missing_list[NGX_HTTP_DSM_NMISSING] = {
    ngx_string("compressed"),
    ngx_string("truncated"),
    ngx_string("client_abort"),
    ngx_string("invalid_json"),
    ngx_string("absent"),
    ngx_string("invalid_usage"),
    ngx_string("invalid_balance")
};


/*
 * The exposition, family by family, in this order.
 *
 * An emitter writes through ngx_http_dsm_reserve() and sets o->b->last
 * after each reserved piece.  A scrape has a few buffers only: when they
 * all wait for the client, reserve returns NULL (o->full is set) and the
 * emitter returns; it is called again for the same zone once a buffer is
 * free.  An emitter over series resumes by one pattern, o->series being
 * the cursor (0 when a zone starts):
 *
 *     for ( ; o->series < snap->n; o->series++) {
 *         e = ngx_http_dsm_entry(o, snap, from, n);
 *         p = ngx_http_dsm_reserve(o, size of all the series' lines);
 *         if (p == NULL) {
 *             return;                 (resumed at this series)
 *         }
 *         ... the series' lines from e ...
 *         o->b->last = p;
 *     }
 *
 * One reserve per series: a series that found no room wrote nothing and
 * is read again on resumption.  ngx_http_dsm_entry() copies the series'
 * counters [from, from + n) once, live and without a lock, so all the
 * lines of a series come from the same reads.  An emitter without a
 * cursor (a zone's few lines) must write less than NGX_HTTP_DSM_BUF_SIZE
 * in all: it is only called with a whole free buffer at hand, so its
 * reserves never fail for room.
 */

#define NGX_HTTP_DSM_BUF_SIZE         (64 * 1024)
#define NGX_HTTP_DSM_BUFS             4


static const ngx_http_dsm_family_t  ngx_http_dsm_families[] = {

    { ngx_string("deepseek_requests_total"), "counter",
      "Requests finished, by status sent to the client.",
      ngx_http_dsm_requests, 0, NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_request_latency_seconds"), "histogram",
      "Request start to last byte sent ($request_time).",
      ngx_http_dsm_histogram, NGX_HTTP_DSM_H_LATENCY,
      NGX_HTTP_DSM_FAMILY_HIST },

    { ngx_string("deepseek_time_to_first_token_seconds"), "histogram",
      "Streaming: request start to the first event with content, "
      "reasoning_content or tool_calls.",
      ngx_http_dsm_histogram, NGX_HTTP_DSM_H_TTFT, NGX_HTTP_DSM_FAMILY_HIST },

    { ngx_string("deepseek_time_to_first_answer_token_seconds"), "histogram",
      "Streaming: request start to the first answer token (content or "
      "tool_calls, after any reasoning).",
      ngx_http_dsm_histogram, NGX_HTTP_DSM_H_ANSWER,
      NGX_HTTP_DSM_FAMILY_HIST },

    { ngx_string("deepseek_queue_wait_seconds"), "histogram",
      "Streaming: request start to the first data event (time queued at "
      "DeepSeek sending keep-alives).",
      ngx_http_dsm_histogram, NGX_HTTP_DSM_H_QUEUE,
      NGX_HTTP_DSM_FAMILY_HIST },

    { ngx_string("deepseek_time_per_output_token_seconds"), "histogram",
      "Streaming: first token to last byte, divided by output tokens - 1.",
      ngx_http_dsm_histogram, NGX_HTTP_DSM_H_TPOT, NGX_HTTP_DSM_FAMILY_HIST },

    { ngx_string("deepseek_stream_max_gap_seconds"), "histogram",
      "Streaming: the longest pause between two data events of a stream "
      "(up to its end if it was cut).",
      ngx_http_dsm_histogram, NGX_HTTP_DSM_H_GAP, NGX_HTTP_DSM_FAMILY_HIST },

    { ngx_string("deepseek_keepalives_total"), "counter",
      "Streaming: SSE comment lines (DeepSeek's \": keep-alive\").",
      ngx_http_dsm_tokens, NGX_HTTP_DSM_TOKENS_KEEPALIVE,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_tokens_total"), "counter",
      "Tokens by type: input_cache_hit, input_cache_miss, "
      "output (they sum to total_tokens).",
      ngx_http_dsm_tokens, NGX_HTTP_DSM_TOKENS_BY_TYPE,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_reasoning_tokens_total"), "counter",
      "Reasoning tokens, a part of the output tokens.",
      ngx_http_dsm_tokens, NGX_HTTP_DSM_TOKENS_REASONING,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_cost_total"), "counter",
      "Money spent by the configured price table.",
      ngx_http_dsm_tokens, NGX_HTTP_DSM_TOKENS_COST,
      NGX_HTTP_DSM_FAMILY_PRICED },

    { ngx_string("deepseek_requests_in_flight"), "gauge",
      "Requests started and not yet finished.",
      ngx_http_dsm_in_flight, 0, NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_errors_total"), "counter",
      "Failed requests: HTTP-level by status, and in-band "
      "failures under a 200.",
      ngx_http_dsm_reasons, 0, NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_usage_missing_total"), "counter",
      "Responses whose token usage could not be read.",
      ngx_http_dsm_reasons, 1, NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_balance"), "gauge",
      "Account balance of the last GET /user/balance read, by currency "
      "and type (total, granted, topped_up).",
      ngx_http_dsm_balance, NGX_HTTP_DSM_BAL_AMOUNT,
      NGX_HTTP_DSM_FAMILY_BALANCE },

    { ngx_string("deepseek_balance_available"), "gauge",
      "is_available of the last balance read: 1 or 0.",
      ngx_http_dsm_balance, NGX_HTTP_DSM_BAL_AVAILABLE,
      NGX_HTTP_DSM_FAMILY_BALANCE },

    { ngx_string("deepseek_balance_updated_seconds"), "gauge",
      "When the last balance was read (unix time).",
      ngx_http_dsm_balance, NGX_HTTP_DSM_BAL_UPDATED,
      NGX_HTTP_DSM_FAMILY_BALANCE },

    { ngx_string("deepseek_metrics_series"), "gauge",
      "Series in use and the zone's capacity.",
      ngx_http_dsm_zone_value, NGX_HTTP_DSM_V_SERIES,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_metrics_dropped_total"), "counter",
      "Observations that found no free series and went "
      "to the overflow series.",
      ngx_http_dsm_zone_value, NGX_HTTP_DSM_V_DROPPED,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_metrics_zone_start_time_seconds"), "gauge",
      "When the zone was created: its counters started at zero then.",
      ngx_http_dsm_zone_value, NGX_HTTP_DSM_V_START_TIME,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_metrics_reloads_total"), "counter",
      "Configuration reloads that kept the zone.",
      ngx_http_dsm_zone_value, NGX_HTTP_DSM_V_RELOADS,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_metrics_last_reload_time_seconds"), "gauge",
      "When the last reload that kept the zone happened (0: none yet).",
      ngx_http_dsm_zone_value, NGX_HTTP_DSM_V_LAST_RELOAD,
      NGX_HTTP_DSM_FAMILY_ZONES },

    /*
     * During a binary upgrade (USR2) two masters share the listening
     * sockets and each has its own zone: scrapes alternate between them.
     */

    { ngx_string("deepseek_metrics_master_pid"), "gauge",
      "PID of the nginx master whose worker served this "
      "scrape: it changes with a binary upgrade, and "
      "alternates while two masters serve the port.",
      ngx_http_dsm_zone_value, NGX_HTTP_DSM_V_MASTER_PID,
      NGX_HTTP_DSM_FAMILY_ZONES },

    { ngx_string("deepseek_build_info"), "gauge",
      "Module and nginx versions.",
      ngx_http_dsm_build_info, 0, NGX_HTTP_DSM_FAMILY_ONCE },

    { ngx_null_string, NULL, NULL, NULL, 0, 0 }
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

        *zp = ngx_http_dsm_zone_lookup(cf, &value[i],
                                       "deepseek_metrics_export");
        if (*zp == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dsm_export_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_uint_t                 view;
    ngx_http_dsm_out_t        *o;
    ngx_pool_cleanup_t        *cln;
    ngx_http_dsm_scrape_t     *sc;
    ngx_http_dsm_main_conf_t  *dmcf;

    ngx_http_dsm_export_uncount(r);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* a browser gets the status page, a script JSON, the rest as before */

    view = ngx_http_dsm_view(r);

    if (view >= NGX_HTTP_DSM_VIEW_PAGE) {
        return ngx_http_dsm_status_asset(r, view);
    }

    if (ngx_http_dsm_vary(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (view == NGX_HTTP_DSM_VIEW_JSON) {
        return ngx_http_dsm_json_view(r);
    }

    /* the cleanup only marks the scrape: the writer finds it by it */

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_dsm_scrape_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dsm_scrape_cleanup;
    sc = cln->data;
    ngx_memzero(sc, sizeof(ngx_http_dsm_scrape_t));

    sc->snaps = ngx_http_dsm_snapshots_read(r, &sc->nzones, 0);
    if (sc->snaps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_deepseek_metrics_module);

    o = &sc->out;
    o->r = r;
    o->last = &o->out;
    o->om = (view == NGX_HTTP_DSM_VIEW_OPENMETRICS);
    o->priced = (dmcf->prices != NULL);

    if (view == NGX_HTTP_DSM_VIEW_PROTOBUF) {
        o->pb = ngx_http_dsm_pb_init(r, sc->snaps, sc->nzones);
        if (o->pb == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* a subrequest gets its body whole, in one chain */
    o->max_bufs = (r == r->main) ? NGX_HTTP_DSM_BUFS : 0;

    /*
     * The first buffers are formatted before the header: a body that fits
     * in them keeps an exact Content-Length, a larger one is chunked.
     */

    ngx_http_dsm_scrape_emit(sc);

    if (o->error) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;

    if (sc->done) {
        r->headers_out.content_length_n = o->size
                                          + (o->b ? o->b->last - o->b->pos
                                                  : 0);
    }

    /* the MIME type alone is what gzip_types and the like match */

    if (o->om) {
        ngx_str_set(&r->headers_out.content_type,
                   "application/openmetrics-text; version=1.0.0; "
                   "charset=utf-8");
        r->headers_out.content_type_len =
                                  sizeof("application/openmetrics-text") - 1;

    } else if (o->pb) {
        ngx_str_set(&r->headers_out.content_type,
                    "application/vnd.google.protobuf; "
                    "proto=io.prometheus.client.MetricFamily; "
                    "encoding=delimited");
        r->headers_out.content_type_len =
                               sizeof("application/vnd.google.protobuf") - 1;

    } else {
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
        r->headers_out.content_type_len = sizeof("text/plain") - 1;
    }
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    rc = ngx_http_dsm_scrape_send(r, sc);

    if (sc->done || rc == NGX_ERROR) {
        return rc;
    }

    /* the client has the buffers: the rest follows on the write event */

    r->write_event_handler = ngx_http_dsm_scrape_writer;

    if (ngx_http_dsm_scrape_wait(r) != NGX_OK) {
        return NGX_ERROR;
    }

    r->main->count++;

    return NGX_DONE;
}


static ngx_int_t
ngx_http_dsm_json_view(ngx_http_request_t *r)
{
    ngx_uint_t            nzones;
    ngx_http_dsm_snap_t  *snaps;

    snaps = ngx_http_dsm_snapshots(r, &nzones);
    if (snaps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_dsm_json(r, snaps, nzones);
}


static void
ngx_http_dsm_scrape_cleanup(void *data)
{
    /* nothing: the pool frees the scrape's buffers */
}


static void
ngx_http_dsm_scrape_writer(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_event_t            *wev;
    ngx_connection_t       *c;
    ngx_pool_cleanup_t     *cln;
    ngx_http_dsm_scrape_t  *sc;

    c = r->connection;
    wev = c->write;

    /* as ngx_http_writer() */

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;

        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (wev->delayed || r->aio) {
        if (ngx_http_dsm_scrape_wait(r) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    sc = NULL;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_dsm_scrape_cleanup) {
            sc = cln->data;
            break;
        }
    }

    if (sc == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    rc = ngx_http_dsm_scrape_send(r, sc);

    if (!sc->done && rc != NGX_ERROR) {
        if (ngx_http_dsm_scrape_wait(r) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "deepseek metrics: scrape formatted, rc %i", rc);

    /* the one finalization: nginx's writer sends what the client has not */

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, rc);
}


/* the write event (or send_timeout) resumes the scrape */

static ngx_int_t
ngx_http_dsm_scrape_wait(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r->main, ngx_http_core_module);

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    return ngx_handle_write_event(wev, clcf->send_lowat);
}


/*
 * Formats into the free buffers and passes them on until the body is done
 * (then returns the output filter's code) or every buffer waits for the
 * client (NGX_AGAIN, sc->done unset).
 */

static ngx_int_t
ngx_http_dsm_scrape_send(ngx_http_request_t *r, ngx_http_dsm_scrape_t *sc)
{
    ngx_int_t            rc;
    ngx_chain_t         *cl;
    ngx_http_dsm_out_t  *o;

    o = &sc->out;

    for ( ;; ) {
        ngx_http_dsm_scrape_emit(sc);

        if (o->error) {
            return NGX_ERROR;
        }

        if (o->out) {
            for (cl = o->out; cl->next; cl = cl->next) { /* void */ }

            if (sc->done) {
                cl->buf->last_buf = (r == r->main) ? 1 : 0;
                cl->buf->last_in_chain = 1;

            } else {
                /* postpone_output must not keep what the scrape waits for */
                cl->buf->flush = 1;
            }

        } else if (sc->done) {
            return ngx_http_send_special(r, NGX_HTTP_LAST);
        }

        /* nothing new: pushes what the client has not read yet */

        rc = ngx_http_output_filter(r, o->out);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_chain_update_chains(r->pool, &o->free, &o->busy, &o->out,
                                NGX_HTTP_DSM_TAG);

        o->last = &o->out;
        o->b = NULL;
        o->full = 0;

        if (sc->done) {
            return rc;
        }

        if (!ngx_http_dsm_spare(o)) {
            return NGX_AGAIN;
        }
    }
}


/*
 * Writes families into the scrape's buffers until they are all in use or
 * the body is done; the position is kept in sc and o->series.
 */

static void
ngx_http_dsm_scrape_emit(ngx_http_dsm_scrape_t *sc)
{
    u_char                       *p;
    ngx_uint_t                    nzones;
    ngx_http_dsm_out_t           *o;
    ngx_http_dsm_snap_t          *snap;
    const ngx_http_dsm_family_t  *f;

    o = &sc->out;

    while (!sc->done && ngx_http_dsm_spare(o)) {

        f = &ngx_http_dsm_families[sc->family];

        if (f->name.len == 0) {
            if (o->om) {
                p = ngx_http_dsm_reserve(o, 8);
                if (p == NULL) {
                    return;
                }

                o->b->last = ngx_http_dsm_lit(p, "# EOF\n");
            }

            sc->done = 1;
            return;
        }

        if (!sc->started) {
            if (ngx_http_dsm_family_shown(o, f, sc->snaps, sc->nzones)) {
                if (o->pb) {
                    ngx_http_dsm_pb_start(o, &f->name, f->type, f->help);

                } else {
                    ngx_http_dsm_family(o, f);
                }

                sc->started = 1;
                sc->zone = 0;
                o->series = 0;

            } else {
                sc->family++;
            }

            continue;
        }

        nzones = (f->when == NGX_HTTP_DSM_FAMILY_ONCE) ? 1 : sc->nzones;

        if (sc->zone < nzones) {
            snap = (f->when == NGX_HTTP_DSM_FAMILY_ONCE)
                   ? NULL : &sc->snaps[sc->zone];

            if (o->pb) {
                ngx_http_dsm_pb_emit(o, snap, sc->zone,
                                     ngx_http_dsm_family_kind(f), f->arg);

            } else {
                f->emit(o, snap, f);
            }

            if (o->full || o->error) {
                return;
            }

            sc->zone++;
            o->series = 0;
            continue;
        }

        /* protobuf: the family's last batch */

        if (o->pb && !ngx_http_dsm_pb_flush(o)) {
            return;
        }

        sc->family++;
        sc->started = 0;
    }
}


/* a whole free buffer can be had */

static ngx_uint_t
ngx_http_dsm_spare(ngx_http_dsm_out_t *o)
{
    return !o->full && !o->error
           && (o->max_bufs == 0 || o->free || o->bufs < o->max_bufs);
}


/*
 * A request that a counted location sent here (error_page) is a scrape now:
 * the filters must not read it as DeepSeek's answer, the log phase must not
 * count it, and its in-flight count is given back here.
 */

static void
ngx_http_dsm_export_uncount(ngx_http_request_t *r)
{
    ngx_http_dsm_req_t          q;
    ngx_http_variable_value_t  *st;

    if (r != r->main) {
        return;
    }

    st = ngx_http_dsm_state(r);

    if (!st->valid || ngx_http_dsm_st_counted(st)) {
        return;
    }

    ngx_http_dsm_st_set_counted(st);

    if (!ngx_http_dsm_st_in_flight(st)) {
        return;
    }

    ngx_http_dsm_st_set_in_flight(st, 0);

    if (ngx_http_dsm_resolve(r, &q) == NGX_OK && q.zone->slot) {
        (void) ngx_atomic_fetch_add(&q.zone->slot->in_flight[q.endpoint_index],
                                    -1);
    }
}


/*
 * The snapshots of the zones this location exports, in its order, with
 * every counter copied: the JSON view and the status page format them
 * whole (they are for people, and small enough).
 */

ngx_http_dsm_snap_t *
ngx_http_dsm_snapshots(ngx_http_request_t *r, ngx_uint_t *nzones)
{
    return ngx_http_dsm_snapshots_read(r, nzones, 1);
}


/*
 * copy 0: the exposition reads the series' counters while it writes them
 * (ngx_http_dsm_entry()); the rest is read here, in-flight first.
 */

static ngx_http_dsm_snap_t *
ngx_http_dsm_snapshots_read(ngx_http_request_t *r, ngx_uint_t *nzones,
    ngx_uint_t copy)
{
    ngx_uint_t                 i, n;
    ngx_http_dsm_snap_t       *snaps;
    ngx_http_dsm_zone_t      **zones;
    ngx_http_dsm_loc_conf_t   *dlcf;
    ngx_http_dsm_main_conf_t  *dmcf;

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_deepseek_metrics_module);
    dmcf = ngx_http_get_module_main_conf(r, ngx_http_deepseek_metrics_module);

    if (dlcf->export_zones) {
        zones = dlcf->export_zones->elts;
        n = dlcf->export_zones->nelts;

    } else {
        zones = dmcf->zones.elts;
        n = dmcf->zones.nelts;
    }

    snaps = ngx_pcalloc(r->pool, (n + 1) * sizeof(ngx_http_dsm_snap_t));
    if (snaps == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        ngx_http_dsm_snapshot_in_flight(zones[i], &snaps[i]);

        if (ngx_http_dsm_snapshot(r, zones[i], &snaps[i], n > 1, copy)
            != NGX_OK)
        {
            return NULL;
        }
    }

    *nzones = n;

    return snaps;
}


/*
 * The zone's published series (their number is read once: series created
 * later wait for the next scrape) and, with copy, each counter read once;
 * no lock is taken, so a scrape never makes a worker wait.  Buckets are
 * cumulated from one read each, so they are monotone and "+Inf" equals
 * _count by construction.
 */

static ngx_int_t
ngx_http_dsm_snapshot(ngx_http_request_t *r, ngx_http_dsm_zone_t *zone,
    ngx_http_dsm_snap_t *snap, ngx_uint_t multi, ngx_uint_t copy)
{
    u_char                      *p;
    size_t                       nv, len;
    ngx_pid_t                    pid;
    ngx_uint_t                   i, j, n, h;
    ngx_http_dsm_sh_t           *sh;
    ngx_http_dsm_entry_t        *e;
    ngx_atomic_uint_t           *v;
    volatile ngx_atomic_uint_t  *src;

    sh = zone->sh;

    snap->zone = zone;
    snap->layout = &sh->layout;

    len = ngx_http_dsm_escape(NULL, zone->name.data, zone->name.len);

    p = ngx_pnalloc(r->pool, len + sizeof("zone=\"\",") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* never NULL: it is copied with memcpy(), which must not get NULL */
    ngx_str_set(&snap->prefix, "");

    if (multi) {
        snap->prefix.data = p;
        p = ngx_http_dsm_lit(p, "zone=\"");
    }

    snap->name.data = p;
    snap->name.len = len;
    p += ngx_http_dsm_escape(p, zone->name.data, zone->name.len);

    if (multi) {
        *p++ = '"';
        *p++ = ',';
        snap->prefix.len = p - snap->prefix.data;
    }

    snap->values[NGX_HTTP_DSM_V_DROPPED] = sh->dropped;
    snap->values[NGX_HTTP_DSM_V_START_TIME] = sh->start_time;
    snap->values[NGX_HTTP_DSM_V_RELOADS] = sh->reloads;
    snap->values[NGX_HTTP_DSM_V_LAST_RELOAD] = sh->last_reload;
    snap->values[NGX_HTTP_DSM_V_CAPACITY] = sh->layout.max_series;

    pid = (ngx_process == NGX_PROCESS_WORKER) ? ngx_parent : ngx_pid;
    snap->values[NGX_HTTP_DSM_V_MASTER_PID] = (uint64_t) pid;

    /* the "le" label of every bucket, with the closing brace */

    for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
        n = sh->layout.nbuckets[h];

        if (n == 0) {
            continue;
        }

        p = ngx_pnalloc(r->pool, (n + 1) * 40);
        if (p == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j <= n; j++) {
            snap->le[h][j].data = p;
            p = ngx_http_dsm_lit(p, ",le=\"");

            if (j < n) {
                p = ngx_http_dsm_seconds(p, sh->layout.bounds[h][j]);

            } else {
                p = ngx_http_dsm_lit(p, "+Inf");
            }

            p = ngx_http_dsm_lit(p, "\"} ");
            snap->le[h][j].len = p - snap->le[h][j].data;
        }
    }

    n = sh->nseries + 1;

    ngx_memory_barrier();

    /* the counters; exemplars are read at formatting, each under its lock */

    len = sh->layout.exemplar_offset ? sh->layout.exemplar_offset
                                     : sh->layout.series_size;
    nv = (len - offsetof(ngx_http_dsm_series_t, v)) / sizeof(ngx_atomic_t);

    snap->n = n;
    snap->values[NGX_HTTP_DSM_V_SERIES] = n - 1;

    snap->nendpoints = sh->nendpoints;
    snap->endpoints = sh->endpoints;

    ngx_http_dsm_snapshot_balance(sh, snap);

    snap->overflow = ngx_palloc(r->pool, (NGX_HTTP_DSM_NCODES
                                          + 2 * NGX_HTTP_DSM_NREASON_CODES)
                                         * sizeof(ngx_atomic_uint_t));
    if (snap->overflow == NULL) {
        return NGX_ERROR;
    }

    if (!copy) {
        /* one series at a time */
        snap->live.v = ngx_palloc(r->pool, nv * sizeof(ngx_atomic_uint_t));
        if (snap->live.v == NULL) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    snap->entries = ngx_palloc(r->pool, n * sizeof(ngx_http_dsm_entry_t));
    v = ngx_palloc(r->pool, n * nv * sizeof(ngx_atomic_uint_t));

    if (snap->entries == NULL || v == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        e = &snap->entries[i];
        e->s = ngx_http_dsm_series(sh, i);
        e->v = v;
        e->slots = v;
        e->nslots = NGX_HTTP_DSM_NSLOTS;

        src = e->s->v;
        for (j = 0; j < nv; j++) {
            v[j] = src[j];
        }

        v += nv;
    }

    ngx_http_dsm_snapshot_overflow(sh, &snap->entries[0], snap->overflow);

    return NGX_OK;
}


/*
 * The series at the cursor, its counters [from, from + n) read once into
 * a copy that its lines are all written from (the rest of the copy is
 * stale); from a whole snapshot, that snapshot's entry.
 */

ngx_http_dsm_entry_t *
ngx_http_dsm_entry(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_uint_t from, ngx_uint_t n)
{
    ngx_uint_t                   j;
    ngx_atomic_uint_t           *dst;
    ngx_http_dsm_entry_t        *e;
    volatile ngx_atomic_uint_t  *src;

    if (snap->entries) {
        return &snap->entries[o->series];
    }

    e = &snap->live;
    e->s = ngx_http_dsm_series(snap->zone->sh, o->series);

    /* locals: e->v would be reloaded after every store */

    src = &e->s->v[from];
    dst = &e->v[from];

    for (j = 0; j < n; j++) {
        dst[j] = src[j];
    }

    if (o->series == 0 && from < NGX_HTTP_DSM_NSLOTS) {
        ngx_http_dsm_snapshot_overflow(snap->zone->sh, e, snap->overflow);

    } else {
        e->slots = e->v;
        e->nslots = NGX_HTTP_DSM_NSLOTS;
    }

    return e;
}


/*
 * The slots of the last published reading; one being written by a newer
 * reading (another sequence) waits for the next scrape.
 */

static void
ngx_http_dsm_snapshot_balance(ngx_http_dsm_sh_t *sh, ngx_http_dsm_snap_t *snap)
{
    ngx_uint_t                    i, t;
    ngx_atomic_uint_t             last;
    ngx_http_dsm_balance_sh_t    *bs, *d;
    ngx_http_dsm_balance_slot_t  *slot;

    bs = &sh->balance;
    d = &snap->balance;

    last = bs->last;

    ngx_memory_barrier();

    d->last = last;

    if (last == 0) {
        return;
    }

    d->available = bs->available;
    d->updated = bs->updated;

    for (i = 0; i < NGX_HTTP_DSM_BALANCE_SLOTS; i++) {
        slot = &bs->slots[i];

        if (slot->seq != last) {
            continue;
        }

        d->slots[i].code = slot->code;

        for (t = 0; t < NGX_HTTP_DSM_BALANCE_TYPES; t++) {
            d->slots[i].amount[t] = slot->amount[t];
        }

        ngx_memory_barrier();

        /* rewritten meanwhile: not shown half old, half new */

        if (slot->seq != last) {
            d->slots[i].code = 0;
        }
    }
}


/*
 * Read before any counter: the log phase counts a request first and gives
 * its in-flight slot back last, so a request this read finds no longer in
 * flight is in the counters read after it.  Read the other way round, a
 * request finishing in between is in neither.
 */

static void
ngx_http_dsm_snapshot_in_flight(ngx_http_dsm_zone_t *zone,
    ngx_http_dsm_snap_t *snap)
{
    ngx_uint_t            i, j, n;
    ngx_atomic_uint_t     owner;
    ngx_http_dsm_sh_t    *sh;
    ngx_http_dsm_slot_t  *slot;

    sh = zone->sh;

    (void) ngx_http_dsm_slots_reap(zone);

    n = sh->nslots;

    for (i = 0; i < n; i++) {
        slot = &sh->slots[i];
        owner = slot->owner;

        /* free, or being cleared by its reaper or its new owner */

        if (owner == 0 || (owner & NGX_HTTP_DSM_REAPING)) {
            continue;
        }

        for (j = 0; j <= NGX_HTTP_DSM_MAX_ENDPOINTS; j++) {
            snap->in_flight[j] += slot->in_flight[j];
        }
    }

    ngx_memory_barrier();
}


/*
 * The overflow series counts every status and reason densely: its nonzero
 * counters become slot words, so that it is written like any series.
 */

static void
ngx_http_dsm_snapshot_overflow(ngx_http_dsm_sh_t *sh, ngx_http_dsm_entry_t *e,
    ngx_atomic_uint_t *w)
{
    uint64_t    c;
    ngx_uint_t  i, k, n;

    n = 0;

    for (i = 0; i < NGX_HTTP_DSM_NCODES; i++) {
        c = sh->overflow_status[i];

        if (c) {
            w[n++] = ngx_http_dsm_tag(NGX_HTTP_DSM_SLOT_STATUS, i)
                     | ngx_min(c, 0xffffffffffffULL);
        }
    }

    for (k = 0; k < 2; k++) {
        for (i = 0; i < NGX_HTTP_DSM_NREASON_CODES; i++) {
            c = sh->overflow_reason[k][i];

            if (c) {
                w[n++] = ngx_http_dsm_tag(NGX_HTTP_DSM_SLOT_INBAND + k, i)
                         | ngx_min(c, 0xffffffffffffULL);
            }
        }
    }

    e->slots = w;
    e->nslots = n;
}


/*
 * n bytes at o->b->last: in the current buffer, a sent one (o->free), or a
 * new one while the scrape has fewer than o->max_bufs; else NULL with
 * o->full set, and the scrape resumes once the client has read.
 */

u_char *
ngx_http_dsm_reserve(ngx_http_dsm_out_t *o, size_t n)
{
    size_t        size;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (o->error || o->full) {
        return NULL;
    }

    if (o->b && (size_t) (o->b->end - o->b->last) >= n) {
        return o->b->last;
    }

    if (o->b) {
        o->size += o->b->last - o->b->pos;
        o->b = NULL;
    }

    size = ngx_max(n, NGX_HTTP_DSM_BUF_SIZE);

    if (o->free) {
        cl = o->free;
        o->free = cl->next;
        b = cl->buf;

        /* a series larger than a buffer had one of its own: not kept */

        if ((size_t) (b->end - b->start) < size
            || (size_t) (b->end - b->start) > NGX_HTTP_DSM_BUF_SIZE)
        {
            ngx_pfree(o->r->pool, b->start);

            b->start = ngx_palloc(o->r->pool, size);
            if (b->start == NULL) {
                o->error = 1;
                return NULL;
            }

            b->end = b->start + size;
        }

        b->pos = b->start;
        b->last = b->start;
        b->flush = 0;

    } else if (o->max_bufs == 0 || o->bufs < o->max_bufs) {
        cl = ngx_alloc_chain_link(o->r->pool);
        if (cl == NULL) {
            o->error = 1;
            return NULL;
        }

        b = ngx_create_temp_buf(o->r->pool, size);
        if (b == NULL) {
            o->error = 1;
            return NULL;
        }

        b->tag = NGX_HTTP_DSM_TAG;
        cl->buf = b;
        o->bufs++;

    } else {
        o->full = 1;
        return NULL;
    }

    cl->next = NULL;
    *o->last = cl;
    o->last = &cl->next;
    o->b = b;

    return b->last;
}


/* a histogram no zone has, prices not configured: no family at all */

static ngx_uint_t
ngx_http_dsm_family_shown(ngx_http_dsm_out_t *o,
    const ngx_http_dsm_family_t *f, ngx_http_dsm_snap_t *snaps,
    ngx_uint_t nzones)
{
    ngx_uint_t  i;

    switch (f->when) {

    case NGX_HTTP_DSM_FAMILY_HIST:
        for (i = 0; i < nzones; i++) {
            if (snaps[i].layout->nbuckets[f->arg]) {
                return 1;
            }
        }

        return 0;

    case NGX_HTTP_DSM_FAMILY_PRICED:
        return o->priced;

    case NGX_HTTP_DSM_FAMILY_BALANCE:
        for (i = 0; i < nzones; i++) {
            if (snaps[i].balance.last) {
                return 1;
            }
        }

        return 0;

    default:
        return 1;
    }
}


/* HELP and TYPE; OpenMetrics names a counter family without "_total" */

static void
ngx_http_dsm_family(ngx_http_dsm_out_t *o, const ngx_http_dsm_family_t *f)
{
    u_char  *p;
    size_t   len;

    len = f->name.len;

    if (o->om && len > 6
        && ngx_strncmp(f->name.data + len - 6, "_total", 6) == 0)
    {
        len -= 6;
    }

    p = ngx_http_dsm_reserve(o, 2 * len + ngx_strlen(f->type)
                                + ngx_strlen(f->help) + 32);
    if (p == NULL) {
        return;
    }

    o->b->last = ngx_sprintf(p, "# HELP %*s %s\n# TYPE %*s %s\n",
                             len, f->name.data, f->help, len, f->name.data,
                             f->type);
}


/* name{zone="..",endpoint="..",model="..",user=".." */

static u_char *
ngx_http_dsm_open(u_char *p, const ngx_str_t *name, ngx_http_dsm_snap_t *snap,
    ngx_http_dsm_entry_t *e)
{
    p = ngx_cpymem(p, name->data, name->len);
    *p++ = '{';
    p = ngx_cpymem(p, snap->prefix.data, snap->prefix.len);

    return ngx_cpymem(p, e->s->text, e->s->text_len);
}


#define ngx_http_dsm_line_size(snap, e)                                      \
    (64 + (snap)->prefix.len + (e)->s->text_len + 64)


/* decimal, two digits a step: the exporter prints millions of numbers */

u_char *
ngx_http_dsm_u64(u_char *p, uint64_t n)
{
    size_t   len;
    u_char   tmp[NGX_INT64_LEN], *t;

    static const u_char  digits[] =
        "00010203040506070809101112131415161718192021222324"
        "25262728293031323334353637383940414243444546474849"
        "50515253545556575859606162636465666768697071727374"
        "75767778798081828384858687888990919293949596979899";

    if (n < 10) {
        *p++ = (u_char) ('0' + n);
        return p;
    }

    t = tmp + NGX_INT64_LEN;

    while (n >= 100) {
        t -= 2;
        ngx_memcpy(t, &digits[(n % 100) * 2], 2);
        n /= 100;
    }

    if (n >= 10) {
        t -= 2;
        ngx_memcpy(t, &digits[n * 2], 2);

    } else {
        *--t = (u_char) ('0' + n);
    }

    len = tmp + NGX_INT64_LEN - t;

    return ngx_cpymem(p, t, len);
}


static void
ngx_http_dsm_requests(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char                *p;
    uint64_t               w;
    ngx_uint_t             j, status;
    ngx_http_dsm_entry_t  *e;

    for ( /* void */ ; o->series < snap->n; o->series++) {
        e = ngx_http_dsm_entry(o, snap, 0, NGX_HTTP_DSM_NSLOTS);

        p = ngx_http_dsm_reserve(o, e->nslots
                                    * ngx_http_dsm_line_size(snap, e));
        if (p == NULL) {
            return;
        }

        for (j = 0; j < e->nslots; j++) {
            w = e->slots[j];

            if (w == 0) {
                break;
            }

            if (ngx_http_dsm_tag_kind(w) != NGX_HTTP_DSM_SLOT_STATUS) {
                continue;
            }

            status = ngx_http_dsm_tag_code(w);

            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, ",status=\"");
            *p++ = (u_char) ('0' + status / 100);
            *p++ = (u_char) ('0' + status / 10 % 10);
            *p++ = (u_char) ('0' + status % 10);
            p = ngx_http_dsm_lit(p, "\"} ");
            p = ngx_http_dsm_u64(p, ngx_http_dsm_slot_count(w));
            *p++ = '\n';
        }

        o->b->last = p;
    }
}


static void
ngx_http_dsm_histogram(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char                *p;
    size_t                 exlen;
    uint64_t               cum;
    ngx_str_t              name;
    ngx_uint_t             b, nb, h, ex;
    const ngx_str_t       *metric;
    ngx_atomic_uint_t     *v;
    ngx_http_dsm_entry_t  *e;

    h = f->arg;
    nb = snap->layout->nbuckets[h];

    if (nb == 0) {
        return;
    }

    /* exemplars: OpenMetrics only, text 0.0.4 has no syntax for them */

    ex = (o->om && snap->layout->exemplar_offset);

    metric = &f->name;

    /* a series: its nb + 1 buckets (the last is +Inf), then _sum */

    for ( /* void */ ; o->series < snap->n; o->series++) {
        e = ngx_http_dsm_entry(o, snap, snap->layout->offset[h], nb + 2);
        v = &e->v[snap->layout->offset[h]];

        cum = 0;
        exlen = 0;

        for (b = 0; b <= nb; b++) {
            cum += v[b];

            /* an exemplar is written after its count: none where it is 0 */

            if (ex && v[b]) {
                exlen += NGX_HTTP_DSM_EXEMPLAR_LEN;
            }
        }

        if (cum == 0) {
            continue;
        }

        p = ngx_http_dsm_reserve(o, (nb + 3)
                                    * ngx_http_dsm_line_size(snap, e)
                                    + exlen);
        if (p == NULL) {
            return;
        }

        name.data = p;
        p = ngx_cpymem(p, metric->data, metric->len);
        p = ngx_http_dsm_lit(p, "_bucket{");
        p = ngx_cpymem(p, snap->prefix.data, snap->prefix.len);
        p = ngx_cpymem(p, e->s->text, e->s->text_len);
        name.len = p - name.data;

        cum = 0;

        for (b = 0; b <= nb; b++) {
            cum += v[b];

            if (b) {
                p = ngx_cpymem(p, name.data, name.len);
            }

            p = ngx_cpymem(p, snap->le[h][b].data, snap->le[h][b].len);
            p = ngx_http_dsm_u64(p, cum);

            if (ex && v[b]) {
                p = ngx_http_dsm_exemplar_om(p, snap->layout, e->s, h, b);
            }

            *p++ = '\n';
        }

        p = ngx_cpymem(p, metric->data, metric->len);
        p = ngx_http_dsm_lit(p, "_sum{");
        p = ngx_cpymem(p, snap->prefix.data, snap->prefix.len);
        p = ngx_cpymem(p, e->s->text, e->s->text_len);
        p = ngx_http_dsm_lit(p, "} ");
        p = ngx_http_dsm_seconds(p, v[nb + 1]);
        *p++ = '\n';

        p = ngx_cpymem(p, metric->data, metric->len);
        p = ngx_http_dsm_lit(p, "_count{");
        p = ngx_cpymem(p, snap->prefix.data, snap->prefix.len);
        p = ngx_cpymem(p, e->s->text, e->s->text_len);
        p = ngx_http_dsm_lit(p, "} ");
        p = ngx_http_dsm_u64(p, cum);
        *p++ = '\n';

        o->b->last = p;
    }
}


/* f->arg: NGX_HTTP_DSM_TOKENS_BY_TYPE, _REASONING, _COST */

static void
ngx_http_dsm_tokens(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char                *p;
    uint64_t               cost;
    ngx_atomic_uint_t     *v;
    ngx_http_dsm_entry_t  *e;

    for ( /* void */ ; o->series < snap->n; o->series++) {
        e = ngx_http_dsm_entry(o, snap, NGX_HTTP_DSM_C_HIT,
                               NGX_HTTP_DSM_NCOUNTERS - NGX_HTTP_DSM_C_HIT);
        v = e->v;

        if (f->arg == NGX_HTTP_DSM_TOKENS_KEEPALIVE) {
            if (v[NGX_HTTP_DSM_C_KEEPALIVE] == 0) {
                continue;
            }

        } else if (v[NGX_HTTP_DSM_C_HIT] + v[NGX_HTTP_DSM_C_MISS]
                   + v[NGX_HTTP_DSM_C_OUTPUT] == 0)
        {
            continue;
        }

        p = ngx_http_dsm_reserve(o, 3 * (ngx_http_dsm_line_size(snap, e)
                                         + e->s->currency_len));
        if (p == NULL) {
            return;
        }

        switch (f->arg) {

        case NGX_HTTP_DSM_TOKENS_BY_TYPE:
            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, ",type=\"input_cache_hit\"} ");
            p = ngx_http_dsm_u64(p, v[NGX_HTTP_DSM_C_HIT]);
            *p++ = '\n';
            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, ",type=\"input_cache_miss\"} ");
            p = ngx_http_dsm_u64(p, v[NGX_HTTP_DSM_C_MISS]);
            *p++ = '\n';
            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, ",type=\"output\"} ");
            p = ngx_http_dsm_u64(p, v[NGX_HTTP_DSM_C_OUTPUT]);
            *p++ = '\n';
            break;

        case NGX_HTTP_DSM_TOKENS_REASONING:
        case NGX_HTTP_DSM_TOKENS_KEEPALIVE:
            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, "} ");
            p = ngx_http_dsm_u64(p,
                                 v[f->arg == NGX_HTTP_DSM_TOKENS_REASONING
                                   ? NGX_HTTP_DSM_C_REASONING
                                   : NGX_HTTP_DSM_C_KEEPALIVE]);
            *p++ = '\n';
            break;

        default:
            if (e->s->currency_len == 0) {
                break;
            }

            /* 1e-12 units, printed exactly with 12 decimals */

            cost = v[NGX_HTTP_DSM_C_COST];

            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, ",currency=\"");
            p = ngx_cpymem(p, e->s->currency, e->s->currency_len);
            p = ngx_sprintf(p, "\"} %uL.%012uL\n", cost / 1000000000000ULL,
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
        return NGX_HTTP_DSM_R_INVALID_REQUEST;
    case 401:
    case 403:
        return NGX_HTTP_DSM_R_AUTH;
    case 402:
        return NGX_HTTP_DSM_R_INSUFFICIENT_BALANCE;
    case 404:
        return NGX_HTTP_DSM_R_NOT_FOUND;
    case 429:
        return NGX_HTTP_DSM_R_RATE_LIMITED;
    case 499:
        return NGX_HTTP_DSM_R_CLIENT_CLOSED;
    case 502:
        return NGX_HTTP_DSM_R_UPSTREAM_UNAVAILABLE;
    case 503:
        return NGX_HTTP_DSM_R_OVERLOADED;
    case 504:
        return NGX_HTTP_DSM_R_UPSTREAM_TIMEOUT;
    }

    if (status >= 400 && status < 500) {
        return NGX_HTTP_DSM_R_CLIENT_ERROR;
    }

    if (status >= 500 && status < 600) {
        return NGX_HTTP_DSM_R_SERVER_ERROR;
    }

    return NGX_HTTP_DSM_NREASONS;
}


/*
 * A series' failures by reason (missing: usage missing by reason) into
 * n[NGX_HTTP_DSM_NREASONS]; 0 if it has none.  The exposition and the JSON
 * view both count reasons here.
 */

ngx_uint_t
ngx_http_dsm_entry_reasons(ngx_http_dsm_entry_t *e, ngx_uint_t missing,
    uint64_t *n)
{
    uint64_t    w;
    ngx_uint_t  j, r, nr, code, any;

    nr = missing ? NGX_HTTP_DSM_NMISSING : NGX_HTTP_DSM_NREASONS;

    ngx_memzero(n, NGX_HTTP_DSM_NREASONS * sizeof(uint64_t));
    any = 0;

    for (j = 0; j < e->nslots; j++) {
        w = e->slots[j];

        if (w == 0) {
            break;
        }

        code = ngx_http_dsm_tag_code(w);

        switch (ngx_http_dsm_tag_kind(w)) {

        case NGX_HTTP_DSM_SLOT_STATUS:
            r = missing ? NGX_HTTP_DSM_NREASONS
                        : ngx_http_dsm_status_reason(code);
            break;

        case NGX_HTTP_DSM_SLOT_INBAND:
            for (r = 0; r < NGX_HTTP_DSM_NREASONS; r++) {
                if (ngx_http_dsm_reasons_list[r].inband == code) {
                    break;
                }
            }

            if (missing) {
                r = NGX_HTTP_DSM_NREASONS;
            }

            break;

        default: /* NGX_HTTP_DSM_SLOT_MISSING */
            r = (missing && code < NGX_HTTP_DSM_NMISSING)
                ? code : NGX_HTTP_DSM_NREASONS;
            break;
        }

        if (r < nr) {
            n[r] += ngx_http_dsm_slot_count(w);
            any = 1;
        }
    }

    return any;
}


const ngx_str_t *
ngx_http_dsm_reason_name(ngx_uint_t missing, ngx_uint_t r)
{
    return missing ? &ngx_http_dsm_missing_list[r]
                   : &ngx_http_dsm_reasons_list[r].reason;
}


/* f->arg: 0 errors by reason, 1 usage missing by reason */

static void
ngx_http_dsm_reasons(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char                *p;
    uint64_t               n[NGX_HTTP_DSM_NREASONS];
    ngx_uint_t             r, nr, missing;
    const ngx_str_t       *reason;
    ngx_http_dsm_entry_t  *e;

    missing = f->arg;
    nr = missing ? NGX_HTTP_DSM_NMISSING : NGX_HTTP_DSM_NREASONS;

    for ( /* void */ ; o->series < snap->n; o->series++) {
        e = ngx_http_dsm_entry(o, snap, 0, NGX_HTTP_DSM_NSLOTS);

        if (!ngx_http_dsm_entry_reasons(e, missing, n)) {
            continue;
        }

        p = ngx_http_dsm_reserve(o, nr * (ngx_http_dsm_line_size(snap, e)
                                          + 32));
        if (p == NULL) {
            return;
        }

        for (r = 0; r < nr; r++) {
            if (n[r] == 0) {
                continue;
            }

            reason = ngx_http_dsm_reason_name(missing, r);

            p = ngx_http_dsm_open(p, &f->name, snap, e);
            p = ngx_http_dsm_lit(p, ",reason=\"");
            p = ngx_cpymem(p, reason->data, reason->len);
            p = ngx_http_dsm_lit(p, "\"} ");
            p = ngx_http_dsm_u64(p, n[r]);
            *p++ = '\n';
        }

        o->b->last = p;
    }
}


/* the protobuf encoder writes a family by what its text emitter writes */

static ngx_uint_t
ngx_http_dsm_family_kind(const ngx_http_dsm_family_t *f)
{
    if (f->emit == ngx_http_dsm_requests) {
        return NGX_HTTP_DSM_KIND_REQUESTS;
    }

    if (f->emit == ngx_http_dsm_histogram) {
        return NGX_HTTP_DSM_KIND_HISTOGRAM;
    }

    if (f->emit == ngx_http_dsm_tokens) {
        return NGX_HTTP_DSM_KIND_TOKENS;
    }

    if (f->emit == ngx_http_dsm_in_flight) {
        return NGX_HTTP_DSM_KIND_IN_FLIGHT;
    }

    if (f->emit == ngx_http_dsm_reasons) {
        return NGX_HTTP_DSM_KIND_REASONS;
    }

    if (f->emit == ngx_http_dsm_zone_value) {
        return NGX_HTTP_DSM_KIND_ZONE;
    }

    if (f->emit == ngx_http_dsm_balance) {
        return NGX_HTTP_DSM_KIND_BALANCE;
    }

    if (f->emit == ngx_http_dsm_build_info) {
        return NGX_HTTP_DSM_KIND_BUILD_INFO;
    }

    return NGX_HTTP_DSM_KIND_UNKNOWN;
}


/* the family name of histogram h, for the JSON view */

const ngx_str_t *
ngx_http_dsm_hist_name(ngx_uint_t h)
{
    const ngx_http_dsm_family_t  *f;

    for (f = ngx_http_dsm_families; f->name.len; f++) {
        if (f->when == NGX_HTTP_DSM_FAMILY_HIST && f->arg == h) {
            return &f->name;
        }
    }

    return NULL;
}


static void
ngx_http_dsm_in_flight(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char                   *p;
    ngx_str_t                 text;
    ngx_uint_t                j;
    ngx_http_dsm_endpoint_t  *ep;

    for (j = 0; j <= NGX_HTTP_DSM_MAX_ENDPOINTS; j++) {
        if (j < snap->nendpoints) {
            ep = &snap->endpoints[j];
            text.data = ep->text;
            text.len = ep->text_len;

        } else if (j == NGX_HTTP_DSM_MAX_ENDPOINTS && snap->in_flight[j]) {
            ngx_str_set(&text, "__overflow__");

        } else {
            continue;
        }

        p = ngx_http_dsm_reserve(o, text.len + snap->prefix.len + 96);
        if (p == NULL) {
            return;
        }

        p = ngx_cpymem(p, f->name.data, f->name.len);
        *p++ = '{';
        p = ngx_cpymem(p, snap->prefix.data, snap->prefix.len);
        p = ngx_http_dsm_lit(p, "endpoint=\"");
        p = ngx_cpymem(p, text.data, text.len);
        p = ngx_http_dsm_lit(p, "\"} ");
        p = ngx_http_dsm_u64(p, snap->in_flight[j]);
        *p++ = '\n';
        o->b->last = p;
    }
}


/* f->arg: NGX_HTTP_DSM_V_*; the series gauge is two lines */

static void
ngx_http_dsm_zone_value(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    if (f->arg == NGX_HTTP_DSM_V_SERIES) {
        ngx_http_dsm_zone_gauge(o, &f->name, snap, "used",
                                snap->values[NGX_HTTP_DSM_V_SERIES]);
        ngx_http_dsm_zone_gauge(o, &f->name, snap, "capacity",
                                snap->values[NGX_HTTP_DSM_V_CAPACITY]);
        return;
    }

    ngx_http_dsm_zone_gauge(o, &f->name, snap, NULL, snap->values[f->arg]);
}


static void
ngx_http_dsm_zone_gauge(ngx_http_dsm_out_t *o, const ngx_str_t *name,
    ngx_http_dsm_snap_t *snap, char *state, uint64_t value)
{
    u_char  *p;

    p = ngx_http_dsm_reserve(o, name->len + snap->name.len + 64);
    if (p == NULL) {
        return;
    }

    p = ngx_cpymem(p, name->data, name->len);
    p = ngx_http_dsm_lit(p, "{zone=\"");
    p = ngx_cpymem(p, snap->name.data, snap->name.len);

    if (state) {
        p = ngx_http_dsm_lit(p, "\",state=\"");
        p = ngx_cpymem(p, state, ngx_strlen(state));
    }

    p = ngx_http_dsm_lit(p, "\"} ");
    p = ngx_http_dsm_u64(p, value);
    *p++ = '\n';

    o->b->last = p;
}


/* f->arg: NGX_HTTP_DSM_BAL_AMOUNT, _AVAILABLE, _UPDATED */

static void
ngx_http_dsm_balance(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char                       *p;
    uint64_t                      code;
    ngx_uint_t                    i, t;
    ngx_http_dsm_balance_sh_t    *bs;

    bs = &snap->balance;

    if (bs->last == 0) {
        return;
    }

    p = ngx_http_dsm_reserve(o, NGX_HTTP_DSM_BALANCE_SLOTS
                                * NGX_HTTP_DSM_BALANCE_TYPES
                                * (f->name.len + snap->name.len + 96));
    if (p == NULL) {
        return;
    }

    if (f->arg != NGX_HTTP_DSM_BAL_AMOUNT) {
        p = ngx_cpymem(p, f->name.data, f->name.len);
        p = ngx_http_dsm_lit(p, "{zone=\"");
        p = ngx_cpymem(p, snap->name.data, snap->name.len);
        p = ngx_http_dsm_lit(p, "\"} ");

        if (f->arg == NGX_HTTP_DSM_BAL_AVAILABLE) {
            *p++ = bs->available ? '1' : '0';

        } else {
            /* milliseconds, printed exactly */
            p = ngx_sprintf(p, "%uL.%03uL", (uint64_t) bs->updated / 1000,
                            (uint64_t) bs->updated % 1000);
        }

        *p++ = '\n';
        o->b->last = p;
        return;
    }

    for (i = 0; i < NGX_HTTP_DSM_BALANCE_SLOTS; i++) {
        code = bs->slots[i].code;

        if (code == 0) {
            continue;
        }

        for (t = 0; t < NGX_HTTP_DSM_BALANCE_TYPES; t++) {
            p = ngx_cpymem(p, f->name.data, f->name.len);
            p = ngx_http_dsm_lit(p, "{zone=\"");
            p = ngx_cpymem(p, snap->name.data, snap->name.len);
            p = ngx_http_dsm_lit(p, "\",currency=\"");

            p = ngx_http_dsm_currency_code(p, code);
            p = ngx_sprintf(p, "\",type=\"%s\"} ",
                            ngx_http_dsm_balance_types[t]);

            p = ngx_http_dsm_amount(p, (int64_t) bs->slots[i].amount[t]);
            *p++ = '\n';
        }
    }

    o->b->last = p;
}


/* a balance slot's currency: up to 8 bytes, [A-Za-z0-9_-] (the scanner) */

u_char *
ngx_http_dsm_currency_code(u_char *p, uint64_t code)
{
    ngx_uint_t  k;

    for (k = 0; k < 8 && (code >> (8 * k)) & 0xff; k++) {
        *p++ = (u_char) ((code >> (8 * k)) & 0xff);
    }

    return p;
}


/* an amount in 1e-6 units, printed exactly with 6 decimals */

u_char *
ngx_http_dsm_amount(u_char *p, int64_t a)
{
    uint64_t  m;

    if (a < 0) {
        *p++ = '-';
        m = (uint64_t) 0 - (uint64_t) a;

    } else {
        m = (uint64_t) a;
    }

    return ngx_sprintf(p, "%uL.%06uL", m / 1000000, m % 1000000);
}


static void
ngx_http_dsm_build_info(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    const ngx_http_dsm_family_t *f)
{
    u_char  *p;

    p = ngx_http_dsm_reserve(o, f->name.len + 128);
    if (p == NULL) {
        return;
    }

    p = ngx_cpymem(p, f->name.data, f->name.len);
    o->b->last = ngx_http_dsm_lit(p, "{version=\"" NGX_HTTP_DSM_VERSION
                                  "\",nginx_version=\"" NGINX_VERSION
                                  "\"} 1\n");
}


/* microseconds as seconds, shortest exact form, at least one decimal */

u_char *
ngx_http_dsm_seconds(u_char *p, uint64_t us)
{
    p = ngx_sprintf(p, "%uL.%06uL", us / 1000000, us % 1000000);

    /* keep at least one decimal: "1.0", "0.05" */

    while (p[-1] == '0' && p[-2] != '.') {
        p--;
    }

    return p;
}


/*
 * Escapes a label value for both exposition formats and replaces invalid
 * UTF-8 and control bytes other than LF with U+FFFD, so no input can make
 * a scrape unparsable.  With dst NULL it only returns the length.
 */

size_t
ngx_http_dsm_escape(u_char *dst, u_char *src, size_t len)
{
    u_char      c, *last;
    size_t      n, need;
    ngx_uint_t  ok, j;

    n = 0;
    last = src + len;

    while (src < last) {
        c = *src;

        if (c < 0x20 && c != '\n') {
            /* a raw CR or other control byte trips some consumers */
            goto replace;
        }

        if (c < 0x80) {
            if (c == '\\' || c == '"' || c == '\n') {
                if (dst) {
                    *dst++ = '\\';
                    *dst++ = (c == '\n') ? 'n' : c;
                }

                n += 2;

            } else {
                if (dst) {
                    *dst++ = c;
                }

                n++;
            }

            src++;
            continue;
        }

        /* a multi-byte sequence: check lead, length, range, continuation */

        ok = 1;

        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;

        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;

        } else {
            need = 0;
            ok = 0;
        }

        if (ok && (size_t) (last - src) <= need) {
            ok = 0;
        }

        if (ok) {
            if ((c == 0xe0 && src[1] < 0xa0)
                || (c == 0xed && src[1] > 0x9f)
                || (c == 0xf0 && src[1] < 0x90)
                || (c == 0xf4 && src[1] > 0x8f))
            {
                ok = 0;
            }
        }

        if (ok) {
            for (j = 1; j <= need; j++) {
                if ((src[j] & 0xc0) != 0x80) {
                    ok = 0;
                    break;
                }
            }
        }

        if (ok) {
            if (dst) {
                dst = ngx_cpymem(dst, src, need + 1);
            }

            n += need + 1;
            src += need + 1;
            continue;
        }

    replace:

        if (dst) {
            *dst++ = 0xef;
            *dst++ = 0xbf;
            *dst++ = 0xbd;
        }

        n += 3;
        src++;
    }

    return n;
}
