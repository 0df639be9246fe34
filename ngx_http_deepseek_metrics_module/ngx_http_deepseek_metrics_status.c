
/*
 * The export location's other views, chosen by content negotiation: the
 * zones as JSON, formatted from the same snapshot as the exposition, and a
 * status page (HTML, its script and style sheet, compiled in) that reads
 * that JSON.  Scrapers keep getting the exposition.
 */


#include "ngx_http_deepseek_metrics_export.h"
#include "ngx_http_deepseek_metrics_status_page.h"


/* the representations an Accept header can ask for, in tie-break order */

enum {
    NGX_HTTP_DSM_T_TEXT = 0,                    /* text/plain */
    NGX_HTTP_DSM_T_OM,                          /* openmetrics-text */
    NGX_HTTP_DSM_T_JSON,
    NGX_HTTP_DSM_T_HTML,
    NGX_HTTP_DSM_T_PROTO,                       /* delimited MetricFamily */
    NGX_HTTP_DSM_NTYPES
};


typedef struct {
    ngx_int_t                     q[NGX_HTTP_DSM_NTYPES];    /* 0..1000 */
    ngx_int_t                     spec[NGX_HTTP_DSM_NTYPES]; /* -1: none */
} ngx_http_dsm_accept_t;


typedef struct {
    ngx_str_t                     type;
    ngx_str_t                     subtype;
    ngx_uint_t                    explicit;      /* no wildcard matches */
} ngx_http_dsm_media_t;


static void ngx_http_dsm_accept_parse(ngx_http_dsm_accept_t *a, u_char *p,
    u_char *last);
static void ngx_http_dsm_accept_range(ngx_http_dsm_accept_t *a,
    ngx_str_t *type, ngx_str_t *subtype, ngx_int_t q, ngx_uint_t pb);
static ngx_uint_t ngx_http_dsm_pb_param(ngx_str_t *name, u_char *v,
    u_char *last);
static ngx_int_t ngx_http_dsm_qvalue(u_char *p, u_char *last);
static ngx_uint_t ngx_http_dsm_accept_pick(ngx_http_dsm_accept_t *a);
static ngx_int_t ngx_http_dsm_send(ngx_http_request_t *r, ngx_chain_t *out,
    off_t size, char *type, size_t type_len);
static void ngx_http_dsm_json_balance(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap);
static void ngx_http_dsm_json_zone(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap);
static void ngx_http_dsm_json_series(ngx_http_dsm_out_t *o,
    ngx_http_dsm_snap_t *snap, ngx_http_dsm_entry_t *e);
static u_char *ngx_http_dsm_json_labels(u_char *p, u_char *text, size_t len);


static const ngx_http_dsm_media_t  ngx_http_dsm_media[NGX_HTTP_DSM_NTYPES] = {
    { ngx_string("text"), ngx_string("plain"), 0 },
    { ngx_string("application"), ngx_string("openmetrics-text"), 0 },
    { ngx_string("application"), ngx_string("json"), 1 },
    { ngx_string("text"), ngx_string("html"), 1 },
    { ngx_string("application"), ngx_string("vnd.google.protobuf"), 1 }
};


/* the parameters a protobuf range must have: what Prometheus sends */

#define NGX_HTTP_DSM_PB_PROTO         1
#define NGX_HTTP_DSM_PB_DELIMITED     2
#define NGX_HTTP_DSM_PB_OK            3


/*
 * ?js and ?css are the page's own script and style sheet (a browser asks
 * for them accepting any type); otherwise the Accept headers decide.
 */

ngx_uint_t
ngx_http_dsm_view(ngx_http_request_t *r)
{
    ngx_uint_t              i, om, view;
    ngx_list_part_t        *part;
    ngx_table_elt_t        *h;
    ngx_http_dsm_accept_t   a;

    if (r->args.len == 2 && ngx_strncmp(r->args.data, "js", 2) == 0) {
        return NGX_HTTP_DSM_VIEW_JS;
    }

    if (r->args.len == 3 && ngx_strncmp(r->args.data, "css", 3) == 0) {
        return NGX_HTTP_DSM_VIEW_CSS;
    }

    for (i = 0; i < NGX_HTTP_DSM_NTYPES; i++) {
        a.q[i] = 0;
        a.spec[i] = -1;
    }

    om = 0;
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
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Accept", 6) == 0)
        {
            ngx_http_dsm_accept_parse(&a, h[i].value.data,
                                      h[i].value.data + h[i].value.len);

            /* as before the status views: named at all, even with q=0 */

            if (ngx_strlcasestrn(h[i].value.data,
                                 h[i].value.data + h[i].value.len,
                                 (u_char *) "application/openmetrics-text",
                                 28 - 1)
                != NULL)
            {
                om = 1;
            }
        }
    }

    view = ngx_http_dsm_accept_pick(&a);

    if (view == NGX_HTTP_DSM_VIEW_EXPOSITION && om) {
        return NGX_HTTP_DSM_VIEW_OPENMETRICS;
    }

    return view;
}


/* media ranges "type/subtype;param=value;q=0.5", separated by commas */

static void
ngx_http_dsm_accept_parse(ngx_http_dsm_accept_t *a, u_char *p, u_char *last)
{
    u_char      *s, *v;
    ngx_int_t    q;
    ngx_str_t    type, subtype, name;
    ngx_uint_t   pb;

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        type.data = p;

        while (p < last && *p != '/' && *p != ',' && *p != ';') {
            p++;
        }

        type.len = p - type.data;

        if (p == last || *p != '/') {
            /* not a media range: skip to the next one */

            while (p < last && *p != ',') {
                p++;
            }

            continue;
        }

        subtype.data = ++p;

        while (p < last && *p != ',' && *p != ';' && *p != ' '
               && *p != '\t')
        {
            p++;
        }

        subtype.len = p - subtype.data;
        q = 1000;
        pb = 0;

        /* parameters: q, and protobuf's proto and encoding */

        while (p < last && *p != ',') {

            if (*p != ';') {
                p++;
                continue;
            }

            p++;

            while (p < last && (*p == ' ' || *p == '\t')) {
                p++;
            }

            name.data = p;

            while (p < last && *p != '=' && *p != ';' && *p != ',') {
                p++;
            }

            name.len = p - name.data;

            if (p == last || *p != '=') {
                continue;
            }

            v = ++p;

            while (p < last && *p != ';' && *p != ',') {
                p++;
            }

            s = p;

            while (s > v && (s[-1] == ' ' || s[-1] == '\t')) {
                s--;
            }

            if (name.len == 1 && (name.data[0] | 0x20) == 'q') {
                q = ngx_http_dsm_qvalue(v, s);

            } else {
                pb |= ngx_http_dsm_pb_param(&name, v, s);
            }
        }

        if (q >= 0) {
            ngx_http_dsm_accept_range(a, &type, &subtype, q, pb);
        }
    }
}


/* proto=io.prometheus.client.MetricFamily, encoding=delimited */

static ngx_uint_t
ngx_http_dsm_pb_param(ngx_str_t *name, u_char *v, u_char *last)
{
    size_t  len;

    len = last - v;

    if (name->len == 5
        && ngx_strncasecmp(name->data, (u_char *) "proto", 5) == 0
        && len == sizeof("io.prometheus.client.MetricFamily") - 1
        && ngx_strncmp(v, "io.prometheus.client.MetricFamily", len) == 0)
    {
        return NGX_HTTP_DSM_PB_PROTO;
    }

    if (name->len == 8
        && ngx_strncasecmp(name->data, (u_char *) "encoding", 8) == 0
        && len == sizeof("delimited") - 1
        && ngx_strncmp(v, "delimited", len) == 0)
    {
        return NGX_HTTP_DSM_PB_DELIMITED;
    }

    return 0;
}


/*
 * The most specific range matching a type gives its q (RFC 9110 12.5.1);
 * JSON, HTML and protobuf are only ever chosen by name, never by a wildcard.
 */

static void
ngx_http_dsm_accept_range(ngx_http_dsm_accept_t *a, ngx_str_t *type,
    ngx_str_t *subtype, ngx_int_t q, ngx_uint_t pb)
{
    ngx_int_t                    spec;
    ngx_uint_t                   t;
    const ngx_http_dsm_media_t  *m;

    for (t = 0; t < NGX_HTTP_DSM_NTYPES; t++) {
        m = &ngx_http_dsm_media[t];

        if (type->len == 1 && type->data[0] == '*') {
            if (subtype->len != 1 || subtype->data[0] != '*') {
                continue;
            }

            spec = 0;

        } else if (type->len != m->type.len
                   || ngx_strncasecmp(type->data, m->type.data, type->len)
                      != 0)
        {
            continue;

        } else if (subtype->len == 1 && subtype->data[0] == '*') {
            spec = 1;

        } else if (subtype->len == m->subtype.len
                   && ngx_strncasecmp(subtype->data, m->subtype.data,
                                      subtype->len)
                      == 0)
        {
            spec = 2;

        } else {
            continue;
        }

        if (m->explicit && spec != 2) {
            continue;
        }

        /* another message or encoding: not what we write */

        if (t == NGX_HTTP_DSM_T_PROTO && pb != NGX_HTTP_DSM_PB_OK) {
            continue;
        }

        if (spec > a->spec[t] || (spec == a->spec[t] && q > a->q[t])) {
            a->spec[t] = spec;
            a->q[t] = q;
        }
    }
}


/* "0", "0.5", "1.000": thousandths, or -1 if malformed */

static ngx_int_t
ngx_http_dsm_qvalue(u_char *p, u_char *last)
{
    ngx_int_t   q, scale;

    if (p == last || (*p != '0' && *p != '1')) {
        return -1;
    }

    q = (*p++ - '0') * 1000;

    if (p == last) {
        return q;
    }

    if (*p++ != '.' || last - p > 3) {
        return -1;
    }

    for (scale = 100; p < last; p++, scale /= 10) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        q += (*p - '0') * scale;
    }

    return (q > 1000) ? -1 : q;
}


/*
 * The highest q wins, then the more specific match; a tie goes to the
 * exposition, then JSON: a scraper is never surprised.  Nothing acceptable
 * at all: the exposition, as before.
 */

static ngx_uint_t
ngx_http_dsm_accept_pick(ngx_http_dsm_accept_t *a)
{
    ngx_uint_t  t, best;

    if (a->q[NGX_HTTP_DSM_T_OM] > a->q[NGX_HTTP_DSM_T_TEXT]
        || (a->q[NGX_HTTP_DSM_T_OM] == a->q[NGX_HTTP_DSM_T_TEXT]
            && a->spec[NGX_HTTP_DSM_T_OM] > a->spec[NGX_HTTP_DSM_T_TEXT]))
    {
        best = NGX_HTTP_DSM_T_OM;

    } else {
        best = NGX_HTTP_DSM_T_TEXT;
    }

    for (t = NGX_HTTP_DSM_T_JSON; t < NGX_HTTP_DSM_NTYPES; t++) {
        if (a->q[t] > a->q[best]
            || (a->q[t] == a->q[best] && a->spec[t] > a->spec[best]))
        {
            best = t;
        }
    }

    if (a->q[best] == 0) {
        return NGX_HTTP_DSM_VIEW_EXPOSITION;
    }

    switch (best) {

    case NGX_HTTP_DSM_T_JSON:
        return NGX_HTTP_DSM_VIEW_JSON;

    case NGX_HTTP_DSM_T_HTML:
        return NGX_HTTP_DSM_VIEW_PAGE;

    case NGX_HTTP_DSM_T_PROTO:
        return NGX_HTTP_DSM_VIEW_PROTOBUF;

    default:
        return NGX_HTTP_DSM_VIEW_EXPOSITION;
    }
}


/* the location's answer depends on Accept: caches must know */

ngx_int_t
ngx_http_dsm_vary(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Vary");
    ngx_str_set(&h->value, "Accept");

    return NGX_OK;
}


/*
 * The page, its script and its style sheet, from the module's memory.
 * The page is sent with a Content-Security-Policy that allows nothing but
 * these and the JSON from the same origin: it has no inline script or
 * style, so it also works behind a site's own "default-src 'self'".
 */

ngx_int_t
ngx_http_dsm_status_asset(ngx_http_request_t *r, ngx_uint_t view)
{
    char             *type;
    size_t            len, tlen;
    ngx_buf_t        *b;
    ngx_chain_t      *cl;
    const u_char     *data;
    ngx_table_elt_t  *h;

    switch (view) {

    case NGX_HTTP_DSM_VIEW_PAGE:
        data = ngx_http_dsm_page_html;
        len = sizeof(ngx_http_dsm_page_html) - 1;
        type = "text/html; charset=utf-8";
        tlen = sizeof("text/html") - 1;

        if (ngx_http_dsm_vary(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Content-Security-Policy");
        ngx_str_set(&h->value, "default-src 'none'; script-src 'self'; "
                    "style-src 'self'; connect-src 'self'; "
                    "base-uri 'none'; form-action 'none'");
        break;

    case NGX_HTTP_DSM_VIEW_JS:
        data = ngx_http_dsm_page_js;
        len = sizeof(ngx_http_dsm_page_js) - 1;
        type = "text/javascript; charset=utf-8";
        tlen = sizeof("text/javascript") - 1;
        break;

    default: /* NGX_HTTP_DSM_VIEW_CSS */
        data = ngx_http_dsm_page_css;
        len = sizeof(ngx_http_dsm_page_css) - 1;
        type = "text/css; charset=utf-8";
        tlen = sizeof("text/css") - 1;
        break;
    }

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = (u_char *) data;
    b->last = (u_char *) data + len;
    b->memory = 1;

    cl->buf = b;
    cl->next = NULL;

    return ngx_http_dsm_send(r, cl, len, type, tlen);
}


static ngx_int_t
ngx_http_dsm_send(ngx_http_request_t *r, ngx_chain_t *out, off_t size,
    char *type, size_t type_len)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t      *cl;
    ngx_table_elt_t  *h;

    for (cl = out; cl->next; cl = cl->next) { /* void */ }

    b = cl->buf;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    /* every refresh must see new numbers; the page is a few KB */

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Content-Type-Options");
    ngx_str_set(&h->value, "nosniff");

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = size;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = type_len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


/*
 * The JSON view: the exposition's families under their names without
 * "deepseek_", per zone and per series, from the same snapshot.
 */

ngx_int_t
ngx_http_dsm_json(ngx_http_request_t *r, ngx_http_dsm_snap_t *snaps,
    ngx_uint_t nzones)
{
    u_char              *p;
    ngx_uint_t           i;
    ngx_time_t          *tp;
    ngx_http_dsm_out_t   o;

    ngx_memzero(&o, sizeof(ngx_http_dsm_out_t));
    o.r = r;
    o.last = &o.out;

    tp = ngx_timeofday();

    p = ngx_http_dsm_reserve(&o, 256);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.b->last = ngx_sprintf(p, "{\"build_info\":{\"version\":\""
                            NGX_HTTP_DSM_VERSION "\",\"nginx_version\":\""
                            NGINX_VERSION "\"},\"time\":%T.%03M,"
                            "\"zones\":[", tp->sec, tp->msec);

    for (i = 0; i < nzones; i++) {
        if (i) {
            p = ngx_http_dsm_reserve(&o, 1);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            *o.b->last++ = ',';
        }

        ngx_http_dsm_json_zone(&o, &snaps[i]);
    }

    p = ngx_http_dsm_reserve(&o, 4);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.b->last = ngx_http_dsm_lit(p, "]}\n");

    if (o.error) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.size += o.b->last - o.b->pos;

    return ngx_http_dsm_send(r, o.out, o.size, "application/json",
                             sizeof("application/json") - 1);
}


/*
 * The last balance reading, as the exposition shows it:
 * "balance":{"CNY":{"total":..,"granted":..,"topped_up":..}},
 * "balance_available":1,"balance_updated_seconds":...,
 */

static void
ngx_http_dsm_json_balance(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap)
{
    u_char                     *p;
    uint64_t                    code;
    ngx_uint_t                  i, t, first;
    ngx_http_dsm_balance_sh_t  *bs;

    bs = &snap->balance;

    if (bs->last == 0) {
        return;
    }

    p = ngx_http_dsm_reserve(o, NGX_HTTP_DSM_BALANCE_SLOTS
                                * (32 + NGX_HTTP_DSM_BALANCE_TYPES * 40)
                                + 128);
    if (p == NULL) {
        return;
    }

    p = ngx_http_dsm_lit(p, "\"balance\":{");
    first = 1;

    for (i = 0; i < NGX_HTTP_DSM_BALANCE_SLOTS; i++) {
        code = bs->slots[i].code;

        if (code == 0) {
            continue;
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;
        *p++ = '"';

        p = ngx_http_dsm_currency_code(p, code);

        *p++ = '"';
        *p++ = ':';

        for (t = 0; t < NGX_HTTP_DSM_BALANCE_TYPES; t++) {
            p = ngx_sprintf(p, t ? ",\"%s\":" : "{\"%s\":",
                            ngx_http_dsm_balance_types[t]);
            p = ngx_http_dsm_amount(p, (int64_t) bs->slots[i].amount[t]);
        }

        *p++ = '}';
    }

    o->b->last = ngx_sprintf(p, "},\"balance_available\":%d,"
                             "\"balance_updated_seconds\":%uL.%03uL,",
                             bs->available ? 1 : 0,
                             (uint64_t) bs->updated / 1000,
                             (uint64_t) bs->updated % 1000);
}


static void
ngx_http_dsm_json_zone(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap)
{
    u_char           *p;
    uint64_t         *v;
    ngx_uint_t        i, j, h, nb, first;
    const ngx_str_t  *name;

    v = snap->values;

    p = ngx_http_dsm_reserve(o, snap->name.len + 512);
    if (p == NULL) {
        return;
    }

    p = ngx_http_dsm_lit(p, "{\"zone\":\"");
    p = ngx_cpymem(p, snap->name.data, snap->name.len);
    p = ngx_sprintf(p, "\",\"metrics_series\":{\"used\":%uL,"
                    "\"capacity\":%uL},\"metrics_dropped_total\":%uL,"
                    "\"metrics_zone_start_time_seconds\":%uL,"
                    "\"metrics_reloads_total\":%uL,"
                    "\"metrics_last_reload_time_seconds\":%uL,"
                    "\"metrics_master_pid\":%uL,",
                    v[NGX_HTTP_DSM_V_SERIES], v[NGX_HTTP_DSM_V_CAPACITY],
                    v[NGX_HTTP_DSM_V_DROPPED], v[NGX_HTTP_DSM_V_START_TIME],
                    v[NGX_HTTP_DSM_V_RELOADS], v[NGX_HTTP_DSM_V_LAST_RELOAD],
                    v[NGX_HTTP_DSM_V_MASTER_PID]);
    o->b->last = p;

    ngx_http_dsm_json_balance(o, snap);

    p = ngx_http_dsm_reserve(o, 32);
    if (p == NULL) {
        return;
    }

    o->b->last = ngx_http_dsm_lit(p, "\"requests_in_flight\":{");

    /* the exposition's endpoint texts are valid JSON string contents */

    for (j = 0; j < snap->nendpoints; j++) {
        p = ngx_http_dsm_reserve(o, snap->endpoints[j].text_len + 32);
        if (p == NULL) {
            return;
        }

        if (j) {
            *p++ = ',';
        }

        *p++ = '"';
        p = ngx_cpymem(p, snap->endpoints[j].text,
                       snap->endpoints[j].text_len);
        *p++ = '"';
        *p++ = ':';
        o->b->last = ngx_http_dsm_u64(p, snap->in_flight[j]);
    }

    p = ngx_http_dsm_reserve(o, 64);
    if (p == NULL) {
        return;
    }

    if (snap->in_flight[NGX_HTTP_DSM_MAX_ENDPOINTS]) {
        p = ngx_http_dsm_lit(p, ",\"__overflow__\":");
        p = ngx_http_dsm_u64(p, snap->in_flight[NGX_HTTP_DSM_MAX_ENDPOINTS]);
    }

    o->b->last = ngx_http_dsm_lit(p, "},\"buckets\":{");

    /* the upper bounds of every histogram the zone has, in seconds */

    first = 1;

    for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
        nb = snap->layout->nbuckets[h];
        name = ngx_http_dsm_hist_name(h);

        if (nb == 0 || name == NULL) {
            continue;
        }

        p = ngx_http_dsm_reserve(o, name->len + 16 + nb * 32);
        if (p == NULL) {
            return;
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;

        *p++ = '"';
        p = ngx_cpymem(p, name->data + 9, name->len - 9);  /* "deepseek_" */
        p = ngx_http_dsm_lit(p, "\":[");

        for (i = 0; i < nb; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_http_dsm_seconds(p, snap->layout->bounds[h][i]);
        }

        *p++ = ']';
        o->b->last = p;
    }

    p = ngx_http_dsm_reserve(o, 16);
    if (p == NULL) {
        return;
    }

    o->b->last = ngx_http_dsm_lit(p, "},\"series\":[");

    for (i = 0; i < snap->n; i++) {
        if (i) {
            p = ngx_http_dsm_reserve(o, 1);
            if (p == NULL) {
                return;
            }

            *o->b->last++ = ',';
        }

        ngx_http_dsm_json_series(o, snap, &snap->entries[i]);
    }

    p = ngx_http_dsm_reserve(o, 2);
    if (p == NULL) {
        return;
    }

    o->b->last = ngx_http_dsm_lit(p, "]}");
}


/* one series: its labels, then what the exposition shows of it */

static void
ngx_http_dsm_json_series(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_http_dsm_entry_t *e)
{
    u_char                 *p;
    uint64_t                n[NGX_HTTP_DSM_NREASONS], w, cum, cost;
    ngx_uint_t              j, r, nr, h, nb, b, first, missing;
    const ngx_str_t        *name;
    ngx_atomic_uint_t      *v;
    ngx_http_dsm_series_t  *s;

    s = e->s;
    v = e->v;

    p = ngx_http_dsm_reserve(o, 2 * s->text_len + e->nslots * 32 + 64);
    if (p == NULL) {
        return;
    }

    p = ngx_http_dsm_lit(p, "{\"labels\":{");
    p = ngx_http_dsm_json_labels(p, s->text, s->text_len);
    p = ngx_http_dsm_lit(p, "},\"requests_total\":{");

    first = 1;

    for (j = 0; j < e->nslots; j++) {
        w = e->slots[j];

        if (w == 0) {
            break;
        }

        if (ngx_http_dsm_tag_kind(w) != NGX_HTTP_DSM_SLOT_STATUS) {
            continue;
        }

        p = ngx_sprintf(p, first ? "\"%03ui\":" : ",\"%03ui\":",
                        (ngx_uint_t) ngx_http_dsm_tag_code(w));
        p = ngx_http_dsm_u64(p, ngx_http_dsm_slot_count(w));
        first = 0;
    }

    *p++ = '}';
    o->b->last = p;

    /* tokens, reasoning and cost: where the exposition has them */

    if (v[NGX_HTTP_DSM_C_HIT] + v[NGX_HTTP_DSM_C_MISS]
        + v[NGX_HTTP_DSM_C_OUTPUT])
    {
        p = ngx_http_dsm_reserve(o, s->currency_len + 320);
        if (p == NULL) {
            return;
        }

        p = ngx_sprintf(p, ",\"tokens_total\":{\"input_cache_hit\":%uA,"
                        "\"input_cache_miss\":%uA,\"output\":%uA},"
                        "\"reasoning_tokens_total\":%uA",
                        v[NGX_HTTP_DSM_C_HIT], v[NGX_HTTP_DSM_C_MISS],
                        v[NGX_HTTP_DSM_C_OUTPUT], v[NGX_HTTP_DSM_C_REASONING]);

        if (s->currency_len) {
            cost = v[NGX_HTTP_DSM_C_COST];

            p = ngx_http_dsm_lit(p, ",\"cost_total\":{\"currency\":\"");
            p = ngx_cpymem(p, s->currency, s->currency_len);
            p = ngx_sprintf(p, "\",\"value\":%uL.%012uL}",
                            cost / 1000000000000ULL,
                            cost % 1000000000000ULL);
        }

        o->b->last = p;
    }

    if (v[NGX_HTTP_DSM_C_KEEPALIVE]) {
        p = ngx_http_dsm_reserve(o, 64);
        if (p == NULL) {
            return;
        }

        p = ngx_http_dsm_lit(p, ",\"keepalives_total\":");
        o->b->last = ngx_http_dsm_u64(p, v[NGX_HTTP_DSM_C_KEEPALIVE]);
    }

    for (missing = 0; missing < 2; missing++) {
        if (!ngx_http_dsm_entry_reasons(e, missing, n)) {
            continue;
        }

        nr = missing ? NGX_HTTP_DSM_NMISSING : NGX_HTTP_DSM_NREASONS;

        p = ngx_http_dsm_reserve(o, nr * 64 + 32);
        if (p == NULL) {
            return;
        }

        p = missing ? ngx_http_dsm_lit(p, ",\"usage_missing_total\":{")
                    : ngx_http_dsm_lit(p, ",\"errors_total\":{");
        first = 1;

        for (r = 0; r < nr; r++) {
            if (n[r] == 0) {
                continue;
            }

            name = ngx_http_dsm_reason_name(missing, r);

            p = ngx_sprintf(p, first ? "\"%V\":" : ",\"%V\":", name);
            p = ngx_http_dsm_u64(p, n[r]);
            first = 0;
        }

        *p++ = '}';
        o->b->last = p;
    }

    /* histograms with observations: cumulative counts, "+Inf" last */

    for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
        nb = snap->layout->nbuckets[h];
        name = ngx_http_dsm_hist_name(h);

        if (nb == 0 || name == NULL) {
            continue;
        }

        v = &e->v[snap->layout->offset[h]];

        cum = 0;
        for (b = 0; b <= nb; b++) {
            cum += v[b];
        }

        if (cum == 0) {
            continue;
        }

        p = ngx_http_dsm_reserve(o, name->len + (nb + 3) * 24 + 64);
        if (p == NULL) {
            return;
        }

        *p++ = ',';
        *p++ = '"';
        p = ngx_cpymem(p, name->data + 9, name->len - 9);
        p = ngx_http_dsm_lit(p, "\":{\"buckets\":[");

        cum = 0;

        for (b = 0; b <= nb; b++) {
            cum += v[b];

            if (b) {
                *p++ = ',';
            }

            p = ngx_http_dsm_u64(p, cum);
        }

        p = ngx_http_dsm_lit(p, "],\"sum\":");
        p = ngx_http_dsm_seconds(p, v[nb + 1]);
        p = ngx_http_dsm_lit(p, ",\"count\":");
        p = ngx_http_dsm_u64(p, cum);
        *p++ = '}';
        o->b->last = p;
    }

    p = ngx_http_dsm_reserve(o, 1);
    if (p == NULL) {
        return;
    }

    *o->b->last++ = '}';
}


/*
 * The exposition's label text, name="value",..., as JSON members: values
 * are escaped for the exposition (\\, \", \n; other control bytes and
 * invalid UTF-8 replaced), which is also valid inside a JSON string.
 */

static u_char *
ngx_http_dsm_json_labels(u_char *p, u_char *text, size_t len)
{
    u_char  *last;

    last = text + len;

    while (text < last) {
        *p++ = '"';

        while (text < last && *text != '=') {
            *p++ = *text++;
        }

        if (text == last) {
            break;
        }

        *p++ = '"';
        *p++ = ':';
        text++;

        /* the value with its quotes: up to the first unescaped '"' */

        *p++ = *text++;

        while (text < last && *text != '"') {
            if (*text == '\\' && text + 1 < last) {
                *p++ = *text++;
            }

            *p++ = *text++;
        }

        if (text < last) {
            *p++ = *text++;
        }

        if (text < last && *text == ',') {
            *p++ = *text++;
        }
    }

    return p;
}
