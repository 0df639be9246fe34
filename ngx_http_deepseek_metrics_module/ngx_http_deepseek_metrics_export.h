/*
 * The exporter's snapshot of a zone and its output buffers, shared by the
 * exposition (ngx_http_deepseek_metrics_export.c), which reads the series'
 * counters live as it streams them, and the JSON view and status page
 * (ngx_http_deepseek_metrics_status.c), which format a whole copy.
 */


#ifndef _NGX_HTTP_DEEPSEEK_METRICS_EXPORT_H_INCLUDED_
#define _NGX_HTTP_DEEPSEEK_METRICS_EXPORT_H_INCLUDED_


#include "ngx_http_deepseek_metrics.h"


typedef struct {
    ngx_http_dsm_series_t        *s;
    ngx_atomic_uint_t            *v;             /* read counters */
    ngx_atomic_uint_t            *slots;
    ngx_uint_t                    nslots;
} ngx_http_dsm_entry_t;


/* the zone's own counters and gauges, copied into the snapshot */

typedef enum {
    NGX_HTTP_DSM_V_SERIES = 0,                  /* used and capacity */
    NGX_HTTP_DSM_V_CAPACITY,
    NGX_HTTP_DSM_V_DROPPED,
    NGX_HTTP_DSM_V_START_TIME,
    NGX_HTTP_DSM_V_RELOADS,
    NGX_HTTP_DSM_V_LAST_RELOAD,
    NGX_HTTP_DSM_V_MASTER_PID,
    NGX_HTTP_DSM_NVALUES
} ngx_http_dsm_value_e;


typedef struct {
    ngx_http_dsm_zone_t          *zone;
    ngx_http_dsm_layout_t        *layout;
    ngx_http_dsm_entry_t         *entries;
    ngx_uint_t                    n;
    ngx_atomic_uint_t             in_flight[NGX_HTTP_DSM_MAX_ENDPOINTS + 1];
    ngx_uint_t                    nendpoints;
    ngx_http_dsm_endpoint_t      *endpoints;
    ngx_str_t                     name;          /* escaped zone name */
    ngx_str_t                     prefix;        /* zone="..", or empty */
    uint64_t                      values[NGX_HTTP_DSM_NVALUES];
    ngx_str_t                     le[NGX_HTTP_DSM_NHIST]
                                    [NGX_HTTP_DSM_MAX_BUCKETS + 1];
    ngx_http_dsm_balance_sh_t     balance;       /* last: 0 none */
    ngx_http_dsm_entry_t          live;          /* entries NULL: the */
    ngx_atomic_uint_t            *overflow;      /* series being written */
} ngx_http_dsm_snap_t;


typedef struct {
    ngx_http_request_t           *r;
    ngx_chain_t                  *out;
    ngx_chain_t                 **last;
    ngx_buf_t                    *b;
    off_t                         size;
    ngx_uint_t                    om;
    void                         *pb;            /* protobuf: its state */
    ngx_uint_t                    priced;
    ngx_uint_t                    error;
    ngx_uint_t                    series;        /* the cursor: see families */
    ngx_uint_t                    full;          /* no buffer left: resume */
    ngx_uint_t                    bufs;
    ngx_uint_t                    max_bufs;      /* 0: unbounded */
    ngx_chain_t                  *free;
    ngx_chain_t                  *busy;
} ngx_http_dsm_out_t;


/* deepseek_errors_total reasons: ngx_http_dsm_reasons_list's order */

typedef enum {
    NGX_HTTP_DSM_R_INVALID_REQUEST = 0,
    NGX_HTTP_DSM_R_AUTH,
    NGX_HTTP_DSM_R_INSUFFICIENT_BALANCE,
    NGX_HTTP_DSM_R_NOT_FOUND,
    NGX_HTTP_DSM_R_RATE_LIMITED,
    NGX_HTTP_DSM_R_CLIENT_ERROR,
    NGX_HTTP_DSM_R_SERVER_ERROR,
    NGX_HTTP_DSM_R_UPSTREAM_UNAVAILABLE,
    NGX_HTTP_DSM_R_OVERLOADED,
    NGX_HTTP_DSM_R_UPSTREAM_TIMEOUT,
    NGX_HTTP_DSM_R_CLIENT_CLOSED,
    NGX_HTTP_DSM_R_STREAM_TRUNCATED,
    NGX_HTTP_DSM_R_QUEUE_TIMEOUT,
    NGX_HTTP_DSM_R_CONTENT_FILTER,
    NGX_HTTP_DSM_R_INSUFFICIENT_RESOURCE,
    NGX_HTTP_DSM_R_EMPTY_RESPONSE,
    NGX_HTTP_DSM_R_STREAM_ERROR,
    NGX_HTTP_DSM_R_CLIENT_TIMEOUT,
    NGX_HTTP_DSM_NREASONS
} ngx_http_dsm_reason_e;


/* what the export location serves a request: ngx_http_dsm_view() */

#define NGX_HTTP_DSM_VIEW_EXPOSITION  0     /* text 0.0.4 */
#define NGX_HTTP_DSM_VIEW_OPENMETRICS 1     /* OpenMetrics 1.0.0 */
#define NGX_HTTP_DSM_VIEW_JSON        2
#define NGX_HTTP_DSM_VIEW_PROTOBUF    3     /* delimited MetricFamily */
#define NGX_HTTP_DSM_VIEW_PAGE        4     /* the status page's HTML */
#define NGX_HTTP_DSM_VIEW_JS          5     /* its script: ?js */
#define NGX_HTTP_DSM_VIEW_CSS         6     /* its style sheet: ?css */


/* what a family's text emitter writes: the protobuf encoder's switch */

#define NGX_HTTP_DSM_KIND_REQUESTS    0
#define NGX_HTTP_DSM_KIND_HISTOGRAM   1
#define NGX_HTTP_DSM_KIND_TOKENS      2
#define NGX_HTTP_DSM_KIND_IN_FLIGHT   3
#define NGX_HTTP_DSM_KIND_REASONS     4
#define NGX_HTTP_DSM_KIND_ZONE        5
#define NGX_HTTP_DSM_KIND_BALANCE     6
#define NGX_HTTP_DSM_KIND_BUILD_INFO  7
#define NGX_HTTP_DSM_KIND_UNKNOWN     8

/* token kinds of ngx_http_dsm_tokens() */

#define NGX_HTTP_DSM_TOKENS_BY_TYPE   0
#define NGX_HTTP_DSM_TOKENS_REASONING 1
#define NGX_HTTP_DSM_TOKENS_COST      2
#define NGX_HTTP_DSM_TOKENS_KEEPALIVE 3

/* balance families of ngx_http_dsm_balance() */

#define NGX_HTTP_DSM_BAL_AMOUNT       0
#define NGX_HTTP_DSM_BAL_AVAILABLE    1
#define NGX_HTTP_DSM_BAL_UPDATED      2


#define ngx_http_dsm_lit(p, s)   ngx_cpymem(p, s, sizeof(s) - 1)


/* export */
ngx_http_dsm_snap_t *ngx_http_dsm_snapshots(ngx_http_request_t *r,
    ngx_uint_t *nzones);
u_char *ngx_http_dsm_reserve(ngx_http_dsm_out_t *o, size_t n);
ngx_http_dsm_entry_t *ngx_http_dsm_entry(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, ngx_uint_t from, ngx_uint_t n);
u_char *ngx_http_dsm_u64(u_char *p, uint64_t n);
u_char *ngx_http_dsm_seconds(u_char *p, uint64_t us);
u_char *ngx_http_dsm_amount(u_char *p, int64_t a);
u_char *ngx_http_dsm_currency_code(u_char *p, uint64_t code);

extern const char  *ngx_http_dsm_balance_types[NGX_HTTP_DSM_BALANCE_TYPES];
ngx_uint_t ngx_http_dsm_entry_reasons(ngx_http_dsm_entry_t *e,
    ngx_uint_t missing, uint64_t *n);
const ngx_str_t *ngx_http_dsm_reason_name(ngx_uint_t missing, ngx_uint_t r);
const ngx_str_t *ngx_http_dsm_hist_name(ngx_uint_t h);

/* protobuf: delimited io.prometheus.client.MetricFamily */
void *ngx_http_dsm_pb_init(ngx_http_request_t *r, ngx_http_dsm_snap_t *snaps,
    ngx_uint_t nzones);
void ngx_http_dsm_pb_start(ngx_http_dsm_out_t *o, const ngx_str_t *name,
    char *type, char *help);
void ngx_http_dsm_pb_emit(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_uint_t z, ngx_uint_t kind, ngx_uint_t arg);
ngx_uint_t ngx_http_dsm_pb_flush(ngx_http_dsm_out_t *o);

/* status: the JSON view and the status page */
ngx_uint_t ngx_http_dsm_view(ngx_http_request_t *r);
ngx_int_t ngx_http_dsm_status_asset(ngx_http_request_t *r, ngx_uint_t view);
ngx_int_t ngx_http_dsm_json(ngx_http_request_t *r, ngx_http_dsm_snap_t *snaps,
    ngx_uint_t nzones);
ngx_int_t ngx_http_dsm_vary(ngx_http_request_t *r);


#endif /* _NGX_HTTP_DEEPSEEK_METRICS_EXPORT_H_INCLUDED_ */
