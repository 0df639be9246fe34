
/*
 * GET /user/balance: a small resumable scanner for DeepSeek's balance body
 * ({"is_available":true,"balance_infos":[{"currency":"CNY",
 * "total_balance":"110.00","granted_balance":"10.00",
 * "topped_up_balance":"100.00"}]}), fed by the body filter, and the log
 * phase that publishes a complete reading into the zone header.
 *
 * The first problem decides a body's fate and stops the scan: bytes that
 * are not JSON make it invalid (counted as usage missing "invalid_json");
 * JSON that is not a balance (wrong types, missing fields, amounts that
 * are not decimals, nesting deeper than 16, more than 64 KB) makes it bad
 * ("invalid_balance").  Only a complete, valid reading is published.
 */


#include "ngx_http_deepseek_metrics.h"


#define NGX_HTTP_DSM_BALANCE_MAX_SIZE   65536
#define NGX_HTTP_DSM_BALANCE_MAX_DEPTH  16
#define NGX_HTTP_DSM_BALANCE_INT_DIGITS 12       /* below 1e12 units */


/* scanner states */
enum {
    ngx_bal_start = 0,          /* before the top-level '{' */
    ngx_bal_obj_first,          /* after '{': a key or '}' */
    ngx_bal_key,                /* after ',' in an object: a key */
    ngx_bal_colon,
    ngx_bal_value,              /* a value */
    ngx_bal_arr_first,          /* after '[': a value or ']' */
    ngx_bal_string,
    ngx_bal_number,
    ngx_bal_literal,
    ngx_bal_after,              /* after a value: ',' or a closing bracket */
    ngx_bal_end                 /* after the document: blanks only */
};


/* what the pending key is */
enum {
    ngx_bal_k_none = 0,
    ngx_bal_k_available,
    ngx_bal_k_infos,
    ngx_bal_k_info,             /* an element of balance_infos */
    ngx_bal_k_currency,
    ngx_bal_k_total,            /* the amounts: NGX_HTTP_DSM_BALANCE_TYPES */
    ngx_bal_k_granted,
    ngx_bal_k_topped_up
};


#define ngx_bal_all_fields                                                   \
    (1 << ngx_bal_k_currency | 1 << ngx_bal_k_total | 1 << ngx_bal_k_granted \
     | 1 << ngx_bal_k_topped_up)


static void ngx_http_dsm_balance_key(ngx_http_dsm_balance_t *b);
static void ngx_http_dsm_balance_scalar(ngx_http_dsm_balance_t *b,
    ngx_uint_t string);
static ngx_int_t ngx_http_dsm_balance_amount(u_char *p, size_t len,
    int64_t *amount);
static void ngx_http_dsm_balance_publish(ngx_http_dsm_balance_sh_t *bs,
    ngx_http_dsm_balance_t *b);


static const char  *ngx_http_dsm_balance_literals[] = {
    "true", "false", "null"
};


ngx_http_dsm_balance_t *
ngx_http_dsm_balance_init(ngx_pool_t *pool)
{
    return ngx_pcalloc(pool, sizeof(ngx_http_dsm_balance_t));
}


/* the byte c opens a value: a container, a string, a number, a literal */

static void
ngx_http_dsm_balance_open(ngx_http_dsm_balance_t *b, u_char c)
{
    ngx_uint_t  key;

    key = b->key;

    switch (c) {

    case '{':
    case '[':
        if (key == ngx_bal_k_infos && c != '[') {
            b->bad = 1;
            return;
        }

        if (key == ngx_bal_k_info && c != '{') {
            b->bad = 1;
            return;
        }

        if (key != ngx_bal_k_none && key != ngx_bal_k_infos
            && key != ngx_bal_k_info)
        {
            b->bad = 1;
            return;
        }

        if (b->depth == NGX_HTTP_DSM_BALANCE_MAX_DEPTH) {
            b->bad = 1;
            return;
        }

        b->depth++;

        if (c == '[') {
            b->arrays |= (uint64_t) 1 << b->depth;
            b->state = ngx_bal_arr_first;

            if (key == ngx_bal_k_infos) {
                b->infos_set = 1;
                b->in_infos = 1;
            }

        } else {
            b->arrays &= ~((uint64_t) 1 << b->depth);
            b->state = ngx_bal_obj_first;

            if (key == ngx_bal_k_info) {
                b->fields = 0;
                b->in_info = 1;
            }
        }

        b->key = ngx_bal_k_none;
        return;

    case '"':
        b->state = ngx_bal_string;
        b->vlen = 0;
        b->esc = 0;
        b->in_key = 0;
        return;

    case 't':
    case 'f':
    case 'n':
        b->state = ngx_bal_literal;
        b->lit = (c == 't') ? 0 : (c == 'f') ? 1 : 2;
        b->vlen = 1;
        return;

    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            b->state = ngx_bal_number;
            b->vbuf[0] = c;
            b->vlen = 1;
            return;
        }

        b->invalid = 1;
    }
}


/* the value ended: back in its container */

static void
ngx_http_dsm_balance_after(ngx_http_dsm_balance_t *b)
{
    b->key = ngx_bal_k_none;
    b->state = (b->depth == 0) ? ngx_bal_end : ngx_bal_after;
}


void
ngx_http_dsm_balance_read(ngx_http_dsm_balance_t *b, u_char *pos,
    u_char *last)
{
    u_char       c;
    ngx_uint_t   over;
    const char  *lit;

    if (b->invalid || b->bad) {
        return;
    }

    /* bytes past the limit are never read, however the body is split */

    over = 0;

    if ((size_t) (last - pos) > NGX_HTTP_DSM_BALANCE_MAX_SIZE - b->size) {
        last = pos + (NGX_HTTP_DSM_BALANCE_MAX_SIZE - b->size);
        over = 1;
    }

    b->size += last - pos;

    for ( /* void */ ; pos < last; pos++) {
        c = *pos;

    again:

        switch (b->state) {

        case ngx_bal_string:
            if (b->esc) {
                b->esc = 0;

            } else if (c == '\\') {
                b->esc = 1;

            } else if (c == '"') {
                if (b->in_key) {
                    ngx_http_dsm_balance_key(b);
                    b->state = ngx_bal_colon;

                } else {
                    ngx_http_dsm_balance_scalar(b, 1);

                    if (b->bad) {
                        return;
                    }

                    ngx_http_dsm_balance_after(b);
                }

                break;

            } else if (c < 0x20) {
                b->invalid = 1;
                return;
            }

            /* kept only while it may still be a key or value we read */

            if (b->vlen < sizeof(b->vbuf)) {
                b->vbuf[b->vlen] = c;
            }

            if (b->vlen <= sizeof(b->vbuf)) {
                b->vlen++;
            }

            break;

        case ngx_bal_number:
            if ((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+'
                || c == 'e' || c == 'E')
            {
                if (b->vlen < sizeof(b->vbuf)) {
                    b->vbuf[b->vlen] = c;
                }

                if (b->vlen <= sizeof(b->vbuf)) {
                    b->vlen++;
                }

                break;
            }

            ngx_http_dsm_balance_scalar(b, 0);
            ngx_http_dsm_balance_after(b);

            if (b->bad) {
                return;
            }

            goto again;                     /* this byte ends the number */

        case ngx_bal_literal:
            lit = ngx_http_dsm_balance_literals[b->lit];

            if ((u_char) lit[b->vlen] != c) {
                b->invalid = 1;
                return;
            }

            if (lit[++b->vlen] == '\0') {
                if (b->key == ngx_bal_k_available && b->lit < 2) {
                    b->available = (b->lit == 0);
                    b->available_set = 1;

                } else if (b->key != ngx_bal_k_none) {
                    b->bad = 1;
                    return;
                }

                ngx_http_dsm_balance_after(b);
            }

            break;

        default:

            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                break;
            }

            switch (b->state) {

            case ngx_bal_start:
                if (c != '{') {
                    b->invalid = 1;
                    return;
                }

                ngx_http_dsm_balance_open(b, c);
                break;

            case ngx_bal_obj_first:
            case ngx_bal_key:
                if (c == '}' && b->state == ngx_bal_obj_first) {
                    goto close;
                }

                if (c != '"') {
                    b->invalid = 1;
                    return;
                }

                b->state = ngx_bal_string;
                b->vlen = 0;
                b->esc = 0;
                b->in_key = 1;
                break;

            case ngx_bal_colon:
                if (c != ':') {
                    b->invalid = 1;
                    return;
                }

                b->state = ngx_bal_value;
                break;

            case ngx_bal_arr_first:
                if (c == ']') {
                    goto close;
                }

                /* fall through */

            case ngx_bal_value:

                /* an array element: in balance_infos, an info */

                if ((b->arrays >> b->depth) & 1) {
                    b->key = (b->in_infos && b->depth == 2)
                             ? ngx_bal_k_info : ngx_bal_k_none;
                }

                ngx_http_dsm_balance_open(b, c);

                if (b->invalid || b->bad) {
                    return;
                }

                break;

            case ngx_bal_after:
                if (c == ',') {
                    if ((b->arrays >> b->depth) & 1) {
                        b->state = ngx_bal_value;

                    } else {
                        b->state = ngx_bal_key;
                    }

                    break;
                }

                if (c == '}' || c == ']') {
                    goto close;
                }

                b->invalid = 1;
                return;

            default: /* ngx_bal_end */
                b->invalid = 1;
                return;
            }

            break;

        close:

            if ((ngx_uint_t) (c == ']')
                != (ngx_uint_t) ((b->arrays >> b->depth) & 1))
            {
                b->invalid = 1;
                return;
            }

            if (b->in_info && b->depth == 3) {
                /* an info closes: every field, or the reading is bad */

                b->in_info = 0;

                if (b->fields != ngx_bal_all_fields) {
                    b->bad = 1;
                    return;
                }

                b->ninfos++;
            }

            if (b->in_infos && b->depth == 2) {
                b->in_infos = 0;
            }

            b->depth--;

            if (b->depth == 0) {
                if (!b->available_set || !b->infos_set) {
                    b->bad = 1;
                    return;
                }

                b->done = 1;
            }

            ngx_http_dsm_balance_after(b);
            break;
        }
    }

    if (over) {
        b->bad = 1;
    }
}


/* a key read: what its value means here */

static void
ngx_http_dsm_balance_key(ngx_http_dsm_balance_t *b)
{
    size_t      len;
    ngx_uint_t  key;

    len = b->vlen;
    key = ngx_bal_k_none;

#define ngx_bal_is(s)                                                        \
    (len == sizeof(s) - 1 && ngx_memcmp(b->vbuf, s, sizeof(s) - 1) == 0)

    if (b->depth == 1) {
        if (ngx_bal_is("is_available")) {
            key = ngx_bal_k_available;

        } else if (ngx_bal_is("balance_infos")) {
            key = ngx_bal_k_infos;
        }

    } else if (b->depth == 3 && b->in_info) {
        if (ngx_bal_is("currency")) {
            key = ngx_bal_k_currency;

        } else if (ngx_bal_is("total_balance")) {
            key = ngx_bal_k_total;

        } else if (ngx_bal_is("granted_balance")) {
            key = ngx_bal_k_granted;

        } else if (ngx_bal_is("topped_up_balance")) {
            key = ngx_bal_k_topped_up;
        }
    }

#undef ngx_bal_is

    b->key = key;
}


/* a string or number value ended: check and keep it if its key matters */

static void
ngx_http_dsm_balance_scalar(ngx_http_dsm_balance_t *b, ngx_uint_t string)
{
    size_t       len;
    int64_t      amount;
    uint64_t     code;
    ngx_uint_t   key, i, slot;

    key = b->key;
    len = b->vlen;

    if (key == ngx_bal_k_none) {
        return;
    }

    if (key == ngx_bal_k_available || key == ngx_bal_k_infos
        || key == ngx_bal_k_info)
    {
        b->bad = 1;
        return;
    }

    slot = b->ninfos;

    if (key == ngx_bal_k_currency) {

        /* a code for a label value: 1-8 of [A-Za-z0-9_-], packed */

        if (!string || len == 0 || len > 8) {
            b->bad = 1;
            return;
        }

        code = 0;

        for (i = 0; i < len; i++) {
            if (!((b->vbuf[i] >= 'A' && b->vbuf[i] <= 'Z')
                  || (b->vbuf[i] >= 'a' && b->vbuf[i] <= 'z')
                  || (b->vbuf[i] >= '0' && b->vbuf[i] <= '9')
                  || b->vbuf[i] == '_' || b->vbuf[i] == '-'))
            {
                b->bad = 1;
                return;
            }

            code |= (uint64_t) b->vbuf[i] << (8 * i);
        }

        if (slot < NGX_HTTP_DSM_BALANCE_SLOTS) {
            b->code[slot] = code;
        }

        b->fields |= 1 << key;
        return;
    }

    /* amounts: decimal strings as DeepSeek sends them, or numbers */

    if (len > sizeof(b->vbuf)
        || ngx_http_dsm_balance_amount(b->vbuf, len, &amount) != NGX_OK)
    {
        b->bad = 1;
        return;
    }

    if (slot < NGX_HTTP_DSM_BALANCE_SLOTS) {
        b->amount[slot][key - ngx_bal_k_total] = amount;
    }

    b->fields |= 1 << key;
}


/*
 * "-12.345678" to 1e-6 units: an optional minus, 1-12 integer digits, an
 * optional fraction; decimals past the sixth are dropped (toward zero).
 */

static ngx_int_t
ngx_http_dsm_balance_amount(u_char *p, size_t len, int64_t *amount)
{
    u_char      *last;
    int64_t      n;
    ngx_uint_t   neg, digits, decimals;

    last = p + len;
    neg = 0;

    if (p < last && *p == '-') {
        neg = 1;
        p++;
    }

    n = 0;
    digits = 0;

    for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
        if (++digits > NGX_HTTP_DSM_BALANCE_INT_DIGITS) {
            return NGX_ERROR;
        }

        n = n * 10 + (*p - '0');
    }

    if (digits == 0) {
        return NGX_ERROR;
    }

    decimals = 0;

    if (p < last && *p == '.') {
        p++;

        if (p == last) {
            return NGX_ERROR;
        }

        for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
            if (decimals < 6) {
                n = n * 10 + (*p - '0');
                decimals++;
            }
        }
    }

    if (p != last) {
        return NGX_ERROR;
    }

    for ( /* void */ ; decimals < 6; decimals++) {
        n *= 10;
    }

    *amount = neg ? -n : n;

    return NGX_OK;
}


/*
 * The log phase of a read balance response: a complete reading goes to the
 * zone header, any other is counted in deepseek_usage_missing_total of the
 * request's series, by the first problem found.
 */

void
ngx_http_dsm_balance_count(ngx_http_request_t *r, ngx_http_dsm_req_t *q,
    ngx_http_dsm_series_t *s)
{
    ngx_uint_t               missing;
    ngx_connection_t        *c;
    ngx_http_dsm_ctx_t      *ctx;
    ngx_http_dsm_balance_t  *b;

    ctx = q->ctx;
    b = ctx->balance;
    c = r->connection;

    if (b->invalid) {
        missing = NGX_HTTP_DSM_MISSING_INVALID_JSON;

    } else if (b->bad) {
        missing = NGX_HTTP_DSM_MISSING_INVALID_BALANCE;

    } else if (!b->done) {
        missing = ((c->timedout || c->error) && !ctx->last_buf)
                  ? NGX_HTTP_DSM_MISSING_CLIENT_ABORT
                  : NGX_HTTP_DSM_MISSING_TRUNCATED;

    } else {
        ngx_http_dsm_balance_publish(&q->zone->sh->balance, b);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "deepseek metrics: balance of %ui currencies, "
                       "available %ui", b->ninfos, (ngx_uint_t) b->available);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "deepseek metrics: balance not read, reason %ui",
                   missing);

    ngx_http_dsm_count(q->zone->sh, s,
                       ngx_http_dsm_tag(NGX_HTTP_DSM_SLOT_MISSING, missing));
}


static void
ngx_http_dsm_balance_publish(ngx_http_dsm_balance_sh_t *bs,
    ngx_http_dsm_balance_t *b)
{
    uint64_t                      code;
    ngx_uint_t                    i, j, t, n;
    ngx_time_t                   *tp;
    ngx_atomic_uint_t             seq, last;
    ngx_http_dsm_balance_slot_t  *slot;

    seq = ngx_atomic_fetch_add(&bs->seq, 1) + 1;

    n = ngx_min(b->ninfos, NGX_HTTP_DSM_BALANCE_SLOTS);

    for (i = 0; i < n; i++) {
        code = b->code[i];
        slot = NULL;

        /* slots are claimed in order and never freed, like series */

        for (j = 0; j < NGX_HTTP_DSM_BALANCE_SLOTS; j++) {
            if (bs->slots[j].code == 0
                && ngx_atomic_cmp_set(&bs->slots[j].code, 0, code))
            {
                slot = &bs->slots[j];
                break;
            }

            if (bs->slots[j].code == code) {
                slot = &bs->slots[j];
                break;
            }
        }

        if (slot == NULL) {
            /* a fifth currency in the zone's life: not shown */
            continue;
        }

        for (t = 0; t < NGX_HTTP_DSM_BALANCE_TYPES; t++) {
            slot->amount[t] = (ngx_atomic_uint_t) b->amount[i][t];
        }

        ngx_memory_barrier();

        slot->seq = seq;
    }

    tp = ngx_timeofday();

    bs->available = b->available;
    bs->updated = (ngx_atomic_uint_t) tp->sec * 1000 + tp->msec;

    ngx_memory_barrier();

    /* the newest reading wins over one that finishes after it */

    for ( ;; ) {
        last = bs->last;

        if (last >= seq || ngx_atomic_cmp_set(&bs->last, last, seq)) {
            break;
        }
    }
}
