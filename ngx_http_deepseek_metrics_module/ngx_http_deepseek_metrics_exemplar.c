
/*
 * Exemplars: the latest observation of every classic bucket with the id
 * of its request (deepseek_metrics_exemplar), for the OpenMetrics and
 * protobuf expositions.  Stored in the series record of a zone created
 * with "exemplars"; written and read without a lock (a seqlock each).
 */


#include "ngx_http_deepseek_metrics.h"
#include "ngx_http_deepseek_metrics_export.h"


static ngx_http_dsm_exemplar_t *ngx_http_dsm_exemplar_slot(
    ngx_http_dsm_layout_t *l, ngx_http_dsm_series_t *s, ngx_uint_t h,
    ngx_uint_t bucket);


/*
 * The id of the request being counted, set by the log handler before its
 * observations; len 0: none.  A worker counts one request at a time.
 */

ngx_str_t            ngx_http_dsm_exemplar_id;
static uint64_t      ngx_http_dsm_exemplar_time;
static ngx_uint_t    ngx_http_dsm_exemplar_logged;


/* a reader that finds a writer at work this often skips the exemplar */
#define NGX_HTTP_DSM_EXEMPLAR_TRIES   4


/* bytes a series needs for the exemplars of all its buckets */

size_t
ngx_http_dsm_exemplar_size(ngx_http_dsm_layout_t *layout)
{
    ngx_uint_t  h, n;

    n = 0;

    for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
        if (layout->nbuckets[h]) {
            n += layout->nbuckets[h] + 1;       /* "+Inf" included */
        }
    }

    return n * sizeof(ngx_http_dsm_exemplar_t);
}


char *
ngx_http_dsm_exemplar(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_loc_conf_t *dlcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (dlcf->exemplar != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        dlcf->exemplar = NULL;
        return NGX_CONF_OK;
    }

    if (value[1].len == 0) {
        return "takes a non-empty value";
    }

    dlcf->exemplar = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (dlcf->exemplar == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = dlcf->exemplar;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * After the zone is merged: a location that counts into a zone without
 * exemplar storage cannot keep them, and says so at "nginx -t" rather
 * than dropping them silently.
 */

char *
ngx_http_dsm_exemplar_merge(ngx_conf_t *cf, ngx_http_dsm_loc_conf_t *prev,
    ngx_http_dsm_loc_conf_t *conf)
{
    ngx_conf_merge_ptr_value(conf->exemplar, prev->exemplar, NULL);

    if (conf->exemplar == NULL || conf->zone == NULL) {
        return NGX_CONF_OK;
    }

    if (conf->zone->shm_zone && conf->zone->layout.exemplar_offset == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"deepseek_metrics_exemplar\" is set where "
                           "requests are counted in zone \"%V\", which has "
                           "no exemplar storage: add \"exemplars\" to its "
                           "deepseek_metrics_zone, or set "
                           "\"deepseek_metrics_exemplar off\" there",
                           &conf->zone->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The id is kept only if it is 1..NGX_HTTP_DSM_EXEMPLAR_MAX bytes of
 * printable ASCII (0x21..0x7e): an id cut short or rewritten would name
 * another request or trace.  Otherwise the buckets keep their previous
 * exemplars; the first refusal of a worker is logged.
 */

void
ngx_http_dsm_exemplar_start(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_msec_t now)
{
    ngx_str_t   id;
    ngx_uint_t  i;

    ngx_http_dsm_exemplar_id.len = 0;

    if (q->dlcf->exemplar == NULL
        || q->zone->layout.exemplar_offset == 0
        || ngx_http_complex_value(r, q->dlcf->exemplar, &id) != NGX_OK
        || id.len == 0)
    {
        return;
    }

    if (id.len > NGX_HTTP_DSM_EXEMPLAR_MAX) {
        goto refused;
    }

    for (i = 0; i < id.len; i++) {
        if (id.data[i] < 0x21 || id.data[i] > 0x7e) {
            goto refused;
        }
    }

    ngx_http_dsm_exemplar_id = id;
    ngx_http_dsm_exemplar_time = now;

    return;

refused:

    if (!ngx_http_dsm_exemplar_logged) {
        ngx_http_dsm_exemplar_logged = 1;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "deepseek_metrics_exemplar: an id of %uz bytes is "
                      "not kept: at most %d bytes of printable ASCII, "
                      "no spaces; logged once per worker", id.len,
                      NGX_HTTP_DSM_EXEMPLAR_MAX);
    }
}


static ngx_http_dsm_exemplar_t *
ngx_http_dsm_exemplar_slot(ngx_http_dsm_layout_t *l, ngx_http_dsm_series_t *s,
    ngx_uint_t h, ngx_uint_t bucket)
{
    ngx_uint_t  i, n;

    /* the histograms' buckets one after another, in exposition order */

    n = bucket;

    for (i = 0; i < h; i++) {
        if (l->nbuckets[i]) {
            n += l->nbuckets[i] + 1;
        }
    }

    return (ngx_http_dsm_exemplar_t *) ((u_char *) s + l->exemplar_offset)
           + n;
}


/*
 * The writer: takes the sequence from even to odd by compare-and-swap, so
 * of two workers observing the same bucket at once one keeps its exemplar
 * and the other skips (the latest of the two is as good); writes; makes
 * the sequence even again.  Nothing ever waits.
 */

void
ngx_http_dsm_exemplar_record(ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, ngx_uint_t bucket, uint64_t us)
{
    ngx_atomic_uint_t         seq;
    ngx_http_dsm_exemplar_t  *ex;

    ex = ngx_http_dsm_exemplar_slot(l, s, h, bucket);

    seq = ex->seq;

    if ((seq & 1) || !ngx_atomic_cmp_set(&ex->seq, seq, seq + 1)) {
        return;
    }

    ngx_memory_barrier();

    ex->value = us;
    ex->time = ngx_http_dsm_exemplar_time;
    ex->len = (uint32_t) ngx_http_dsm_exemplar_id.len;
    ngx_memcpy(ex->id, ngx_http_dsm_exemplar_id.data,
               ngx_http_dsm_exemplar_id.len);

    ngx_memory_barrier();

    ex->seq = seq + 2;
}


/*
 * The reader: a copy taken between two equal even sequences is whole.  A
 * writer at work every time it looks makes it skip the exemplar (the next
 * scrape has it).  NGX_DECLINED: none stored, torn, or no storage.
 */

ngx_int_t
ngx_http_dsm_exemplar_read(ngx_http_dsm_layout_t *l, ngx_http_dsm_series_t *s,
    ngx_uint_t h, ngx_uint_t bucket, ngx_http_dsm_exemplar_t *ex)
{
    ngx_uint_t                         i;
    ngx_atomic_uint_t                  seq;
    volatile ngx_http_dsm_exemplar_t  *src;

    if (l->exemplar_offset == 0 || bucket > l->nbuckets[h]) {
        return NGX_DECLINED;
    }

    src = ngx_http_dsm_exemplar_slot(l, s, h, bucket);

    for (i = 0; i < NGX_HTTP_DSM_EXEMPLAR_TRIES; i++) {
        seq = src->seq;

        if (seq == 0) {
            return NGX_DECLINED;
        }

        if (seq & 1) {
            ngx_cpu_pause();
            continue;
        }

        ngx_memory_barrier();

        ex->value = src->value;
        ex->time = src->time;
        ex->len = src->len;

        if (ex->len > NGX_HTTP_DSM_EXEMPLAR_MAX) {
            ex->len = 0;
        }

        ngx_memcpy(ex->id, (u_char *) src->id, ex->len);

        ngx_memory_barrier();

        if (src->seq == seq && ex->len) {
            ex->seq = seq;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * OpenMetrics 1.0: " # {trace_id="..."} value timestamp" after a bucket's
 * count, or nothing; the value in seconds like the bucket bounds, the
 * timestamp in seconds with milliseconds.  At most
 * NGX_HTTP_DSM_EXEMPLAR_LEN bytes.
 */

u_char *
ngx_http_dsm_exemplar_om(u_char *p, ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, ngx_uint_t bucket)
{
    ngx_http_dsm_exemplar_t  ex;

    if (ngx_http_dsm_exemplar_read(l, s, h, bucket, &ex) != NGX_OK) {
        return p;
    }

    p = ngx_http_dsm_lit(p, " # {trace_id=\"");
    p += ngx_http_dsm_escape(p, ex.id, ex.len);
    p = ngx_http_dsm_lit(p, "\"} ");
    p = ngx_http_dsm_seconds(p, ex.value);

    return ngx_sprintf(p, " %uL.%03uL", ex.time / 1000, ex.time % 1000);
}
