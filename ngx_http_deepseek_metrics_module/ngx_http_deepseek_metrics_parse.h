
/*
 * ngx_http_deepseek_metrics_module: request-free resumable scanner of
 * DeepSeek (OpenAI-compatible) and Anthropic-format bodies.
 *
 * The scanner keeps a bounded, fixed-size state (448 bytes on 64-bit, no
 * pointers into the input, no allocations, no copy of the body: only the
 * model name, digits and keys split across buffers, at most 32 bytes, are
 * kept) and may be fed the body split at any byte.  It uses nginx types
 * and macros only, no nginx functions, so it links alone (unit driver,
 * fuzzer).
 *
 * Rules for the caller:
 *
 * - Mode: NGX_HTTP_DSM_PARSE_SSE if the response Content-Type is
 *   text/event-stream, else _JSON; OR in NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC
 *   for the Anthropic Messages endpoint (.../messages).  A request body:
 *   NGX_HTTP_DSM_PARSE_REQUEST (JSON; NGX_DONE once the top-level "model"
 *   string is read, then model/model_len hold it).  Call init() once per
 *   body; the struct may live in the request ctx (ngx_pcalloc()ed or not).
 * - Call parse() with each in-memory buffer of the body in order (a body
 *   filter: cl->buf->pos .. cl->buf->last, before anything consumes them).
 *   After each call, flags that went from 0 to 1 happened in this call:
 *   timestamp them then.  first_data flips on the '{' (or '[' of [DONE])
 *   that starts the first SSE data event (Anthropic "ping" events do not
 *   count) or on the first non-blank byte of a JSON body; first_token on
 *   the first byte of the first non-empty content / reasoning_content /
 *   text / thinking / partial_json string, or the first element of a
 *   non-empty tool_calls array, or an Anthropic "type":"tool_use" block;
 *   first_answer likewise without reasoning_content / thinking.
 * - NGX_DONE: the body is complete ([DONE], message_stop, or the JSON
 *   document closed); NGX_ERROR: invalid JSON body; either way further
 *   calls return at once and cost nothing, and all results stay
 *   readable.  Usage and
 *   model read before an error stay valid (usage_seen tells whether any
 *   usage was read).
 * - At the end of the body (last_buf, or upstream EOF/abort) call
 *   ngx_http_dsm_parse_outcome() for the in-band failure
 *   reason; only meaningful for a 200 response.
 * - Token counts: use the *_tokens fields (already derived: for OpenAI
 *   hit = prompt_cache_hit_tokens, else prompt_tokens_details.cached_tokens,
 *   else 0; miss = prompt_cache_miss_tokens, else prompt - hit; for
 *   Anthropic hit = cache_read_input_tokens, miss = input_tokens +
 *   cache_creation_input_tokens, prompt = hit + miss, completion =
 *   output_tokens); they are the last non-null "usage" (OpenAI), or the
 *   fields merged over message_start and message_delta (Anthropic).
 *   usage_seen == 0 means no usage at all (deepseek_usage_missing_total).
 *   A usage value that is not an integer in [0, 2^53) (or not a number
 *   nor null) sets usage_invalid: from then on usage_fields is 0 and the
 *   token fields are 0 for the rest of the body.
 * - An "error" member (top level) sets error; error_class comes from the
 *   first known "type" or "code" string of the error object.
 * - SSE: an invalid event is skipped up to the next blank line (bad_events
 *   counts them; NGX_ERROR is never returned).  A body whose first line
 *   starts with '{' is read as JSON (mode loses NGX_HTTP_DSM_PARSE_MODE_SSE).
 * - model holds the raw JSON string bytes (escapes not decoded), truncated
 *   to 63 bytes: validate it against the allowlist before using it as a
 *   label value.
 * - Line endings: LF and CRLF; a bare CR only after a complete data
 *   document and while skipping an invalid event.  String
 *   contents are not validated: a raw line break inside a JSON string
 *   (invalid JSON) is not taken as an SSE line end.
 */


#ifndef _NGX_HTTP_DEEPSEEK_METRICS_PARSE_H_INCLUDED_
#define _NGX_HTTP_DEEPSEEK_METRICS_PARSE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* modes: bit 0 = SSE framing, bit 1 = Anthropic Messages format */
#define NGX_HTTP_DSM_PARSE_JSON                 0
#define NGX_HTTP_DSM_PARSE_SSE                  1
#define NGX_HTTP_DSM_PARSE_ANTHROPIC_JSON       2
#define NGX_HTTP_DSM_PARSE_ANTHROPIC_SSE        3
/* a request body: JSON, stops (NGX_DONE) once the top-level "model" is read */
#define NGX_HTTP_DSM_PARSE_REQUEST              4

#define NGX_HTTP_DSM_PARSE_MODE_SSE             1
#define NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC       2
#define NGX_HTTP_DSM_PARSE_MODE_REQUEST         4

/* finish_reason (OpenAI) or mapped stop_reason (Anthropic) */
#define NGX_HTTP_DSM_FINISH_NONE                0
#define NGX_HTTP_DSM_FINISH_STOP                1
#define NGX_HTTP_DSM_FINISH_LENGTH              2
#define NGX_HTTP_DSM_FINISH_TOOL_CALLS          3
#define NGX_HTTP_DSM_FINISH_CONTENT_FILTER      4
#define NGX_HTTP_DSM_FINISH_INSUFFICIENT        5
#define NGX_HTTP_DSM_FINISH_OTHER               6

/* usage_fields bits: raw fields present in the last non-null usage */
#define NGX_HTTP_DSM_USAGE_PROMPT               0x0001
#define NGX_HTTP_DSM_USAGE_COMPLETION           0x0002
#define NGX_HTTP_DSM_USAGE_TOTAL                0x0004
#define NGX_HTTP_DSM_USAGE_HIT                  0x0008
#define NGX_HTTP_DSM_USAGE_MISS                 0x0010
#define NGX_HTTP_DSM_USAGE_REASONING            0x0020
#define NGX_HTTP_DSM_USAGE_CACHED               0x0040
/* Anthropic */
#define NGX_HTTP_DSM_USAGE_INPUT                0x0080
#define NGX_HTTP_DSM_USAGE_OUTPUT               0x0100
#define NGX_HTTP_DSM_USAGE_CACHE_READ           0x0200
#define NGX_HTTP_DSM_USAGE_CACHE_CREATION       0x0400

#define NGX_HTTP_DSM_USAGE_NFIELDS              11

/*
 * ngx_http_dsm_parse_outcome(), checked in this order:
 * error_body (a top-level "error" member, e.g. an in-band error event);
 * invalid_json; content_filter and insufficient_system_resource (last
 * finish_reason / stop_reason, even if the stream then broke off); not
 * done: truncated (after at least one data event / a started JSON
 * document), invalid_json (only invalid events), queue_timeout (nothing
 * but comments, pings or blank lines) or truncated (no byte at all);
 * done: empty_response (no content, reasoning_content or tool_calls at
 * all; invalid_json if an event was skipped as invalid); complete.
 */
#define NGX_HTTP_DSM_OUTCOME_COMPLETE           0
#define NGX_HTTP_DSM_OUTCOME_TRUNCATED          1
#define NGX_HTTP_DSM_OUTCOME_QUEUE_TIMEOUT      2
#define NGX_HTTP_DSM_OUTCOME_CONTENT_FILTER     3
#define NGX_HTTP_DSM_OUTCOME_INSUFFICIENT       4
#define NGX_HTTP_DSM_OUTCOME_EMPTY_RESPONSE     5
#define NGX_HTTP_DSM_OUTCOME_INVALID_JSON       6
/* a top-level "error" member was seen (e.g. {"error":{...}}) */
#define NGX_HTTP_DSM_OUTCOME_ERROR_BODY         7

/* error_class: from the error object's "type" or "code" string */
#define NGX_HTTP_DSM_ERROR_NONE                 0
#define NGX_HTTP_DSM_ERROR_OTHER                1
#define NGX_HTTP_DSM_ERROR_RATE_LIMITED         2
#define NGX_HTTP_DSM_ERROR_OVERLOADED           3
#define NGX_HTTP_DSM_ERROR_SERVER               4

/* usage values at or above 2^53 make the usage invalid */
#define NGX_HTTP_DSM_USAGE_MAX                  ((uint64_t) 1 << 53)

/* container levels whose kind is tracked; deeper levels are "other" */
#define NGX_HTTP_DSM_PARSE_KINDS                16
/* nesting limit: deeper brackets are counted but not matched (too_deep) */
#define NGX_HTTP_DSM_PARSE_MAX_DEPTH            64

#define NGX_HTTP_DSM_PARSE_KEYBUF               32
#define NGX_HTTP_DSM_PARSE_MEMO                 256
#define NGX_HTTP_DSM_PARSE_TAIL                 64
#define NGX_HTTP_DSM_PARSE_STASH                512


typedef struct {
    /* private scanner state: bounded, fixed size, no pointers into input */
    ngx_uint_t   state;        /* SSE framing state */
    ngx_uint_t   jstate;       /* JSON state */
    ngx_uint_t   depth;        /* current JSON nesting depth */
    ngx_uint_t   ck;           /* kind of the current level */
    ngx_uint_t   ca;           /* the current level is an array */
    uint64_t     arrays;       /* bit (d - 1): level d is an array */
    ngx_uint_t   key;          /* action for the pending value */
    ngx_uint_t   idx;          /* literal / pattern match index */
    ngx_uint_t   lit;          /* literal or pattern being matched */
    ngx_uint_t   esc;          /* string: next byte is escaped */
    ngx_uint_t   klen;         /* bytes in kbuf (KEYBUF + 1: overflow) */
    ngx_uint_t   slot;         /* usage slot of the number being read */
    uint64_t     num;
    ngx_uint_t   num_bad;
    ngx_uint_t   umask;        /* usage fields of the usage being read */
    unsigned     in_doc:1;     /* SSE: a JSON doc of this event is open */
    unsigned     doc_done:1;   /* SSE: this event's JSON doc is complete */
    unsigned     ping:1;       /* Anthropic SSE: "event: ping" event */
    unsigned     model_set:1;  /* model complete */

    ngx_uint_t   mode;         /* NGX_HTTP_DSM_PARSE_JSON, _SSE, ... */

    /* results, valid at any time */
    size_t       model_len;
    uint64_t     prompt_tokens, completion_tokens, total_tokens;
    uint64_t     cache_hit_tokens, cache_miss_tokens, reasoning_tokens;
    ngx_uint_t   usage_fields; /* NGX_HTTP_DSM_USAGE_* of the last usage */
    ngx_uint_t   usage_seen;   /* number of non-null usage objects read */
    ngx_uint_t   finish_reason;/* NGX_HTTP_DSM_FINISH_*, last non-null */
    ngx_uint_t   events;       /* SSE: data events started (not comments,
                                  not Anthropic pings); JSON: 1 once the
                                  doc starts */
    unsigned     first_data:1; /* first data event / first non-blank byte */
    unsigned     first_token:1;/* first non-empty content,
                                  reasoning_content or tool_calls */
    unsigned     first_answer:1;/* first non-empty content or tool_calls */
    unsigned     has_content:1;/* any of the above anywhere */
    unsigned     done:1;       /* SSE: [DONE] / message_stop;
                                  JSON: top-level doc closed */
    unsigned     invalid:1;    /* not valid JSON/SSE where required */
    unsigned     too_deep:1;   /* nesting beyond MAX_DEPTH */
    unsigned     error:1;      /* top-level "error" member seen */
    unsigned     usage_invalid:1; /* a usage value was not an integer
                                  in [0, 2^53): no usage at all */
    unsigned     seen:1;       /* any byte of the body */
    ngx_uint_t   error_class;  /* NGX_HTTP_DSM_ERROR_* */
    ngx_uint_t   bad_events;   /* SSE: events skipped as invalid */
    ngx_uint_t   comments;     /* SSE: comment lines (": keep-alive") */

    /* private: the last head and tail the chunk fast path matched */
    size_t       memo_len;
    size_t       tail_len;
    ngx_uint_t   memo_answer;  /* the head ends with "content":" */

    /* private: an event cut by a buffer's end, kept to read it whole */
    size_t       stash_len;
    ngx_uint_t   no_stash;

    /* not zeroed by init(): each is read only where it was written */
    uint64_t     u[NGX_HTTP_DSM_USAGE_NFIELDS];  /* under umask */
    u_char       kind[NGX_HTTP_DSM_PARSE_KINDS]; /* pushed levels */
    u_char       kbuf[NGX_HTTP_DSM_PARSE_KEYBUF + 1];  /* a split key,
                                  klen bytes */
    u_char       model[64];    /* first "model" value, raw JSON string
                                  bytes (escapes not decoded), at most 63,
                                  model_len bytes */

    u_char       memo[NGX_HTTP_DSM_PARSE_MEMO];
    u_char       tail[NGX_HTTP_DSM_PARSE_TAIL];
    u_char       stash[NGX_HTTP_DSM_PARSE_STASH];
} ngx_http_dsm_parse_t;


/*
 * A parser whose mode has no NGX_HTTP_DSM_PARSE_MODE_SSE uses only its
 * first NGX_HTTP_DSM_PARSE_JSON_SIZE bytes: the rest need not exist.
 */
#define NGX_HTTP_DSM_PARSE_JSON_SIZE  offsetof(ngx_http_dsm_parse_t, memo)

void ngx_http_dsm_parse_init(
    ngx_http_dsm_parse_t *p, ngx_uint_t mode);

/*
 * Feeds bytes [pos, last).  Returns NGX_OK normally, NGX_DONE once complete
 * (further calls return NGX_DONE at once), NGX_ERROR once invalid (further
 * calls return NGX_ERROR at once).  Never reads outside [pos, last),
 * never allocates; copies at most the head and tail of a stream chunk and
 * one event cut by the end of a buffer (NGX_HTTP_DSM_PARSE_STASH bytes).
 */
ngx_int_t ngx_http_dsm_parse(
    ngx_http_dsm_parse_t *p, u_char *pos, u_char *last);

/*
 * Reads a stream event kept from the end of the last buffer, if any: call
 * it before reading the results (ngx_http_dsm_parse_outcome() does).  The
 * parse may go on after it.
 */
void ngx_http_dsm_parse_end(ngx_http_dsm_parse_t *p);

/* classifies the body once it has ended: NGX_HTTP_DSM_OUTCOME_* */
ngx_uint_t ngx_http_dsm_parse_outcome(
    ngx_http_dsm_parse_t *p);


/* the key recognisers must be inlined even at nginx's default -O */
#if (defined __GNUC__ || defined __clang__)
#define ngx_http_dsm_inline  __attribute__((always_inline)) ngx_inline
#else
#define ngx_http_dsm_inline  ngx_inline
#endif


/*
 * Compares n bytes with word loads, the last one overlapping.  n is a
 * constant at the call sites that matter: the tests of n then fold away
 * and the first 64 bytes are straight-line code (-O, as nginx builds,
 * does not unroll loops).
 */

static ngx_http_dsm_inline ngx_uint_t
ngx_http_dsm_eq(u_char *a, const char *b, size_t n)
{
    size_t    i;
    uint64_t  x, y;
    uint32_t  x4, y4;

#define dsm_eq8(i)                                                           \
    (ngx_memcpy(&x, a + (i), 8), ngx_memcpy(&y, b + (i), 8), x == y)

    if (n >= 8) {
        if ((n > 8 && !dsm_eq8(0)) || (n > 16 && !dsm_eq8(8))
            || (n > 24 && !dsm_eq8(16)) || (n > 32 && !dsm_eq8(24))
            || (n > 40 && !dsm_eq8(32)) || (n > 48 && !dsm_eq8(40))
            || (n > 56 && !dsm_eq8(48)) || (n > 64 && !dsm_eq8(56)))
        {
            return 0;
        }

        for (i = 64; i + 8 < n; i += 8) {
            if (!dsm_eq8(i)) {
                return 0;
            }
        }

        return dsm_eq8(n - 8);
    }

#undef dsm_eq8

    if (n >= 4) {
        ngx_memcpy(&x4, a, 4);
        ngx_memcpy(&y4, b, 4);

        if (x4 != y4) {
            return 0;
        }

        ngx_memcpy(&x4, a + n - 4, 4);
        ngx_memcpy(&y4, b + n - 4, 4);

        return x4 == y4;
    }

    for (i = 0; i < n; i++) {
        if (a[i] != (u_char) b[i]) {
            return 0;
        }
    }

    return 1;
}


#endif /* _NGX_HTTP_DEEPSEEK_METRICS_PARSE_H_INCLUDED_ */
