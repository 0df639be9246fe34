
/*
 * ngx_http_deepseek_metrics_module: resumable response body scanner.
 *
 * Two layers: SSE framing (lines, fields, events) and a JSON scanner that
 * keeps a small stack of "what this level is" and recognises only the
 * members the metrics need.  Strings are skipped with memchr(), keys are
 * recognised by length and bytes once complete (copied into a 32-byte
 * buffer only when split across buffers), values of interest are read
 * in place.  No nginx functions are used: the file links alone.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_http_deepseek_metrics_parse.h"


/* the key recognisers must be inlined even at nginx's default -O */
#if (defined __GNUC__ || defined __clang__)
#define ngx_http_dsm_inline  __attribute__((always_inline)) ngx_inline
#else
#define ngx_http_dsm_inline  ngx_inline
#endif


/* SSE framing states */
enum {
    sw_line = 0,
    sw_field,
    sw_skip_line,
    sw_data_start,
    sw_data_json,
    sw_data_tail,
    sw_done_match,
    sw_event_start,
    sw_event_name,
    sw_data_cr,
    sw_skip_event,
    sw_skip_bol
};


/* JSON states; the string states are kept contiguous */
enum {
    sw_j_doc = 0,
    sw_j_value,
    sw_j_obj_start,
    sw_j_key,
    sw_j_colon,
    sw_j_after,
    sw_j_arr_start,
    sw_j_tools,
    sw_j_num,
    sw_j_skip_num,
    sw_j_lit,
    sw_j_deep,
    sw_j_key_str,
    sw_j_str_skip,
    sw_j_str_first,
    sw_j_str_model,
    sw_j_str_enum,
    sw_j_deep_str,
    sw_j_end
};


/* level kinds */
enum {
    k_other = 0,
    k_top,
    k_choices,
    k_choice,
    k_delta,
    k_usage,
    k_ctd,
    k_ptd,
    k_a_top,
    k_a_message,
    k_a_usage,
    k_a_blocks,
    k_a_block,
    k_error,
    k_last
};


/* value actions ("keys"); usage slots follow key_u */
enum {
    key_none = 0,
    key_doc,
    key_model,
    key_usage,
    key_choices,
    key_error,
    key_choice,
    key_finish,
    key_delta,
    key_content,
    key_reasoning,
    key_tool_calls,
    key_ctd,
    key_ptd,
    key_a_usage,
    key_a_message,
    key_a_content,
    key_a_block,
    key_stop,
    key_a_type,
    key_err_type,
    key_err_code,
    key_u
};

#define key_last  (key_u + NGX_HTTP_DSM_USAGE_NFIELDS)

#define u_prompt          0
#define u_completion      1
#define u_total           2
#define u_hit             3
#define u_miss            4
#define u_reasoning       5
#define u_cached          6
#define u_input           7
#define u_output          8
#define u_cache_read      9
#define u_cache_creation  10


/* the kind of an object opened as the value of an action */
static const u_char  ngx_http_dsm_obj_kind[key_last] = {
    k_other,                            /* key_none */
    k_top,                              /* key_doc, k_a_top if Anthropic */
    k_other,                            /* key_model */
    k_usage,                            /* key_usage */
    k_other,                            /* key_choices */
    k_error,                            /* key_error */
    k_choice,                           /* key_choice */
    k_other,                            /* key_finish */
    k_delta,                            /* key_delta */
    k_other,                            /* key_content */
    k_other,                            /* key_reasoning */
    k_other,                            /* key_tool_calls */
    k_ctd,                              /* key_ctd */
    k_ptd,                              /* key_ptd */
    k_a_usage,                          /* key_a_usage */
    k_a_message,                        /* key_a_message */
    k_other,                            /* key_a_content */
    k_a_block,                          /* key_a_block */
    k_other,                            /* key_stop */
    k_other,                            /* key_a_type */
    k_other,                            /* key_err_type */
    k_other,                            /* key_err_code */
    k_other, k_other, k_other, k_other, k_other, k_other,
    k_other, k_other, k_other, k_other, k_other
};


/* the action for the elements of an array of a kind */
static const u_char  ngx_http_dsm_elem_key[k_last] = {
    key_none, key_none, key_choice, key_none, key_none, key_none, key_none,
    key_none, key_none, key_none, key_none, key_a_block, key_none, key_none
};


static const char  *ngx_http_dsm_lits[] = { "null", "true", "false" };
static const size_t  ngx_http_dsm_lit_len[] = { 4, 4, 5 };


/* the usual end of an OpenAI chunk, from the '}' closing the delta */
#define NGX_HTTP_DSM_TAIL                                                    \
    "},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}"


#define dsm_ws(ch)  ((ch) == ' ' || (ch) == '\n' || (ch) == '\r'             \
                     || (ch) == '\t')

#define dsm_streq(s, l, lit)                                                 \
    ((l) == sizeof(lit) - 1 && ngx_http_dsm_eq(s, lit, sizeof(lit) - 1))


static u_char *ngx_http_dsm_json(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static ngx_int_t ngx_http_dsm_sse(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static u_char *ngx_http_dsm_head(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static u_char *ngx_http_dsm_str_end(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static ngx_http_dsm_inline ngx_uint_t ngx_http_dsm_probe(ngx_uint_t kind,
    u_char *k, u_char *last, size_t *len);
static ngx_uint_t ngx_http_dsm_key(ngx_uint_t kind, u_char *k, size_t len);
static ngx_http_dsm_inline ngx_uint_t ngx_http_dsm_eq(u_char *a,
    const char *b, size_t n);
static void ngx_http_dsm_append(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static void ngx_http_dsm_enum(ngx_http_dsm_parse_t *p);
static void ngx_http_dsm_bad_usage(ngx_http_dsm_parse_t *p);
static void ngx_http_dsm_token(ngx_http_dsm_parse_t *p,
    ngx_uint_t answer);
static void ngx_http_dsm_commit(ngx_http_dsm_parse_t *p);
static uint64_t ngx_http_dsm_add(uint64_t a, uint64_t b);


void
ngx_http_dsm_parse_init(ngx_http_dsm_parse_t *p,
    ngx_uint_t mode)
{
    ngx_memzero(p, sizeof(ngx_http_dsm_parse_t));

    p->mode = mode;
    p->state = sw_line;
    p->jstate = sw_j_doc;
}


ngx_int_t
ngx_http_dsm_parse(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last)
{
    if (p->done) {
        return NGX_DONE;
    }

    if (p->invalid) {
        return NGX_ERROR;
    }

    if (pos >= last) {
        return NGX_OK;
    }

    p->seen = 1;

    if (p->mode & NGX_HTTP_DSM_PARSE_MODE_SSE) {
        return ngx_http_dsm_sse(p, pos, last);
    }

    (void) ngx_http_dsm_json(p, pos, last);

    if (p->invalid) {
        return NGX_ERROR;
    }

    if (p->jstate == sw_j_end) {
        p->done = 1;
        return NGX_DONE;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_dsm_parse_outcome(ngx_http_dsm_parse_t *p)
{
    /* an error object wins: what follows it does not matter */

    if (p->error) {
        return NGX_HTTP_DSM_OUTCOME_ERROR_BODY;
    }

    if (p->invalid) {
        return NGX_HTTP_DSM_OUTCOME_INVALID_JSON;
    }

    if (p->finish_reason == NGX_HTTP_DSM_FINISH_CONTENT_FILTER) {
        return NGX_HTTP_DSM_OUTCOME_CONTENT_FILTER;
    }

    if (p->finish_reason == NGX_HTTP_DSM_FINISH_INSUFFICIENT) {
        return NGX_HTTP_DSM_OUTCOME_INSUFFICIENT;
    }

    if (!p->done) {
        if (p->events) {
            return NGX_HTTP_DSM_OUTCOME_TRUNCATED;
        }

        if (p->bad_events) {
            return NGX_HTTP_DSM_OUTCOME_INVALID_JSON;
        }

        /* keep-alives only; nothing at all is a truncated body */

        return p->seen ? NGX_HTTP_DSM_OUTCOME_QUEUE_TIMEOUT
                       : NGX_HTTP_DSM_OUTCOME_TRUNCATED;
    }

    if (!p->has_content) {
        /* the content may have been in the events skipped as invalid */
        return p->bad_events ? NGX_HTTP_DSM_OUTCOME_INVALID_JSON
                             : NGX_HTTP_DSM_OUTCOME_EMPTY_RESPONSE;
    }

    return NGX_HTTP_DSM_OUTCOME_COMPLETE;
}


static ngx_int_t
ngx_http_dsm_sse(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char      ch, *q;
    const char  *pat;

    for ( ;; ) {

        if (pos >= last) {
            return NGX_OK;
        }

        ch = *pos;

        switch (p->state) {

        case sw_line:

            if (ch == '{' && p->events == 0 && p->bad_events == 0) {
                /* a JSON body sent as text/event-stream: read it as JSON */
                p->mode &= ~NGX_HTTP_DSM_PARSE_MODE_SSE;
                return ngx_http_dsm_parse(p, pos, last);
            }

            if (ch == 'd') {
                if (last - pos >= 7 && ngx_http_dsm_eq(pos, "data: {", 7)
                    && !p->in_doc && !p->doc_done && !p->ping)
                {
                    /* the common case: an event's JSON document starts */

                    pos += 6;
                    p->events++;
                    p->first_data = 1;
                    p->in_doc = 1;
                    p->depth = 0;
                    p->key = key_doc;
                    p->jstate = sw_j_value;
                    p->state = sw_data_json;
                    goto data_json;
                }

                if (last - pos >= 5 && ngx_http_dsm_eq(pos, "data:", 5)) {
                    pos += 5;
                    p->state = sw_data_start;
                    break;
                }

                p->lit = 0;
                p->idx = 1;
                p->state = sw_field;
                pos++;
                break;
            }

            if (ch == '\n') {
                /* blank line: the event ends */

                if (p->in_doc) {
                    /* an unfinished document: skip this event only */
                    p->in_doc = 0;
                    p->bad_events++;
                }

                p->doc_done = 0;
                p->ping = 0;
                pos++;
                break;
            }

            if (ch == '\r') {
                pos++;
                break;
            }

            if (ch == 'e' && (p->mode & NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC)) {
                p->lit = 1;
                p->idx = 1;
                p->state = sw_field;
                pos++;
                break;
            }

            /* a comment or a field we do not need */

            p->state = sw_skip_line;
            break;

        case sw_field:
            pat = p->lit ? "event:" : "data:";

            if (ch == (u_char) pat[p->idx]) {
                pos++;

                if (pat[++p->idx] == '\0') {
                    if (p->lit) {
                        p->klen = 0;
                        p->state = sw_event_start;

                    } else {
                        p->state = sw_data_start;
                    }
                }

                break;
            }

            if (ch == '\n') {
                pos++;
                p->state = sw_line;
                break;
            }

            p->state = sw_skip_line;
            break;

        case sw_skip_line:
            q = memchr(pos, '\n', last - pos);

            if (q == NULL) {
                return NGX_OK;
            }

            pos = q + 1;
            p->state = sw_line;
            break;

        case sw_data_start:

            if (p->ping) {
                p->state = sw_skip_line;
                break;
            }

            if (ch == ' ' || ch == '\t' || ch == '\r') {
                pos++;
                break;
            }

            if (ch == '\n') {
                pos++;
                p->state = sw_line;
                break;
            }

            if (p->in_doc) {
                p->state = sw_data_json;
                break;
            }

            if (p->doc_done) {
                goto bad_event;
            }

            if (ch == '{') {
                p->events++;
                p->first_data = 1;
                p->in_doc = 1;
                p->depth = 0;
                p->key = key_doc;
                p->jstate = sw_j_value;
                p->state = sw_data_json;
                break;
            }

            if (ch == '[') {
                p->events++;
                p->first_data = 1;
                p->idx = 1;
                p->state = sw_done_match;
                pos++;
                break;
            }

            goto bad_event;

        case sw_data_json:
        data_json:
            pos = ngx_http_dsm_json(p, pos, last);

            if (p->invalid) {
                goto bad_event;
            }

            if (p->jstate == sw_j_end) {
                p->in_doc = 0;
                p->doc_done = 1;
                p->state = sw_data_tail;
                break;
            }

            if (pos < last) {
                /* a line break between tokens: the document goes on */
                pos++;
                p->state = sw_line;
            }

            break;

        case sw_data_tail:

            if (ch == ' ' || ch == '\t') {
                pos++;
                break;
            }

            if (ch == '\r') {
                pos++;
                p->state = sw_data_cr;
                break;
            }

            if (ch == '\n') {
                pos++;
                p->state = sw_line;
                break;
            }

            goto bad_event;

        case sw_data_cr:

            /* after a complete document a bare CR ends the line too */

            if (ch == '\n') {
                pos++;
                p->state = sw_line;
                break;
            }

            if (ch == '\r') {
                /* CR CR: a blank line, the event ends */
                pos++;
                p->doc_done = 0;
                p->ping = 0;
            }

            p->state = sw_line;
            break;

        case sw_skip_event:

            /*
             * An invalid event: skipped up to the next blank line; here
             * CR, LF and CRLF all end a line.  idx: the line ended in CR.
             */

            pos++;

            if (ch == '\r' || ch == '\n') {
                p->idx = (ch == '\r');
                p->state = sw_skip_bol;
            }

            break;

        case sw_skip_bol:

            if (ch == '\n' && p->idx) {
                /* the LF of a CRLF */
                pos++;
                p->idx = 0;
                break;
            }

            if (ch == '\r' || ch == '\n') {
                pos++;
                p->doc_done = 0;
                p->ping = 0;
                p->state = sw_line;
                break;
            }

            p->state = sw_skip_event;
            break;

        case sw_done_match:

            if (ch != (u_char) "[DONE]"[p->idx]) {
                goto bad_event;
            }

            if (++p->idx == sizeof("[DONE]") - 1) {
                p->done = 1;
                return NGX_DONE;
            }

            pos++;
            break;

        case sw_event_start:
            if (ch == ' ') {
                pos++;
            }

            p->state = sw_event_name;
            break;

        case sw_event_name:
            pos++;

            if (ch == '\r') {
                break;
            }

            if (ch != '\n') {
                ngx_http_dsm_append(p, pos - 1, pos);
                break;
            }

            p->state = sw_line;

            if (dsm_streq(p->kbuf, p->klen, "message_stop")) {
                p->done = 1;
                return NGX_DONE;
            }

            if (dsm_streq(p->kbuf, p->klen, "ping")) {
                p->ping = 1;
            }

            break;
        }

        continue;

    bad_event:

        /* one bad event does not spoil the stream: resume after it */

        p->invalid = 0;
        p->in_doc = 0;
        p->doc_done = 0;
        p->bad_events++;
        p->state = sw_skip_event;
    }
}


/*
 * Scans JSON in [pos, last).  Returns the position after the byte that
 * closed the top-level value (jstate == sw_j_end), or last, or NULL if
 * the input is invalid.
 *
 * The scanner jumps between labels while bytes are available; its state
 * is saved in p->jstate only when it runs out of input (dsm_need()), and
 * the switch at the top resumes there.  A string whose opening quote is
 * in this buffer takes a fast path (memchr(), then one look at the byte
 * before the quote); strings resumed across buffers or holding escaped
 * quotes take ngx_http_dsm_str_end().
 */

/*
 * SSE: a line break between tokens ends the data line; the SSE layer takes
 * it and resumes the document on the next "data:" line.  (A raw line break
 * inside a string, invalid JSON, is not looked for: string contents are
 * not validated.)
 */

#define dsm_eol(st)                                                          \
    if (ch == '\n' && (p->mode & NGX_HTTP_DSM_PARSE_MODE_SSE)) {             \
        p->jstate = st;                                                      \
        return pos;                                                          \
    }


#define dsm_need(st)                                                         \
    if (pos == last) {                                                       \
        p->jstate = st;                                                      \
        return pos;                                                          \
    }


static u_char *
ngx_http_dsm_json(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char      ch, *q;
    size_t      n;
    uint64_t    v;
    ngx_uint_t  kind, d;

    switch (p->jstate) {
    case sw_j_doc:
        goto doc;
    case sw_j_value:
        goto value;
    case sw_j_obj_start:
        goto obj_start;
    case sw_j_key:
        goto key;
    case sw_j_colon:
        goto colon;
    case sw_j_after:
        goto after;
    case sw_j_arr_start:
        goto arr_start;
    case sw_j_tools:
        goto tools;
    case sw_j_num:
        goto num;
    case sw_j_skip_num:
        goto skip_num;
    case sw_j_lit:
        goto lit;
    case sw_j_deep:
        goto deep;
    case sw_j_key_str:
        goto key_str;
    case sw_j_str_skip:
        goto str_skip;
    case sw_j_str_first:
        goto str_first;
    case sw_j_str_model:
        goto str_model;
    case sw_j_str_enum:
        goto str_enum;
    case sw_j_deep_str:
        goto deep_str;
    default: /* sw_j_end */
        return pos;
    }

doc:

    /* JSON mode: the body may start with blank lines while queued */

    for ( ;; ) {
        dsm_need(sw_j_doc);

        ch = *pos;

        if (!dsm_ws(ch)) {
            break;
        }

        pos++;
    }

    /* a response is an object: a top-level array is not one */

    if (ch != '{') {
        goto invalid;
    }

    p->first_data = 1;
    p->events = 1;
    p->key = key_doc;

value:

    dsm_need(sw_j_value);

    ch = *pos;

    if (p->key >= key_u && (u_char) (ch - '0') > 9 && ch != '-'
        && ch != 'n' && !dsm_ws(ch))
    {
        /* a usage value that is a string, a boolean, an object, ... */
        ngx_http_dsm_bad_usage(p);
    }

    if (ch == '"') {
        pos++;

        switch (p->key) {

        case key_model:
            if (!p->model_set) {
                p->esc = 0;
                goto str_model;
            }

            break;

        case key_content:
        case key_reasoning:
            p->esc = 0;
            goto str_first;

        case key_finish:
        case key_stop:
        case key_a_type:
        case key_err_type:
        case key_err_code:
            p->esc = 0;
            p->klen = 0;
            goto str_enum;

        case key_error:
            p->error = 1;

            if (p->error_class == NGX_HTTP_DSM_ERROR_NONE) {
                p->error_class = NGX_HTTP_DSM_ERROR_OTHER;
            }

            break;
        }

        /* a string nobody needs, its opening quote in this buffer */

        q = memchr(pos, '"', last - pos);

        if (q == NULL || q[-1] == '\\') {
            p->esc = 0;
            goto str_skip;
        }

        pos = q + 1;

        if (last - pos > 1 && pos[0] == ',' && pos[1] == '"' && !p->ca) {
            pos++;
            goto key_open;
        }

        goto after;
    }

    if (ch == '{') {

        if (p->key == key_doc
            && (p->mode & (NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC
                           |NGX_HTTP_DSM_PARSE_MODE_REQUEST)) == 0)
        {
            /* the usual OpenAI head, up to the message or delta object */

            q = ngx_http_dsm_head(p, pos, last);

            if (q != NULL) {
                pos = q;
                goto obj_start;
            }
        }

        pos++;
        d = ++p->depth;

        if (d > NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
            p->too_deep = 1;
            goto deep;
        }

        p->arrays &= ~((uint64_t) 1 << (d - 1));
        kind = ngx_http_dsm_obj_kind[p->key];

        if (p->key == key_doc) {
            if (p->mode & NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC) {
                kind = k_a_top;
            }

        } else if (p->key == key_usage) {
            p->umask = 0;

        } else if (p->key == key_error) {
            p->error = 1;

            if (p->error_class == NGX_HTTP_DSM_ERROR_NONE) {
                p->error_class = NGX_HTTP_DSM_ERROR_OTHER;
            }
        }

        if (d <= NGX_HTTP_DSM_PARSE_KINDS) {
            p->kind[d - 1] = (u_char) kind;

        } else {
            kind = k_other;
        }

        p->ck = kind;
        p->ca = 0;

        goto obj_start;
    }

    if (ch == 'n') {
        if (last - pos >= 4 && ngx_http_dsm_eq(pos, "null", 4)) {
            pos += 4;
            goto after;
        }

        p->lit = 0;
        goto lit_start;
    }

    if ((ch >= '0' && ch <= '9') || ch == '-') {
        p->slot = p->key - key_u;

        if (p->slot < NGX_HTTP_DSM_USAGE_NFIELDS) {
            p->num = 0;
            p->num_bad = 0;
            goto num;
        }

        goto skip_num;
    }

    if (ch == '[') {
        pos++;
        d = ++p->depth;

        if (d > NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
            p->too_deep = 1;
            goto deep;
        }

        p->arrays |= (uint64_t) 1 << (d - 1);

        if (d > NGX_HTTP_DSM_PARSE_KINDS) {
            kind = k_other;

        } else {
            if (p->key == key_choices) {
                kind = k_choices;

            } else if (p->key == key_a_content) {
                kind = k_a_blocks;

            } else {
                kind = k_other;
            }

            p->kind[d - 1] = (u_char) kind;
        }

        p->ck = kind;
        p->ca = 1;

        if (p->key == key_tool_calls) {
            p->key = key_none;
            goto tools;
        }

        p->key = ngx_http_dsm_elem_key[kind];
        goto arr_start;
    }

    if (ch == 't') {
        if (last - pos >= 4 && ngx_http_dsm_eq(pos, "true", 4)) {
            pos += 4;
            goto after;
        }

        p->lit = 1;
        goto lit_start;
    }

    if (ch == 'f') {
        if (last - pos >= 5 && ngx_http_dsm_eq(pos, "false", 5)) {
            pos += 5;
            goto after;
        }

        p->lit = 2;
        goto lit_start;
    }

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_value);
        pos++;
        goto value;
    }

    goto invalid;

lit_start:

    /* a literal split across buffers */

    p->idx = 1;
    pos++;

lit:

    for ( ;; ) {
        dsm_need(sw_j_lit);

        if (*pos != (u_char) ngx_http_dsm_lits[p->lit][p->idx]) {
            goto invalid;
        }

        pos++;

        if (++p->idx == ngx_http_dsm_lit_len[p->lit]) {
            goto after;
        }
    }

skip_num:

    /* a number nobody needs */

    while (last - pos >= 8) {
        ngx_memcpy(&v, pos, 8);

        /* all 8 bytes are '0'..'9' */

        if (((v & 0xf0f0f0f0f0f0f0f0ULL)
             | (((v + 0x0606060606060606ULL) & 0xf0f0f0f0f0f0f0f0ULL) >> 4))
            != 0x3333333333333333ULL)
        {
            break;
        }

        pos += 8;
    }

    while (pos < last && (u_char) (*pos - '0') <= 9) {
        pos++;
    }

    dsm_need(sw_j_skip_num);

    ch = *pos;

    if (ch == '.' || ch == 'e' || ch == 'E' || ch == '-' || ch == '+') {
        pos++;
        goto skip_num;
    }

    goto after;

num:

    v = p->num;

    for ( ;; ) {
        if (pos == last) {
            p->num = v;
            p->jstate = sw_j_num;
            return pos;
        }

        ch = *pos;
        d = (ngx_uint_t) (ch - '0');

        if (d <= 9) {
            /* v < 2^53 here: no overflow */
            v = v * 10 + d;

            if (v >= NGX_HTTP_DSM_USAGE_MAX) {
                p->num_bad = 1;
                v = 0;
            }

        } else if (ch == '.' || ch == 'e' || ch == 'E' || ch == '-'
                   || ch == '+')
        {
            p->num_bad = 1;

        } else {
            break;
        }

        pos++;
    }

    if (p->num_bad) {
        /* negative, fractional, an exponent, or 2^53 or more */
        ngx_http_dsm_bad_usage(p);

    } else {
        p->u[p->slot] = v;
        p->umask |= (ngx_uint_t) 1 << p->slot;
    }

    goto after;

obj_start:

    dsm_need(sw_j_obj_start);

    ch = *pos;

    if (ch == '"') {
        goto key_open;
    }

    if (ch == '}') {
        goto close;
    }

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_obj_start);
        pos++;
        goto obj_start;
    }

    goto invalid;

key:

    dsm_need(sw_j_key);

    ch = *pos;

    if (ch == '"') {
        goto key_open;
    }

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_key);
        pos++;
        goto key;
    }

    goto invalid;

key_open:

    /* pos is at the opening quote of a key */

    pos++;

    p->key = ngx_http_dsm_probe(p->ck, pos, last, &n);

    if (n) {
        q = pos + n;

    } else {
        /* an unknown key */

        q = memchr(pos, '"', last - pos);

        if (q == NULL || q[-1] == '\\') {
            p->esc = 0;
            p->klen = 0;
            goto key_str;
        }
    }

    pos = q + 1;

    if (pos < last && *pos == ':') {
        pos++;

        if (last - pos >= 4 && pos[0] == 'n'
            && ngx_http_dsm_eq(pos, "null", 4))
        {
            /* null never matters */
            pos += 4;
            goto after;
        }

        if (p->key == key_none && pos < last && *pos == '"') {

            /* "unneeded":"string": skip it right here */

            q = memchr(pos + 1, '"', last - pos - 1);

            if (q == NULL || q[-1] == '\\') {
                goto value;
            }

            pos = q + 1;

            if (last - pos > 1 && pos[0] == ',' && pos[1] == '"') {
                pos++;
                goto key_open;
            }

            goto after;
        }

        goto value;
    }

    goto colon;

key_str:

    q = ngx_http_dsm_str_end(p, pos, last);

    if (q == NULL) {
        if (p->ck != k_other) {
            ngx_http_dsm_append(p, pos, last);
        }

        p->jstate = sw_j_key_str;
        return last;
    }

    if (p->ck == k_other) {
        p->key = key_none;

    } else if (p->klen == 0) {
        p->key = ngx_http_dsm_key(p->ck, pos, q - pos);

    } else {
        ngx_http_dsm_append(p, pos, q);

        if (p->klen <= NGX_HTTP_DSM_PARSE_KEYBUF) {
            p->kbuf[p->klen] = '"';
            p->key = ngx_http_dsm_key(p->ck, p->kbuf, p->klen);

        } else {
            p->key = key_none;
        }
    }

    pos = q + 1;

colon:

    dsm_need(sw_j_colon);

    ch = *pos;

    if (ch == ':') {
        pos++;
        goto value;
    }

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_colon);
        pos++;
        goto colon;
    }

    goto invalid;

after:

    dsm_need(sw_j_after);

    ch = *pos;

    if (ch == ',') {
        pos++;

        if (p->ca) {
            p->key = ngx_http_dsm_elem_key[p->ck];
            goto value;
        }

        if (pos < last && *pos == '"') {
            goto key_open;
        }

        goto key;
    }

    if (ch == '}' || ch == ']') {
        goto close;
    }

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_after);
        pos++;
        goto after;
    }

    goto invalid;

tools:

    /* the first byte of a tool_calls array: non-empty? */

    dsm_need(sw_j_tools);

    ch = *pos;

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_tools);
        pos++;
        goto tools;
    }

    if (ch != ']') {
        ngx_http_dsm_token(p, 1);
    }

arr_start:

    dsm_need(sw_j_arr_start);

    ch = *pos;

    if (ch == ']') {
        goto close;
    }

    if (dsm_ws(ch)) {
        dsm_eol(sw_j_arr_start);
        pos++;
        goto arr_start;
    }

    goto value;

str_skip:

    q = ngx_http_dsm_str_end(p, pos, last);

    if (q == NULL) {
        p->jstate = sw_j_str_skip;
        return last;
    }

    pos = q + 1;
    goto after;

str_first:

    /* the first byte of content, reasoning_content, text, ... */

    dsm_need(sw_j_str_first);

    if (*pos == '"') {
        pos++;
        goto after;
    }

    ngx_http_dsm_token(p, p->key == key_content);

    /* *pos is not '"', so q[-1] below is inside [pos, last) */

    q = memchr(pos, '"', last - pos);

    if (q == NULL || q[-1] == '\\') {
        goto str_skip;
    }

    pos = q + 1;
    goto after;

str_model:

    q = ngx_http_dsm_str_end(p, pos, last);

    n = (q ? q : last) - pos;
    if (n > sizeof(p->model) - 1 - p->model_len) {
        n = sizeof(p->model) - 1 - p->model_len;
    }

    ngx_memcpy(p->model + p->model_len, pos, n);
    p->model_len += n;

    if (q == NULL) {
        p->jstate = sw_j_str_model;
        return last;
    }

    p->model_set = 1;
    pos = q + 1;

    if (p->mode & NGX_HTTP_DSM_PARSE_MODE_REQUEST) {
        p->jstate = sw_j_end;
        return pos;
    }

    goto after;

str_enum:

    q = ngx_http_dsm_str_end(p, pos, last);

    ngx_http_dsm_append(p, pos, q ? q : last);

    if (q == NULL) {
        p->jstate = sw_j_str_enum;
        return last;
    }

    ngx_http_dsm_enum(p);
    pos = q + 1;
    goto after;

deep:

    /* beyond the depth limit: count brackets, skip strings */

    for ( ;; ) {
        dsm_need(sw_j_deep);

        ch = *pos;

        dsm_eol(sw_j_deep);

        pos++;

        if (ch == '"') {
            p->esc = 0;
            goto deep_str;
        }

        if (ch == '{' || ch == '[') {
            p->depth++;

        } else if (ch == '}' || ch == ']') {
            if (--p->depth == NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
                goto after;
            }
        }
    }

deep_str:

    q = ngx_http_dsm_str_end(p, pos, last);

    if (q == NULL) {
        p->jstate = sw_j_deep_str;
        return last;
    }

    pos = q + 1;
    goto deep;

close:

    /* ch is '}' or ']' closing the current level */

    if (p->ck == k_delta
        && last - pos >= (ssize_t) sizeof(NGX_HTTP_DSM_TAIL) - 1
        && ngx_http_dsm_eq(pos, NGX_HTTP_DSM_TAIL,
                           sizeof(NGX_HTTP_DSM_TAIL) - 1))
    {
        /*
         * the usual end of a chunk: the delta, choice, choices and the
         * document close, logprobs, finish_reason and usage are null;
         * k_delta is only ever level 4, in a choice in "choices"
         */

        p->depth = 0;
        p->ck = k_top;
        p->ca = 0;
        p->key = key_usage;
        p->jstate = sw_j_end;

        return pos + sizeof(NGX_HTTP_DSM_TAIL) - 1;
    }

    if (p->ca != (ngx_uint_t) (ch == ']')) {
        goto invalid;
    }

    if (p->ck == k_usage || p->ck == k_a_usage) {
        ngx_http_dsm_commit(p);
    }

    pos++;
    d = --p->depth;

    if (d == 0) {
        p->jstate = sw_j_end;
        return pos;
    }

    p->ck = (d <= NGX_HTTP_DSM_PARSE_KINDS) ? p->kind[d - 1] : k_other;
    p->ca = (ngx_uint_t) (p->arrays >> (d - 1)) & 1;

    goto after;

invalid:

    /* pos is at the offending byte: SSE resumes after this event */

    p->invalid = 1;
    return pos;
}


/*
 * The usual head of an OpenAI-format document, all in [pos, last):
 *
 *   {"id":"...","object":"chat.completion[.chunk]","created":DIGITS,
 *   "model":"...",["system_fingerprint":"...",]
 *   "choices":[{"index":0,"delta" or "message":{
 *
 * with no backslash before the closing quotes of the strings.  If it is
 * there, sets the state the general scanner would have after it (levels
 * 1..4: top, choices, choice, delta; the model read) and returns the
 * position after the last '{'; else returns NULL and changes nothing.
 */

static u_char *
ngx_http_dsm_head(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char  *s, *q, *m;
    size_t   n, mlen;

#define dsm_lit(l)                                                           \
    if ((size_t) (last - s) < sizeof(l) - 1                                  \
        || !ngx_http_dsm_eq(s, l, sizeof(l) - 1))                            \
    {                                                                        \
        return NULL;                                                         \
    }                                                                        \
    s += sizeof(l) - 1;

/* s is after an opening quote: q is the closing one, s is set to it */
#define dsm_str()                                                            \
    q = memchr(s, '"', last - s);                                            \
    if (q == NULL || q[-1] == '\\') {                                        \
        return NULL;                                                         \
    }                                                                        \
    s = q;

    s = pos;

    dsm_lit("{\"id\":\"");
    dsm_str();
    dsm_lit("\",\"object\":\"chat.completion");

    if (last - s > 6 && ngx_http_dsm_eq(s, ".chunk", 6)) {
        s += 6;
    }

    dsm_lit("\",\"created\":");

    q = s;

    while (s < last && (u_char) (*s - '0') <= 9) {
        s++;
    }

    if (s == q) {
        return NULL;
    }

    dsm_lit(",\"model\":\"");
    m = s;
    dsm_str();
    mlen = s - m;
    dsm_lit("\",\"");

    if ((size_t) (last - s) > sizeof("system_fingerprint\":\"") - 1
        && ngx_http_dsm_eq(s, "system_fingerprint\":\"",
                           sizeof("system_fingerprint\":\"") - 1))
    {
        s += sizeof("system_fingerprint\":\"") - 1;
        dsm_str();
        dsm_lit("\",\"");
    }

    dsm_lit("choices\":[{\"index\":0,\"");

    if ((size_t) (last - s) >= sizeof("delta\":{") - 1
        && ngx_http_dsm_eq(s, "delta\":{", sizeof("delta\":{") - 1))
    {
        s += sizeof("delta\":{") - 1;

    } else {
        dsm_lit("message\":{");
    }

#undef dsm_lit
#undef dsm_str

    if (!p->model_set) {
        n = sizeof(p->model) - 1 - p->model_len;

        if (mlen < n) {
            n = mlen;
        }

        ngx_memcpy(p->model + p->model_len, m, n);
        p->model_len += n;
        p->model_set = 1;
    }

    p->depth = 4;
    p->arrays = (p->arrays & ~(uint64_t) 0xf) | 2;
    p->kind[0] = k_top;
    p->kind[1] = k_choices;
    p->kind[2] = k_choice;
    p->kind[3] = k_delta;
    p->ck = k_delta;
    p->ca = 0;
    p->key = key_delta;

    return s;
}


/*
 * Finds the closing quote of a string in [pos, last), honouring
 * backslash escapes, with p->esc carrying an escape across buffers.
 */

static u_char *
ngx_http_dsm_str_end(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char      *s, *q, *b;
    ngx_uint_t   esc, n;

    s = pos;
    esc = p->esc;

    for ( ;; ) {
        q = memchr(s, '"', last - s);

        if (q == NULL) {
            q = last;
        }

        if (q == s || q[-1] != '\\') {
            n = (q == s) ? esc : 0;

        } else {
            for (b = q - 1; b > s && b[-1] == '\\'; b--) { /* void */ }

            n = (q - b) + ((b == s) ? esc : 0);
        }

        if (q == last) {
            p->esc = n & 1;
            return NULL;
        }

        if ((n & 1) == 0) {
            p->esc = 0;
            return q;
        }

        /* an escaped quote */

        s = q + 1;
        esc = 0;

        if (s == last) {
            p->esc = 0;
            return NULL;
        }
    }
}


/*
 * Recognises a key at k by its first byte, length and bytes, without
 * scanning for its end: a known name followed by '"' in [k, last).  Known
 * names include the common keys nobody needs (key_none), so that only
 * unknown keys are scanned for.  Returns the action and sets *len to the
 * key length, or to 0 if the key is unknown.  A name holds no '"' or '\',
 * so a match always ends at the real closing quote.
 */

static ngx_http_dsm_inline ngx_uint_t
ngx_http_dsm_probe(ngx_uint_t kind, u_char *k, u_char *last, size_t *len)
{
    size_t  n;

    n = last - k;

#define dsm_p(s, r)                                                          \
    if (n > sizeof(s) - 1 && k[sizeof(s) - 1] == '"'                         \
        && ngx_http_dsm_eq(k, s, sizeof(s) - 1))                             \
    {                                                                        \
        *len = sizeof(s) - 1;                                                \
        return r;                                                            \
    }

/* one jump on the level kind and the low bits of the first byte */
#define dsm_c(kind, c)  (((kind) << 5) | ((c) & 0x1f))

    *len = 0;

    if (n == 0) {
        return key_none;
    }

    switch (dsm_c(kind, k[0])) {

    case dsm_c(k_top, 'i'):
        dsm_p("id", key_none);
        break;
    case dsm_c(k_top, 'o'):
        dsm_p("object", key_none);
        break;
    case dsm_c(k_top, 'c'):
        dsm_p("created", key_none);
        dsm_p("choices", key_choices);
        break;
    case dsm_c(k_top, 'm'):
        dsm_p("model", key_model);
        break;
    case dsm_c(k_top, 's'):
        dsm_p("system_fingerprint", key_none);
        break;
    case dsm_c(k_top, 'u'):
        dsm_p("usage", key_usage);
        break;
    case dsm_c(k_top, 'e'):
        dsm_p("error", key_error);
        break;

    case dsm_c(k_choice, 'i'):
        dsm_p("index", key_none);
        break;
    case dsm_c(k_choice, 'd'):
        dsm_p("delta", key_delta);
        break;
    case dsm_c(k_choice, 'l'):
        dsm_p("logprobs", key_none);
        break;
    case dsm_c(k_choice, 'f'):
        dsm_p("finish_reason", key_finish);
        break;
    case dsm_c(k_choice, 'm'):
        dsm_p("message", key_delta);
        break;
    case dsm_c(k_choice, 't'):
        dsm_p("text", key_content);
        break;

    case dsm_c(k_delta, 'c'):
        dsm_p("content", key_content);
        break;
    case dsm_c(k_delta, 'r'):
        dsm_p("reasoning_content", key_reasoning);
        dsm_p("role", key_none);
        break;
    case dsm_c(k_delta, 't'):
        dsm_p("tool_calls", key_tool_calls);
        break;

    case dsm_c(k_usage, 'p'):
        dsm_p("prompt_tokens", key_u + u_prompt);
        dsm_p("prompt_cache_hit_tokens", key_u + u_hit);
        dsm_p("prompt_cache_miss_tokens", key_u + u_miss);
        dsm_p("prompt_tokens_details", key_ptd);
        break;
    case dsm_c(k_usage, 'c'):
        dsm_p("completion_tokens", key_u + u_completion);
        dsm_p("completion_tokens_details", key_ctd);
        break;
    case dsm_c(k_usage, 't'):
        dsm_p("total_tokens", key_u + u_total);
        break;

    case dsm_c(k_ctd, 'r'):
        dsm_p("reasoning_tokens", key_u + u_reasoning);
        break;

    case dsm_c(k_ptd, 'c'):
        dsm_p("cached_tokens", key_u + u_cached);
        break;

    case dsm_c(k_a_top, 't'):
    case dsm_c(k_a_message, 't'):
        dsm_p("type", key_none);
        break;
    case dsm_c(k_a_top, 'i'):
    case dsm_c(k_a_message, 'i'):
        dsm_p("index", key_none);
        dsm_p("id", key_none);
        break;
    case dsm_c(k_a_top, 'm'):
        dsm_p("model", key_model);
        dsm_p("message", key_a_message);
        break;
    case dsm_c(k_a_message, 'm'):
        dsm_p("model", key_model);
        break;
    case dsm_c(k_a_top, 'u'):
    case dsm_c(k_a_message, 'u'):
        dsm_p("usage", key_a_usage);
        break;
    case dsm_c(k_a_top, 'c'):
        dsm_p("content", key_a_content);
        dsm_p("content_block", key_a_block);
        break;
    case dsm_c(k_a_message, 'c'):
        dsm_p("content", key_a_content);
        break;
    case dsm_c(k_a_top, 's'):
    case dsm_c(k_a_message, 's'):
        dsm_p("stop_reason", key_stop);
        break;
    case dsm_c(k_a_top, 'd'):
        dsm_p("delta", key_a_block);
        break;
    case dsm_c(k_a_top, 'e'):
        dsm_p("error", key_error);
        break;

    case dsm_c(k_a_usage, 'i'):
        dsm_p("input_tokens", key_u + u_input);
        break;
    case dsm_c(k_a_usage, 'o'):
        dsm_p("output_tokens", key_u + u_output);
        break;
    case dsm_c(k_a_usage, 'c'):
        dsm_p("cache_read_input_tokens", key_u + u_cache_read);
        dsm_p("cache_creation_input_tokens", key_u + u_cache_creation);
        break;

    case dsm_c(k_a_block, 't'):
        dsm_p("type", key_a_type);
        dsm_p("text", key_content);
        dsm_p("thinking", key_reasoning);
        break;
    case dsm_c(k_a_block, 'p'):
        dsm_p("partial_json", key_content);
        break;
    case dsm_c(k_a_block, 's'):
        dsm_p("stop_reason", key_stop);
        break;

    case dsm_c(k_error, 't'):
        dsm_p("type", key_err_type);
        break;
    case dsm_c(k_error, 'c'):
        dsm_p("code", key_err_code);
        break;
    }

#undef dsm_p
#undef dsm_c

    return key_none;
}


/* the action of a complete key [k, k + len) followed by '"' */

static ngx_uint_t
ngx_http_dsm_key(ngx_uint_t kind, u_char *k, size_t len)
{
    size_t      n;
    ngx_uint_t  key;

    key = ngx_http_dsm_probe(kind, k, k + len + 1, &n);

    return (n == len) ? key : key_none;
}


/*
 * Compares n bytes (n is a constant at every call site, at most 32) with
 * overlapping word loads: straight-line code once inlined.
 */

static ngx_http_dsm_inline ngx_uint_t
ngx_http_dsm_eq(u_char *a, const char *b, size_t n)
{
    size_t    i;
    uint64_t  x, y;
    uint32_t  x4, y4;

    if (n >= 8) {
        for (i = 0; i + 8 < n; i += 8) {
            ngx_memcpy(&x, a + i, 8);
            ngx_memcpy(&y, b + i, 8);

            if (x != y) {
                return 0;
            }
        }

        ngx_memcpy(&x, a + n - 8, 8);
        ngx_memcpy(&y, b + n - 8, 8);

        return x == y;
    }

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


static void
ngx_http_dsm_append(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    size_t  n;

    n = last - pos;

    if (p->klen + n > NGX_HTTP_DSM_PARSE_KEYBUF) {
        p->klen = NGX_HTTP_DSM_PARSE_KEYBUF + 1;
        return;
    }

    ngx_memcpy(p->kbuf + p->klen, pos, n);
    p->klen += n;
}


static void
ngx_http_dsm_enum(ngx_http_dsm_parse_t *p)
{
    u_char      *s;
    size_t       l;
    ngx_uint_t   f;

    s = p->kbuf;
    l = p->klen;

    if (p->key == key_err_type || p->key == key_err_code) {

        /* the first known class wins over "other" */

        if (p->error_class > NGX_HTTP_DSM_ERROR_OTHER) {
            return;
        }

        if (dsm_streq(s, l, "rate_limit_error")
            || dsm_streq(s, l, "rate_limit_exceeded"))
        {
            p->error_class = NGX_HTTP_DSM_ERROR_RATE_LIMITED;

        } else if (dsm_streq(s, l, "server_overloaded")
                   || dsm_streq(s, l, "overloaded_error"))
        {
            p->error_class = NGX_HTTP_DSM_ERROR_OVERLOADED;

        } else if (dsm_streq(s, l, "api_error")
                   || dsm_streq(s, l, "internal_error")
                   || dsm_streq(s, l, "server_error"))
        {
            p->error_class = NGX_HTTP_DSM_ERROR_SERVER;
        }

        return;
    }

    if (p->key == key_a_type) {
        if (dsm_streq(s, l, "tool_use")) {
            ngx_http_dsm_token(p, 1);
        }

        return;
    }

    if (l == 0) {
        return;
    }

    if (dsm_streq(s, l, "stop")
        || dsm_streq(s, l, "end_turn")
        || dsm_streq(s, l, "stop_sequence"))
    {
        f = NGX_HTTP_DSM_FINISH_STOP;

    } else if (dsm_streq(s, l, "length") || dsm_streq(s, l, "max_tokens")) {
        f = NGX_HTTP_DSM_FINISH_LENGTH;

    } else if (dsm_streq(s, l, "tool_calls") || dsm_streq(s, l, "tool_use"))
    {
        f = NGX_HTTP_DSM_FINISH_TOOL_CALLS;

    } else if (dsm_streq(s, l, "content_filter")
               || dsm_streq(s, l, "refusal"))
    {
        f = NGX_HTTP_DSM_FINISH_CONTENT_FILTER;

    } else if (dsm_streq(s, l, "insufficient_system_resource")) {
        f = NGX_HTTP_DSM_FINISH_INSUFFICIENT;

    } else {
        f = NGX_HTTP_DSM_FINISH_OTHER;
    }

    p->finish_reason = f;
}


static void
ngx_http_dsm_token(ngx_http_dsm_parse_t *p, ngx_uint_t answer)
{
    p->first_token = 1;
    p->has_content = 1;

    if (answer) {
        p->first_answer = 1;
    }
}


static void
ngx_http_dsm_commit(ngx_http_dsm_parse_t *p)
{
    uint64_t    *u, prompt, completion, total, hit, miss, reasoning;
    ngx_uint_t   m;

    if (p->usage_invalid) {
        p->usage_seen++;
        return;
    }

    m = p->umask;
    u = p->u;

#define dsm_u(f)  ((m & ((ngx_uint_t) 1 << (f))) ? u[f] : 0)
#define dsm_has(f)  (m & ((ngx_uint_t) 1 << (f)))

    if (p->mode & NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC) {
        hit = dsm_u(u_cache_read);
        miss = ngx_http_dsm_add(dsm_u(u_input), dsm_u(u_cache_creation));
        prompt = ngx_http_dsm_add(hit, miss);
        completion = dsm_u(u_output);
        total = ngx_http_dsm_add(prompt, completion);
        reasoning = 0;

    } else {
        completion = dsm_u(u_completion);
        reasoning = dsm_u(u_reasoning);

        if (dsm_has(u_hit)) {
            hit = u[u_hit];

        } else {
            hit = dsm_u(u_cached);
        }

        if (dsm_has(u_prompt)) {
            prompt = u[u_prompt];

        } else {
            prompt = ngx_http_dsm_add(hit, dsm_u(u_miss));
        }

        if (dsm_has(u_miss)) {
            miss = u[u_miss];

        } else {
            miss = (prompt > hit) ? prompt - hit : 0;
        }

        if (dsm_has(u_total)) {
            total = u[u_total];

        } else {
            total = ngx_http_dsm_add(prompt, completion);
        }
    }

#undef dsm_u
#undef dsm_has

    p->prompt_tokens = prompt;
    p->completion_tokens = completion;
    p->total_tokens = total;
    p->cache_hit_tokens = hit;
    p->cache_miss_tokens = miss;
    p->reasoning_tokens = reasoning;
    p->usage_fields = m;
    p->usage_seen++;
}


/* the response's usage cannot be trusted: none of it counts */

static void
ngx_http_dsm_bad_usage(ngx_http_dsm_parse_t *p)
{
    p->usage_invalid = 1;
    p->usage_fields = 0;
    p->prompt_tokens = 0;
    p->completion_tokens = 0;
    p->total_tokens = 0;
    p->cache_hit_tokens = 0;
    p->cache_miss_tokens = 0;
    p->reasoning_tokens = 0;
}


static uint64_t
ngx_http_dsm_add(uint64_t a, uint64_t b)
{
    return (a + b < a) ? (uint64_t) -1 : a + b;
}
