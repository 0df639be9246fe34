
/*
 * Benchmark driver for bench/parser-bytes.sh: generates a deterministic
 * body in memory, then parses it in BUFSIZE-byte buffers (as a body
 * filter sees it).  Run under callgrind with
 * --toggle-collect=ngx_http_dsm_parse to count only the
 * parser's instructions (memchr etc. called from it included).
 *
 *   bench sse|json [MBYTES [BUFSIZE]]
 *   bench file PATH [REPS]      (a JSON body, or SSE if PATH ends in .sse,
 *                                from a file, parsed REPS times
 *                                whole, default 1000)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_deepseek_metrics_parse.h"


static unsigned long long  seed = 42;

static unsigned
rnd(unsigned n)
{
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned) ((seed >> 33) % n);
}


/* a token as a tokenizer would emit it, sometimes with JSON escapes */

static size_t
token(char *s)
{
    static const char  *words[] = {
        "the", " model", " token", ",", " and", " of", " a", " is",
        " reasoning", " answer", ".", " we", " need", " to", " check",
        "\\n", "\\n\\n", " \\\"", "\\\"", " caf\\u00e9", " x", "(", ")",
        " function", " value", " stream", " 42", " DeepSeek", " —", " 的"
    };

    return (size_t) sprintf(s, "%s", words[rnd(sizeof(words)
                                                / sizeof(words[0]))]);
}


static size_t
gen_sse(char *b, size_t size)
{
    char        *s, tok[64];
    size_t       n, events;
    const char  *head;

    head = "{\"id\":\"43a3e6a0-1b1f-4d5c-9a1e-3f2b8c7d9e01\","
           "\"object\":\"chat.completion.chunk\",\"created\":1785087280,"
           "\"model\":\"deepseek-flash\","
           "\"system_fingerprint\":\"fp_8b330d02d0_prod0820_fp8_kvcache\","
           "\"choices\":[{\"index\":0,\"delta\":";

    s = b;
    s += sprintf(s, ": keep-alive\n\n: keep-alive\n\n");
    s += sprintf(s, "data: %s{\"role\":\"assistant\",\"content\":null,"
                 "\"reasoning_content\":\"\"},\"logprobs\":null,"
                 "\"finish_reason\":null}],\"usage\":null}\n\n", head);

    events = 0;

    while ((size_t) (s - b) < size - 4096) {
        n = token(tok);
        tok[n] = '\0';

        if ((size_t) (s - b) < size / 3) {
            s += sprintf(s, "data: %s{\"content\":null,"
                         "\"reasoning_content\":\"%s\"},\"logprobs\":null,"
                         "\"finish_reason\":null}],\"usage\":null}\n\n",
                         head, tok);

        } else {
            s += sprintf(s, "data: %s{\"content\":\"%s\"},"
                         "\"logprobs\":null,\"finish_reason\":null}],"
                         "\"usage\":null}\n\n", head, tok);
        }

        events++;
    }

    s += sprintf(s, "data: %s{\"content\":\"\"},\"logprobs\":null,"
                 "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":"
                 "16,\"completion_tokens\":%lu,\"total_tokens\":%lu,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":0},"
                 "\"completion_tokens_details\":{\"reasoning_tokens\":%lu},"
                 "\"prompt_cache_hit_tokens\":0,\"prompt_cache_miss_tokens\":"
                 "16}}\n\ndata: [DONE]\n\n", head, (unsigned long) events,
                 (unsigned long) events + 16, (unsigned long) events / 3);

    return s - b;
}


static size_t
gen_json(char *b, size_t size)
{
    char  *s;

    s = b;
    s += sprintf(s, "\n\n{\"id\":\"2f6c1a7e-8d2b-4c3e-9f10-5b6a7c8d9e0f\","
                 "\"object\":\"chat.completion\",\"created\":1785087280,"
                 "\"model\":\"deepseek-v4-pro\",\"choices\":[{\"index\":0,"
                 "\"message\":{\"role\":\"assistant\",\"content\":\"");

    while ((size_t) (s - b) < size - 4096) {
        s += token(s);
    }

    s += sprintf(s, "\",\"reasoning_content\":\"short\"},\"logprobs\":null,"
                 "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":"
                 "1165,\"completion_tokens\":288,\"total_tokens\":1453,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":512},"
                 "\"completion_tokens_details\":{\"reasoning_tokens\":201},"
                 "\"prompt_cache_hit_tokens\":512,"
                 "\"prompt_cache_miss_tokens\":653},"
                 "\"system_fingerprint\":\"fp_8b330d02d0_prod0820\"}");

    return s - b;
}


static int
bench_file(const char *path, long reps)
{
    char                               *body;
    long                                i;
    size_t                              len;
    FILE                               *f;
    ngx_int_t                           rc;
    ngx_uint_t                          mode;
    ngx_http_dsm_parse_t                p;

    /* a .sse file is a text/event-stream body */

    len = strlen(path);
    mode = (len > 4 && strcmp(path + len - 4, ".sse") == 0)
           ? NGX_HTTP_DSM_PARSE_SSE : NGX_HTTP_DSM_PARSE_JSON;

    f = fopen(path, "rb");
    if (f == NULL) {
        return 1;
    }

    body = malloc(1024 * 1024);
    if (body == NULL) {
        fclose(f);
        return 1;
    }

    len = fread(body, 1, 1024 * 1024, f);
    fclose(f);

    rc = NGX_OK;
    memset(&p, 0, sizeof(p));

    for (i = 0; i < reps; i++) {
        ngx_http_dsm_parse_init(&p, mode);
        rc = ngx_http_dsm_parse(&p, (u_char *) body,
                                             (u_char *) body + len);
    }

    printf("bytes=%lu reps=%ld rc=%ld outcome=%lu completion=%llu "
           "model=%.*s\n", (unsigned long) len, reps, (long) rc,
           (unsigned long) ngx_http_dsm_parse_outcome(&p),
           (unsigned long long) p.completion_tokens,
           (int) p.model_len, p.model);

    return (rc == NGX_DONE) ? 0 : 1;
}


int
main(int argc, char **argv)
{
    char                               *body;
    size_t                              len, size, buf, off, n;
    ngx_int_t                           rc;
    ngx_uint_t                          mode;
    ngx_http_dsm_parse_t                p;

    if (argc < 2) {
        fprintf(stderr, "usage: bench sse|json [MBYTES [BUFSIZE]]\n");
        return 2;
    }

    size = (size_t) (argc > 2 ? atof(argv[2]) : 8) * 1024 * 1024;
    buf = argc > 3 ? (size_t) atol(argv[3]) : 8192;

    body = malloc(size + 8192);
    if (body == NULL) {
        return 1;
    }

    if (strcmp(argv[1], "file") == 0 && argc > 2) {
        return bench_file(argv[2], argc > 3 ? atol(argv[3]) : 1000);
    }

    if (strcmp(argv[1], "sse") == 0) {
        len = gen_sse(body, size);
        mode = NGX_HTTP_DSM_PARSE_SSE;

    } else {
        len = gen_json(body, size);
        mode = NGX_HTTP_DSM_PARSE_JSON;
    }

    ngx_http_dsm_parse_init(&p, mode);

    rc = NGX_OK;

    for (off = 0; off < len; off += n) {
        n = (len - off < buf) ? len - off : buf;
        rc = ngx_http_dsm_parse(&p, (u_char *) body + off,
                                             (u_char *) body + off + n);
    }

    printf("bytes=%lu rc=%ld outcome=%lu events=%lu completion=%llu "
           "model=%.*s\n", (unsigned long) len, (long) rc,
           (unsigned long) ngx_http_dsm_parse_outcome(&p),
           (unsigned long) p.events,
           (unsigned long long) p.completion_tokens,
           (int) p.model_len, p.model);

    return (rc == NGX_DONE) ? 0 : 1;
}
