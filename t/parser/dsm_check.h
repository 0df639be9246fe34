
/*
 * Split-invariance checking shared by the unit driver (t/parser/driver.c)
 * and the libFuzzer harness (fuzz/parse_fuzzer.c).
 *
 * A body is fed as a sequence of chunks, each copied into its own
 * exactly-sized malloc()ed buffer (so ASan catches any read outside
 * [pos, last)).  The result is a canonical text dump of every result
 * field plus, for each flag (first_data, first_token, first_answer, done,
 * invalid), the chunk in which it flipped from 0 to 1.  Fed byte by byte
 * this gives the exact byte at which each flag flips; any other split must
 * give the same dump and flip each flag in the chunk containing that byte.
 */

#ifndef DSM_CHECK_H
#define DSM_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_deepseek_metrics_parse.h"


#define DSM_NFLAGS  5

static const char *dsm_flag_names[DSM_NFLAGS] = {
    "first_data", "first_token", "first_answer", "done", "invalid"
};


typedef struct {
    char    dump[1024];
    long    from[DSM_NFLAGS];   /* chunk in which the flag flipped: */
    long    to[DSM_NFLAGS];     /* bytes [from, to); -1 if never */
    size_t  state_size;
} dsm_result_t;


static const char *
dsm_outcome_name(ngx_uint_t o)
{
    static const char *names[] = {
        "complete", "truncated", "queue_timeout", "content_filter",
        "insufficient_system_resource", "empty_response", "invalid_json",
        "error_body"
    };

    return o < sizeof(names) / sizeof(names[0]) ? names[o] : "?";
}


static const char *
dsm_error_class_name(ngx_uint_t c)
{
    static const char *names[] = {
        "none", "stream_error", "rate_limited", "overloaded", "server_error"
    };

    return c < sizeof(names) / sizeof(names[0]) ? names[c] : "?";
}


static const char *
dsm_finish_name(ngx_uint_t f)
{
    static const char *names[] = {
        "none", "stop", "length", "tool_calls", "content_filter",
        "insufficient_system_resource", "other"
    };

    return f < sizeof(names) / sizeof(names[0]) ? names[f] : "?";
}


static void
dsm_dump(ngx_http_dsm_parse_t *p, ngx_int_t rc, char *buf,
    size_t size)
{
    char    model[64 * 4 + 1], *m;
    size_t  i;

    m = model;
    for (i = 0; i < p->model_len && i < 63; i++) {
        if (p->model[i] >= 0x20 && p->model[i] < 0x7f
            && p->model[i] != '\\')
        {
            *m++ = (char) p->model[i];

        } else {
            m += sprintf(m, "\\x%02x", p->model[i]);
        }
    }
    *m = '\0';

    snprintf(buf, size,
             "rc=%s\n"
             "outcome=%s\n"
             "model=%s\n"
             "model_len=%lu\n"
             "prompt_tokens=%llu\n"
             "completion_tokens=%llu\n"
             "total_tokens=%llu\n"
             "cache_hit_tokens=%llu\n"
             "cache_miss_tokens=%llu\n"
             "reasoning_tokens=%llu\n"
             "usage_fields=0x%lx\n"
             "usage_seen=%lu\n"
             "finish_reason=%s\n"
             "events=%lu\n"
             "first_data=%u first_token=%u first_answer=%u has_content=%u\n"
             "done=%u invalid=%u too_deep=%u error=%u\n"
             "error_class=%s usage_invalid=%u bad_events=%lu seen=%u\n",
             rc == NGX_OK ? "ok" : rc == NGX_DONE ? "done"
                 : rc == NGX_ERROR ? "error" : "?",
             dsm_outcome_name(ngx_http_dsm_parse_outcome(p)),
             model, (unsigned long) p->model_len,
             (unsigned long long) p->prompt_tokens,
             (unsigned long long) p->completion_tokens,
             (unsigned long long) p->total_tokens,
             (unsigned long long) p->cache_hit_tokens,
             (unsigned long long) p->cache_miss_tokens,
             (unsigned long long) p->reasoning_tokens,
             (unsigned long) p->usage_fields,
             (unsigned long) p->usage_seen,
             dsm_finish_name(p->finish_reason),
             (unsigned long) p->events,
             p->first_data, p->first_token, p->first_answer, p->has_content,
             p->done, p->invalid, p->too_deep, p->error,
             dsm_error_class_name(p->error_class), p->usage_invalid,
             (unsigned long) p->bad_events, p->seen);
}


static unsigned
dsm_flag(ngx_http_dsm_parse_t *p, ngx_int_t rc, int i)
{
    switch (i) {
    case 0: return p->first_data;
    case 1: return p->first_token;
    case 2: return p->first_answer;
    case 3: return rc == NGX_DONE;
    default: return rc == NGX_ERROR;
    }
}


/* feeds body split at cuts[0..ncuts) (strictly increasing, inside) */

static void
dsm_run(ngx_uint_t mode, const u_char *body, size_t len, const size_t *cuts,
    size_t ncuts, dsm_result_t *r)
{
    size_t                              i, start, end;
    u_char                             *chunk;
    unsigned                            was[DSM_NFLAGS];
    ngx_int_t                           rc;
    int                                 f;
    ngx_http_dsm_parse_t                p;

    /* garbage first: init must not depend on previous contents */
    memset(&p, 0xa5, sizeof(p));
    ngx_http_dsm_parse_init(&p, mode);

    for (f = 0; f < DSM_NFLAGS; f++) {
        r->from[f] = -1;
        r->to[f] = -1;
        was[f] = 0;
    }

    rc = NGX_OK;
    start = 0;

    for (i = 0; i <= ncuts; i++) {
        end = (i < ncuts) ? cuts[i] : len;

        if (end == start && i < ncuts) {
            continue;
        }

        chunk = malloc(end - start + 1);
        if (chunk == NULL) {
            abort();
        }

        if (end > start) {
            memcpy(chunk, body + start, end - start);
        }

        rc = ngx_http_dsm_parse(&p, chunk, chunk + (end - start));
        free(chunk);

        for (f = 0; f < DSM_NFLAGS; f++) {
            if (!was[f] && dsm_flag(&p, rc, f)) {
                was[f] = 1;
                r->from[f] = (long) start;
                r->to[f] = (long) end;
            }
        }

        start = end;
    }

    ngx_http_dsm_parse_end(&p);
    dsm_dump(&p, rc, r->dump, sizeof(r->dump));
    r->state_size = sizeof(p);
}


/*
 * Compares a split run against the byte-by-byte reference.  Returns 0 if
 * consistent, else writes a message to err.
 */

static int
dsm_compare(const dsm_result_t *ref, const dsm_result_t *r, char *err,
    size_t size)
{
    int  f;

    if (strcmp(ref->dump, r->dump) != 0) {
        snprintf(err, size, "results differ:\n--- byte by byte\n%s"
                 "--- split\n%s", ref->dump, r->dump);
        return 1;
    }

    for (f = 0; f < DSM_NFLAGS; f++) {
        if (ref->from[f] < 0) {
            if (r->from[f] >= 0) {
                snprintf(err, size, "%s flipped in chunk [%ld,%ld) but "
                         "never byte by byte", dsm_flag_names[f],
                         r->from[f], r->to[f]);
                return 1;
            }
            continue;
        }

        if (!(r->from[f] <= ref->from[f] && ref->from[f] < r->to[f])) {
            snprintf(err, size, "%s flipped at byte %ld byte by byte but in "
                     "chunk [%ld,%ld)", dsm_flag_names[f], ref->from[f],
                     r->from[f], r->to[f]);
            return 1;
        }
    }

    return 0;
}


/* byte-by-byte reference run */

static void
dsm_run_bytes(ngx_uint_t mode, const u_char *body, size_t len,
    dsm_result_t *r)
{
    size_t  *cuts, i;

    cuts = calloc(len + 1, sizeof(size_t));
    if (cuts == NULL) {
        abort();
    }

    for (i = 1; i < len; i++) {
        cuts[i - 1] = i;
    }

    dsm_run(mode, body, len, cuts, len > 0 ? len - 1 : 0, r);
    free(cuts);
}


#endif /* DSM_CHECK_H */
