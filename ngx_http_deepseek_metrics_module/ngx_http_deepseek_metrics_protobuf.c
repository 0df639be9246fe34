
/*
 * The protobuf exposition: io.prometheus.client.MetricFamily messages,
 * delimited (each prefixed by its length as a varint), written from the
 * same live reads as the text formats, family by family.  A small encoder
 * of our own: varints, little-endian doubles and length-delimited fields.
 *
 * A MetricFamily's length comes before it, so the Metrics of a batch of
 * series are encoded into a bounded scratch first, each series read once;
 * when the scratch is full or the family ends, the batch is sent as one
 * whole MetricFamily (name, help, type, its Metrics) and the scratch is
 * reused.  A large family is so several messages of the same name, which
 * a reader merges (Prometheus takes each Metric as it comes); the memory
 * of a scrape does not grow with its label sets.
 *
 * Also the native histograms' observation: exponential buckets of schema
 * 3 (each bucket 2^(1/8) = 1.09 times the previous one: a quantile within
 * 4.4%, as client_golang's default bucket factor 1.1), counted with
 * atomics in the series record next to the classic buckets.
 */


#include "ngx_http_deepseek_metrics_export.h"


/* wire types */

#define NGX_HTTP_DSM_PB_VARINT        0
#define NGX_HTTP_DSM_PB_FIXED64       1
#define NGX_HTTP_DSM_PB_LEN           2

#define ngx_http_dsm_pb_key(field, wt)  ((u_char) ((field) << 3 | (wt)))

/* field numbers of metrics.proto */

#define NGX_HTTP_DSM_PB_FAMILY_NAME   1
#define NGX_HTTP_DSM_PB_FAMILY_HELP   2
#define NGX_HTTP_DSM_PB_FAMILY_TYPE   3
#define NGX_HTTP_DSM_PB_FAMILY_METRIC 4

#define NGX_HTTP_DSM_PB_METRIC_LABEL  1
#define NGX_HTTP_DSM_PB_METRIC_GAUGE  2
#define NGX_HTTP_DSM_PB_METRIC_COUNTER 3
#define NGX_HTTP_DSM_PB_METRIC_HIST   7

#define NGX_HTTP_DSM_PB_LABEL_NAME    1
#define NGX_HTTP_DSM_PB_LABEL_VALUE   2

#define NGX_HTTP_DSM_PB_VALUE         1      /* Gauge and Counter */
#define NGX_HTTP_DSM_PB_COUNTER_CREATED 3

#define NGX_HTTP_DSM_PB_H_COUNT       1
#define NGX_HTTP_DSM_PB_H_SUM         2
#define NGX_HTTP_DSM_PB_H_BUCKET      3
#define NGX_HTTP_DSM_PB_H_SCHEMA      5
#define NGX_HTTP_DSM_PB_H_ZERO_THRESHOLD 6
#define NGX_HTTP_DSM_PB_H_ZERO_COUNT  7
#define NGX_HTTP_DSM_PB_H_POS_SPAN    12
#define NGX_HTTP_DSM_PB_H_POS_DELTA   13
#define NGX_HTTP_DSM_PB_H_CREATED     15

#define NGX_HTTP_DSM_PB_BUCKET_COUNT  1
#define NGX_HTTP_DSM_PB_BUCKET_BOUND  2
#define NGX_HTTP_DSM_PB_BUCKET_EXEMPLAR 3

#define NGX_HTTP_DSM_PB_EX_VALUE      2
#define NGX_HTTP_DSM_PB_EX_TIMESTAMP  3

#define NGX_HTTP_DSM_PB_SPAN_OFFSET   1
#define NGX_HTTP_DSM_PB_SPAN_LENGTH   2

#define NGX_HTTP_DSM_PB_TS_SECONDS    1
#define NGX_HTTP_DSM_PB_TS_NANOS      2

/* the keys of the double fields */

#define NGX_HTTP_DSM_PB_VALUE_KEY                                            \
    ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_VALUE, NGX_HTTP_DSM_PB_FIXED64)
#define NGX_HTTP_DSM_PB_H_SUM_KEY                                            \
    ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_SUM, NGX_HTTP_DSM_PB_FIXED64)
#define NGX_HTTP_DSM_PB_H_ZERO_THRESHOLD_KEY                                 \
    ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_ZERO_THRESHOLD,                    \
                        NGX_HTTP_DSM_PB_FIXED64)
#define NGX_HTTP_DSM_PB_BUCKET_BOUND_KEY                                     \
    ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_BUCKET_BOUND, NGX_HTTP_DSM_PB_FIXED64)
#define NGX_HTTP_DSM_PB_EX_VALUE_KEY                                         \
    ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_EX_VALUE, NGX_HTTP_DSM_PB_FIXED64)

/* sint32 and sint64 */

#define ngx_http_dsm_pb_zigzag(v)                                            \
    (((uint64_t) (int64_t) (v) << 1) ^ (uint64_t) ((int64_t) (v) >> 63))

/* MetricType */

#define NGX_HTTP_DSM_PB_COUNTER       0
#define NGX_HTTP_DSM_PB_GAUGE         1
#define NGX_HTTP_DSM_PB_HISTOGRAM     4

/* the zero bucket: observations up to 2^-10 s, 976 us */

#define NGX_HTTP_DSM_NATIVE_ZERO_US   976
#define NGX_HTTP_DSM_NATIVE_ZERO      0.0009765625

/* a run of up to this many empty buckets stays inside a span */

#define NGX_HTTP_DSM_NATIVE_GAP       2

/* the scratch of a batch of Metrics, after room for the family's header */

#define NGX_HTTP_DSM_PB_SCRATCH       (64 * 1024)
#define NGX_HTTP_DSM_PB_HEAD          1024

/*
 * The label cache of a scrape: the label pairs of the first series of the
 * largest zone, encoded once and used by each family; what does not fit
 * is encoded once per family, as before.
 */

#define NGX_HTTP_DSM_PB_CACHE         (512 * 1024)
#define NGX_HTTP_DSM_PB_CACHE_N       16384

/*
 * What a series had at the first family's pass (a bit a family over
 * series): the histograms' bits are their indexes.
 */

#define NGX_HTTP_DSM_PB_KEEPALIVE     (1 << NGX_HTTP_DSM_NHIST)
#define NGX_HTTP_DSM_PB_TOKENS        (1 << (NGX_HTTP_DSM_NHIST + 1))
#define NGX_HTTP_DSM_PB_ERRORS        (1 << (NGX_HTTP_DSM_NHIST + 2))
#define NGX_HTTP_DSM_PB_MISSING       (1 << (NGX_HTTP_DSM_NHIST + 3))

/* the series read that many ahead of the one encoded is prefetched */

#define NGX_HTTP_DSM_PB_AHEAD         8


/*
 * The scrape's encoder state: the zone labels, the labels of the series
 * being encoded, and the scratch: room for a family's header, then the
 * Metric fields of the batch.
 */

typedef struct {
    ngx_str_t                    *zone;          /* zone="..": [zone] */
    ngx_str_t                     labels;        /* the series' pairs */
    u_char                       *buf;           /* labels, not cached */
    u_char                       *cache;         /* label pairs, zone */
    u_char                       *cache_last;    /* included, of the */
    u_char                       *cache_end;     /* series [0, cache_n) */
    uint32_t                     *cache_off;     /* [i]: i's end */
    ngx_uint_t                    cache_n;
    ngx_uint_t                    cache_max;
    ngx_uint_t                    cache_zone;
    ngx_str_t                     types[3];      /* type="..." pairs */
    u_char                        types_buf[3][32];
    uint16_t                    **seen;          /* [zone][series] */
    ngx_uint_t                   *seen_all;      /* [zone]: 1 when set */
    u_char                       *start;         /* the scratch */
    u_char                       *metrics;       /* start + HEAD */
    u_char                       *last;
    u_char                       *end;
    u_char                       *msg;           /* being sent, to last */
    const ngx_str_t              *name;
    char                         *help;
    ngx_uint_t                    type;          /* MetricType */
    ngx_uint_t                    nospace;       /* the series: again */
} ngx_http_dsm_pb_t;


/* what the Metrics of a zone's series are encoded with */

typedef struct {
    ngx_http_dsm_pb_t            *pb;
    ngx_uint_t                    type;          /* MetricType */
    uint64_t                      created;       /* the zone's start */
    ngx_http_dsm_snap_t          *snap;
    ngx_uint_t                    z;
    ngx_uint_t                    series;        /* the cursor */
    size_t                        vlen;          /* Counter or Gauge */
    size_t                        tlen;          /* created_timestamp */
    size_t                        tail_len;
    u_char                        tail[16];      /* after the value */
    double                        le[NGX_HTTP_DSM_MAX_BUCKETS];
} ngx_http_dsm_pb_fam_t;


/* a label of a metric besides its series' ones */

typedef struct {
    ngx_str_t                     name;
    ngx_str_t                     value;         /* raw */
} ngx_http_dsm_pb_label_t;


/* a native histogram's positive buckets as spans and deltas */

typedef struct {
    ngx_int_t                     offset[NGX_HTTP_DSM_NATIVE_BUCKETS];
    ngx_uint_t                    length[NGX_HTTP_DSM_NATIVE_BUCKETS];
    ngx_uint_t                    nspans;
    int64_t                       delta[NGX_HTTP_DSM_NATIVE_BUCKETS];
    ngx_uint_t                    ndeltas;
    uint64_t                      zero;
    uint64_t                      total;         /* zero bucket included */
} ngx_http_dsm_pb_native_t;


static ngx_inline double ngx_http_dsm_pb_inf(void);
static ngx_inline size_t ngx_http_dsm_pb_varint_len(uint64_t v);
static ngx_inline u_char *ngx_http_dsm_pb_varint(u_char *p, uint64_t v);
static ngx_inline u_char *ngx_http_dsm_pb_double(u_char *p, u_char key,
    double d);
static ngx_inline size_t ngx_http_dsm_pb_field_len(size_t len);
static size_t ngx_http_dsm_pb_unescape(u_char *dst, u_char *src, size_t len);
static size_t ngx_http_dsm_pb_pair_len(size_t nlen, size_t vlen);
static u_char *ngx_http_dsm_pb_pair(u_char *p, u_char *name, size_t nlen,
    u_char *value, size_t vlen, ngx_uint_t escaped);
static u_char *ngx_http_dsm_pb_text_pairs(u_char *p, u_char *text,
    size_t len);
static ngx_uint_t ngx_http_dsm_pb_seen(ngx_http_dsm_snap_t *snap,
    ngx_http_dsm_entry_t *e);
static ngx_inline void ngx_http_dsm_pb_prefetch(ngx_http_dsm_snap_t *snap,
    ngx_uint_t i, ngx_uint_t from, ngx_uint_t n, ngx_uint_t text);
static ngx_uint_t ngx_http_dsm_pb_retry(ngx_http_dsm_out_t *o, u_char *mark);
static ngx_inline u_char *ngx_http_dsm_pb_room(ngx_http_dsm_pb_fam_t *fm,
    size_t n);
static ngx_str_t *ngx_http_dsm_pb_labels(ngx_http_dsm_pb_fam_t *fm,
    ngx_http_dsm_entry_t *e);
static void ngx_http_dsm_pb_few(ngx_http_dsm_pb_fam_t *fm, ngx_uint_t kind,
    ngx_uint_t arg);
static void ngx_http_dsm_pb_sample(ngx_http_dsm_pb_fam_t *fm,
    ngx_str_t *labels, ngx_str_t *pairs, ngx_http_dsm_pb_label_t *extra,
    ngx_uint_t nextra, double value);
static void ngx_http_dsm_pb_requests(ngx_http_dsm_pb_fam_t *fm,
    ngx_http_dsm_entry_t *e);
static void ngx_http_dsm_pb_histogram(ngx_http_dsm_pb_fam_t *fm,
    ngx_http_dsm_entry_t *e, ngx_uint_t h);
static size_t ngx_http_dsm_pb_exemplar_len(ngx_http_dsm_exemplar_t *ex,
    size_t *tlen);
static size_t ngx_http_dsm_pb_bucket_len(uint64_t cum,
    ngx_http_dsm_exemplar_t *ex);
static u_char *ngx_http_dsm_pb_bucket(u_char *p, uint64_t cum, double le,
    ngx_http_dsm_exemplar_t *ex);
static void ngx_http_dsm_pb_native(ngx_http_dsm_pb_native_t *nh,
    volatile ngx_atomic_uint_t *w);
static size_t ngx_http_dsm_pb_native_len(ngx_http_dsm_pb_native_t *nh);
static size_t ngx_http_dsm_pb_span_len(ngx_http_dsm_pb_native_t *nh,
    ngx_uint_t i);
static size_t ngx_http_dsm_pb_deltas_len(ngx_http_dsm_pb_native_t *nh);
static u_char *ngx_http_dsm_pb_native_write(u_char *p,
    ngx_http_dsm_pb_native_t *nh);
static void ngx_http_dsm_pb_tokens(ngx_http_dsm_pb_fam_t *fm,
    ngx_http_dsm_entry_t *e, ngx_uint_t arg);
static void ngx_http_dsm_pb_in_flight(ngx_http_dsm_pb_fam_t *fm);
static void ngx_http_dsm_pb_reasons(ngx_http_dsm_pb_fam_t *fm,
    ngx_http_dsm_entry_t *e, ngx_uint_t missing);
static void ngx_http_dsm_pb_zone(ngx_http_dsm_pb_fam_t *fm, ngx_uint_t arg);
static void ngx_http_dsm_pb_balance(ngx_http_dsm_pb_fam_t *fm,
    ngx_uint_t arg);



/*
 * The upper bounds of the native buckets -79..80 in microseconds,
 * floor(2^(i/8) * 1e6): an observation (whole microseconds) is in the
 * first bucket whose bound it does not exceed.
 */

static const uint64_t  ngx_http_dsm_native_bounds[NGX_HTTP_DSM_NATIVE_BUCKETS]
    = {
    1064, 1161, 1266, 1381, 1506, 1642, 1791, 1953, 2129, 2322, 2532, 2762,
    3012, 3284, 3582, 3906, 4259, 4645, 5065, 5524, 6024, 6569, 7164, 7812,
    8519, 9290, 10131, 11048, 12048, 13139, 14328, 15625, 17039, 18581, 20263,
    22097, 24097, 26278, 28656, 31250, 34078, 37162, 40526, 44194, 48194,
    52556, 57312, 62500, 68156, 74325, 81052, 88388, 96388, 105112, 114625,
    125000, 136313, 148650, 162104, 176776, 192776, 210224, 229251, 250000,
    272626, 297301, 324209, 353553, 385552, 420448, 458502, 500000, 545253,
    594603, 648419, 707106, 771105, 840896, 917004, 1000000, 1090507, 1189207,
    1296839, 1414213, 1542210, 1681792, 1834008, 2000000, 2181015, 2378414,
    2593679, 2828427, 3084421, 3363585, 3668016, 4000000, 4362030, 4756828,
    5187358, 5656854, 6168843, 6727171, 7336032, 8000000, 8724061, 9513656,
    10374716, 11313708, 12337686, 13454342, 14672064, 16000000, 17448123,
    19027313, 20749432, 22627416, 24675373, 26908685, 29344129, 32000000,
    34896247, 38054627, 41498865, 45254833, 49350746, 53817370, 58688258,
    64000000, 69792494, 76109255, 82997731, 90509667, 98701492, 107634741,
    117376517, 128000000, 139584989, 152218510, 165995462, 181019335,
    197402985, 215269482, 234753035, 256000000, 279169979, 304437021,
    331990925, 362038671, 394805971, 430538964, 469506070, 512000000,
    558339959, 608874042, 663981851, 724077343, 789611942, 861077929,
    939012140, 1024000000
};


void
ngx_http_dsm_native_observe(ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, uint64_t us)
{
    ngx_uint_t     lo, hi, mid;
    ngx_atomic_t  *v;

    v = &s->v[l->native[h]];

    if (us <= NGX_HTTP_DSM_NATIVE_ZERO_US) {
        (void) ngx_atomic_fetch_add(&v[0], 1);
        return;
    }

    /* above 2^10 s: the last bucket, so that the count stays exact */

    lo = 0;
    hi = NGX_HTTP_DSM_NATIVE_BUCKETS - 1;

    while (lo < hi) {
        mid = (lo + hi) / 2;

        if (us <= ngx_http_dsm_native_bounds[mid]) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    (void) ngx_atomic_fetch_add(&v[1 + lo], 1);
}



/*
 * The scrape's encoder: the zones' labels as LabelPair fields, the
 * series' label buffer (a LabelPair takes at most 8 bytes more than its
 * text, and text_len fits 16 bits), the label cache of the largest zone
 * and the scratch.
 */

void *
ngx_http_dsm_pb_init(ngx_http_request_t *r, ngx_http_dsm_snap_t *snaps,
    ngx_uint_t nzones)
{
    u_char             *p;
    size_t              zmax, size;
    ngx_str_t          *zone;
    ngx_uint_t          z;
    ngx_http_dsm_pb_t  *pb;

    pb = ngx_pcalloc(r->pool, sizeof(ngx_http_dsm_pb_t));
    if (pb == NULL) {
        return NULL;
    }

    pb->zone = ngx_palloc(r->pool, (nzones + 1) * sizeof(ngx_str_t));
    if (pb->zone == NULL) {
        return NULL;
    }

    zmax = 0;

    for (z = 0; z < nzones; z++) {
        zone = &pb->zone[z];

        zone->data = ngx_pnalloc(r->pool, snaps[z].name.len + 16);
        if (zone->data == NULL) {
            return NULL;
        }

        p = ngx_http_dsm_pb_pair(zone->data, (u_char *) "zone", 4,
                                 snaps[z].name.data, snaps[z].name.len, 1);
        zone->len = p - zone->data;
        zmax = ngx_max(zmax, zone->len);

        if (snaps[z].n > snaps[pb->cache_zone].n) {
            pb->cache_zone = z;
        }
    }

    size = zmax + 0xffff + 8 * (NGX_HTTP_DSM_MAX_LABELS + 2);

    pb->buf = ngx_pnalloc(r->pool, size);
    pb->start = ngx_pnalloc(r->pool, NGX_HTTP_DSM_PB_SCRATCH);

    if (pb->buf == NULL || pb->start == NULL) {
        return NULL;
    }

    /* what each series had, by zone: 2 bytes a series */

    pb->seen = ngx_palloc(r->pool, (nzones + 1) * sizeof(uint16_t *));
    pb->seen_all = ngx_pcalloc(r->pool, (nzones + 1) * sizeof(ngx_uint_t));

    if (pb->seen == NULL || pb->seen_all == NULL) {
        return NULL;
    }

    for (z = 0; z < nzones; z++) {
        pb->seen[z] = ngx_palloc(r->pool, snaps[z].n * sizeof(uint16_t));
        if (pb->seen[z] == NULL) {
            return NULL;
        }
    }

    /* the pages of the cache are only touched as it fills */

    pb->cache_max = nzones ? ngx_min(snaps[pb->cache_zone].n,
                                     NGX_HTTP_DSM_PB_CACHE_N)
                           : 0;

    if (pb->cache_max) {
        size = ngx_min(NGX_HTTP_DSM_PB_CACHE, pb->cache_max * 128);

        pb->cache = ngx_pnalloc(r->pool, size);
        pb->cache_off = ngx_palloc(r->pool,
                                   pb->cache_max * sizeof(uint32_t));

        if (pb->cache == NULL || pb->cache_off == NULL) {
            return NULL;
        }

        pb->cache_last = pb->cache;
        pb->cache_end = pb->cache + size;
    }

    pb->metrics = pb->start + NGX_HTTP_DSM_PB_HEAD;
    pb->last = pb->metrics;
    pb->end = pb->start + NGX_HTTP_DSM_PB_SCRATCH;

    return pb;
}


/* a family starts: nothing is sent before its first batch */

void
ngx_http_dsm_pb_start(ngx_http_dsm_out_t *o, const ngx_str_t *name,
    char *type, char *help)
{
    ngx_http_dsm_pb_t  *pb;

    pb = o->pb;

    pb->name = name;
    pb->help = help;

    switch (type[0]) {

    case 'c':
        pb->type = NGX_HTTP_DSM_PB_COUNTER;
        break;

    case 'g':
        pb->type = NGX_HTTP_DSM_PB_GAUGE;
        break;

    default:
        pb->type = NGX_HTTP_DSM_PB_HISTOGRAM;
        break;
    }

    /* the header's room: length, name, help, type */

    if (10 + ngx_http_dsm_pb_field_len(name->len)
        + ngx_http_dsm_pb_field_len(ngx_strlen(help)) + 2
        > NGX_HTTP_DSM_PB_HEAD)
    {
        o->error = 1;
    }
}


/*
 * The Metrics of a zone (NULL: a family shown once) into the scratch, from
 * the cursor o->series; a series that finds no room is encoded again
 * after the batch is sent, from a new read.  As the text emitters, it
 * returns with o->full set to be called again.
 */

void
ngx_http_dsm_pb_emit(ngx_http_dsm_out_t *o, ngx_http_dsm_snap_t *snap,
    ngx_uint_t z, ngx_uint_t kind, ngx_uint_t arg)
{
    u_char                 *p, *mark;
    uint16_t               *seen;
    ngx_uint_t              from, n, b, h, span, bit;
    ngx_http_dsm_pb_t      *pb;
    ngx_http_dsm_entry_t   *e;
    ngx_http_dsm_layout_t  *l;
    ngx_http_dsm_pb_fam_t   fm;

    pb = o->pb;

    /* a batch the client had no room for goes first */

    if (pb->msg && !ngx_http_dsm_pb_flush(o)) {
        return;
    }

    fm.pb = pb;
    fm.type = pb->type;
    fm.created = snap ? snap->values[NGX_HTTP_DSM_V_START_TIME] : 0;
    fm.snap = snap;
    fm.z = z;
    fm.series = 0;

    /* what follows each counter's value: created_timestamp, the same */

    fm.tlen = 1 + ngx_http_dsm_pb_varint_len(fm.created);
    fm.vlen = 9;
    fm.tail_len = 0;

    if (fm.type == NGX_HTTP_DSM_PB_COUNTER) {
        fm.vlen += ngx_http_dsm_pb_field_len(fm.tlen);

        p = fm.tail;
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_COUNTER_CREATED,
                                   NGX_HTTP_DSM_PB_LEN);
        *p++ = (u_char) fm.tlen;
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_TS_SECONDS,
                                   NGX_HTTP_DSM_PB_VARINT);
        p = ngx_http_dsm_pb_varint(p, fm.created);
        fm.tail_len = p - fm.tail;
    }

    switch (kind) {

    case NGX_HTTP_DSM_KIND_REQUESTS:

        /* the first family: the counters of all the others are looked at */

        from = 0;
        n = NGX_HTTP_DSM_NSLOTS;
        span = NGX_HTTP_DSM_NCOUNTERS;
        bit = 0;

        l = snap->layout;

        for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
            if (l->nbuckets[h]) {
                span = ngx_max(span, l->offset[h] + l->nbuckets[h] + 1);
            }
        }

        break;

    case NGX_HTTP_DSM_KIND_REASONS:
        from = 0;
        n = NGX_HTTP_DSM_NSLOTS;
        span = n;
        bit = arg ? NGX_HTTP_DSM_PB_MISSING : NGX_HTTP_DSM_PB_ERRORS;
        break;

    case NGX_HTTP_DSM_KIND_TOKENS:
        from = NGX_HTTP_DSM_C_HIT;
        n = NGX_HTTP_DSM_NCOUNTERS - NGX_HTTP_DSM_C_HIT;
        span = n;
        bit = (arg == NGX_HTTP_DSM_TOKENS_KEEPALIVE) ? NGX_HTTP_DSM_PB_KEEPALIVE
                                                     : NGX_HTTP_DSM_PB_TOKENS;
        break;

    case NGX_HTTP_DSM_KIND_HISTOGRAM:
        l = snap->layout;

        if (l->nbuckets[arg] == 0) {
            return;
        }

        for (b = 0; b < l->nbuckets[arg]; b++) {
            fm.le[b] = (double) l->bounds[arg][b] / 1e6;
        }

        /*
         * ngx_http_dsm_pb_histogram() reads the classic buckets, the sum
         * and the native buckets once itself: most histograms of most
         * series are empty, and are so found in one pass over them
         */

        from = l->offset[arg];
        n = 0;
        span = l->nbuckets[arg] + 2;
        bit = 1 << arg;
        break;

    default:

        /* a zone's few Metrics: all in one batch */

        for ( ;; ) {
            mark = pb->last;

            ngx_http_dsm_pb_few(&fm, kind, arg);

            if (!pb->nospace) {
                return;
            }

            if (!ngx_http_dsm_pb_retry(o, mark)) {
                return;
            }
        }
    }

    /*
     * A series that had nothing of the family at the first family's pass
     * is not read again: the counters only grow, so the scrape shows it
     * as it was then (most series have no samples in most families).
     */

    seen = pb->seen[z];

    if (!pb->seen_all[z]) {
        bit = 0;
    }

    while (o->series < snap->n) {
        if (bit && !(seen[o->series] & bit)) {
            o->series++;
            continue;
        }

        ngx_http_dsm_pb_prefetch(snap, o->series + NGX_HTTP_DSM_PB_AHEAD,
                                 from, span,
                                 z == pb->cache_zone
                                 && pb->cache_n < pb->cache_max);

        e = ngx_http_dsm_entry(o, snap, from, n);
        mark = pb->last;
        fm.series = o->series;

        switch (kind) {

        case NGX_HTTP_DSM_KIND_REQUESTS:
            seen[o->series] = ngx_http_dsm_pb_seen(snap, e);
            ngx_http_dsm_pb_requests(&fm, e);
            break;

        case NGX_HTTP_DSM_KIND_REASONS:
            ngx_http_dsm_pb_reasons(&fm, e, arg);
            break;

        case NGX_HTTP_DSM_KIND_TOKENS:
            ngx_http_dsm_pb_tokens(&fm, e, arg);
            break;

        default:
            ngx_http_dsm_pb_histogram(&fm, e, arg);
            break;
        }

        if (pb->nospace) {
            if (!ngx_http_dsm_pb_retry(o, mark)) {
                return;
            }

            continue;
        }

        o->series++;
    }

    if (kind == NGX_HTTP_DSM_KIND_REQUESTS) {
        pb->seen_all[z] = 1;
    }
}


/*
 * What a series has, for the families after the first: the classic
 * buckets of a histogram (the native ones are counted first, but a
 * histogram is only sent once a classic bucket has it), the token
 * counters, the reasons of its slots.
 */

static ngx_uint_t
ngx_http_dsm_pb_seen(ngx_http_dsm_snap_t *snap, ngx_http_dsm_entry_t *e)
{
    uint64_t                      n[NGX_HTTP_DSM_NREASONS];
    ngx_uint_t                    h, b, f;
    ngx_http_dsm_layout_t        *l;
    volatile ngx_atomic_uint_t   *v;

    l = snap->layout;
    v = e->s->v;
    f = 0;

    for (h = 0; h < NGX_HTTP_DSM_NHIST; h++) {
        for (b = 0; b < l->nbuckets[h] + 1 && l->nbuckets[h]; b++) {
            if (v[l->offset[h] + b]) {
                f |= 1 << h;
                break;
            }
        }
    }

    if (v[NGX_HTTP_DSM_C_KEEPALIVE]) {
        f |= NGX_HTTP_DSM_PB_KEEPALIVE;
    }

    if (v[NGX_HTTP_DSM_C_HIT] + v[NGX_HTTP_DSM_C_MISS]
        + v[NGX_HTTP_DSM_C_OUTPUT])
    {
        f |= NGX_HTTP_DSM_PB_TOKENS;
    }

    if (ngx_http_dsm_entry_reasons(e, 0, n)) {
        f |= NGX_HTTP_DSM_PB_ERRORS;
    }

    if (ngx_http_dsm_entry_reasons(e, 1, n)) {
        f |= NGX_HTTP_DSM_PB_MISSING;
    }

    return f;
}


/*
 * A family's pass over 10,000 series of ~1 KB reads 10 MB of the zone,
 * more than the caches keep from one family to the next: the counters
 * [from, from + n) of a series further on are asked for before they are
 * read, so that the waits overlap; while the label cache fills, the label
 * text of a series half as far on (its record's pointer is in the lines
 * asked for before).
 */

static ngx_inline void
ngx_http_dsm_pb_prefetch(ngx_http_dsm_snap_t *snap, ngx_uint_t i,
    ngx_uint_t from, ngx_uint_t n, ngx_uint_t text)
{
#if (defined __GNUC__ || defined __clang__)
    u_char                 *p, *last;
    ngx_http_dsm_series_t  *s;

    if (i >= snap->n || snap->entries) {
        return;
    }

    s = ngx_http_dsm_series(snap->zone->sh, i);

    p = (u_char *) &s->v[from];
    last = (u_char *) &s->v[from + n];

    for ( /* void */ ; p < last; p += 64) {
        __builtin_prefetch(p);
    }

    __builtin_prefetch(last - 1);

    /* the label text of the next series the cache takes */

    if (text && i - NGX_HTTP_DSM_PB_AHEAD / 2 < snap->n) {
        s = ngx_http_dsm_series(snap->zone->sh,
                                i - NGX_HTTP_DSM_PB_AHEAD / 2);
        __builtin_prefetch(s->text);
    }
#endif
}


/*
 * What did not fit is dropped; the batch before it is sent, or, if
 * there was none, the scratch grows for a series larger than it.  0: the
 * client has no room (o->full) or no memory (o->error).
 */

static ngx_uint_t
ngx_http_dsm_pb_retry(ngx_http_dsm_out_t *o, u_char *mark)
{
    u_char             *p;
    size_t              size;
    ngx_http_dsm_pb_t  *pb;

    pb = o->pb;
    pb->nospace = 0;
    pb->last = mark;

    if (mark != pb->metrics) {
        return ngx_http_dsm_pb_flush(o);
    }

    size = 2 * (pb->end - pb->start);

    p = ngx_pnalloc(o->r->pool, size);
    if (p == NULL) {
        o->error = 1;
        return 0;
    }

    ngx_pfree(o->r->pool, pb->start);

    pb->start = p;
    pb->metrics = p + NGX_HTTP_DSM_PB_HEAD;
    pb->last = pb->metrics;
    pb->end = p + size;

    return 1;
}


/*
 * The batch as a whole MetricFamily: its header is written in the room
 * before the Metrics, then the message is copied into the scrape's
 * buffers as far as they go.  1: sent (or nothing to send), 0: the rest
 * waits for the client (o->full) or o->error.
 */

ngx_uint_t
ngx_http_dsm_pb_flush(ngx_http_dsm_out_t *o)
{
    u_char             *p;
    size_t              len, n, hlen;
    ngx_http_dsm_pb_t  *pb;

    pb = o->pb;

    /* no metric, no family: client_golang never sends an empty one */

    if (pb->msg == NULL && pb->last == pb->metrics) {
        return 1;
    }

    if (pb->msg == NULL) {
        hlen = ngx_strlen(pb->help);
        len = ngx_http_dsm_pb_field_len(pb->name->len)
              + ngx_http_dsm_pb_field_len(hlen)
              + 1 + ngx_http_dsm_pb_varint_len(pb->type)
              + (pb->last - pb->metrics);

        p = pb->metrics - (ngx_http_dsm_pb_varint_len(len) + len
                           - (pb->last - pb->metrics));
        pb->msg = p;

        p = ngx_http_dsm_pb_varint(p, len);
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_FAMILY_NAME,
                                   NGX_HTTP_DSM_PB_LEN);
        p = ngx_http_dsm_pb_varint(p, pb->name->len);
        p = ngx_cpymem(p, pb->name->data, pb->name->len);
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_FAMILY_HELP,
                                   NGX_HTTP_DSM_PB_LEN);
        p = ngx_http_dsm_pb_varint(p, hlen);
        p = ngx_cpymem(p, pb->help, hlen);
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_FAMILY_TYPE,
                                   NGX_HTTP_DSM_PB_VARINT);
        (void) ngx_http_dsm_pb_varint(p, pb->type);
    }

    while (pb->msg < pb->last) {
        p = ngx_http_dsm_reserve(o, 1);
        if (p == NULL) {
            return 0;
        }

        n = ngx_min((size_t) (o->b->end - p), (size_t) (pb->last - pb->msg));

        o->b->last = ngx_cpymem(p, pb->msg, n);
        pb->msg += n;
    }

    pb->msg = NULL;
    pb->last = pb->metrics;

    return 1;
}


/* n bytes in the scratch, or NULL: the series is encoded again */

static ngx_inline u_char *
ngx_http_dsm_pb_room(ngx_http_dsm_pb_fam_t *fm, size_t n)
{
    ngx_http_dsm_pb_t  *pb;

    pb = fm->pb;

    if ((size_t) (pb->end - pb->last) < n) {
        pb->nospace = 1;
        return NULL;
    }

    return pb->last;
}


/*
 * The series' labels as LabelPair fields, zone first.  Those of the
 * cache's zone are encoded once a scrape: the cache is filled in series
 * order up to the series asked for (a series a family skips is encoded
 * all the same), until it is full; a series never changes its labels
 * (series never move or go away).
 */

static ngx_str_t *
ngx_http_dsm_pb_labels(ngx_http_dsm_pb_fam_t *fm, ngx_http_dsm_entry_t *e)
{
    u_char                 *p;
    ngx_uint_t              i, j;
    ngx_http_dsm_pb_t      *pb;
    ngx_http_dsm_series_t  *s;

    pb = fm->pb;
    i = fm->series;

    if (fm->z == pb->cache_zone) {

        while (pb->cache_n <= i && pb->cache_n < pb->cache_max) {
            j = pb->cache_n;
            s = (j == i) ? e->s : ngx_http_dsm_series(fm->snap->zone->sh, j);

            if ((size_t) (pb->cache_end - pb->cache_last)
                < pb->zone[fm->z].len + s->text_len
                  + 8 * (NGX_HTTP_DSM_MAX_LABELS + 2))
            {
                pb->cache_max = j;
                break;
            }

            p = pb->cache_last;

            if (fm->snap->prefix.len) {
                p = ngx_cpymem(p, pb->zone[fm->z].data, pb->zone[fm->z].len);
            }

            pb->cache_last = ngx_http_dsm_pb_text_pairs(p, s->text,
                                                        s->text_len);
            pb->cache_off[j] = pb->cache_last - pb->cache;
            pb->cache_n++;
        }

        if (i < pb->cache_n) {
            pb->labels.data = pb->cache + (i ? pb->cache_off[i - 1] : 0);
            pb->labels.len = pb->cache + pb->cache_off[i] - pb->labels.data;

            return &pb->labels;
        }
    }

    p = pb->buf;

    if (fm->snap->prefix.len) {
        p = ngx_cpymem(p, pb->zone[fm->z].data, pb->zone[fm->z].len);
    }

    p = ngx_http_dsm_pb_text_pairs(p, e->s->text, e->s->text_len);

    pb->labels.data = pb->buf;
    pb->labels.len = p - pb->buf;

    return &pb->labels;
}


static void
ngx_http_dsm_pb_few(ngx_http_dsm_pb_fam_t *fm, ngx_uint_t kind,
    ngx_uint_t arg)
{
    ngx_http_dsm_pb_label_t  extra[2];

    switch (kind) {

    case NGX_HTTP_DSM_KIND_BUILD_INFO:
        ngx_str_set(&extra[0].name, "version");
        ngx_str_set(&extra[0].value, NGX_HTTP_DSM_VERSION);
        ngx_str_set(&extra[1].name, "nginx_version");
        ngx_str_set(&extra[1].value, NGINX_VERSION);

        ngx_http_dsm_pb_sample(fm, NULL, NULL, extra, 2, 1);
        break;

    case NGX_HTTP_DSM_KIND_IN_FLIGHT:
        ngx_http_dsm_pb_in_flight(fm);
        break;

    case NGX_HTTP_DSM_KIND_ZONE:
        ngx_http_dsm_pb_zone(fm, arg);
        break;

    case NGX_HTTP_DSM_KIND_BALANCE:
        ngx_http_dsm_pb_balance(fm, arg);
        break;

    default:
        /* a family this encoder does not know: the tests catch it */
        break;
    }
}


/*
 * One Metric with a counter or gauge value: the encoded labels and
 * pairs (either may be NULL), then the extra ones.
 */

static void
ngx_http_dsm_pb_sample(ngx_http_dsm_pb_fam_t *fm, ngx_str_t *labels,
    ngx_str_t *pairs, ngx_http_dsm_pb_label_t *extra, ngx_uint_t nextra,
    double value)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   i;

    len = (labels ? labels->len : 0) + (pairs ? pairs->len : 0);

    for (i = 0; i < nextra; i++) {
        len += ngx_http_dsm_pb_pair_len(extra[i].name.len,
                                        extra[i].value.len);
    }

    /* the value's message is shorter than 128 bytes: one length byte */

    len += 2 + fm->vlen;

    p = ngx_http_dsm_pb_room(fm, ngx_http_dsm_pb_field_len(len));
    if (p == NULL) {
        return;
    }

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_FAMILY_METRIC,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, len);

    if (labels) {
        p = ngx_cpymem(p, labels->data, labels->len);
    }

    if (pairs) {
        p = ngx_cpymem(p, pairs->data, pairs->len);
    }

    for (i = 0; i < nextra; i++) {
        p = ngx_http_dsm_pb_pair(p, extra[i].name.data, extra[i].name.len,
                                 extra[i].value.data, extra[i].value.len, 0);
    }

    *p++ = (fm->type == NGX_HTTP_DSM_PB_COUNTER)
           ? ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_METRIC_COUNTER,
                                 NGX_HTTP_DSM_PB_LEN)
           : ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_METRIC_GAUGE,
                                 NGX_HTTP_DSM_PB_LEN);
    *p++ = (u_char) fm->vlen;
    p = ngx_http_dsm_pb_double(p, NGX_HTTP_DSM_PB_VALUE_KEY, value);

    fm->pb->last = ngx_cpymem(p, fm->tail, fm->tail_len);
}


static void
ngx_http_dsm_pb_requests(ngx_http_dsm_pb_fam_t *fm, ngx_http_dsm_entry_t *e)
{
    u_char      *code, buf[16];
    uint64_t     w;
    ngx_str_t   *labels, pair;
    ngx_uint_t   j, status;

    labels = NULL;
    code = NULL;

    for (j = 0; j < e->nslots; j++) {
        w = e->slots[j];

        if (w == 0) {
            break;
        }

        if (ngx_http_dsm_tag_kind(w) != NGX_HTTP_DSM_SLOT_STATUS) {
            continue;
        }

        /* the status pair is encoded once, its code set for each slot */

        if (labels == NULL) {
            labels = ngx_http_dsm_pb_labels(fm, e);

            pair.data = buf;
            pair.len = ngx_http_dsm_pb_pair(buf, (u_char *) "status", 6,
                                            (u_char *) "000", 3, 0)
                       - buf;
            code = buf + pair.len - 3;
        }

        status = ngx_http_dsm_tag_code(w);
        code[0] = (u_char) ('0' + status / 100);
        code[1] = (u_char) ('0' + status / 10 % 10);
        code[2] = (u_char) ('0' + status % 10);

        ngx_http_dsm_pb_sample(fm, labels, &pair, NULL, 0,
                               (double) ngx_http_dsm_slot_count(w));
    }
}


/*
 * One Histogram message with the classic buckets and, if the zone keeps
 * them, the native ones, as client_golang writes them: a scraper takes
 * the native histogram if it wants it, the classic one otherwise.  The
 * exemplars of the buckets whose count is not 0 (OpenMetrics' rule) are
 * read once, before the lengths are measured.
 */

static void
ngx_http_dsm_pb_histogram(ngx_http_dsm_pb_fam_t *fm, ngx_http_dsm_entry_t *e,
    ngx_uint_t h)
{
    u_char                       *p, *q;
    size_t                        len, hlen;
    uint64_t                      cum, count;
    ngx_str_t                    *labels;
    ngx_uint_t                    b, nb, nex;
    ngx_http_dsm_layout_t        *l;
    volatile ngx_atomic_uint_t   *sv;
    uint64_t                      v[NGX_HTTP_DSM_MAX_BUCKETS + 2];
    uint64_t                      c[NGX_HTTP_DSM_MAX_BUCKETS + 1];
    ngx_http_dsm_exemplar_t      *exp[NGX_HTTP_DSM_MAX_BUCKETS + 1];
    ngx_http_dsm_exemplar_t       ex[NGX_HTTP_DSM_MAX_BUCKETS + 1];
    ngx_http_dsm_pb_native_t      nh;

    l = fm->snap->layout;
    nb = l->nbuckets[h];
    sv = &e->s->v[l->offset[h]];

    /* one read of the buckets: c[] cumulative, c[nb] the classic count */

    cum = 0;
    for (b = 0; b <= nb; b++) {
        v[b] = sv[b];
        cum += v[b];
        c[b] = cum;
    }

    if (cum == 0) {
        return;
    }

    v[nb + 1] = sv[nb + 1];

    /*
     * An observation is counted in the native buckets first and they
     * are read last: they may hold one the classic ones do not yet.
     * Their total is the count then, so that Prometheus finds them
     * adding up to it, and the classic buckets stay below it.
     */

    count = cum;

    /* gcc -O2 cannot tell that only a native histogram writes it */
    nh.zero = 0;
    nh.nspans = 0;
    nh.ndeltas = 0;

    if (l->native[h]) {
        ngx_http_dsm_pb_native(&nh, &e->s->v[l->native[h]]);
        count = ngx_max(nh.total, cum);
    }

    nex = 0;

    if (l->exemplar_offset) {
        for (b = 0; b <= nb; b++) {
            exp[b] = NULL;

            if (v[b]
                && ngx_http_dsm_exemplar_read(l, e->s, h, b, &ex[b]) == NGX_OK)
            {
                exp[b] = &ex[b];
                nex++;
            }
        }
    }

    /*
     * The sizes first: count, sum, buckets, native, created.  A Bucket
     * is shorter than 128 bytes (an exemplar's id is at most 36): its
     * length is one byte.
     */

    hlen = 1 + ngx_http_dsm_pb_varint_len(count) + 9
           + ngx_http_dsm_pb_field_len(fm->tlen);

    for (b = 0; b < nb; b++) {
        hlen += 2 + 1 + ngx_http_dsm_pb_varint_len(c[b]) + 9;
    }

    if (nex) {
        for (b = 0; b < nb; b++) {
            if (exp[b]) {
                hlen += ngx_http_dsm_pb_bucket_len(c[b], exp[b])
                        - (1 + ngx_http_dsm_pb_varint_len(c[b]) + 9);
            }
        }

        /* "+Inf" is sample_count, but an exemplar needs it as a bucket */

        if (exp[nb]) {
            hlen += 2 + ngx_http_dsm_pb_bucket_len(c[nb], exp[nb]);
        }
    }

    if (l->native[h]) {
        hlen += ngx_http_dsm_pb_native_len(&nh);
    }

    labels = ngx_http_dsm_pb_labels(fm, e);
    len = labels->len + ngx_http_dsm_pb_field_len(hlen);

    p = ngx_http_dsm_pb_room(fm, ngx_http_dsm_pb_field_len(len));
    if (p == NULL) {
        return;
    }

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_FAMILY_METRIC,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, len);
    p = ngx_cpymem(p, labels->data, labels->len);

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_METRIC_HIST,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, hlen);

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_COUNT,
                               NGX_HTTP_DSM_PB_VARINT);
    p = ngx_http_dsm_pb_varint(p, count);
    p = ngx_http_dsm_pb_double(p, NGX_HTTP_DSM_PB_H_SUM_KEY,
                               (double) v[nb + 1] / 1e6);

    for (b = 0; b < nb; b++) {
        if (nex && exp[b]) {
            p = ngx_http_dsm_pb_bucket(p, c[b], fm->le[b], exp[b]);
            continue;
        }

        /* the Bucket's length once its count is written */

        q = p;
        p += 2;
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_BUCKET_COUNT,
                                   NGX_HTTP_DSM_PB_VARINT);
        p = ngx_http_dsm_pb_varint(p, c[b]);
        p = ngx_http_dsm_pb_double(p, NGX_HTTP_DSM_PB_BUCKET_BOUND_KEY,
                                   fm->le[b]);

        q[0] = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_BUCKET,
                                   NGX_HTTP_DSM_PB_LEN);
        q[1] = (u_char) (p - q - 2);
    }

    if (nex && exp[nb]) {
        p = ngx_http_dsm_pb_bucket(p, c[nb], ngx_http_dsm_pb_inf(), exp[nb]);
    }

    if (l->native[h]) {
        p = ngx_http_dsm_pb_native_write(p, &nh);
    }

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_CREATED,
                               NGX_HTTP_DSM_PB_LEN);
    *p++ = (u_char) fm->tlen;
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_TS_SECONDS,
                               NGX_HTTP_DSM_PB_VARINT);
    p = ngx_http_dsm_pb_varint(p, fm->created);

    fm->pb->last = p;
}


/*
 * An Exemplar: trace_id, the value in seconds, the timestamp (a
 * google.protobuf.Timestamp of the stored milliseconds); *tlen is the
 * timestamp's length.
 */

static size_t
ngx_http_dsm_pb_exemplar_len(ngx_http_dsm_exemplar_t *ex, size_t *tlen)
{
    uint64_t  nanos;

    nanos = ex->time % 1000 * 1000000;

    *tlen = 1 + ngx_http_dsm_pb_varint_len(ex->time / 1000)
            + (nanos ? 1 + ngx_http_dsm_pb_varint_len(nanos) : 0);

    return ngx_http_dsm_pb_pair_len(sizeof("trace_id") - 1, ex->len) + 9
           + ngx_http_dsm_pb_field_len(*tlen);
}


/* a classic bucket: the Bucket message's length, then the field */

static size_t
ngx_http_dsm_pb_bucket_len(uint64_t cum, ngx_http_dsm_exemplar_t *ex)
{
    size_t  tlen;

    return 1 + ngx_http_dsm_pb_varint_len(cum) + 9
           + (ex ? ngx_http_dsm_pb_field_len(ngx_http_dsm_pb_exemplar_len(ex,
                                                                    &tlen))
                 : 0);
}


static u_char *
ngx_http_dsm_pb_bucket(u_char *p, uint64_t cum, double le,
    ngx_http_dsm_exemplar_t *ex)
{
    size_t    tlen;
    uint64_t  nanos;

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_BUCKET, NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_bucket_len(cum, ex));
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_BUCKET_COUNT,
                               NGX_HTTP_DSM_PB_VARINT);
    p = ngx_http_dsm_pb_varint(p, cum);
    p = ngx_http_dsm_pb_double(p, NGX_HTTP_DSM_PB_BUCKET_BOUND_KEY, le);

    if (ex == NULL) {
        return p;
    }

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_BUCKET_EXEMPLAR,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_exemplar_len(ex, &tlen));
    p = ngx_http_dsm_pb_pair(p, (u_char *) "trace_id",
                             sizeof("trace_id") - 1, ex->id, ex->len, 0);
    p = ngx_http_dsm_pb_double(p, NGX_HTTP_DSM_PB_EX_VALUE_KEY,
                               (double) ex->value / 1e6);
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_EX_TIMESTAMP,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, tlen);
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_TS_SECONDS,
                               NGX_HTTP_DSM_PB_VARINT);
    p = ngx_http_dsm_pb_varint(p, ex->time / 1000);

    nanos = ex->time % 1000 * 1000000;

    if (nanos) {
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_TS_NANOS,
                                   NGX_HTTP_DSM_PB_VARINT);
        p = ngx_http_dsm_pb_varint(p, nanos);
    }

    return p;
}



/*
 * The native buckets in use as spans of consecutive indexes; a run of up
 * to NGX_HTTP_DSM_NATIVE_GAP empty buckets between two in use is cheaper
 * as zero counts inside a span than as a new span.
 */

static void
ngx_http_dsm_pb_native(ngx_http_dsm_pb_native_t *nh,
    volatile ngx_atomic_uint_t *w)
{
    uint64_t    c, prev;
    ngx_int_t   k, last;

    nh->zero = w[0];
    nh->total = nh->zero;
    nh->nspans = 0;
    nh->ndeltas = 0;

    prev = 0;
    last = -1;

    for (k = 0; k < NGX_HTTP_DSM_NATIVE_BUCKETS; k++) {
        c = w[1 + k];

        if (c == 0) {
            continue;
        }

        if (nh->nspans && k - last - 1 <= NGX_HTTP_DSM_NATIVE_GAP) {
            while (++last < k) {
                nh->delta[nh->ndeltas++] = - (int64_t) prev;
                nh->length[nh->nspans - 1]++;
                prev = 0;
            }

        } else {
            nh->offset[nh->nspans] = nh->nspans ? k - last - 1
                                                : NGX_HTTP_DSM_NATIVE_MIN + k;
            nh->length[nh->nspans] = 0;
            nh->nspans++;
        }

        nh->delta[nh->ndeltas++] = (int64_t) c - (int64_t) prev;
        nh->length[nh->nspans - 1]++;
        nh->total += c;
        prev = c;
        last = k;
    }
}


static size_t
ngx_http_dsm_pb_native_len(ngx_http_dsm_pb_native_t *nh)
{
    size_t      len;
    ngx_uint_t  i;

    /* schema, zero_threshold, zero_count */

    len = 2 + 9 + 1 + ngx_http_dsm_pb_varint_len(nh->zero);

    for (i = 0; i < nh->nspans; i++) {
        len += ngx_http_dsm_pb_field_len(ngx_http_dsm_pb_span_len(nh, i));
    }

    if (nh->ndeltas) {
        len += ngx_http_dsm_pb_field_len(ngx_http_dsm_pb_deltas_len(nh));
    }

    return len;
}


static size_t
ngx_http_dsm_pb_span_len(ngx_http_dsm_pb_native_t *nh, ngx_uint_t i)
{
    return 2 + ngx_http_dsm_pb_varint_len(ngx_http_dsm_pb_zigzag(
                                                          nh->offset[i]))
           + ngx_http_dsm_pb_varint_len(nh->length[i]);
}


static size_t
ngx_http_dsm_pb_deltas_len(ngx_http_dsm_pb_native_t *nh)
{
    size_t      len;
    ngx_uint_t  i;

    len = 0;

    for (i = 0; i < nh->ndeltas; i++) {
        len += ngx_http_dsm_pb_varint_len(ngx_http_dsm_pb_zigzag(
                                                             nh->delta[i]));
    }

    return len;
}


static u_char *
ngx_http_dsm_pb_native_write(u_char *p, ngx_http_dsm_pb_native_t *nh)
{
    ngx_uint_t  i;

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_SCHEMA,
                               NGX_HTTP_DSM_PB_VARINT);
    *p++ = (u_char) ngx_http_dsm_pb_zigzag(NGX_HTTP_DSM_NATIVE_SCHEMA);
    p = ngx_http_dsm_pb_double(p, NGX_HTTP_DSM_PB_H_ZERO_THRESHOLD_KEY,
                               NGX_HTTP_DSM_NATIVE_ZERO);
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_ZERO_COUNT,
                               NGX_HTTP_DSM_PB_VARINT);
    p = ngx_http_dsm_pb_varint(p, nh->zero);

    for (i = 0; i < nh->nspans; i++) {
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_POS_SPAN,
                                   NGX_HTTP_DSM_PB_LEN);
        p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_span_len(nh, i));
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_SPAN_OFFSET,
                                   NGX_HTTP_DSM_PB_VARINT);
        p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_zigzag(nh->offset[i]));
        *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_SPAN_LENGTH,
                                   NGX_HTTP_DSM_PB_VARINT);
        p = ngx_http_dsm_pb_varint(p, nh->length[i]);
    }

    if (nh->ndeltas == 0) {
        return p;
    }

    /* packed sint64 */

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_H_POS_DELTA,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_deltas_len(nh));

    for (i = 0; i < nh->ndeltas; i++) {
        p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_zigzag(nh->delta[i]));
    }

    return p;
}


/* the same series and skips as ngx_http_dsm_tokens() */

static void
ngx_http_dsm_pb_tokens(ngx_http_dsm_pb_fam_t *fm, ngx_http_dsm_entry_t *e,
    ngx_uint_t arg)
{
    u_char                   cur[4 * NGX_HTTP_DSM_MAX_VALUE];
    ngx_str_t               *labels;
    ngx_uint_t               t;
    ngx_atomic_uint_t       *v;
    ngx_http_dsm_pb_t       *pb;
    ngx_http_dsm_pb_label_t  extra;

    static ngx_str_t  types[] = {
        ngx_string("input_cache_hit"),
        ngx_string("input_cache_miss"),
        ngx_string("output")
    };

    v = e->v;

    if (arg == NGX_HTTP_DSM_TOKENS_KEEPALIVE) {
        if (v[NGX_HTTP_DSM_C_KEEPALIVE] == 0) {
            return;
        }

    } else if (v[NGX_HTTP_DSM_C_HIT] + v[NGX_HTTP_DSM_C_MISS]
               + v[NGX_HTTP_DSM_C_OUTPUT] == 0)
    {
        return;
    }

    labels = ngx_http_dsm_pb_labels(fm, e);

    switch (arg) {

    case NGX_HTTP_DSM_TOKENS_BY_TYPE:
        pb = fm->pb;

        for (t = 0; t < 3; t++) {
            if (pb->types[t].len == 0) {
                pb->types[t].data = pb->types_buf[t];
                pb->types[t].len = ngx_http_dsm_pb_pair(pb->types_buf[t],
                                                        (u_char *) "type", 4,
                                                        types[t].data,
                                                        types[t].len, 0)
                                   - pb->types_buf[t];
            }

            ngx_http_dsm_pb_sample(fm, labels, &pb->types[t], NULL, 0,
                                   (double) v[NGX_HTTP_DSM_C_HIT + t]);
        }

        break;

    case NGX_HTTP_DSM_TOKENS_REASONING:
        ngx_http_dsm_pb_sample(fm, labels, NULL, NULL, 0,
                               (double) v[NGX_HTTP_DSM_C_REASONING]);
        break;

    case NGX_HTTP_DSM_TOKENS_KEEPALIVE:
        ngx_http_dsm_pb_sample(fm, labels, NULL, NULL, 0,
                               (double) v[NGX_HTTP_DSM_C_KEEPALIVE]);
        break;

    default:
        if (e->s->currency_len == 0
            || e->s->currency_len > sizeof(cur))
        {
            break;
        }

        /* 1e-12 units: the double nearest the text's decimal */

        ngx_str_set(&extra.name, "currency");
        extra.value.data = cur;
        extra.value.len = ngx_http_dsm_pb_unescape(cur, e->s->currency,
                                                  e->s->currency_len);

        ngx_http_dsm_pb_sample(fm, labels, NULL, &extra, 1,
                               (double) v[NGX_HTTP_DSM_C_COST] / 1e12);
        break;
    }
}


static void
ngx_http_dsm_pb_in_flight(ngx_http_dsm_pb_fam_t *fm)
{
    u_char                    name[4 * NGX_HTTP_DSM_MAX_VALUE];
    ngx_str_t                *prefix;
    ngx_uint_t                j;
    ngx_http_dsm_endpoint_t  *ep;
    ngx_http_dsm_snap_t      *snap;
    ngx_http_dsm_pb_label_t   extra;

    snap = fm->snap;
    prefix = snap->prefix.len ? &fm->pb->zone[fm->z] : NULL;
    ngx_str_set(&extra.name, "endpoint");

    for (j = 0; j <= NGX_HTTP_DSM_MAX_ENDPOINTS; j++) {
        if (j < snap->nendpoints) {
            ep = &snap->endpoints[j];

            if (ep->text_len > sizeof(name)) {
                continue;
            }

            extra.value.data = name;
            extra.value.len = ngx_http_dsm_pb_unescape(name, ep->text,
                                                      ep->text_len);

        } else if (j == NGX_HTTP_DSM_MAX_ENDPOINTS && snap->in_flight[j]) {
            ngx_str_set(&extra.value, "__overflow__");

        } else {
            continue;
        }

        ngx_http_dsm_pb_sample(fm, prefix, NULL, &extra, 1,
                               (double) snap->in_flight[j]);
    }
}


static void
ngx_http_dsm_pb_reasons(ngx_http_dsm_pb_fam_t *fm, ngx_http_dsm_entry_t *e,
    ngx_uint_t missing)
{
    uint64_t                 n[NGX_HTTP_DSM_NREASONS];
    ngx_str_t               *labels;
    ngx_uint_t               r, nr;
    ngx_http_dsm_pb_label_t  extra;

    if (!ngx_http_dsm_entry_reasons(e, missing, n)) {
        return;
    }

    nr = missing ? NGX_HTTP_DSM_NMISSING : NGX_HTTP_DSM_NREASONS;
    ngx_str_set(&extra.name, "reason");

    labels = ngx_http_dsm_pb_labels(fm, e);

    for (r = 0; r < nr; r++) {
        if (n[r] == 0) {
            continue;
        }

        extra.value = *ngx_http_dsm_reason_name(missing, r);

        ngx_http_dsm_pb_sample(fm, labels, NULL, &extra, 1, (double) n[r]);
    }
}


static void
ngx_http_dsm_pb_zone(ngx_http_dsm_pb_fam_t *fm, ngx_uint_t arg)
{
    ngx_str_t                *zone;
    ngx_http_dsm_snap_t      *snap;
    ngx_http_dsm_pb_label_t   extra;

    snap = fm->snap;
    zone = &fm->pb->zone[fm->z];

    if (arg != NGX_HTTP_DSM_V_SERIES) {
        ngx_http_dsm_pb_sample(fm, zone, NULL, NULL, 0,
                               (double) snap->values[arg]);
        return;
    }

    ngx_str_set(&extra.name, "state");

    ngx_str_set(&extra.value, "used");
    ngx_http_dsm_pb_sample(fm, zone, NULL, &extra, 1,
                           (double) snap->values[NGX_HTTP_DSM_V_SERIES]);

    ngx_str_set(&extra.value, "capacity");
    ngx_http_dsm_pb_sample(fm, zone, NULL, &extra, 1,
                           (double) snap->values[NGX_HTTP_DSM_V_CAPACITY]);
}


static void
ngx_http_dsm_pb_balance(ngx_http_dsm_pb_fam_t *fm, ngx_uint_t arg)
{
    u_char                      code[8];
    ngx_str_t                  *zone;
    ngx_uint_t                  i, t;
    ngx_http_dsm_balance_sh_t  *bs;
    ngx_http_dsm_pb_label_t     extra[2];

    bs = &fm->snap->balance;
    zone = &fm->pb->zone[fm->z];

    if (bs->last == 0) {
        return;
    }

    if (arg == NGX_HTTP_DSM_BAL_AVAILABLE) {
        ngx_http_dsm_pb_sample(fm, zone, NULL, NULL, 0,
                               bs->available ? 1 : 0);
        return;
    }

    if (arg == NGX_HTTP_DSM_BAL_UPDATED) {
        /* milliseconds: the double nearest the text's decimal */
        ngx_http_dsm_pb_sample(fm, zone, NULL, NULL, 0,
                               (double) bs->updated / 1e3);
        return;
    }

    ngx_str_set(&extra[0].name, "currency");
    ngx_str_set(&extra[1].name, "type");

    for (i = 0; i < NGX_HTTP_DSM_BALANCE_SLOTS; i++) {
        if (bs->slots[i].code == 0) {
            continue;
        }

        extra[0].value.data = code;
        extra[0].value.len = ngx_http_dsm_currency_code(code,
                                                        bs->slots[i].code)
                             - code;

        for (t = 0; t < NGX_HTTP_DSM_BALANCE_TYPES; t++) {
            extra[1].value.data = (u_char *) ngx_http_dsm_balance_types[t];
            extra[1].value.len = ngx_strlen(ngx_http_dsm_balance_types[t]);

            ngx_http_dsm_pb_sample(fm, zone, NULL, extra, 2,
                                   (double) (int64_t) bs->slots[i].amount[t]
                                   / 1e6);
        }
    }
}


/* the encoder */

static ngx_inline double
ngx_http_dsm_pb_inf(void)
{
    double    d;
    uint64_t  u;

    u = 0x7ff0000000000000ULL;
    ngx_memcpy(&d, &u, sizeof(double));

    return d;
}


static ngx_inline size_t
ngx_http_dsm_pb_varint_len(uint64_t v)
{
    size_t  n;

    for (n = 1; v >= 0x80; n++) {
        v >>= 7;
    }

    return n;
}


static ngx_inline u_char *
ngx_http_dsm_pb_varint(u_char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (u_char) (v | 0x80);
        v >>= 7;
    }

    *p++ = (u_char) v;

    return p;
}


/* a fixed64 field: the key, then the double's bits, little-endian */

static ngx_inline u_char *
ngx_http_dsm_pb_double(u_char *p, u_char key, double d)
{
#if !(NGX_HAVE_LITTLE_ENDIAN)
    uint64_t    u;
    ngx_uint_t  i;
#endif

    *p++ = key;

#if (NGX_HAVE_LITTLE_ENDIAN)

    /* the double's bits as they are in memory: one store */

    ngx_memcpy(p, &d, sizeof(double));

    return p + sizeof(double);

#else

    ngx_memcpy(&u, &d, sizeof(uint64_t));

    for (i = 0; i < 8; i++) {
        *p++ = (u_char) (u >> (8 * i));
    }

    return p;

#endif
}


/* a length-delimited field of len bytes: key, length, bytes */

static ngx_inline size_t
ngx_http_dsm_pb_field_len(size_t len)
{
    return 1 + ngx_http_dsm_pb_varint_len(len) + len;
}


/* the text formats' escapes undone: \\, \" and \n; dst NULL: the length */

static size_t
ngx_http_dsm_pb_unescape(u_char *dst, u_char *src, size_t len)
{
    u_char  *last;
    size_t   n;

    n = 0;
    last = src + len;

    while (src < last) {
        if (*src == '\\' && src + 1 < last) {
            src++;

            if (dst) {
                dst[n] = (*src == 'n') ? '\n' : *src;
            }

        } else if (dst) {
            dst[n] = *src;
        }

        src++;
        n++;
    }

    return n;
}


static size_t
ngx_http_dsm_pb_pair_len(size_t nlen, size_t vlen)
{
    return ngx_http_dsm_pb_field_len(ngx_http_dsm_pb_field_len(nlen)
                                     + ngx_http_dsm_pb_field_len(vlen));
}


/* a Metric's LabelPair field; an escaped value is unescaped on the way */

static u_char *
ngx_http_dsm_pb_pair(u_char *p, u_char *name, size_t nlen, u_char *value,
    size_t vlen, ngx_uint_t escaped)
{
    size_t  ulen;

    ulen = escaped ? ngx_http_dsm_pb_unescape(NULL, value, vlen) : vlen;

    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_METRIC_LABEL,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, ngx_http_dsm_pb_field_len(nlen)
                                  + ngx_http_dsm_pb_field_len(ulen));
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_LABEL_NAME,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, nlen);
    p = ngx_cpymem(p, name, nlen);
    *p++ = ngx_http_dsm_pb_key(NGX_HTTP_DSM_PB_LABEL_VALUE,
                               NGX_HTTP_DSM_PB_LEN);
    p = ngx_http_dsm_pb_varint(p, ulen);

    if (escaped) {
        return p + ngx_http_dsm_pb_unescape(p, value, vlen);
    }

    return ngx_cpymem(p, value, vlen);
}


/* a series' label text, name="value",... (escaped), as LabelPair fields */

static u_char *
ngx_http_dsm_pb_text_pairs(u_char *p, u_char *text, size_t len)
{
    u_char  *last, *name, *value, *q;
    size_t   nlen;

    last = text + len;

    while (text < last) {
        name = text;

        while (text < last && *text != '=') {
            text++;
        }

        nlen = text - name;

        if (last - text < 2 || text[1] != '"') {
            break;
        }

        text += 2;
        value = text;

        /* most values have no escape: their bytes are sent as they are */

        q = memchr(value, '"', last - value);

        if (q && memchr(value, '\\', q - value) == NULL) {
            p = ngx_http_dsm_pb_pair(p, name, nlen, value, q - value, 0);
            text = q + 2;
            continue;
        }

        while (text < last && *text != '"') {
            text += (*text == '\\') ? 2 : 1;
        }

        if (text >= last) {
            break;
        }

        p = ngx_http_dsm_pb_pair(p, name, nlen, value, text - value, 1);

        /* the closing quote and the comma */
        text += 2;
    }

    return p;
}
