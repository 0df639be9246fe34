
/*
 * Unit driver for ngx_http_deepseek_metrics_parse.c.
 *
 *   driver DIR        checks every DIR/NAME.body against DIR/NAME.expect
 *                     and runs the built-in cases; prints "PASS name" or
 *                     "FAIL name: why" per check, exits 1 on any failure
 *   driver -g FILE MODE
 *                     prints the dump of FILE parsed whole (to write an
 *                     .expect after checking it by hand)
 *
 * NAME.expect: first line "mode=json|sse|anthropic_json|anthropic_sse|
 * request", then the exact dump (see dsm_check.h).  Every fixture is also
 * parsed byte by byte, in every 2-way split (sampled for big bodies) and
 * in random splits; all must give the same dump and flip each flag in the
 * call containing the same byte.
 */

#include <dirent.h>
#include <errno.h>

#include "dsm_check.h"


static int  failures;
static int  checks;


static void
report(const char *name, const char *err)
{
    checks++;

    if (err == NULL) {
        printf("PASS %s\n", name);
        return;
    }

    failures++;
    printf("FAIL %s: ", name);

    for ( ; *err; err++) {
        putchar(*err);
        if (*err == '\n' && err[1]) {
            fputs("#   ", stdout);
        }
    }

    putchar('\n');
}


static unsigned long long  rnd_state = 0x9e3779b97f4a7c15ULL;

static size_t
rnd(size_t n)
{
    rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return n ? (size_t) ((rnd_state >> 33) % n) : 0;
}


static int
mode_of(const char *s, ngx_uint_t *mode)
{
    static const struct { const char *name; ngx_uint_t mode; } modes[] = {
        { "json", NGX_HTTP_DSM_PARSE_JSON },
        { "sse", NGX_HTTP_DSM_PARSE_SSE },
        { "anthropic_json", NGX_HTTP_DSM_PARSE_ANTHROPIC_JSON },
        { "anthropic_sse", NGX_HTTP_DSM_PARSE_ANTHROPIC_SSE },
        { "request", NGX_HTTP_DSM_PARSE_REQUEST },
    };
    size_t  i;

    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(s, modes[i].name) == 0) {
            *mode = modes[i].mode;
            return 0;
        }
    }

    return -1;
}


static u_char *
read_file(const char *path, size_t *len)
{
    FILE    *f;
    u_char  *buf;
    long     n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc(n + 1);
    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        abort();
    }

    buf[n] = '\0';
    fclose(f);
    *len = n;

    return buf;
}


/* the dump of a whole run plus the bytes where flags flip byte by byte */

static void
full_dump(const dsm_result_t *whole, const dsm_result_t *bytes, char *buf,
    size_t size)
{
    size_t  n;
    int     f;

    n = snprintf(buf, size, "%sflip at byte:", whole->dump);

    for (f = 0; f < DSM_NFLAGS && n < size; f++) {
        n += snprintf(buf + n, size - n, " %s=%ld", dsm_flag_names[f],
                      bytes->from[f]);
    }

    if (n < size - 1) {
        buf[n++] = '\n';
        buf[n] = '\0';
    }
}


/*
 * The split-invariance battery.  expect may be NULL (no expected dump);
 * returns the whole-body result in *whole.
 */

static void
check_body(const char *name, ngx_uint_t mode, const u_char *body, size_t len,
    const char *expect, size_t max_two_way, int nrandom, dsm_result_t *whole)
{
    char           label[256], err[4096], got[2048];
    size_t         i, k, n, step, *cuts;
    dsm_result_t   ref, r;
    int            bad;

    dsm_run(mode, body, len, NULL, 0, whole);
    dsm_run_bytes(mode, body, len, &ref);

    if (expect) {
        snprintf(label, sizeof(label), "%s: expected results", name);
        full_dump(whole, &ref, got, sizeof(got));

        if (strcmp(got, expect) != 0) {
            snprintf(err, sizeof(err), "\n--- expected\n%s--- got\n%s",
                     expect, got);
            report(label, err);

        } else {
            report(label, NULL);
        }
    }

    snprintf(label, sizeof(label), "%s: byte by byte = whole", name);
    report(label, dsm_compare(&ref, whole, err, sizeof(err)) ? err : NULL);

    /* every 2-way split (or an evenly spread sample of them) */

    snprintf(label, sizeof(label), "%s: 2-way splits", name);
    step = (len + 1 > max_two_way) ? (len + 1) / max_two_way + 1 : 1;
    bad = 0;

    for (i = 0; i <= len && !bad; i += step) {
        dsm_run(mode, body, len, &i, 1, &r);

        if (dsm_compare(&ref, &r, err, sizeof(err))) {
            n = strlen(err);
            snprintf(err + n, sizeof(err) - n, "\n(split at %lu)",
                     (unsigned long) i);
            bad = 1;
        }
    }

    report(label, bad ? err : NULL);

    /* random splits: chunk sizes 1..64, and some 1..len */

    snprintf(label, sizeof(label), "%s: %d random splits", name, nrandom);
    cuts = malloc((len + 1) * sizeof(size_t));
    if (cuts == NULL) {
        abort();
    }

    bad = 0;

    for (k = 0; k < (size_t) nrandom && !bad; k++) {
        n = 0;
        i = 0;

        for ( ;; ) {
            i += 1 + rnd((k & 1) ? 64 : (len / 4 + 1));
            if (i >= len) {
                break;
            }
            cuts[n++] = i;
        }

        dsm_run(mode, body, len, cuts, n, &r);

        if (dsm_compare(&ref, &r, err, sizeof(err))) {
            bad = 1;
        }
    }

    free(cuts);
    report(label, bad ? err : NULL);
}


static void
check_fixture(const char *dir, const char *base)
{
    char     path[1024], *exp, *nl;
    u_char  *body;
    size_t   len, elen;
    ngx_uint_t  mode;
    dsm_result_t  whole;

    snprintf(path, sizeof(path), "%s/%s.expect", dir, base);
    exp = (char *) read_file(path, &elen);

    if (exp == NULL) {
        report(base, "no .expect file");
        return;
    }

    nl = strchr(exp, '\n');

    if (strncmp(exp, "mode=", 5) != 0 || nl == NULL) {
        report(base, ".expect must start with mode=");
        return;
    }

    *nl = '\0';

    if (mode_of(exp + 5, &mode) != 0) {
        report(base, "unknown mode in .expect");
        return;
    }

    snprintf(path, sizeof(path), "%s/%s.body", dir, base);
    body = read_file(path, &len);

    if (body == NULL) {
        report(base, "cannot read .body");
        return;
    }

    check_body(base, mode, body, len, nl + 1, 100000, 300, &whole);

    free(body);
    free(exp);
}


static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char * const *) a, *(char * const *) b);
}


static void
check_fixtures(const char *dir)
{
    DIR            *d;
    struct dirent  *de;
    char           *names[1024];
    size_t          n, i, l;

    d = opendir(dir);
    if (d == NULL) {
        report("fixtures directory", strerror(errno));
        return;
    }

    n = 0;

    while ((de = readdir(d)) != NULL && n < 1024) {
        l = strlen(de->d_name);

        if (l > 5 && strcmp(de->d_name + l - 5, ".body") == 0) {
            names[n] = strdup(de->d_name);
            names[n][l - 5] = '\0';
            n++;
        }
    }

    closedir(d);

    if (n < 20) {
        report("fixtures present", "fewer than 20 fixtures");
    }

    qsort(names, n, sizeof(char *), cmp_names);

    for (i = 0; i < n; i++) {
        check_fixture(dir, names[i]);
        free(names[i]);
    }
}


/* built-in cases that need big or generated bodies */

static void
expect_field(const char *name, const dsm_result_t *r, const char *line)
{
    char  label[256], err[2048];

    snprintf(label, sizeof(label), "%s: %.*s", name,
             (int) strcspn(line, "\n"), line);

    if (strstr(r->dump, line) == NULL) {
        snprintf(err, sizeof(err), "not in\n%s", r->dump);
        report(label, err);

    } else {
        report(label, NULL);
    }
}


static void
check_builtin(void)
{
    u_char        *b, *s;
    size_t         n, i, big;
    dsm_result_t   r;
    char           label[64];

    big = 1024 * 1024;
    b = malloc(2 * big + 4096);

    /* 1: a 1 MB content string in a JSON body, with escapes */

    s = b;
    s += sprintf((char *) s, "\n\n{\"id\":\"x\",\"model\":\"deepseek-flash\","
                 "\"choices\":[{\"index\":0,\"message\":{\"role\":"
                 "\"assistant\",\"content\":\"");
    for (i = 0; i < big; i++) {
        switch (i % 1000) {
        case 0: *s++ = '\\'; *s++ = '"'; break;
        case 1: *s++ = '\\'; *s++ = '\\'; break;
        case 2: s += sprintf((char *) s, "\\u00e9"); break;
        default: *s++ = "usage:{ 1,}"[i % 11];
        }
    }
    s += sprintf((char *) s, "\"},\"finish_reason\":\"length\"}],"
                 "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":"
                 "262144,\"total_tokens\":262154,\"prompt_cache_hit_tokens\":"
                 "0,\"prompt_cache_miss_tokens\":10}}");
    n = s - b;

    check_body("big-json", NGX_HTTP_DSM_PARSE_JSON, b, n, NULL, 400, 20, &r);
    expect_field("big-json", &r, "outcome=complete\n");
    expect_field("big-json", &r, "finish_reason=length\n");
    expect_field("big-json", &r, "completion_tokens=262144\n");
    expect_field("big-json", &r, "model=deepseek-flash\n");
    expect_field("big-json", &r, "first_data=1 first_token=1 first_answer=1");

    snprintf(label, sizeof(label), "state is fixed size (%lu bytes)",
             (unsigned long) r.state_size);
    /* the scanner, the chunk head and tail memo, one cut event */
    report(label, r.state_size <= 1536 ? NULL : "state above 1.5 KB");

    /* 2: the same string as one SSE event, then the usage chunk */

    s = b;
    s += sprintf((char *) s, ": keep-alive\r\n\r\ndata: {\"model\":"
                 "\"deepseek-v4-pro\",\"choices\":[{\"index\":0,\"delta\":"
                 "{\"reasoning_content\":\"");
    for (i = 0; i < big / 16; i++) {
        /* 16 bytes: escaped quote, escaped backslash, unicode escape */
        memcpy(s, "ab\\\"c\\\\d\\u00e9 xyz", 16);
        s += 16;
    }
    s += sprintf((char *) s, "z\"},\"finish_reason\":null}],\"usage\":null}"
                 "\r\n\r\ndata: {\"model\":\"x\",\"choices\":[],\"usage\":{"
                 "\"prompt_tokens\":5,\"completion_tokens\":7,"
                 "\"total_tokens\":12}}\r\n\r\ndata: [DONE]\r\n\r\n");
    n = s - b;

    check_body("big-sse", NGX_HTTP_DSM_PARSE_SSE, b, n, NULL, 400, 20, &r);
    expect_field("big-sse", &r, "model=deepseek-v4-pro\n");
    expect_field("big-sse", &r, "first_data=1 first_token=1 first_answer=0");
    expect_field("big-sse", &r, "cache_miss_tokens=5\n");

    /* 3: nesting far beyond the depth limit inside an ignored member */

    s = b;
    s += sprintf((char *) s, "{\"model\":\"m\",\"x\":");
    for (i = 0; i < 5000; i++) {
        *s++ = (i % 3) ? '[' : '{';
        if (i % 3 == 0) {
            s += sprintf((char *) s, "\"k}]\":");
        }
    }
    for (i = 5000; i-- > 0; ) {
        *s++ = (i % 3) ? ']' : '}';
    }
    s += sprintf((char *) s, ",\"usage\":{\"prompt_tokens\":3,"
                 "\"completion_tokens\":4}}");
    n = s - b;

    check_body("deep", NGX_HTTP_DSM_PARSE_JSON, b, n, NULL, 2000, 50, &r);
    expect_field("deep", &r, "too_deep=1");
    expect_field("deep", &r, "rc=done\n");
    expect_field("deep", &r, "total_tokens=7\n");

    /* 4: a request body whose model comes after 1 MB of messages */

    s = b;
    s += sprintf((char *) s, "{\"messages\":[{\"role\":\"user\",\"model\":"
                 "\"no\",\"content\":\"");
    memset(s, 'q', big);
    s += big;
    s += sprintf((char *) s, "\"}],\"stream\":true,\"model\":"
                 "\"deepseek-reasoner\",\"temperature\":0}");
    n = s - b;

    check_body("request", NGX_HTTP_DSM_PARSE_REQUEST, b, n, NULL, 400, 20,
               &r);
    expect_field("request", &r, "model=deepseek-reasoner\n");
    expect_field("request", &r, "rc=done\n");

    free(b);
}


int
main(int argc, char **argv)
{
    u_char        *body;
    size_t         len;
    ngx_uint_t     mode;
    dsm_result_t   r, ref;
    char           got[2048];

    if (argc == 4 && strcmp(argv[1], "-g") == 0) {
        body = read_file(argv[2], &len);
        if (body == NULL || mode_of(argv[3], &mode) != 0) {
            fprintf(stderr, "usage: driver -g FILE MODE\n");
            return 2;
        }

        dsm_run(mode, body, len, NULL, 0, &r);
        dsm_run_bytes(mode, body, len, &ref);
        full_dump(&r, &ref, got, sizeof(got));
        printf("mode=%s\n%s", argv[3], got);
        return 0;
    }

    if (argc != 2) {
        fprintf(stderr, "usage: driver FIXTURE_DIR | -g FILE MODE\n");
        return 2;
    }

    check_fixtures(argv[1]);
    check_builtin();

    printf("%d checks, %d failed\n", checks, failures);

    return failures ? 1 : 0;
}
