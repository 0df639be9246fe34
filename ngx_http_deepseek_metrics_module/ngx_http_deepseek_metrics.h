
/*
 * ngx_http_deepseek_metrics_module: internal declarations shared by the
 * module's source files.
 */


#ifndef _NGX_HTTP_DEEPSEEK_METRICS_H_INCLUDED_
#define _NGX_HTTP_DEEPSEEK_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_deepseek_metrics_parse.h"


#define NGX_HTTP_DSM_VERSION          "0.1.0"

#define NGX_HTTP_DSM_MAGIC            0x6473656b6d657472ULL
#define NGX_HTTP_DSM_LAYOUT_VERSION   4

#define NGX_HTTP_DSM_MAX_BUCKETS      32
#define NGX_HTTP_DSM_MAX_VALUE        255    /* bytes of one label value */
#define NGX_HTTP_DSM_MAX_LABELS       8      /* deepseek_metrics_label */
#define NGX_HTTP_DSM_MAX_KEY                                                 \
    (4 + (2 + NGX_HTTP_DSM_MAX_LABELS) * (1 + NGX_HTTP_DSM_MAX_VALUE))
#define NGX_HTTP_DSM_KEY_ESTIMATE     128    /* slab bytes per series key */
#define NGX_HTTP_DSM_MAX_ENDPOINTS    32     /* in-flight endpoint table */
#define NGX_HTTP_DSM_MAX_CHUNKS       128    /* of series records */

/*
 * Native histograms (deepseek_metrics_zone native=): schema 3, buckets
 * -79..80, that is (2^-10 s, 2^10 s] in 160 buckets of 9% each, and a
 * zero bucket for observations up to 2^-10 s; observations above 2^10 s
 * are counted in the last bucket.  A word for the zero bucket, then one
 * per bucket.
 */
#define NGX_HTTP_DSM_NATIVE_SCHEMA    3
#define NGX_HTTP_DSM_NATIVE_MIN       (-79)  /* index of the first bucket */
#define NGX_HTTP_DSM_NATIVE_BUCKETS   160
#define NGX_HTTP_DSM_NATIVE_WORDS     (1 + NGX_HTTP_DSM_NATIVE_BUCKETS)


/* histogram families, in exposition order */
enum {
    NGX_HTTP_DSM_H_LATENCY = 0,
    NGX_HTTP_DSM_H_TTFT,
    NGX_HTTP_DSM_H_ANSWER,
    NGX_HTTP_DSM_H_QUEUE,
    NGX_HTTP_DSM_H_TPOT,
    NGX_HTTP_DSM_H_GAP,                     /* longest pause of a stream */
    NGX_HTTP_DSM_NHIST
};


/* in-band failures under a 200 */
enum {
    NGX_HTTP_DSM_INBAND_TRUNCATED = 0,
    NGX_HTTP_DSM_INBAND_QUEUE_TIMEOUT,
    NGX_HTTP_DSM_INBAND_CONTENT_FILTER,
    NGX_HTTP_DSM_INBAND_INSUFFICIENT,
    NGX_HTTP_DSM_INBAND_EMPTY,
    NGX_HTTP_DSM_INBAND_CLIENT_CLOSED,      /* a 200 cut by the client */
    NGX_HTTP_DSM_INBAND_RATE_LIMITED,       /* error objects inside a 200 */
    NGX_HTTP_DSM_INBAND_OVERLOADED,
    NGX_HTTP_DSM_INBAND_SERVER_ERROR,
    NGX_HTTP_DSM_INBAND_STREAM_ERROR,
    NGX_HTTP_DSM_INBAND_CLIENT_TIMEOUT,     /* send_timeout: client stalled */
    NGX_HTTP_DSM_NINBAND
};


/* why token usage could not be read */
enum {
    NGX_HTTP_DSM_MISSING_COMPRESSED = 0,
    NGX_HTTP_DSM_MISSING_TRUNCATED,
    NGX_HTTP_DSM_MISSING_CLIENT_ABORT,
    NGX_HTTP_DSM_MISSING_INVALID_JSON,
    NGX_HTTP_DSM_MISSING_ABSENT,
    NGX_HTTP_DSM_MISSING_INVALID_USAGE,     /* not integers in [0, 2^53) */
    NGX_HTTP_DSM_MISSING_INVALID_BALANCE,   /* JSON, not a balance */
    NGX_HTTP_DSM_NMISSING
};


/*
 * Sparse counters: each series has NGX_HTTP_DSM_NSLOTS words, a tag in the
 * top 16 bits (bit 15 set, a kind, a code) and a count in the low 48 bits.
 * A slot is claimed by compare-and-swap on first use and never freed, so
 * statuses and failure reasons need no memory until they happen.  Statuses
 * may not take the last NGX_HTTP_DSM_NSLOTS_REASON slots: they stay for
 * failure reasons.  The overflow series has dense counters instead: every
 * status code (0 and 100..999) and every reason, so it never runs out.
 */

#define NGX_HTTP_DSM_NSLOTS           12
#define NGX_HTTP_DSM_NSLOTS_REASON    2
#define NGX_HTTP_DSM_NCODES           1000   /* status 0..999 */
#define NGX_HTTP_DSM_NREASON_CODES    16     /* in-band, missing: each */

#define NGX_HTTP_DSM_SLOT_STATUS      0
#define NGX_HTTP_DSM_SLOT_INBAND      1
#define NGX_HTTP_DSM_SLOT_MISSING     2

#define ngx_http_dsm_tag(kind, code)                                         \
    ((uint64_t) (0x8000 | (kind) << 12 | (code)) << 48)
#define ngx_http_dsm_tag_kind(w)      (((w) >> 60) & 0x7)
#define ngx_http_dsm_tag_code(w)      (((w) >> 48) & 0xfff)
#define ngx_http_dsm_slot_count(w)    ((w) & 0xffffffffffffULL)


/* counters of a series: the slots, then plain counters, then histograms */
enum {
    NGX_HTTP_DSM_C_HIT = NGX_HTTP_DSM_NSLOTS,
    NGX_HTTP_DSM_C_MISS,
    NGX_HTTP_DSM_C_OUTPUT,
    NGX_HTTP_DSM_C_REASONING,
    NGX_HTTP_DSM_C_COST,                     /* 1e-12 currency units */
    NGX_HTTP_DSM_C_KEEPALIVE,                /* SSE comment lines */
    NGX_HTTP_DSM_NCOUNTERS
};


/* built-in endpoints; their indexes are fixed in every zone */
enum {
    NGX_HTTP_DSM_EP_CHAT = 0,
    NGX_HTTP_DSM_EP_COMPLETIONS,
    NGX_HTTP_DSM_EP_MODELS,
    NGX_HTTP_DSM_EP_BALANCE,
    NGX_HTTP_DSM_EP_MESSAGES,
    NGX_HTTP_DSM_EP_RESPONSES,
    NGX_HTTP_DSM_EP_OTHER,
    NGX_HTTP_DSM_NEP_BUILTIN
};


/*
 * A series is one label set: endpoint, model and the user labels;
 * statuses are its slots.  Records are fixed-size, in chunks allocated
 * as series appear (see ngx_http_dsm_series()); the key and the rendered
 * label text live in one slab allocation made when the series is created
 * and are immutable afterwards.  Counters are updated with atomics only.
 */

typedef struct {
    uint32_t                      next;      /* chain: series index, 0 ends */
    uint32_t                      hash;
    uint16_t                      overflow;  /* the overflow series */
    uint16_t                      key_len;
    uint16_t                      text_len;  /* labels without status */
    uint16_t                      currency_len;
    u_char                       *key;
    u_char                       *text;      /* escaped, valid UTF-8 */
    u_char                       *currency;  /* escaped, set once */
    ngx_atomic_t                  v[1];
} ngx_http_dsm_series_t;


/*
 * A worker's in-flight counters.  owner is the pid of the worker, or 0
 * when free; a slot whose owner is dead is taken over by compare-and-swap
 * on owner, by a new worker or by the exporter's reaping (which marks it
 * with NGX_HTTP_DSM_REAPING and its own pid while it clears the counters).
 */

#define NGX_HTTP_DSM_REAPING          0x40000000    /* above any pid */
#define ngx_http_dsm_owner_pid(o)     ((ngx_pid_t) ((o) & 0x3fffffff))

typedef struct {
    ngx_atomic_t                  owner;
    ngx_atomic_t                  in_flight[NGX_HTTP_DSM_MAX_ENDPOINTS + 1];
} ngx_http_dsm_slot_t;


typedef struct {
    uint32_t                      hash;
    uint16_t                      len;
    uint16_t                      text_len;
    u_char                       *name;      /* raw, then escaped text */
    u_char                       *text;
} ngx_http_dsm_endpoint_t;


/* the layout: everything that decides where counters are in memory */

typedef struct {
    ngx_uint_t                    max_series;
    ngx_uint_t                    nhash;         /* power of two */
    size_t                        series_size;
    ngx_uint_t                    nbuckets[NGX_HTTP_DSM_NHIST]; /* 0: off */
    ngx_uint_t                    offset[NGX_HTTP_DSM_NHIST];
    ngx_uint_t                    native[NGX_HTTP_DSM_NHIST];   /* 0: off */
    uint64_t                      bounds[NGX_HTTP_DSM_NHIST]
                                        [NGX_HTTP_DSM_MAX_BUCKETS]; /* us */
    size_t                        exemplar_offset; /* in a series, 0: none */
} ngx_http_dsm_layout_t;


/*
 * The latest exemplar of a classic bucket, in the series record after the
 * counters when the zone has "exemplars".  One cache line; written under
 * a seqlock: seq is odd while a writer owns it (taken by compare-and-swap,
 * so a second writer skips instead of waiting), even and non-zero once one
 * is published.  Only printable ASCII ids are kept, so the stored bytes
 * are valid UTF-8 and within the OpenMetrics limit of 128 characters.
 */

#define NGX_HTTP_DSM_EXEMPLAR_MAX     36     /* a UUID; 32 hex ids fit */
#define NGX_HTTP_DSM_EXEMPLAR_LEN                                            \
    (sizeof(" # {trace_id=\"\"} ") - 1 + 2 * NGX_HTTP_DSM_EXEMPLAR_MAX      \
     + 2 * (NGX_INT64_LEN + 8))                 /* OpenMetrics text */

typedef struct {
    ngx_atomic_t                  seq;
    uint64_t                      value;         /* us */
    uint64_t                      time;          /* unix time, ms */
    uint32_t                      len;
    u_char                        id[NGX_HTTP_DSM_EXEMPLAR_MAX];
} ngx_http_dsm_exemplar_t;


/*
 * The last balance reading (GET /user/balance) of a zone.  Lock-free: a
 * reading takes the next sequence number, claims a currency slot by
 * compare-and-swap on its code (up to 8 bytes, zero-padded, never freed),
 * stores the amounts (signed, 1e-6 currency units) and the slot's
 * sequence, then the zone-wide fields, "last" at the end.  The exporter
 * shows the slots written by the reading "last" names.
 */

#define NGX_HTTP_DSM_BALANCE_SLOTS    4
#define NGX_HTTP_DSM_BALANCE_TYPES    3      /* total, granted, topped_up */

typedef struct {
    ngx_atomic_t                  code;          /* 0: free */
    ngx_atomic_t                  seq;
    ngx_atomic_t                  amount[NGX_HTTP_DSM_BALANCE_TYPES];
} ngx_http_dsm_balance_slot_t;


typedef struct {
    ngx_atomic_t                  seq;           /* readings started */
    ngx_atomic_t                  last;          /* 0: none published */
    ngx_atomic_t                  available;     /* 1 or 0 */
    ngx_atomic_t                  updated;       /* unix time, ms */
    ngx_http_dsm_balance_slot_t   slots[NGX_HTTP_DSM_BALANCE_SLOTS];
} ngx_http_dsm_balance_sh_t;


/* a balance body being read: a small resumable JSON scanner's state */

typedef struct {
    ngx_uint_t                    state;
    ngx_uint_t                    depth;
    ngx_uint_t                    key;           /* the pending value's */
    ngx_uint_t                    esc;
    ngx_uint_t                    lit;           /* literal being matched */
    size_t                        size;          /* bytes read */
    uint64_t                      arrays;        /* bit d: level d array */
    u_char                        vbuf[24];      /* a key or value */
    ngx_uint_t                    vlen;
    ngx_uint_t                    ninfos;        /* infos read */
    ngx_uint_t                    fields;        /* of the current info */
    uint64_t                      code[NGX_HTTP_DSM_BALANCE_SLOTS];
    int64_t                       amount[NGX_HTTP_DSM_BALANCE_SLOTS]
                                        [NGX_HTTP_DSM_BALANCE_TYPES];
    unsigned                      in_key:1;
    unsigned                      in_infos:1;    /* balance_infos open */
    unsigned                      in_info:1;     /* one of its objects */
    unsigned                      available:1;
    unsigned                      available_set:1;
    unsigned                      infos_set:1;
    unsigned                      done:1;        /* document closed */
    unsigned                      invalid:1;     /* not JSON */
    unsigned                      bad:1;         /* JSON, not a balance */
} ngx_http_dsm_balance_t;


typedef struct {
    /* first, at fixed offsets: checked before anything else is read */
    uint64_t                      magic;
    uint64_t                      version;
    ngx_http_dsm_layout_t         layout;

    ngx_atomic_t                  nseries;       /* ordinary, in use */
    ngx_atomic_t                  full_logged;
    size_t                        nomem;         /* smallest failed alloc */
    ngx_atomic_t                  dropped;
    ngx_atomic_t                  reloads;
    ngx_atomic_t                  last_reload;
    time_t                        start_time;

    /* the overflow series' statuses and reasons, dense */
    ngx_atomic_t                  overflow_status[NGX_HTTP_DSM_NCODES];
    ngx_atomic_t                  overflow_reason[2]
                                                [NGX_HTTP_DSM_NREASON_CODES];

    /* one slot for every process nginx can have: NGX_MAX_PROCESSES */
    ngx_atomic_t                  nslots;        /* high-water mark */
    ngx_http_dsm_slot_t          *slots;

    ngx_atomic_t                  nendpoints;
    ngx_http_dsm_endpoint_t       endpoints[NGX_HTTP_DSM_MAX_ENDPOINTS];

    ngx_http_dsm_balance_sh_t     balance;

    uint32_t                     *hash;

    /*
     * Series records in chunks of 1 << chunk_shift, a whole number of
     * pages each; a chunk is allocated by the first series in it and
     * published before that series is.  chunks[0][0] is the overflow.
     */
    ngx_uint_t                    chunk_shift;
    ngx_atomic_t                  nochunk;       /* a chunk alloc failed */
    u_char                       *chunks[NGX_HTTP_DSM_MAX_CHUNKS];
} ngx_http_dsm_sh_t;


typedef struct {
    ngx_str_t                     name;
    ngx_http_dsm_sh_t            *sh;
    ngx_slab_pool_t              *shpool;
    ngx_shm_zone_t               *shm_zone;
    ngx_http_dsm_layout_t         layout;
    ngx_http_dsm_slot_t          *slot;          /* this worker's */
    ngx_http_dsm_series_t       **cache;         /* [endpoint][model] */
    ngx_uint_t                    cache_models;
    ngx_uint_t                    max_series_set;
    ngx_uint_t                    currency_logged;
    ngx_uint_t                    reused;        /* kept over a reload */
    ngx_str_t                     file;          /* first reference, */
    ngx_uint_t                    line;          /* for error messages */
    char                         *directive;
} ngx_http_dsm_zone_t;


/* prices: per 1M tokens, in 1e-12 currency units per token */

typedef struct {
    ngx_str_t                     model;
    ngx_str_t                     currency;      /* escaped label text */
    uint64_t                      peak[3];       /* hit, miss, output */
    uint64_t                      offpeak[3];
} ngx_http_dsm_price_t;


typedef struct {
    ngx_int_t                     utc_offset;    /* seconds */
    ngx_uint_t                    days;          /* bit 0: Sunday */
    ngx_uint_t                    nranges;
    ngx_uint_t                    ranges[8][2];  /* seconds of the day */
    ngx_array_t                  *holidays;      /* of ngx_int_t, day numbers */
    unsigned                      set:1;
} ngx_http_dsm_schedule_t;


typedef struct {
    ngx_array_t                   zones;         /* ngx_http_dsm_zone_t * */
    ngx_array_t                  *models;        /* ngx_str_t, allowlist */
    uint32_t                     *model_hashes;
    ngx_uint_t                    models_plain;  /* no name has a '\\' */
    ngx_array_t                  *prices;        /* ngx_http_dsm_price_t */
    ngx_http_dsm_price_t        **model_prices;  /* by model index, or NULL */
    ngx_http_dsm_schedule_t       schedule;
    ngx_int_t                     state_index;   /* the request state slot */
    ngx_str_t                     unknown;       /* model "unknown" */
    uint32_t                      other_hash;    /* model "other" */
    uint32_t                      unknown_hash;  /* model "unknown" */
    uint32_t                      overflow_hash; /* endpoint "__overflow__" */
} ngx_http_dsm_main_conf_t;


typedef struct {
    ngx_str_t                     name;
    ngx_http_complex_value_t      value;
} ngx_http_dsm_label_t;


typedef struct {
    ngx_http_dsm_zone_t          *zone;          /* NULL: off */
    ngx_http_complex_value_t     *endpoint;
    ngx_array_t                  *labels;        /* ngx_http_dsm_label_t */
    uint32_t                      labels_id;     /* hash of label names */
    ngx_array_t                  *export_zones;  /* ngx_http_dsm_zone_t * */
    ngx_flag_t                    export;
    ngx_flag_t                    request_body;  /* read model from it */
    ngx_http_complex_value_t     *exemplar;      /* NULL: off */
    ngx_uint_t                    unbuffered;    /* SSE without buffering */
} ngx_http_dsm_loc_conf_t;


/* a series key being looked up, built on the stack by the log handler */

typedef struct {
    u_char                        buf[NGX_HTTP_DSM_MAX_KEY];
    size_t                        len;
    uint32_t                      hash;
    ngx_uint_t                    nvalues;
    ngx_str_t                     currency;      /* of its price, or empty */
    ngx_str_t                     names[2 + NGX_HTTP_DSM_MAX_LABELS];
    ngx_str_t                     values[2 + NGX_HTTP_DSM_MAX_LABELS];
} ngx_http_dsm_key_t;


/*
 * What a counted request needs until its log phase lives in the value slot
 * of a hidden indexed variable: it survives internal redirects (r->ctx does
 * not) and costs no allocation.  len holds the endpoint index, flags and
 * the built-in endpoint kind; data the location configuration that started
 * counting, or the ngx_http_dsm_ctx_t once one is needed.
 */

#define NGX_HTTP_DSM_ST_ENDPOINT      0x003f
#define NGX_HTTP_DSM_ST_IN_FLIGHT     0x0040
#define NGX_HTTP_DSM_ST_COUNTED       0x0080
#define NGX_HTTP_DSM_ST_CTX           0x0100
#define NGX_HTTP_DSM_ST_KIND_SHIFT    12


/* a response being read, or an endpoint the zone's table could not hold */

typedef struct ngx_http_dsm_ctx_s  ngx_http_dsm_ctx_t;

struct ngx_http_dsm_ctx_s {
    ngx_http_dsm_loc_conf_t      *dlcf;
    ngx_http_dsm_ctx_t           *next;          /* a worker's spare list */
    ngx_str_t                     endpoint;      /* with ext only */
    uint32_t                      endpoint_hash;

    ngx_msec_t                    first_data;    /* 0: not seen */
    ngx_msec_t                    first_token;
    ngx_msec_t                    first_answer;
    ngx_msec_t                    last_event;    /* 0: no data event yet */
    ngx_msec_t                    max_gap;       /* between data events */

    ngx_http_dsm_balance_t       *balance;       /* a balance being read */

    unsigned                      ext:1;
    unsigned                      parsing:1;     /* body filter active */
    unsigned                      stream:1;      /* SSE */
    unsigned                      parse_done:1;  /* done or invalid */
    unsigned                      compressed:1;
    unsigned                      last_buf:1;
    unsigned                      full:1;        /* has the stream state */
    unsigned                      released:1;    /* a spare again */

    ngx_http_dsm_parse_t          parse;
};


/* a request resolved for counting, on the stack */

typedef struct {
    ngx_http_dsm_loc_conf_t      *dlcf;
    ngx_http_dsm_zone_t          *zone;
    ngx_http_dsm_ctx_t           *ctx;           /* NULL: nothing read */
    ngx_http_dsm_parse_t         *parse;         /* never NULL */
    ngx_http_dsm_price_t         *price;
    ngx_str_t                     endpoint;
    ngx_str_t                     model;
    uint32_t                      endpoint_hash;
    uint32_t                      model_hash;
    ngx_uint_t                    endpoint_index;
    ngx_uint_t                    model_index;   /* allowlist, other, unknown */
    ngx_uint_t                    kind;          /* built-in endpoint kind */
} ngx_http_dsm_req_t;


extern ngx_module_t  ngx_http_deepseek_metrics_module;
extern const ngx_str_t  ngx_http_dsm_builtin_endpoints[];



static ngx_inline ngx_http_variable_value_t *
ngx_http_dsm_state(ngx_http_request_t *r)
{
    ngx_http_dsm_main_conf_t  *dmcf;

    /* the index lives in the configuration: a failed reload must not move it */

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_deepseek_metrics_module);

    return &r->main->variables[dmcf->state_index];
}


/* the request state's bits, read and written only through these */

static ngx_inline void
ngx_http_dsm_st_set(ngx_http_variable_value_t *st, ngx_uint_t endpoint,
    ngx_uint_t kind)
{
    st->len = endpoint | kind << NGX_HTTP_DSM_ST_KIND_SHIFT;
}


static ngx_inline ngx_uint_t
ngx_http_dsm_st_endpoint(ngx_http_variable_value_t *st)
{
    return st->len & NGX_HTTP_DSM_ST_ENDPOINT;
}


static ngx_inline ngx_uint_t
ngx_http_dsm_st_kind(ngx_http_variable_value_t *st)
{
    return st->len >> NGX_HTTP_DSM_ST_KIND_SHIFT;
}


static ngx_inline ngx_uint_t
ngx_http_dsm_st_has_ctx(ngx_http_variable_value_t *st)
{
    return (st->len & NGX_HTTP_DSM_ST_CTX) != 0;
}


static ngx_inline void
ngx_http_dsm_st_set_ctx(ngx_http_variable_value_t *st, void *ctx)
{
    st->data = ctx;
    st->len |= NGX_HTTP_DSM_ST_CTX;
}


static ngx_inline ngx_uint_t
ngx_http_dsm_st_in_flight(ngx_http_variable_value_t *st)
{
    return (st->len & NGX_HTTP_DSM_ST_IN_FLIGHT) != 0;
}


static ngx_inline void
ngx_http_dsm_st_set_in_flight(ngx_http_variable_value_t *st, ngx_uint_t on)
{
    if (on) {
        st->len |= NGX_HTTP_DSM_ST_IN_FLIGHT;

    } else {
        st->len &= ~NGX_HTTP_DSM_ST_IN_FLIGHT;
    }
}


static ngx_inline ngx_uint_t
ngx_http_dsm_st_counted(ngx_http_variable_value_t *st)
{
    return (st->len & NGX_HTTP_DSM_ST_COUNTED) != 0;
}


static ngx_inline void
ngx_http_dsm_st_set_counted(ngx_http_variable_value_t *st)
{
    st->len |= NGX_HTTP_DSM_ST_COUNTED;
}


/*
 * Wall-clock milliseconds from "from" to "to": 0, not a huge unsigned
 * value, if the clock stepped back in between (like $request_time).
 */

static ngx_inline ngx_msec_t
ngx_http_dsm_elapsed(ngx_msec_t from, ngx_msec_t to)
{
    return (to > from) ? to - from : 0;
}


/*
 * Cost in 1e-12 currency units of token counts (each below 2^53) at
 * per-token rates; saturates at NGX_HTTP_DSM_COST_MAX (9007 currency units
 * per request, beyond any real price) instead of wrapping.
 */

#define NGX_HTTP_DSM_COST_MAX         ((uint64_t) 1 << 53)

static ngx_inline uint64_t
ngx_http_dsm_cost_sum(uint64_t hit, uint64_t miss, uint64_t output,
    uint64_t *rate)
{
    uint64_t    n[3], sum;
    ngx_uint_t  i;

    n[0] = hit;
    n[1] = miss;
    n[2] = output;
    sum = 0;

    for (i = 0; i < 3; i++) {
        if (n[i] && rate[i] > (NGX_HTTP_DSM_COST_MAX - sum) / n[i]) {
            return NGX_HTTP_DSM_COST_MAX;
        }

        sum += n[i] * rate[i];
    }

    return sum;
}


/* combines precomputed string hashes into a series key hash */

static ngx_inline uint32_t
ngx_http_dsm_mix(uint32_t h, uint32_t x)
{
    h = (h ^ x) * 0x9e3779b1;

    return h ^ (h >> 16);
}


/*
 * Counts a request's status, and a request of the overflow series as
 * dropped.  The last slots are kept for failure reasons; a status that
 * finds no slot takes the whole request (latency, tokens, reasons) to the
 * overflow series, whose returned record the caller then counts in:
 * requests_total and the latency _count stay equal everywhere.  Inline,
 * as every counted request runs it.
 */

static ngx_inline ngx_http_dsm_series_t *
ngx_http_dsm_count_status(ngx_http_dsm_sh_t *sh, ngx_http_dsm_series_t *s,
    ngx_uint_t status)
{
    uint64_t    w, tag;
    ngx_uint_t  i;

    if (status >= NGX_HTTP_DSM_NCODES) {
        status = 0;
    }

    if (s->overflow) {
        /* a label set that found no series */
        (void) ngx_atomic_fetch_add(&sh->dropped, 1);
        (void) ngx_atomic_fetch_add(&sh->overflow_status[status], 1);
        return s;
    }

    tag = ngx_http_dsm_tag(NGX_HTTP_DSM_SLOT_STATUS, status);

    for (i = 0; i < NGX_HTTP_DSM_NSLOTS; i++) {
        w = s->v[i];

        if (w == 0) {
            if (i >= NGX_HTTP_DSM_NSLOTS - NGX_HTTP_DSM_NSLOTS_REASON) {
                break;
            }

            if (ngx_atomic_cmp_set(&s->v[i], 0, tag | 1)) {
                return s;
            }

            w = s->v[i];
        }

        if ((w & ~0xffffffffffffULL) == tag) {
            (void) ngx_atomic_fetch_add(&s->v[i], 1);
            return s;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->dropped, 1);
    (void) ngx_atomic_fetch_add(&sh->overflow_status[status], 1);

    return (ngx_http_dsm_series_t *) sh->chunks[0];  /* the overflow */
}


/* zone */
ngx_http_dsm_zone_t *ngx_http_dsm_zone_lookup(ngx_conf_t *cf,
    ngx_str_t *name, char *directive);
char *ngx_http_dsm_zone_add(ngx_conf_t *cf, ngx_http_dsm_zone_t *zone,
    size_t size, ngx_http_dsm_layout_t *layout, ngx_uint_t max_series);
ngx_int_t ngx_http_dsm_zone_init_module(ngx_cycle_t *cycle);
ngx_int_t ngx_http_dsm_zone_init_process(ngx_cycle_t *cycle);
void ngx_http_dsm_zone_exit_process(ngx_cycle_t *cycle);
size_t ngx_http_dsm_series_size(ngx_http_dsm_layout_t *layout);
ngx_http_dsm_series_t *ngx_http_dsm_series(ngx_http_dsm_sh_t *sh,
    ngx_uint_t i);
ngx_http_dsm_series_t *ngx_http_dsm_series_get(ngx_http_dsm_zone_t *zone,
    ngx_http_dsm_key_t *k);
ngx_uint_t ngx_http_dsm_endpoint_get(ngx_http_dsm_zone_t *zone,
    ngx_str_t *name);
ngx_int_t ngx_http_dsm_currency(ngx_http_dsm_zone_t *zone,
    ngx_http_dsm_series_t *s, ngx_str_t *currency);
void ngx_http_dsm_count(ngx_http_dsm_sh_t *sh, ngx_http_dsm_series_t *s,
    uint64_t tag);
ngx_uint_t ngx_http_dsm_slots_reap(ngx_http_dsm_zone_t *zone);
size_t ngx_http_dsm_escape(u_char *dst, u_char *src, size_t len);

/* request handlers */
ngx_int_t ngx_http_dsm_preaccess_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_dsm_log_handler(ngx_http_request_t *r);
void ngx_http_dsm_request_init(ngx_http_dsm_main_conf_t *dmcf);
void ngx_http_dsm_start(ngx_http_request_t *r, ngx_http_dsm_loc_conf_t *dlcf,
    ngx_http_variable_value_t *st);
void ngx_http_dsm_resolve_endpoint(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q);
ngx_http_dsm_ctx_t *ngx_http_dsm_ctx(ngx_http_request_t *r,
    ngx_http_variable_value_t *st, ngx_uint_t stream);
void ngx_http_dsm_ctx_release(ngx_http_dsm_ctx_t *ctx);
extern ngx_http_dsm_parse_t  ngx_http_dsm_noparse;
void ngx_http_dsm_model_read(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_main_conf_t *dmcf);
ngx_int_t ngx_http_dsm_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_dsm_add_variables(ngx_conf_t *cf);

/* prices */
char *ngx_http_dsm_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_dsm_peak_hours(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_dsm_holidays(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_dsm_price_index(ngx_conf_t *cf,
    ngx_http_dsm_main_conf_t *dmcf);
uint64_t ngx_http_dsm_cost(ngx_http_dsm_main_conf_t *mcf,
    ngx_http_dsm_price_t *price, time_t start, uint64_t hit, uint64_t miss,
    uint64_t output);

/* balance */
ngx_http_dsm_balance_t *ngx_http_dsm_balance_init(ngx_pool_t *pool);
void ngx_http_dsm_balance_read(ngx_http_dsm_balance_t *b, u_char *pos,
    u_char *last);
void ngx_http_dsm_balance_count(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_series_t *s);

/* native histograms */
void ngx_http_dsm_native_observe(ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, uint64_t us);

/* exemplars */
extern ngx_str_t  ngx_http_dsm_exemplar_id;
size_t ngx_http_dsm_exemplar_size(ngx_http_dsm_layout_t *layout);
char *ngx_http_dsm_exemplar(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_dsm_exemplar_merge(ngx_conf_t *cf,
    ngx_http_dsm_loc_conf_t *prev, ngx_http_dsm_loc_conf_t *conf);
void ngx_http_dsm_exemplar_start(ngx_http_request_t *r,
    ngx_http_dsm_req_t *q, ngx_msec_t now);
void ngx_http_dsm_exemplar_record(ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, ngx_uint_t bucket, uint64_t us);
/*
 * ngx_http_dsm_exemplar_read(): a whole copy of the exemplar of bucket
 * "bucket" (0..nbuckets[h], the last is "+Inf") of histogram h, for any
 * exposition: NGX_OK, or NGX_DECLINED (none, being written, no storage).
 */
ngx_int_t ngx_http_dsm_exemplar_read(ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, ngx_uint_t bucket,
    ngx_http_dsm_exemplar_t *ex);
u_char *ngx_http_dsm_exemplar_om(u_char *p, ngx_http_dsm_layout_t *l,
    ngx_http_dsm_series_t *s, ngx_uint_t h, ngx_uint_t bucket);

/* export */
char *ngx_http_dsm_export(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


/* everything the request state says, with no allocation */

static ngx_inline void
ngx_http_dsm_resolve_st(ngx_http_variable_value_t *st, ngx_http_dsm_req_t *q)
{
    if (ngx_http_dsm_st_has_ctx(st)) {
        q->ctx = (ngx_http_dsm_ctx_t *) st->data;
        q->dlcf = q->ctx->dlcf;
        q->parse = q->ctx->parsing ? &q->ctx->parse : &ngx_http_dsm_noparse;

        /* the results are read: an event kept from a cut buffer first */
        ngx_http_dsm_parse_end(q->parse);

    } else {
        q->ctx = NULL;
        q->dlcf = (ngx_http_dsm_loc_conf_t *) st->data;
        q->parse = &ngx_http_dsm_noparse;
    }

    q->zone = q->dlcf->zone;
    q->kind = ngx_http_dsm_st_kind(st);
    q->endpoint_index = ngx_http_dsm_st_endpoint(st);
    q->price = NULL;
    q->endpoint.len = 0;
}


static ngx_inline ngx_int_t
ngx_http_dsm_resolve(ngx_http_request_t *r, ngx_http_dsm_req_t *q)
{
    ngx_http_variable_value_t  *st;

    st = ngx_http_dsm_state(r);

    if (!st->valid) {
        return NGX_DECLINED;
    }

    ngx_http_dsm_resolve_st(st, q);

    return NGX_OK;
}


/*
 * The model label: "unknown" unless the response or, with
 * deepseek_metrics_request_body, the request names one; most counted
 * requests (no body read) pay no call for it.
 */

static ngx_inline void
ngx_http_dsm_model(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_main_conf_t *dmcf)
{
    q->model = dmcf->unknown;
    q->model_hash = dmcf->unknown_hash;
    q->model_index = dmcf->models->nelts + 1;

    if ((q->parse->model_set && q->parse->model_len)
        || (q->dlcf->request_body && r->request_body
            && r->request_body->bufs))
    {
        ngx_http_dsm_model_read(r, q, dmcf);
    }

    if (dmcf->model_prices) {
        q->price = dmcf->model_prices[q->model_index];
    }
}


#endif /* _NGX_HTTP_DEEPSEEK_METRICS_H_INCLUDED_ */
