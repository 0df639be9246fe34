
/*
 * The shared zone: layout, sizing, reuse across reloads, the insert-only
 * series table, the endpoint table and the per-worker in-flight slots.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_int_t ngx_http_dsm_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static size_t ngx_http_dsm_zone_need(ngx_http_dsm_layout_t *layout);
static ngx_uint_t ngx_http_dsm_chunk_shift(ngx_http_dsm_layout_t *layout);
static size_t ngx_http_dsm_chunk_size(ngx_http_dsm_sh_t *sh, ngx_uint_t c);
static size_t ngx_http_dsm_zone_usable(size_t size);
static size_t ngx_http_dsm_zone_size_for(size_t need);
static ngx_uint_t ngx_http_dsm_nhash(ngx_uint_t max_series);
static ngx_http_dsm_zone_t **ngx_http_dsm_cycle_zones(ngx_cycle_t *cycle,
    ngx_uint_t *n);
static size_t ngx_http_dsm_render_len(ngx_http_dsm_key_t *k);
static u_char *ngx_http_dsm_render(u_char *p, ngx_http_dsm_key_t *k);
static ngx_http_dsm_series_t *ngx_http_dsm_full(ngx_http_dsm_zone_t *zone,
    ngx_uint_t n);
static ngx_int_t ngx_http_dsm_pid_gone(ngx_atomic_uint_t owner);
static void ngx_http_dsm_slot_clear(ngx_http_dsm_slot_t *slot);


const ngx_str_t  ngx_http_dsm_builtin_endpoints[] = {
    ngx_string("chat_completions"),
    ngx_string("completions"),
    ngx_string("models"),
    ngx_string("user_balance"),
    ngx_string("messages"),
    ngx_string("responses"),
    ngx_string("other"),
    ngx_null_string
};


static ngx_str_t  ngx_http_dsm_overflow = ngx_string("__overflow__");


#define ngx_http_dsm_pages(size)  ngx_align(size, ngx_pagesize)


size_t
ngx_http_dsm_series_size(ngx_http_dsm_layout_t *layout)
{
    size_t      size;
    ngx_uint_t  i, n;

    n = NGX_HTTP_DSM_NCOUNTERS;

    for (i = 0; i < NGX_HTTP_DSM_NHIST; i++) {
        if (layout->nbuckets[i]) {
            layout->offset[i] = n;

            /* a count per bucket, "+Inf" included, and the sum */
            n += layout->nbuckets[i] + 2;

        } else {
            layout->offset[i] = 0;
        }
    }

    /* native histograms after the counters: nonzero native[] asks */

    for (i = 0; i < NGX_HTTP_DSM_NHIST; i++) {
        if (layout->native[i]) {
            layout->native[i] = n;
            n += NGX_HTTP_DSM_NATIVE_WORDS;
        }
    }

    size = offsetof(ngx_http_dsm_series_t, v) + n * sizeof(ngx_atomic_t);

    /* "exemplars" (exemplar_offset set to 1): after the counters */

    if (layout->exemplar_offset) {
        layout->exemplar_offset = size;
        size += ngx_http_dsm_exemplar_size(layout);
    }

    return size;
}


/*
 * The records' chunks are whole pages but the last, so together they take
 * the pages one array of max_series + 1 records would: the slab adds
 * nothing, and their pointer table is in the header.
 */

static size_t
ngx_http_dsm_zone_need(ngx_http_dsm_layout_t *layout)
{
    return ngx_http_dsm_pages(sizeof(ngx_http_dsm_sh_t))
           + ngx_http_dsm_pages(layout->nhash * sizeof(uint32_t))
           + ngx_http_dsm_pages((layout->max_series + 1)
                                * layout->series_size)
           + ngx_http_dsm_pages(NGX_MAX_PROCESSES
                                * sizeof(ngx_http_dsm_slot_t))
           + NGX_HTTP_DSM_MAX_ENDPOINTS * 2 * 64
           + layout->max_series * NGX_HTTP_DSM_KEY_ESTIMATE;
}


/*
 * Records a chunk holds, as a power of two: the fewest that make a whole
 * number of pages (512 for most layouts, 452 KB with the defaults), more
 * in a zone that would need over NGX_HTTP_DSM_MAX_CHUNKS of them.
 */

static ngx_uint_t
ngx_http_dsm_chunk_shift(ngx_http_dsm_layout_t *layout)
{
    ngx_uint_t  shift;

    shift = 0;

    while (((layout->series_size << shift) & (ngx_pagesize - 1))
           || (layout->max_series >> shift) >= NGX_HTTP_DSM_MAX_CHUNKS)
    {
        shift++;
    }

    return shift;
}


/* chunk c's bytes: the last one holds only what max_series needs */

static size_t
ngx_http_dsm_chunk_size(ngx_http_dsm_sh_t *sh, ngx_uint_t c)
{
    ngx_uint_t  n;

    n = sh->layout.max_series + 1 - (c << sh->chunk_shift);
    n = ngx_min(n, (ngx_uint_t) 1 << sh->chunk_shift);

    return n * sh->layout.series_size;
}


static size_t
ngx_http_dsm_zone_usable(size_t size)
{
    size_t  pages;

    /* the slab pool's header, its page descriptors and alignment */

    if (size < 4 * ngx_pagesize) {
        return 0;
    }

    pages = (size - 2 * ngx_pagesize)
            / (ngx_pagesize + sizeof(ngx_slab_page_t));

    return (pages - 1) * ngx_pagesize;
}


static size_t
ngx_http_dsm_zone_size_for(size_t need)
{
    size_t  pages;

    /* the inverse of ngx_http_dsm_zone_usable(), rounded up */

    pages = (need + ngx_pagesize - 1) / ngx_pagesize + 1;

    return 2 * ngx_pagesize + pages * (ngx_pagesize + sizeof(ngx_slab_page_t));
}


static ngx_uint_t
ngx_http_dsm_nhash(ngx_uint_t max_series)
{
    ngx_uint_t  n;

    for (n = 64; n < max_series; n <<= 1) { /* void */ }

    return n;
}


char *
ngx_http_dsm_zone_add(ngx_conf_t *cf, ngx_http_dsm_zone_t *zone, size_t size,
    ngx_http_dsm_layout_t *layout, ngx_uint_t max_series)
{
    size_t           usable, need, per;
    ngx_shm_zone_t  *shm_zone;

    layout->series_size = ngx_http_dsm_series_size(layout);
    usable = ngx_http_dsm_zone_usable(size);

    if (max_series == 0) {
        per = layout->series_size + NGX_HTTP_DSM_KEY_ESTIMATE
              + 2 * sizeof(uint32_t);
        max_series = usable / per;

        for ( ;; ) {
            if (max_series == 0) {
                break;
            }

            layout->max_series = max_series;
            layout->nhash = ngx_http_dsm_nhash(max_series);

            if (ngx_http_dsm_zone_need(layout) <= usable) {
                break;
            }

            max_series -= max_series / 64 + 1;
        }

        if (max_series == 0) {
            layout->max_series = 1;
            layout->nhash = ngx_http_dsm_nhash(1);
            need = ngx_http_dsm_zone_need(layout);

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "zone \"%V\" is too small: at least %uzk "
                               "needed", &zone->name,
                               ngx_http_dsm_zone_size_for(need) / 1024 + 1);
            return NGX_CONF_ERROR;
        }

    } else {
        zone->max_series_set = 1;
        layout->max_series = max_series;
        layout->nhash = ngx_http_dsm_nhash(max_series);

        need = ngx_http_dsm_zone_need(layout);

        if (need > usable) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "zone \"%V\" is too small for max_series=%ui"
                               " (%uz bytes a series): set its size to at "
                               "least %uzk", &zone->name, max_series,
                               layout->series_size
                               + NGX_HTTP_DSM_KEY_ESTIMATE,
                               ngx_http_dsm_zone_size_for(need) / 1024 + 1);
            return NGX_CONF_ERROR;
        }
    }

    zone->layout = *layout;

    shm_zone = ngx_shared_memory_add(cf, &zone->name, size,
                                     &ngx_http_deepseek_metrics_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &zone->name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_dsm_init_zone;
    shm_zone->data = zone;
    zone->shm_zone = shm_zone;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dsm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_dsm_zone_t *ozone = data;

    u_char                 *p;
    size_t                  need, len;
    ngx_uint_t              i;
    ngx_http_dsm_sh_t      *sh;
    ngx_http_dsm_zone_t    *zone;
    ngx_http_dsm_series_t  *s;

    zone = shm_zone->data;
    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ozone) {

        /*
         * Found from the memory itself, not from the old cycle's zone: a
         * reload may bring another build of the module, whose header is
         * only trusted once its magic and layout version match ours.
         */

        sh = zone->shpool->data;

        if (sh == NULL
            || sh->magic != NGX_HTTP_DSM_MAGIC
            || sh->version != NGX_HTTP_DSM_LAYOUT_VERSION)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "deepseek_metrics_zone \"%V\": the memory was "
                          "laid out by another version of the module, "
                          "refused; to apply the new module, also change "
                          "the zone's size or name (its counters then "
                          "start at zero) or restart nginx", &zone->name);
            return NGX_ERROR;
        }

        if (ngx_memcmp(&sh->layout, &zone->layout,
                       sizeof(ngx_http_dsm_layout_t))
            != 0)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "deepseek_metrics_zone \"%V\": the new buckets, "
                          "histograms or max_series need another layout "
                          "of the same memory, refused; to apply them, "
                          "also change the zone's size or name (its "
                          "counters then start at zero) or restart nginx",
                          &zone->name);
            return NGX_ERROR;
        }

        zone->sh = sh;

        /* counted in init_module, once the whole reload has succeeded */
        zone->reused = 1;

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, shm_zone->shm.log, 0,
                       "deepseek_metrics_zone \"%V\": reused with %ui of "
                       "%ui series", &zone->name, (ngx_uint_t) sh->nseries,
                       sh->layout.max_series);

        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "deepseek_metrics_zone \"%V\": shared memory "
                      "inherited from another process is not supported",
                      &zone->name);
        return NGX_ERROR;
    }

    need = ngx_http_dsm_zone_need(&zone->layout);

    if (need > ngx_http_dsm_zone_usable(shm_zone->shm.size)) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "deepseek_metrics_zone \"%V\" is too small for "
                      "max_series=%ui: set its size to at least %uzk",
                      &zone->name, zone->layout.max_series,
                      ngx_http_dsm_zone_size_for(need) / 1024 + 1);
        return NGX_ERROR;
    }

    sh = ngx_slab_calloc(zone->shpool, sizeof(ngx_http_dsm_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    zone->sh = sh;
    zone->shpool->data = sh;

    sh->magic = NGX_HTTP_DSM_MAGIC;
    sh->version = NGX_HTTP_DSM_LAYOUT_VERSION;
    sh->layout = zone->layout;
    sh->start_time = ngx_time();
    sh->chunk_shift = ngx_http_dsm_chunk_shift(&zone->layout);

    /* only the first chunk, with the overflow series, is committed now */

    sh->hash = ngx_slab_calloc(zone->shpool,
                               zone->layout.nhash * sizeof(uint32_t));
    sh->chunks[0] = ngx_slab_calloc(zone->shpool,
                                    ngx_http_dsm_chunk_size(sh, 0));
    sh->slots = ngx_slab_calloc(zone->shpool, NGX_MAX_PROCESSES
                                              * sizeof(ngx_http_dsm_slot_t));

    if (sh->hash == NULL || sh->chunks[0] == NULL || sh->slots == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; ngx_http_dsm_builtin_endpoints[i].len; i++) {
        sh->endpoints[i].name = ngx_http_dsm_builtin_endpoints[i].data;
        sh->endpoints[i].text = ngx_http_dsm_builtin_endpoints[i].data;
        sh->endpoints[i].len = ngx_http_dsm_builtin_endpoints[i].len;
        sh->endpoints[i].text_len = ngx_http_dsm_builtin_endpoints[i].len;
        sh->endpoints[i].hash =
                       ngx_murmur_hash2(ngx_http_dsm_builtin_endpoints[i].data,
                                        ngx_http_dsm_builtin_endpoints[i].len);
    }

    sh->nendpoints = i;

    /* the overflow series, outside max_series */

    len = sizeof("endpoint=\"\",model=\"\"") - 1
          + 2 * ngx_http_dsm_overflow.len;

    p = ngx_slab_alloc(zone->shpool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    s = ngx_http_dsm_series(sh, 0);
    s->overflow = 1;
    s->text = p;
    s->text_len = len;

    ngx_sprintf(p, "endpoint=\"%V\",model=\"%V\"",
                &ngx_http_dsm_overflow, &ngx_http_dsm_overflow);

    /* we count what does not fit; the slab would log every failure */

    zone->shpool->log_nomem = 0;

    len = sizeof(" in deepseek_metrics_zone \"\"") + zone->name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in deepseek_metrics_zone \"%V\"%Z",
                &zone->name);

    ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                  "deepseek_metrics_zone \"%V\": new zone for %ui series, "
                  "counters start at zero", &zone->name,
                  zone->layout.max_series);

    return NGX_OK;
}


/*
 * No lock: an index is published after its chunk's pointer, with a
 * barrier in between, and chunks never move or go away.
 */

ngx_http_dsm_series_t *
ngx_http_dsm_series(ngx_http_dsm_sh_t *sh, ngx_uint_t i)
{
    return (ngx_http_dsm_series_t *)
               (sh->chunks[i >> sh->chunk_shift]
                + (i & (((ngx_uint_t) 1 << sh->chunk_shift) - 1))
                  * sh->layout.series_size);
}


ngx_http_dsm_series_t *
ngx_http_dsm_series_get(ngx_http_dsm_zone_t *zone, ngx_http_dsm_key_t *k)
{
    u_char                 *p;
    size_t                  len, clen;
    uint32_t               *head;
    ngx_uint_t              i, n, c;
    ngx_http_dsm_sh_t      *sh;
    ngx_http_dsm_series_t  *s;

    sh = zone->sh;
    head = &sh->hash[k->hash & (sh->layout.nhash - 1)];

    for (i = *head; i; i = s->next) {
        s = ngx_http_dsm_series(sh, i);

        if (s->hash == k->hash
            && s->key_len == k->len
            && ngx_memcmp(s->key, k->buf, k->len) == 0)
        {
            return s;
        }
    }

    /*
     * A new series.  Series are never freed: a zone that is full, or whose
     * memory could not hold a key this long, stays so, and that is known
     * without the lock, so a flood of new label sets costs no lock.
     */

    if (sh->nseries >= sh->layout.max_series || sh->nochunk) {
        return ngx_http_dsm_full(zone, sh->nseries);
    }

    clen = k->currency.len;
    len = k->len + ngx_http_dsm_render_len(k) + clen;

    if (sh->nomem && len >= sh->nomem) {
        return ngx_http_dsm_full(zone, sh->nseries);
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (i = *head; i; i = s->next) {
        s = ngx_http_dsm_series(sh, i);

        if (s->hash == k->hash
            && s->key_len == k->len
            && ngx_memcmp(s->key, k->buf, k->len) == 0)
        {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return s;
        }
    }

    n = sh->nseries;

    if (n >= sh->layout.max_series) {
        goto overflow;
    }

    /*
     * The first series of a chunk allocates it.  Nothing is ever freed,
     * so a chunk that does not fit now never will: the zone is full.
     */

    c = (n + 1) >> sh->chunk_shift;

    if (sh->chunks[c] == NULL) {
        sh->chunks[c] = ngx_slab_calloc_locked(zone->shpool,
                                               ngx_http_dsm_chunk_size(sh, c));
        if (sh->chunks[c] == NULL) {
            sh->nochunk = 1;
            goto overflow;
        }
    }

    p = ngx_slab_alloc_locked(zone->shpool, len);
    if (p == NULL) {
        if (sh->nomem == 0 || len < sh->nomem) {
            sh->nomem = len;
        }

        goto overflow;
    }

    s = ngx_http_dsm_series(sh, n + 1);

    s->hash = k->hash;
    s->key_len = (uint16_t) k->len;
    s->key = p;
    p = ngx_cpymem(p, k->buf, k->len);

    s->text = p;
    p = ngx_http_dsm_render(p, k);
    s->text_len = (uint16_t) (p - s->text);

    /* the price's currency, so that its first cost takes no lock */

    if (clen) {
        s->currency = p;
        ngx_memcpy(p, k->currency.data, clen);
        s->currency_len = (uint16_t) clen;
    }

    s->next = *head;

    /* the record, and its chunk's pointer, before the index */

    ngx_memory_barrier();

    *head = (uint32_t) (n + 1);
    sh->nseries = n + 1;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return s;

overflow:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return ngx_http_dsm_full(zone, n);
}


/* the overflow series; its requests count as dropped when counted */

static ngx_http_dsm_series_t *
ngx_http_dsm_full(ngx_http_dsm_zone_t *zone, ngx_uint_t n)
{
    ngx_http_dsm_sh_t  *sh;

    sh = zone->sh;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "deepseek_metrics_zone \"%V\": no new series after %ui, "
                   "the overflow series counts it", &zone->name, n);

    if (sh->full_logged == 0 && ngx_atomic_cmp_set(&sh->full_logged, 0, 1)) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "deepseek_metrics_zone \"%V\" is full (%ui series): "
                      "new label sets are counted in the overflow series",
                      &zone->name, n);
    }

    return ngx_http_dsm_series(sh, 0);
}


/*
 * The currency of a series' cost is set by its first priced request;
 * a model that later changes currency (a reload with another price table)
 * would mix amounts, so those costs are not added and it is logged once.
 */

ngx_int_t
ngx_http_dsm_currency(ngx_http_dsm_zone_t *zone, ngx_http_dsm_series_t *s,
    ngx_str_t *currency)
{
    u_char     *p;
    ngx_int_t   rc;

    /* the price keeps its currency escaped, as the series does */

    if (s->currency_len) {
        goto check;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (s->currency_len == 0) {
        p = ngx_slab_alloc_locked(zone->shpool, currency->len);
        if (p == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return NGX_DECLINED;
        }

        ngx_memcpy(p, currency->data, currency->len);
        s->currency = p;

        ngx_memory_barrier();

        s->currency_len = (uint16_t) currency->len;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

check:

    rc = NGX_OK;

    if (s->currency_len != currency->len
        || ngx_memcmp(s->currency, currency->data, currency->len) != 0)
    {
        rc = NGX_DECLINED;

        if (!zone->currency_logged) {
            zone->currency_logged = 1;
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "deepseek_metrics_zone \"%V\": a model's price "
                          "changed currency; its new costs are not counted "
                          "until the zone is renewed", &zone->name);
        }
    }

    return rc;
}


/*
 * Counts one under a tag in the series' slots: the first slot with the tag
 * or the first free one, claimed with compare-and-swap.  Slots fill in
 * order and are never freed, so two workers cannot claim a tag twice.
 * A reason that finds no slot is counted in the overflow series' dense
 * counters, which keeps its totals exact.
 */

void
ngx_http_dsm_count(ngx_http_dsm_sh_t *sh, ngx_http_dsm_series_t *s,
    uint64_t tag)
{
    uint64_t    w;
    ngx_uint_t  i, kind, code;

    if (!s->overflow) {

        for (i = 0; i < NGX_HTTP_DSM_NSLOTS; i++) {
            w = s->v[i];

            if (w == 0) {
                if (ngx_atomic_cmp_set(&s->v[i], 0, tag | 1)) {
                    return;
                }

                w = s->v[i];
            }

            if ((w & ~0xffffffffffffULL) == tag) {
                (void) ngx_atomic_fetch_add(&s->v[i], 1);
                return;
            }
        }

        (void) ngx_atomic_fetch_add(&sh->dropped, 1);
    }

    kind = ngx_http_dsm_tag_kind(tag);
    code = ngx_http_dsm_tag_code(tag);

    if (kind == NGX_HTTP_DSM_SLOT_STATUS) {
        if (code < NGX_HTTP_DSM_NCODES) {
            (void) ngx_atomic_fetch_add(&sh->overflow_status[code], 1);
        }

    } else if (code < NGX_HTTP_DSM_NREASON_CODES) {
        (void) ngx_atomic_fetch_add(&sh->overflow_reason[kind - 1][code], 1);
    }
}


/* labels without status: endpoint="..",model="..",user="..", escaped */

static size_t
ngx_http_dsm_render_len(ngx_http_dsm_key_t *k)
{
    size_t      len;
    ngx_uint_t  i;

    len = 0;

    for (i = 0; i < k->nvalues; i++) {
        len += k->names[i].len + sizeof(",=\"\"") - 1
               + ngx_http_dsm_escape(NULL, k->values[i].data,
                                     k->values[i].len);
    }

    return len;
}


static u_char *
ngx_http_dsm_render(u_char *p, ngx_http_dsm_key_t *k)
{
    ngx_uint_t  i;

    for (i = 0; i < k->nvalues; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, k->names[i].data, k->names[i].len);
        *p++ = '=';
        *p++ = '"';
        p += ngx_http_dsm_escape(p, k->values[i].data, k->values[i].len);
        *p++ = '"';
    }

    return p;
}


ngx_uint_t
ngx_http_dsm_endpoint_get(ngx_http_dsm_zone_t *zone, ngx_str_t *name)
{
    u_char             *p;
    size_t              tlen;
    uint32_t            hash;
    ngx_uint_t          i, n;
    ngx_http_dsm_sh_t  *sh;

    sh = zone->sh;
    hash = ngx_murmur_hash2(name->data, name->len);

    n = sh->nendpoints;

    for (i = 0; i < n; i++) {
        if (sh->endpoints[i].len == name->len
            && ngx_memcmp(sh->endpoints[i].name, name->data, name->len) == 0)
        {
            return i;
        }
    }

    /* like series, endpoints are never freed: a full table stays full */

    if (n == NGX_HTTP_DSM_MAX_ENDPOINTS) {
        return NGX_HTTP_DSM_MAX_ENDPOINTS;
    }

    tlen = ngx_http_dsm_escape(NULL, name->data, name->len);

    if (sh->nomem && name->len + tlen >= sh->nomem) {
        return NGX_HTTP_DSM_MAX_ENDPOINTS;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    n = sh->nendpoints;

    for ( /* void */ ; i < n; i++) {
        if (sh->endpoints[i].len == name->len
            && ngx_memcmp(sh->endpoints[i].name, name->data, name->len) == 0)
        {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return i;
        }
    }

    if (n == NGX_HTTP_DSM_MAX_ENDPOINTS) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_HTTP_DSM_MAX_ENDPOINTS;
    }

    p = ngx_slab_alloc_locked(zone->shpool, name->len + tlen);
    if (p == NULL) {
        if (sh->nomem == 0 || name->len + tlen < sh->nomem) {
            sh->nomem = name->len + tlen;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_HTTP_DSM_MAX_ENDPOINTS;
    }

    sh->endpoints[n].hash = hash;
    sh->endpoints[n].name = p;
    sh->endpoints[n].len = (uint16_t) name->len;
    p = ngx_cpymem(p, name->data, name->len);
    sh->endpoints[n].text = p;
    sh->endpoints[n].text_len = (uint16_t) tlen;
    ngx_http_dsm_escape(p, name->data, name->len);

    ngx_memory_barrier();

    sh->nendpoints = n + 1;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


/* the zones of a cycle, none when it has no http{} or no zones */

static ngx_http_dsm_zone_t **
ngx_http_dsm_cycle_zones(ngx_cycle_t *cycle, ngx_uint_t *n)
{
    ngx_http_dsm_main_conf_t  *dmcf;

    *n = 0;

    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module) == NULL) {
        return NULL;
    }

    dmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                             ngx_http_deepseek_metrics_module);
    if (dmcf == NULL) {
        return NULL;
    }

    *n = dmcf->zones.nelts;

    return dmcf->zones.elts;
}


ngx_int_t
ngx_http_dsm_zone_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i, n;
    ngx_http_dsm_zone_t      **zones;

    zones = ngx_http_dsm_cycle_zones(cycle, &n);

    for (i = 0; i < n; i++) {
        if (zones[i]->reused) {
            (void) ngx_atomic_fetch_add(&zones[i]->sh->reloads, 1);
            zones[i]->sh->last_reload = ngx_time();
        }
    }

    return NGX_OK;
}


/*
 * Every process nginx can run gets a slot of in-flight counters: a master
 * has at most NGX_MAX_PROCESSES children, however many reloads left old
 * workers running and whatever worker_processes became since the zone
 * was created.  A slot is claimed by compare-and-swap on its owner: a free
 * one, one of a dead process, or a stale one under this very pid (a dead
 * predecessor's, the pid reused).  No lock: a killed worker holds none.
 */

ngx_int_t
ngx_http_dsm_zone_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i, j, n;
    ngx_atomic_uint_t          owner, hw;
    ngx_http_dsm_sh_t         *sh;
    ngx_http_dsm_slot_t       *slot;
    ngx_http_dsm_zone_t      **zones;

    /* cache manager and loader serve no requests */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    zones = ngx_http_dsm_cycle_zones(cycle, &n);

    for (i = 0; i < n; i++) {
        sh = zones[i]->sh;

        if (sh == NULL) {
            continue;
        }

        slot = NULL;

        for (j = 0; j < NGX_MAX_PROCESSES; j++) {
            owner = sh->slots[j].owner;

            if (owner == 0) {
                if (ngx_atomic_cmp_set(&sh->slots[j].owner, 0, ngx_pid)) {
                    slot = &sh->slots[j];
                    break;
                }

                continue;
            }

            if ((ngx_http_dsm_owner_pid(owner) == ngx_pid
                 || ngx_http_dsm_pid_gone(owner))
                && ngx_atomic_cmp_set(&sh->slots[j].owner, owner, ngx_pid))
            {
                slot = &sh->slots[j];
                ngx_http_dsm_slot_clear(slot);
                break;
            }
        }

        if (slot == NULL) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "deepseek_metrics_zone \"%V\": no in-flight slot "
                          "free, this worker's requests are counted but "
                          "not shown in flight", &zones[i]->name);
            continue;
        }

        /* the exporter reads slots up to the high-water mark */

        for ( ;; ) {
            hw = sh->nslots;

            if (hw > j || ngx_atomic_cmp_set(&sh->nslots, hw, j + 1)) {
                break;
            }
        }

        zones[i]->slot = slot;
    }

    return NGX_OK;
}


void
ngx_http_dsm_zone_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i, n;
    ngx_http_dsm_slot_t       *slot;
    ngx_http_dsm_zone_t      **zones;

    zones = ngx_http_dsm_cycle_zones(cycle, &n);

    for (i = 0; i < n; i++) {
        slot = zones[i]->slot;

        if (slot == NULL || slot->owner != (ngx_atomic_uint_t) ngx_pid) {
            continue;
        }

        ngx_http_dsm_slot_clear(slot);

        ngx_memory_barrier();

        (void) ngx_atomic_cmp_set(&slot->owner, ngx_pid, 0);
    }
}


/*
 * Called by the exporter: frees the slots of processes that died without
 * exit_process (SIGKILL, crash), so their in-flight requests do not stay
 * counted forever.  The reaper marks the slot as its own while it clears
 * the counters; if it dies meanwhile, the slot is reaped again.
 */

ngx_uint_t
ngx_http_dsm_slots_reap(ngx_http_dsm_zone_t *zone)
{
    ngx_uint_t            i, n, reaped;
    ngx_atomic_uint_t     owner;
    ngx_http_dsm_sh_t    *sh;
    ngx_http_dsm_slot_t  *slot;

    sh = zone->sh;
    n = sh->nslots;
    reaped = 0;

    for (i = 0; i < n; i++) {
        slot = &sh->slots[i];
        owner = slot->owner;

        if (owner == 0 || slot == zone->slot) {
            continue;
        }

        /* another slot under this worker's pid is a dead predecessor's */

        if (ngx_http_dsm_owner_pid(owner) != ngx_pid
            && !ngx_http_dsm_pid_gone(owner))
        {
            continue;
        }

        if (!ngx_atomic_cmp_set(&slot->owner, owner,
                                NGX_HTTP_DSM_REAPING | ngx_pid))
        {
            continue;
        }

        ngx_http_dsm_slot_clear(slot);

        ngx_memory_barrier();

        slot->owner = 0;
        reaped++;
    }

    return reaped;
}


static ngx_int_t
ngx_http_dsm_pid_gone(ngx_atomic_uint_t owner)
{
    return kill(ngx_http_dsm_owner_pid(owner), 0) == -1
           && ngx_errno == NGX_ESRCH;
}


static void
ngx_http_dsm_slot_clear(ngx_http_dsm_slot_t *slot)
{
    ngx_uint_t  i;

    for (i = 0; i <= NGX_HTTP_DSM_MAX_ENDPOINTS; i++) {
        slot->in_flight[i] = 0;
    }
}


/* a zone by name; a name not yet declared makes a forward reference */

ngx_http_dsm_zone_t *
ngx_http_dsm_zone_lookup(ngx_conf_t *cf, ngx_str_t *name, char *directive)
{
    ngx_uint_t                 i;
    ngx_http_dsm_zone_t       *zone, **zones, **zp;
    ngx_http_dsm_main_conf_t  *dmcf;

    dmcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_deepseek_metrics_module);

    zones = dmcf->zones.elts;
    for (i = 0; i < dmcf->zones.nelts; i++) {
        if (zones[i]->name.len == name->len
            && ngx_strncmp(zones[i]->name.data, name->data, name->len) == 0)
        {
            return zones[i];
        }
    }

    /* a forward reference: checked in postconfiguration */

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_dsm_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    zone->name = *name;
    zone->directive = directive;
    zone->file = cf->conf_file->file.name;
    zone->line = cf->conf_file->line;

    zp = ngx_array_push(&dmcf->zones);
    if (zp == NULL) {
        return NULL;
    }

    *zp = zone;

    return zone;
}
