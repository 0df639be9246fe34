
/*
 * Prices and the peak/off-peak schedule: configuration and the cost of a
 * request in 1e-12 currency units, computed in integers.
 */


#include "ngx_http_deepseek_metrics.h"


static ngx_int_t ngx_http_dsm_parse_price(ngx_str_t *value, size_t skip,
    uint64_t *price);
static ngx_int_t ngx_http_dsm_days_from_civil(ngx_int_t y, ngx_int_t m,
    ngx_int_t d);
static ngx_int_t ngx_http_dsm_parse_hhmm(u_char *p, size_t len);


static char *ngx_http_dsm_price_names[] = {
    "hit=", "miss=", "output=", "offpeak_hit=", "offpeak_miss=",
    "offpeak_output=", NULL
};


static const ngx_int_t  ngx_http_dsm_month_days[] = {
    31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
};


static char *ngx_http_dsm_day_names[] = {
    "sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL
};


char *
ngx_http_dsm_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_main_conf_t *dmcf = conf;

    size_t                 len;
    uint64_t               v[6];
    ngx_str_t             *value;
    ngx_uint_t             i, j, set;
    ngx_http_dsm_price_t  *price;

    value = cf->args->elts;

    if (dmcf->prices == NULL) {
        dmcf->prices = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_dsm_price_t));
        if (dmcf->prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    price = dmcf->prices->elts;
    for (i = 0; i < dmcf->prices->nelts; i++) {
        if (price[i].model.len == value[1].len
            && ngx_strncmp(price[i].model.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate price for model \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[2].len == 0 || value[2].len > 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid currency \"%V\": 1 to 16 bytes, "
                           "e.g. USD or CNY", &value[2]);
        return NGX_CONF_ERROR;
    }

    set = 0;
    len = 0;

    for (i = 3; i < cf->args->nelts; i++) {
        for (j = 0; ngx_http_dsm_price_names[j]; j++) {
            len = ngx_strlen(ngx_http_dsm_price_names[j]);

            if (value[i].len > len
                && ngx_strncmp(value[i].data, ngx_http_dsm_price_names[j],
                               len) == 0)
            {
                break;
            }
        }

        if (ngx_http_dsm_price_names[j] == NULL
            || ngx_http_dsm_parse_price(&value[i], len, &v[j]) != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid price \"%V\": expected hit=, miss=, "
                               "output= and optionally offpeak_hit=, "
                               "offpeak_miss=, offpeak_output=, each a "
                               "price per 1M tokens with at most 6 "
                               "decimals", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (set & (1 << j)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate price \"%V\" for model \"%V\"",
                               &value[i], &value[1]);
            return NGX_CONF_ERROR;
        }

        set |= 1 << j;
    }

    if ((set & 7) != 7) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "price of \"%V\" needs hit=, miss= and output=",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    price = ngx_array_push(dmcf->prices);
    if (price == NULL) {
        return NGX_CONF_ERROR;
    }

    price->model = value[1];

    /* kept as label text: series store and compare it escaped */

    price->currency.data = ngx_pnalloc(cf->pool,
                                       ngx_http_dsm_escape(NULL, value[2].data,
                                                           value[2].len));
    if (price->currency.data == NULL) {
        return NGX_CONF_ERROR;
    }

    price->currency.len = ngx_http_dsm_escape(price->currency.data,
                                              value[2].data, value[2].len);

    for (j = 0; j < 3; j++) {
        price->peak[j] = v[j];
        price->offpeak[j] = (set & (8 << j)) ? v[j + 3] : v[j];
    }

    return NGX_CONF_OK;
}


/* per 1M tokens with 6 decimals is exactly 1e-12 units per token */

static ngx_int_t
ngx_http_dsm_parse_price(ngx_str_t *value, size_t skip, uint64_t *price)
{
    ngx_int_t  n;

    n = ngx_atofp(value->data + skip, value->len - skip, 6);
    if (n < 0) {
        return NGX_ERROR;
    }

    *price = n;

    return NGX_OK;
}


char *
ngx_http_dsm_peak_hours(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_main_conf_t *dmcf = conf;

    u_char                   *p, *last, *dash;
    ngx_int_t                 from, to, h, m, sign;
    ngx_str_t                *value;
    ngx_uint_t                i, j, d0, d1, seen;
    ngx_http_dsm_schedule_t  *sc;

    sc = &dmcf->schedule;

    if (sc->set) {
        return "is duplicate";
    }

    sc->set = 1;
    sc->days = 0x3e;   /* Monday to Friday */
    value = cf->args->elts;
    seen = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        p = value[i].data;
        last = p + value[i].len;

        if (ngx_strncmp(p, "utc_offset=", 11) == 0) {
            if (seen & 1) {
                goto duplicate;
            }

            seen |= 1;
            p += 11;

            if (last - p != 6 || (*p != '+' && *p != '-') || p[3] != ':') {
                goto invalid;
            }

            sign = (*p == '-') ? -1 : 1;
            h = ngx_atoi(p + 1, 2);
            m = ngx_atoi(p + 4, 2);

            if (h == NGX_ERROR || m == NGX_ERROR || h > 14 || m > 59) {
                goto invalid;
            }

            sc->utc_offset = sign * (h * 3600 + m * 60);
            continue;
        }

        if (ngx_strncmp(p, "days=", 5) == 0) {
            if (seen & 2) {
                goto duplicate;
            }

            seen |= 2;
            p += 5;
            sc->days = 0;

            /* no day at all would make every day off-peak */

            if (p == last) {
                goto invalid;
            }

            while (p < last) {
                for (d0 = 0; ngx_http_dsm_day_names[d0]; d0++) {
                    if (last - p >= 3
                        && ngx_strncasecmp(p,
                                 (u_char *) ngx_http_dsm_day_names[d0], 3)
                           == 0)
                    {
                        break;
                    }
                }

                if (ngx_http_dsm_day_names[d0] == NULL) {
                    goto invalid;
                }

                p += 3;
                d1 = d0;

                if (p < last && *p == '-') {
                    p++;

                    for (d1 = 0; ngx_http_dsm_day_names[d1]; d1++) {
                        if (last - p >= 3
                            && ngx_strncasecmp(p,
                                 (u_char *) ngx_http_dsm_day_names[d1], 3)
                               == 0)
                        {
                            break;
                        }
                    }

                    if (ngx_http_dsm_day_names[d1] == NULL) {
                        goto invalid;
                    }

                    p += 3;
                }

                for (j = d0; ; j = (j + 1) % 7) {
                    sc->days |= 1 << j;
                    if (j == d1) {
                        break;
                    }
                }

                if (p < last) {
                    if (*p != ',' || p + 1 == last) {
                        goto invalid;
                    }

                    p++;
                }
            }

            continue;
        }

        /* HH:MM-HH:MM */

        dash = ngx_strlchr(p, last, '-');
        if (dash == NULL) {
            goto invalid;
        }

        from = ngx_http_dsm_parse_hhmm(p, dash - p);
        to = ngx_http_dsm_parse_hhmm(dash + 1, last - dash - 1);

        if (from == NGX_ERROR || to == NGX_ERROR || from >= to) {
            goto invalid;
        }

        if (sc->nranges == 8) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "too many peak ranges: at most 8");
            return NGX_CONF_ERROR;
        }

        sc->ranges[sc->nranges][0] = from;
        sc->ranges[sc->nranges][1] = to;
        sc->nranges++;
    }

    if (sc->nranges == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no peak ranges given, e.g. 09:00-12:00");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\": expected "
                       "utc_offset=+HH:MM, days=mon-fri or HH:MM-HH:MM "
                       "(end after start, up to 24:00)", &value[i]);
    return NGX_CONF_ERROR;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "duplicate parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_dsm_parse_hhmm(u_char *p, size_t len)
{
    ngx_int_t  h, m;

    if (len != 5 || p[2] != ':') {
        return NGX_ERROR;
    }

    h = ngx_atoi(p, 2);
    m = ngx_atoi(p + 3, 2);

    if (h == NGX_ERROR || m == NGX_ERROR || m > 59 || h > 24
        || (h == 24 && m != 0))
    {
        return NGX_ERROR;
    }

    return h * 3600 + m * 60;
}


char *
ngx_http_dsm_holidays(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dsm_main_conf_t *dmcf = conf;

    u_char      *p;
    ngx_int_t    y, m, d, *day;
    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    if (dmcf->schedule.holidays == NULL) {
        dmcf->schedule.holidays = ngx_array_create(cf->pool, 16,
                                                   sizeof(ngx_int_t));
        if (dmcf->schedule.holidays == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 1; i < cf->args->nelts; i++) {
        p = value[i].data;

        if (value[i].len != 10 || p[4] != '-' || p[7] != '-') {
            goto invalid;
        }

        y = ngx_atoi(p, 4);
        m = ngx_atoi(p + 5, 2);
        d = ngx_atoi(p + 8, 2);

        if (y == NGX_ERROR || m == NGX_ERROR || d == NGX_ERROR
            || y < 1970 || m < 1 || m > 12 || d < 1
            || d > ngx_http_dsm_month_days[m - 1]
            || (m == 2 && d == 29
                && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
        {
            goto invalid;
        }

        day = ngx_array_push(dmcf->schedule.holidays);
        if (day == NULL) {
            return NGX_CONF_ERROR;
        }

        *day = ngx_http_dsm_days_from_civil(y, m, d);
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid holiday \"%V\": expected YYYY-MM-DD",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/* days since 1970-01-01 of a proleptic Gregorian date */

static ngx_int_t
ngx_http_dsm_days_from_civil(ngx_int_t y, ngx_int_t m, ngx_int_t d)
{
    ngx_int_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


/*
 * The price of each model label, by the model index the request carries:
 * the allowlist in its order, then "other", then "unknown".  Looked up
 * once here rather than by name per request.
 */

ngx_int_t
ngx_http_dsm_price_index(ngx_conf_t *cf, ngx_http_dsm_main_conf_t *dmcf)
{
    ngx_str_t              *m, name;
    ngx_uint_t              i, j, n;
    ngx_http_dsm_price_t   *price, **index;

    if (dmcf->prices == NULL) {
        return NGX_OK;
    }

    n = dmcf->models->nelts;

    index = ngx_pcalloc(cf->pool, (n + 2) * sizeof(ngx_http_dsm_price_t *));
    if (index == NULL) {
        return NGX_ERROR;
    }

    m = dmcf->models->elts;
    price = dmcf->prices->elts;

    for (i = 0; i < n + 2; i++) {
        if (i < n) {
            name = m[i];

        } else if (i == n) {
            ngx_str_set(&name, "other");

        } else {
            ngx_str_set(&name, "unknown");
        }

        for (j = 0; j < dmcf->prices->nelts; j++) {
            if (price[j].model.len == name.len
                && ngx_memcmp(price[j].model.data, name.data, name.len) == 0)
            {
                index[i] = &price[j];
                break;
            }
        }
    }

    dmcf->model_prices = index;

    return NGX_OK;
}


uint64_t
ngx_http_dsm_cost(ngx_http_dsm_main_conf_t *dmcf, ngx_http_dsm_price_t *price,
    time_t start, uint64_t hit, uint64_t miss, uint64_t output)
{
    time_t                    local;
    uint64_t                 *rate;
    ngx_int_t                 day, sec, *holiday;
    ngx_uint_t                i, peak;
    ngx_http_dsm_schedule_t  *sc;

    sc = &dmcf->schedule;
    peak = 1;

    if (sc->set) {
        local = start + sc->utc_offset;
        day = (ngx_int_t) (local / 86400);
        sec = (ngx_int_t) (local % 86400);

        /* 1970-01-01 was a Thursday */
        peak = (sc->days & (1 << ((day + 4) % 7))) ? 1 : 0;

        if (peak && sc->holidays) {
            holiday = sc->holidays->elts;

            for (i = 0; i < sc->holidays->nelts; i++) {
                if (holiday[i] == day) {
                    peak = 0;
                    break;
                }
            }
        }

        if (peak) {
            peak = 0;

            for (i = 0; i < sc->nranges; i++) {
                if (sec >= (ngx_int_t) sc->ranges[i][0]
                    && sec < (ngx_int_t) sc->ranges[i][1])
                {
                    peak = 1;
                    break;
                }
            }
        }
    }

    rate = peak ? price->peak : price->offpeak;

    return ngx_http_dsm_cost_sum(hit, miss, output, rate);
}
