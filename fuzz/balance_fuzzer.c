
/*
 * libFuzzer harness for the balance scanner
 * (ngx_http_deepseek_metrics_balance.c): the input is a GET /user/balance
 * body, read whole, byte by byte and split at an input-derived point; the
 * three results must agree (split invariance), and each chunk lives in its
 * own exactly-sized heap buffer, so ASan reports any read outside
 * [pos, last).  The few nginx functions the file calls outside the scanner
 * are stubbed below.
 *
 *   fuzz/balance-build.sh
 *   build/fuzz/balance-fuzzer -max_total_time=60 build/fuzz/balance-corpus
 */


#include "ngx_http_deepseek_metrics.h"

#include <stdlib.h>
#include <string.h>


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* stubs: never reached by the scanner itself */

volatile ngx_time_t  *ngx_cached_time;

void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    return calloc(1, size);
}

void
ngx_http_dsm_count(ngx_http_dsm_sh_t *sh, ngx_http_dsm_series_t *s,
    uint64_t tag)
{
}


static void
feed(ngx_http_dsm_balance_t *b, const uint8_t *data, size_t len)
{
    u_char  *copy;

    copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    ngx_http_dsm_balance_read(b, copy, copy + len);
    free(copy);
}


/* the results, without the scanner's private state */

static int
same(ngx_http_dsm_balance_t *a, ngx_http_dsm_balance_t *b)
{
    ngx_uint_t  n;

    if (a->invalid != b->invalid || a->bad != b->bad) {
        return 0;
    }

    if (a->invalid || a->bad) {
        return 1;
    }

    n = ngx_min(a->ninfos, NGX_HTTP_DSM_BALANCE_SLOTS);

    return a->done == b->done
           && a->available == b->available
           && a->available_set == b->available_set
           && a->ninfos == b->ninfos
           && memcmp(a->code, b->code, n * sizeof(uint64_t)) == 0
           && memcmp(a->amount, b->amount, sizeof(a->amount[0]) * n) == 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                  i, cut;
    ngx_http_dsm_balance_t  whole, bytes, split;

    memset(&whole, 0, sizeof(whole));
    memset(&bytes, 0, sizeof(bytes));
    memset(&split, 0, sizeof(split));

    feed(&whole, data, size);

    for (i = 0; i < size; i++) {
        feed(&bytes, data + i, 1);
    }

    cut = size ? data[0] % size : 0;
    feed(&split, data, cut);
    feed(&split, data + cut, size - cut);

    if (!same(&whole, &bytes) || !same(&whole, &split)) {
        abort();
    }

    /* a complete, valid reading has every field it needs */

    if (whole.done && !whole.invalid && !whole.bad
        && (!whole.available_set || !whole.infos_set))
    {
        abort();
    }

    return 0;
}
