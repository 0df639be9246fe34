
/*
 * libFuzzer harness for ngx_http_deepseek_metrics_parse.c.
 *
 * The first input byte selects the mode, the rest is the body.  The body
 * is parsed whole, byte by byte, and split at points derived from the
 * input; every run must give the same results, and each flag must flip in
 * the call that contains the byte at which it flips byte by byte (see
 * t/parser/dsm_check.h).  Each chunk lives in its own exactly-sized heap
 * buffer, so ASan reports any read outside [pos, last).
 *
 *   t/parser/build.sh fuzz
 *   build/parser/parse-fuzzer -max_total_time=20 fuzz/corpus
 */

#include "dsm_check.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void
fail(const char *what, const char *err)
{
    fprintf(stderr, "split invariance violated (%s): %s\n", what, err);
    abort();
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           err[4096];
    size_t         len, cuts[8], n, i, h;
    ngx_uint_t     mode;
    const u_char  *body;
    dsm_result_t   ref, r;

    if (size == 0) {
        return 0;
    }

    mode = data[0] % 5;
    body = data + 1;
    len = size - 1;

    dsm_run_bytes(mode, body, len, &ref);

    dsm_run(mode, body, len, NULL, 0, &r);
    if (dsm_compare(&ref, &r, err, sizeof(err))) {
        fail("whole", err);
    }

    if (len < 2) {
        return 0;
    }

    /* a hash of the input picks the split points */

    h = 2166136261u;
    for (i = 0; i < size; i++) {
        h = (h ^ data[i]) * 16777619u;
    }

    /* every single split near the start, the middle and the end */

    for (i = 1; i < len && i < 8; i++) {
        dsm_run(mode, body, len, &i, 1, &r);
        if (dsm_compare(&ref, &r, err, sizeof(err))) {
            fail("2-way near start", err);
        }
    }

    cuts[0] = len / 2;
    dsm_run(mode, body, len, cuts, 1, &r);
    if (dsm_compare(&ref, &r, err, sizeof(err))) {
        fail("2-way middle", err);
    }

    cuts[0] = len - 1;
    dsm_run(mode, body, len, cuts, 1, &r);
    if (dsm_compare(&ref, &r, err, sizeof(err))) {
        fail("2-way end", err);
    }

    /* several increasing cut points from the hash */

    n = 0;
    i = 0;

    while (n < 8) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        i += 1 + (h >> 33) % (len / 4 + 1);

        if (i >= len) {
            break;
        }

        cuts[n++] = i;
    }

    dsm_run(mode, body, len, cuts, n, &r);
    if (dsm_compare(&ref, &r, err, sizeof(err))) {
        fail("hashed splits", err);
    }

    return 0;
}
