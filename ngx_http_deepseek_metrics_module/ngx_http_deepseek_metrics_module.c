
/*
 * ngx_http_deepseek_metrics_module: directives, configuration and
 * registration of the phase handlers and filters.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_int_t ngx_http_dsm_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_dsm_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_dsm_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dsm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_dsm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dsm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_dsm_init_process(ngx_cycle_t *cycle);
static void ngx_http_dsm_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_dsm_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dsm_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dsm_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dsm_label(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dsm_models(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dsm_parse_buckets(ngx_conf_t *cf, ngx_str_t *value,
    ngx_uint_t *n, uint64_t *bounds);
static char *ngx_http_dsm_parse_hists(ngx_conf_t *cf, ngx_str_t *value,
    size_t skip, ngx_uint_t *mask);
static char *ngx_http_dsm_check_prices(ngx_conf_t *cf,
    ngx_http_dsm_main_conf_t *dmcf);
static ngx_uint_t ngx_http_dsm_model_labelled(ngx_http_dsm_main_conf_t *dmcf,
    ngx_str_t *model);


static ngx_conf_enum_t  ngx_http_dsm_switch[] = {
    { ngx_string("off"), 0 },
    { ngx_string("on"), 1 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_dsm_commands[] = {

    { ngx_string("deepseek_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dsm_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dsm_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_export"),
      NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_dsm_export,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dsm_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_label"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_dsm_label,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_exemplar"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dsm_exemplar,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_request_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dsm_loc_conf_t, request_body),
      NULL },

    { ngx_string("deepseek_metrics_stream_unbuffered"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dsm_loc_conf_t, unbuffered),
      &ngx_http_dsm_switch },

    { ngx_string("deepseek_metrics_models"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dsm_models,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_price"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_dsm_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_peak_hours"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dsm_peak_hours,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("deepseek_metrics_holidays"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_dsm_holidays,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dsm_module_ctx = {
    ngx_http_dsm_preconfiguration,         /* preconfiguration */
    ngx_http_dsm_postconfiguration,        /* postconfiguration */

    ngx_http_dsm_create_main_conf,         /* create main configuration */
    ngx_http_dsm_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dsm_create_loc_conf,          /* create location configuration */
    ngx_http_dsm_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_deepseek_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_dsm_module_ctx,              /* module context */
    ngx_http_dsm_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_dsm_zone_init_module,         /* init module */
    ngx_http_dsm_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dsm_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* every model name in DEEPSEEK-API.md: current, legacy and retired */
static const ngx_str_t  ngx_http_dsm_default_models[] = {
    ngx_string("deepseek-flash"),
    ngx_string("deepseek-v4-pro"),
    ngx_string("deepseek-v4-flash"),
    ngx_string("deepseek-v4-flash-vision-exp"),
    ngx_string("deepseek-chat"),
    ngx_string("deepseek-reasoner"),
    ngx_null_string
};


/* label names the module sets itself */
static const ngx_str_t  ngx_http_dsm_reserved_labels[] = {
    ngx_string("le"),
    ngx_string("quantile"),
    ngx_string("endpoint"),
    ngx_string("model"),
    ngx_string("status"),
    ngx_string("type"),
    ngx_string("currency"),
    ngx_string("reason"),
    ngx_string("zone"),
    ngx_string("state"),
    ngx_string("version"),
    ngx_string("nginx_version"),
    ngx_null_string
};


static const ngx_str_t  ngx_http_dsm_hist_names[] = {
    ngx_string("latency"),
    ngx_string("ttft"),
    ngx_string("answer"),
    ngx_string("queue"),
    ngx_string("tpot"),
    ngx_string("gap"),
    ngx_null_string
};


/* deepseek_metrics_zone parameters, in the order of the enum below */
static const ngx_str_t  ngx_http_dsm_zone_params[] = {
    ngx_string("max_series="),
    ngx_string("buckets="),
    ngx_string("tpot_buckets="),
    ngx_string("histograms="),
    ngx_string("gap_buckets="),
    ngx_string("native="),
    ngx_string("exemplars"),
    ngx_null_string
};

#define NGX_HTTP_DSM_PARAM_TPOT_BUCKETS  2
#define NGX_HTTP_DSM_PARAM_GAP_BUCKETS   4
#define NGX_HTTP_DSM_PARAM_EXEMPLARS     6


static uint64_t  ngx_http_dsm_default_buckets[] = {
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    20000000, 30000000, 60000000, 120000000, 300000000, 600000000
};


static uint64_t  ngx_http_dsm_default_tpot_buckets[] = {
    1000, 2500, 5000, 10000, 20000, 50000, 100000, 250000, 500000, 1000000
};


/* pauses inside a stream: from a slow token to a stall of minutes */

static uint64_t  ngx_http_dsm_default_gap_buckets[] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000,
    60000000, 120000000, 300000000, 600000000
};


static ngx_int_t
ngx_http_dsm_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_dsm_add_variables(cf);
}


static ngx_int_t
ngx_http_dsm_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                  i;
    ngx_http_handler_pt        *h;
    ngx_http_dsm_zone_t       **zones;
    ngx_http_core_main_conf_t  *cmcf;
    ngx_http_dsm_main_conf_t   *dmcf;

    dmcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_deepseek_metrics_module);

    zones = dmcf->zones.elts;
    for (i = 0; i < dmcf->zones.nelts; i++) {
        /* per-worker memory of the series without user labels */

        zones[i]->cache_models = dmcf->models->nelts + 2;
        zones[i]->cache = ngx_pcalloc(cf->pool,
                                      NGX_HTTP_DSM_MAX_ENDPOINTS
                                      * zones[i]->cache_models
                                      * sizeof(ngx_http_dsm_series_t *));
        if (zones[i]->cache == NULL) {
            return NGX_ERROR;
        }

        if (zones[i]->shm_zone == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"%s\" directive: unknown zone \"%V\", "
                          "declare it with \"deepseek_metrics_zone\" "
                          "in %V:%ui", zones[i]->directive, &zones[i]->name,
                          &zones[i]->file, zones[i]->line);
            return NGX_ERROR;
        }
    }

    if (dmcf->zones.nelts == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dsm_preaccess_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dsm_log_handler;

    return ngx_http_dsm_filter_init(cf);
}


static void *
ngx_http_dsm_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dsm_main_conf_t  *dmcf;

    dmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dsm_main_conf_t));
    if (dmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     dmcf->models = NULL;
     *     dmcf->prices = NULL;
     *     dmcf->model_prices = NULL;
     *     dmcf->schedule = { 0 };
     */

    if (ngx_array_init(&dmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_dsm_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return dmcf;
}


static char *
ngx_http_dsm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_dsm_main_conf_t *dmcf = conf;

    ngx_str_t        *s;
    ngx_uint_t        i;
    const ngx_str_t  *m;

    if (dmcf->models == NULL) {
        dmcf->models = ngx_array_create(cf->pool, 8, sizeof(ngx_str_t));
        if (dmcf->models == NULL) {
            return NGX_CONF_ERROR;
        }

        for (m = ngx_http_dsm_default_models; m->len; m++) {
            s = ngx_array_push(dmcf->models);
            if (s == NULL) {
                return NGX_CONF_ERROR;
            }

            *s = *m;
        }
    }

    /* the hot path combines these instead of hashing label values */

    dmcf->model_hashes = ngx_palloc(cf->pool,
                                    dmcf->models->nelts * sizeof(uint32_t));
    if (dmcf->model_hashes == NULL) {
        return NGX_CONF_ERROR;
    }

    dmcf->models_plain = 1;

    s = dmcf->models->elts;
    for (i = 0; i < dmcf->models->nelts; i++) {
        dmcf->model_hashes[i] = ngx_murmur_hash2(s[i].data, s[i].len);

        if (ngx_strlchr(s[i].data, s[i].data + s[i].len, '\\')) {
            dmcf->models_plain = 0;
        }
    }

    ngx_http_dsm_request_init(dmcf);

    if (ngx_http_dsm_check_prices(cf, dmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_dsm_price_index(cf, dmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* settings that would silently do nothing */

static char *
ngx_http_dsm_check_prices(ngx_conf_t *cf, ngx_http_dsm_main_conf_t *dmcf)
{
    ngx_uint_t             i, j, offpeak;
    ngx_http_dsm_price_t  *price;

    if (dmcf->schedule.holidays && !dmcf->schedule.set) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"deepseek_metrics_holidays\" has no effect without "
                      "\"deepseek_metrics_peak_hours\": every request is "
                      "priced at the peak prices");
        return NGX_CONF_ERROR;
    }

    if (dmcf->prices == NULL) {
        return NGX_CONF_OK;
    }

    offpeak = 0;
    price = dmcf->prices->elts;

    for (i = 0; i < dmcf->prices->nelts; i++) {

        if (!ngx_http_dsm_model_labelled(dmcf, &price[i].model)) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"deepseek_metrics_price\" for model \"%V\" "
                          "never applies: the model allowlist turns it into "
                          "\"other\"; add it to \"deepseek_metrics_models\" "
                          "or price \"other\"", &price[i].model);
            return NGX_CONF_ERROR;
        }

        for (j = 0; j < 3; j++) {
            if (price[i].offpeak[j] != price[i].peak[j]) {
                offpeak = 1;
            }
        }
    }

    if (offpeak && !dmcf->schedule.set) {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "\"deepseek_metrics_price\" off-peak prices have no "
                      "effect without \"deepseek_metrics_peak_hours\": "
                      "every request is priced at the peak prices");
    }

    return NGX_CONF_OK;
}


/* prices match the model label: an allowlisted name, "other" or "unknown" */

static ngx_uint_t
ngx_http_dsm_model_labelled(ngx_http_dsm_main_conf_t *dmcf, ngx_str_t *model)
{
    ngx_str_t   *m;
    ngx_uint_t   i;

    if ((model->len == 5 && ngx_strncmp(model->data, "other", 5) == 0)
        || (model->len == 7 && ngx_strncmp(model->data, "unknown", 7) == 0))
    {
        return 1;
    }

    m = dmcf->models->elts;

    for (i = 0; i < dmcf->models->nelts; i++) {
        if (m[i].len == model->len
            && ngx_strncmp(m[i].data, model->data, model->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static void *
ngx_http_dsm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dsm_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dsm_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->labels_id = 0;
     *     conf->export_zones = NULL;
     */

    conf->zone = NGX_CONF_UNSET_PTR;
    conf->endpoint = NGX_CONF_UNSET_PTR;
    conf->labels = NGX_CONF_UNSET_PTR;
    conf->exemplar = NGX_CONF_UNSET_PTR;
    conf->export = NGX_CONF_UNSET;
    conf->request_body = NGX_CONF_UNSET;
    conf->unbuffered = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_dsm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dsm_loc_conf_t *prev = parent;
    ngx_http_dsm_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->zone, prev->zone, NULL);
    ngx_conf_merge_ptr_value(conf->endpoint, prev->endpoint, NULL);
    ngx_conf_merge_value(conf->request_body, prev->request_body, 1);
    ngx_conf_merge_uint_value(conf->unbuffered, prev->unbuffered, 1);
    ngx_conf_merge_value(conf->export, prev->export, 0);

    if (conf->labels == NGX_CONF_UNSET_PTR) {
        conf->labels = prev->labels;
        conf->labels_id = prev->labels_id;
    }

    if (conf->labels == NGX_CONF_UNSET_PTR) {
        conf->labels = NULL;
    }

    /* the scrapes themselves are never counted */

    if (conf->export) {
        conf->zone = NULL;
    }

    return ngx_http_dsm_exemplar_merge(cf, prev, conf);
}


static ngx_int_t
ngx_http_dsm_init_process(ngx_cycle_t *cycle)
{
    return ngx_http_dsm_zone_init_process(cycle);
}


static void
ngx_http_dsm_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_dsm_zone_exit_process(cycle);
}


static char *
ngx_http_dsm_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char                 *p;
    size_t                  size;
    ngx_str_t              *value, name, s;
    ngx_int_t               n;
    ngx_uint_t              i, h, max_series, hist, native, seen, param;
    ngx_http_dsm_zone_t    *zone;
    ngx_http_dsm_layout_t   layout;

    value = cf->args->elts;

    ngx_memzero(&layout, sizeof(ngx_http_dsm_layout_t));

    p = (u_char *) ngx_strchr(value[1].data, ':');
    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected NAME:SIZE",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    n = ngx_parse_size(&s);
    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    size = n;

    if (size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: at least %uzk",
                           &value[1], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    max_series = 0;
    hist = (1 << NGX_HTTP_DSM_NHIST) - 1;

    /* native histograms cost 1288 bytes each a label set: asked for only */
    native = 0;

    ngx_memcpy(layout.bounds[NGX_HTTP_DSM_H_LATENCY],
               ngx_http_dsm_default_buckets,
               sizeof(ngx_http_dsm_default_buckets));
    layout.nbuckets[NGX_HTTP_DSM_H_LATENCY] =
                                    sizeof(ngx_http_dsm_default_buckets) / 8;

    ngx_memcpy(layout.bounds[NGX_HTTP_DSM_H_TPOT],
               ngx_http_dsm_default_tpot_buckets,
               sizeof(ngx_http_dsm_default_tpot_buckets));
    layout.nbuckets[NGX_HTTP_DSM_H_TPOT] =
                               sizeof(ngx_http_dsm_default_tpot_buckets) / 8;

    ngx_memcpy(layout.bounds[NGX_HTTP_DSM_H_GAP],
               ngx_http_dsm_default_gap_buckets,
               sizeof(ngx_http_dsm_default_gap_buckets));
    layout.nbuckets[NGX_HTTP_DSM_H_GAP] =
                                sizeof(ngx_http_dsm_default_gap_buckets) / 8;

    seen = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        /* a parameter given twice would silently replace the first */

        for (param = 0; ngx_http_dsm_zone_params[param].len; param++) {
            s = ngx_http_dsm_zone_params[param];

            if (ngx_strncmp(value[i].data, s.data, s.len) == 0) {
                break;
            }
        }

        if (ngx_http_dsm_zone_params[param].len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\", expected "
                               "max_series=, buckets=, tpot_buckets=, "
                               "gap_buckets=, histograms=, native= or "
                               "exemplars", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (seen & (1 << param)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        seen |= 1 << param;

        if (ngx_strncmp(value[i].data, "max_series=", 11) == 0) {
            n = ngx_atoi(value[i].data + 11, value[i].len - 11);
            if (n <= 0 || n > 10000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max_series \"%V\", "
                                   "expected 1..10000000", &value[i]);
                return NGX_CONF_ERROR;
            }

            max_series = n;
            continue;
        }

        if (param == NGX_HTTP_DSM_PARAM_EXEMPLARS) {
            if (value[i].len != sizeof("exemplars") - 1) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\", expected "
                                   "\"exemplars\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            /* a request: ngx_http_dsm_series_size() sets the offset */
            layout.exemplar_offset = 1;
            continue;
        }

        h = NGX_HTTP_DSM_NHIST;

        if (ngx_strncmp(value[i].data, "buckets=", 8) == 0) {
            h = NGX_HTTP_DSM_H_LATENCY;

        } else if (ngx_strncmp(value[i].data, "tpot_buckets=", 13) == 0) {
            h = NGX_HTTP_DSM_H_TPOT;

        } else if (ngx_strncmp(value[i].data, "gap_buckets=", 12) == 0) {
            h = NGX_HTTP_DSM_H_GAP;
        }

        if (h != NGX_HTTP_DSM_NHIST) {
            s.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            s.len = value[i].data + value[i].len - s.data;

            if (ngx_http_dsm_parse_buckets(cf, &s, &layout.nbuckets[h],
                                           layout.bounds[h])
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "native=", 7) == 0) {
            if (ngx_http_dsm_parse_hists(cf, &value[i], 7, &native)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        /* histograms=: latency is always kept */

        hist = 1 << NGX_HTTP_DSM_H_LATENCY;

        if (ngx_http_dsm_parse_hists(cf, &value[i], 11, &hist)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if ((seen & (1 << NGX_HTTP_DSM_PARAM_TPOT_BUCKETS))
        && !(hist & (1 << NGX_HTTP_DSM_H_TPOT)))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tpot_buckets=\" has no effect: \"histograms=\" "
                           "omits tpot; add tpot to it or remove "
                           "\"tpot_buckets=\"");
        return NGX_CONF_ERROR;
    }

    if ((seen & (1 << NGX_HTTP_DSM_PARAM_GAP_BUCKETS))
        && !(hist & (1 << NGX_HTTP_DSM_H_GAP)))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"gap_buckets=\" has no effect: \"histograms=\" "
                           "omits gap; add gap to it or remove "
                           "\"gap_buckets=\"");
        return NGX_CONF_ERROR;
    }

    /* ttft, answer and queue share the latency buckets */

    for (i = NGX_HTTP_DSM_H_TTFT; i <= NGX_HTTP_DSM_H_QUEUE; i++) {
        layout.nbuckets[i] = layout.nbuckets[NGX_HTTP_DSM_H_LATENCY];
        ngx_memcpy(layout.bounds[i], layout.bounds[NGX_HTTP_DSM_H_LATENCY],
                   sizeof(layout.bounds[0]));
    }

    for (i = 0; i < NGX_HTTP_DSM_NHIST; i++) {
        if (!(hist & (1 << i))) {
            layout.nbuckets[i] = 0;
            ngx_memzero(layout.bounds[i], sizeof(layout.bounds[0]));
        }
    }

    /* a native histogram shares the classic one's count and sum */

    for (i = 0; i < NGX_HTTP_DSM_NHIST; i++) {
        if (!(native & (1 << i))) {
            continue;
        }

        if (!(hist & (1 << i))) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"native=\" names %V, which \"histograms=\" "
                               "omits; add it to \"histograms=\"",
                               &ngx_http_dsm_hist_names[i]);
            return NGX_CONF_ERROR;
        }

        layout.native[i] = 1;
    }

    zone = ngx_http_dsm_zone_lookup(cf, &name, "deepseek_metrics_zone");
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm_zone) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    return ngx_http_dsm_zone_add(cf, zone, size, &layout, max_series);
}


/* "histograms=ttft,tpot" from skip on: the named histograms into *mask */

static char *
ngx_http_dsm_parse_hists(ngx_conf_t *cf, ngx_str_t *value, size_t skip,
    ngx_uint_t *mask)
{
    u_char      *p, *last;
    ngx_str_t    s;
    ngx_uint_t   j;

    p = value->data + skip;
    last = value->data + value->len;

    for ( ;; ) {
        s.data = p;
        while (p < last && *p != ',') {
            p++;
        }
        s.len = p - s.data;

        if (s.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty item in \"%V\": a stray "
                               "comma, or no histogram named", value);
            return NGX_CONF_ERROR;
        }

        for (j = 0; ngx_http_dsm_hist_names[j].len; j++) {
            if (ngx_http_dsm_hist_names[j].len == s.len
                && ngx_strncmp(ngx_http_dsm_hist_names[j].data,
                               s.data, s.len) == 0)
            {
                break;
            }
        }

        if (ngx_http_dsm_hist_names[j].len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown histogram \"%V\" in \"%V\", "
                               "expected latency, ttft, answer, queue, "
                               "tpot, gap", &s, value);
            return NGX_CONF_ERROR;
        }

        *mask |= 1 << j;

        if (p == last) {
            return NGX_CONF_OK;
        }

        p++;
    }
}


static char *
ngx_http_dsm_parse_buckets(ngx_conf_t *cf, ngx_str_t *value, ngx_uint_t *n,
    uint64_t *bounds)
{
    u_char     *p, *last, *start;
    ngx_int_t   us;

    *n = 0;
    p = value->data;
    last = p + value->len;

    if (p == last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no buckets in \"%V\"", value);
        return NGX_CONF_ERROR;
    }

    for ( ;; ) {
        start = p;
        while (p < last && *p != ',') {
            p++;
        }

        if (p == start) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty bucket in \"%V\": a stray comma",
                               value);
            return NGX_CONF_ERROR;
        }

        us = ngx_atofp(start, p - start, 6);

        if (us <= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid bucket \"%*s\" in \"%V\": expected "
                               "seconds > 0 with at most 6 decimals",
                               p - start, start, value);
            return NGX_CONF_ERROR;
        }

        if (*n == NGX_HTTP_DSM_MAX_BUCKETS) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "too many buckets in \"%V\": at most %d",
                               value, NGX_HTTP_DSM_MAX_BUCKETS);
            return NGX_CONF_ERROR;
        }

        if (*n > 0 && (uint64_t) us <= bounds[*n - 1]) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "buckets in \"%V\" must increase strictly",
                               value);
            return NGX_CONF_ERROR;
        }

        bounds[(*n)++] = us;

        if (p == last) {
            return NGX_CONF_OK;
        }

        p++;
    }
}


static char *
ngx_http_dsm_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_loc_conf_t *dlcf = conf;

    ngx_str_t  *value;

    if (dlcf->zone != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        dlcf->zone = NULL;
        return NGX_CONF_OK;
    }

    dlcf->zone = ngx_http_dsm_zone_lookup(cf, &value[1], "deepseek_metrics");
    if (dlcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_dsm_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_loc_conf_t *dlcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (dlcf->endpoint != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "takes a non-empty value";
    }

    dlcf->endpoint = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (dlcf->endpoint == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = dlcf->endpoint;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_dsm_label(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_loc_conf_t *dlcf = conf;

    u_char                            *p;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    const ngx_str_t                   *r;
    ngx_http_dsm_label_t              *label;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64) {
        goto invalid;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || *p == '_' || (p > value[1].data && *p >= '0' && *p <= '9')))
        {
            goto invalid;
        }
    }

    if (value[1].len >= 2 && value[1].data[0] == '_'
        && value[1].data[1] == '_')
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "label name \"%V\" is reserved: names starting "
                           "with \"__\" belong to Prometheus", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (r = ngx_http_dsm_reserved_labels; r->len; r++) {
        if (r->len == value[1].len
            && ngx_strncmp(r->data, value[1].data, r->len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "label name \"%V\" is reserved", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (dlcf->labels == NGX_CONF_UNSET_PTR) {
        dlcf->labels = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_dsm_label_t));
        if (dlcf->labels == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    label = dlcf->labels->elts;
    for (i = 0; i < dlcf->labels->nelts; i++) {
        if (label[i].name.len == value[1].len
            && ngx_strncmp(label[i].name.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate label \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (dlcf->labels->nelts == NGX_HTTP_DSM_MAX_LABELS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many labels: at most %d",
                           NGX_HTTP_DSM_MAX_LABELS);
        return NGX_CONF_ERROR;
    }

    label = ngx_array_push(dlcf->labels);
    if (label == NULL) {
        return NGX_CONF_ERROR;
    }

    label->name = value[1];

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &label->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* series of another label set never share a key */

    dlcf->labels_id = ngx_murmur_hash2(value[1].data, value[1].len)
                      ^ (dlcf->labels_id * 31 + 1);

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid label name \"%V\": expected "
                       "[a-zA-Z_][a-zA-Z0-9_]*, at most 64 characters",
                       &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_dsm_models(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_main_conf_t *dmcf = conf;

    ngx_str_t   *value, *s;
    ngx_uint_t   i;

    if (dmcf->models) {
        return "is duplicate";
    }

    dmcf->models = ngx_array_create(cf->pool, cf->args->nelts,
                                    sizeof(ngx_str_t));
    if (dmcf->models == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (value[i].len == 0 || value[i].len > 63) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid model name \"%V\": 1 to 63 bytes",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(dmcf->models);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}
