
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

#if (defined __SSE2__ && (defined __GNUC__ || defined __clang__))
#include <emmintrin.h>
#define NGX_HTTP_DSM_SSE2  1
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
    sw_skip_bol,
    sw_stash
};


/* JSON states; whitespace is skipped in the states up to sw_j_num */
enum {
    sw_j_doc = 0,
    sw_j_value,
    sw_j_obj_start,
    sw_j_key,
    sw_j_colon,
    sw_j_after,
    sw_j_arr_start,
    sw_j_deep,
    sw_j_num,
    sw_j_lit,
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


/* what a fast path read, applied only once all of it matched */
typedef struct {
    u_char      *model;        /* NULL: the model is already set */
    size_t       model_len;
    u_char      *finish;       /* NULL: "finish_reason":null */
    size_t       finish_len;
    ngx_uint_t   finish_stop;  /* the finish is "stop" */
    ngx_uint_t   usage;        /* a usage object, in umask and u */
    ngx_uint_t   umask;
    uint64_t     u[NGX_HTTP_DSM_USAGE_NFIELDS];
} ngx_http_dsm_fast_t;


static const char  *ngx_http_dsm_lits[] = { "null", "true", "false" };
static const size_t  ngx_http_dsm_lit_len[] = { 4, 4, 5 };


#define dsm_ws(ch)  ((ch) == ' ' || (ch) == '\n' || (ch) == '\r'             \
                     || (ch) == '\t')

#define dsm_streq(s, l, lit)                                                 \
    ((l) == sizeof(lit) - 1 && ngx_http_dsm_eq(s, lit, sizeof(lit) - 1))


static u_char *ngx_http_dsm_json(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static ngx_int_t ngx_http_dsm_sse(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static ngx_http_dsm_inline ngx_int_t ngx_http_dsm_close(
    ngx_http_dsm_parse_t *p, u_char ch);
static ngx_http_dsm_inline void ngx_http_dsm_number(
    ngx_http_dsm_parse_t *p);
static void ngx_http_dsm_error(ngx_http_dsm_parse_t *p);
static ngx_http_dsm_inline u_char *ngx_http_dsm_skip_str(
    ngx_http_dsm_parse_t *p, u_char *pos, u_char *last);
static u_char *ngx_http_dsm_sse_chunk(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static u_char *ngx_http_dsm_stash_more(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static void ngx_http_dsm_unstash(ngx_http_dsm_parse_t *p);
static ngx_http_dsm_inline u_char *ngx_http_dsm_head(u_char *s,
    u_char *last, const char *object, size_t n, ngx_http_dsm_fast_t *f);
static u_char *ngx_http_dsm_chunk_head(u_char *pos, u_char *last,
    ngx_http_dsm_fast_t *f);
static u_char *ngx_http_dsm_json_doc(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last);
static ngx_http_dsm_inline u_char *ngx_http_dsm_choice_end(u_char *s,
    u_char *last, ngx_http_dsm_fast_t *f);
static u_char *ngx_http_dsm_usage_ordered(u_char *s, u_char *last,
    ngx_http_dsm_fast_t *f);
static u_char *ngx_http_dsm_usage(u_char *s, u_char *last,
    ngx_http_dsm_fast_t *f);
static ngx_http_dsm_inline u_char *ngx_http_dsm_text(u_char *s, u_char *last,
    ngx_uint_t *nonempty);
static ngx_http_dsm_inline u_char *ngx_http_dsm_integer(u_char *s,
    u_char *last, uint64_t *v);
static ngx_http_dsm_inline u_char *ngx_http_dsm_integer16(u_char *s,
    uint64_t *v);
static u_char *ngx_http_dsm_integer_end(u_char *s, u_char *last,
    uint64_t *v);
static ngx_http_dsm_inline void ngx_http_dsm_fast_apply(
    ngx_http_dsm_parse_t *p, ngx_http_dsm_fast_t *f);
static ngx_http_dsm_inline ngx_uint_t ngx_http_dsm_match(u_char **s,
    u_char *last, const char *lit, size_t n);
static ngx_http_dsm_inline ngx_uint_t ngx_http_dsm_next(u_char **s,
    const char *lit, size_t n);
static ngx_http_dsm_inline u_char *ngx_http_dsm_quote(u_char *s,
    u_char *last);
static ngx_http_dsm_inline u_char *ngx_http_dsm_quote_scan(u_char *s,
    u_char *last);
static ngx_http_dsm_inline u_char *ngx_http_dsm_digits(u_char *s,
    u_char *last);
static u_char *ngx_http_dsm_str_end(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static ngx_http_dsm_inline ngx_uint_t ngx_http_dsm_probe(ngx_uint_t kind,
    u_char *k, u_char *last, size_t *len);
static ngx_uint_t ngx_http_dsm_key(ngx_uint_t kind, u_char *k, size_t len);
static void ngx_http_dsm_append(ngx_http_dsm_parse_t *p,
    u_char *pos, u_char *last);
static void ngx_http_dsm_enum(ngx_http_dsm_parse_t *p);
static void ngx_http_dsm_bad_usage(ngx_http_dsm_parse_t *p);
static ngx_http_dsm_inline void ngx_http_dsm_token(
    ngx_http_dsm_parse_t *p, ngx_uint_t answer);
static void ngx_http_dsm_commit(ngx_http_dsm_parse_t *p, ngx_uint_t m,
    uint64_t *u);
static uint64_t ngx_http_dsm_add(uint64_t a, uint64_t b);


void
ngx_http_dsm_parse_init(ngx_http_dsm_parse_t *p,
    ngx_uint_t mode)
{
    /* u, kind, kbuf, model and the memo are valid up to what is set */

    ngx_memzero(p, offsetof(ngx_http_dsm_parse_t, u));

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

    if (p->jstate == sw_j_doc && *pos == '{'
        && p->mode == NGX_HTTP_DSM_PARSE_JSON
        && ngx_http_dsm_json_doc(p, pos, last) != NULL)
    {
        /* a whole usual document; what follows it is not read */

        p->jstate = sw_j_end;
        p->done = 1;
        return NGX_DONE;
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
    ngx_http_dsm_parse_end(p);

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
    u_char       ch, *q;
    ngx_uint_t   state;
    const char  *pat;

    if (p->state == sw_stash) {
        pos = ngx_http_dsm_stash_more(p, pos, last);

        if (pos == NULL) {
            return NGX_OK;
        }
    }

    state = p->state;

    for ( ;; ) {

        if (pos >= last) {
            p->state = state;
            return NGX_OK;
        }

        ch = *pos;

        switch (state) {

        case sw_line:

            if (ch == '{' && p->events == 0 && p->bad_events == 0) {
                /* a JSON body sent as text/event-stream: read it as JSON */
                p->mode &= ~NGX_HTTP_DSM_PARSE_MODE_SSE;
                return ngx_http_dsm_parse(p, pos, last);
            }

            if (ch == 'd') {
                if (!p->in_doc && !p->doc_done && !p->ping
                    && (p->mode & NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC) == 0)
                {
                    q = ngx_http_dsm_sse_chunk(p, pos, last);

                    if (q != NULL) {
                        /* a whole usual chunk event */
                        pos = q;
                        break;
                    }

                    /*
                     * An event cut by the end of the buffer, once nothing
                     * that is timed can happen in it: kept and completed
                     * from the next buffer, so that the fast path can
                     * read it whole.
                     */

                    if (p->first_answer && !p->no_stash
                        && last - pos >= 7
                        && (size_t) (last - pos) <= NGX_HTTP_DSM_PARSE_STASH
                        && ngx_http_dsm_eq(pos, "data: {", 7)
                        && memchr(pos, '\n', last - pos) == NULL)
                    {
                        ngx_memcpy(p->stash, pos, last - pos);
                        p->stash_len = last - pos;
                        p->state = sw_stash;
                        return NGX_OK;
                    }
                }

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
                    state = sw_data_json;
                    break;
                }

                if (last - pos >= 5 && ngx_http_dsm_eq(pos, "data:", 5)) {
                    pos += 5;
                    state = sw_data_start;
                    break;
                }

                p->lit = 0;
                p->idx = 1;
                state = sw_field;
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
                state = sw_field;
                pos++;
                break;
            }

            /* a comment (DeepSeek's keep-alive) or a field we do not need */

            if (ch == ':') {
                p->comments++;
            }

            state = sw_skip_line;
            break;

        case sw_field:
            pat = p->lit ? "event:" : "data:";

            if (ch == (u_char) pat[p->idx]) {
                pos++;

                if (pat[++p->idx] == '\0') {
                    if (p->lit) {
                        p->klen = 0;
                        state = sw_event_start;

                    } else {
                        state = sw_data_start;
                    }
                }

                break;
            }

            if (ch == '\n') {
                pos++;
                state = sw_line;
                break;
            }

            state = sw_skip_line;
            break;

        case sw_skip_line:
            q = memchr(pos, '\n', last - pos);

            if (q == NULL) {
                pos = last;
                break;
            }

            pos = q + 1;
            state = sw_line;
            break;

        case sw_data_start:

            if (p->ping) {
                state = sw_skip_line;
                break;
            }

            if (ch == ' ' || ch == '\t' || ch == '\r') {
                pos++;
                break;
            }

            if (ch == '\n') {
                pos++;
                state = sw_line;
                break;
            }

            if (p->in_doc) {
                state = sw_data_json;
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
                state = sw_data_json;
                break;
            }

            if (ch == '[') {
                p->events++;
                p->first_data = 1;
                p->idx = 1;
                state = sw_done_match;
                pos++;
                break;
            }

            goto bad_event;

        case sw_data_json:
            pos = ngx_http_dsm_json(p, pos, last);

            if (p->invalid) {
                goto bad_event;
            }

            if (p->jstate == sw_j_end) {
                p->in_doc = 0;
                p->doc_done = 1;
                state = sw_data_tail;
                break;
            }

            if (pos < last) {
                /* a line break between tokens: the document goes on */
                pos++;
                state = sw_line;
            }

            break;

        case sw_data_tail:

            if (ch == ' ' || ch == '\t') {
                pos++;
                break;
            }

            if (ch == '\r') {
                pos++;
                state = sw_data_cr;
                break;
            }

            if (ch == '\n') {
                pos++;
                state = sw_line;
                break;
            }

            goto bad_event;

        case sw_data_cr:

            /* after a complete document a bare CR ends the line too */

            if (ch == '\n') {
                pos++;
                state = sw_line;
                break;
            }

            if (ch == '\r') {
                /* CR CR: a blank line, the event ends */
                pos++;
                p->doc_done = 0;
                p->ping = 0;
            }

            state = sw_line;
            break;

        case sw_skip_event:

            /*
             * An invalid event: skipped up to the next blank line; here
             * CR, LF and CRLF all end a line.  idx: the line ended in CR.
             */

            pos++;

            if (ch == '\r' || ch == '\n') {
                p->idx = (ch == '\r');
                state = sw_skip_bol;
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
                state = sw_line;
                break;
            }

            state = sw_skip_event;
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

            state = sw_event_name;
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

            state = sw_line;

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
        state = sw_skip_event;
    }
}


/*
 * Scans JSON in [pos, last), one byte per step of a switch on the state
 * saved in p->jstate once per call.  Returns the position after the byte
 * that closed the top-level value (jstate == sw_j_end), or last, or the
 * offending byte with p->invalid set.
 *
 * Whitespace between tokens is handled in one place, at the top of the
 * loop.  In SSE mode a line break there ends the data line: the scanner
 * returns at it, and the SSE layer resumes the document on the next
 * "data:" line.  (A raw line break inside a string, invalid JSON, is not
 * looked for: string contents are not validated.)  Strings are skipped
 * with memchr() to the closing quote: a string nobody needs costs one
 * call, not a step per byte.
 */

static u_char *
ngx_http_dsm_json(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char      ch, *q;
    size_t      n;
    uint64_t    v;
    ngx_int_t   rc;
    ngx_uint_t  state, kind, d;

    state = p->jstate;

    for ( /* void */ ; pos < last; pos++) {
        ch = *pos;

        if (ch <= ' ' && state <= sw_j_num && dsm_ws(ch)) {

            if (state == sw_j_num) {
                /* whitespace ends a number */
                ngx_http_dsm_number(p);
                state = sw_j_after;
            }

            if (ch == '\n' && (p->mode & NGX_HTTP_DSM_PARSE_MODE_SSE)) {
                p->jstate = state;
                return pos;
            }

            continue;
        }

        switch (state) {

        case sw_j_doc:

            /* a response is an object: a top-level array is not one */

            if (ch != '{') {
                goto invalid;
            }

            p->first_data = 1;
            p->events = 1;
            p->key = key_doc;

            /* '{' is not ']': sw_j_arr_start passes it on as a value */

            /* fall through */

        case sw_j_arr_start:

            if (p->key == key_tool_calls) {
                /* the first element of a tool_calls array: a token */

                if (ch != ']') {
                    ngx_http_dsm_token(p, 1);
                }

                p->key = key_none;
            }

            if (ch == ']') {
                rc = ngx_http_dsm_close(p, ch);

                if (rc == NGX_DONE) {
                    goto done;
                }

                if (rc == NGX_ERROR) {
                    goto invalid;
                }

                state = sw_j_after;
                break;
            }

            state = sw_j_value;

            /* fall through */

        case sw_j_value:

            if (p->key >= key_u && (u_char) (ch - '0') > 9 && ch != '-'
                && ch != 'n')
            {
                /* a usage value that is a string, a boolean, an object */
                ngx_http_dsm_bad_usage(p);
            }

            switch (ch) {

            case '"':

                p->esc = 0;

                switch (p->key) {

                case key_model:
                    if (!p->model_set) {
                        state = sw_j_str_model;
                    }

                    break;

                case key_content:
                case key_reasoning:
                    state = sw_j_str_first;
                    break;

                case key_finish:
                case key_stop:
                case key_a_type:
                case key_err_type:
                case key_err_code:
                    p->klen = 0;
                    state = sw_j_str_enum;
                    break;

                case key_error:
                    ngx_http_dsm_error(p);
                    break;
                }

                if (state != sw_j_value) {
                    /* a string read from its first byte on */
                    break;
                }

                /* a string nobody needs */

                q = ngx_http_dsm_skip_str(p, pos + 1, last);

                if (q == NULL) {
                    state = sw_j_str_skip;
                    pos = last - 1;
                    break;
                }

                pos = q;
                state = sw_j_after;
                break;

            case '{':
                d = ++p->depth;

                if (d > NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
                    p->too_deep = 1;
                    state = sw_j_deep;
                    break;
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
                    ngx_http_dsm_error(p);
                }

                if (d <= NGX_HTTP_DSM_PARSE_KINDS) {
                    p->kind[d - 1] = (u_char) kind;

                } else {
                    kind = k_other;
                }

                p->ck = kind;
                p->ca = 0;
                state = sw_j_obj_start;
                break;

            case '[':
                d = ++p->depth;

                if (d > NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
                    p->too_deep = 1;
                    state = sw_j_deep;
                    break;
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

                if (p->key != key_tool_calls) {
                    p->key = ngx_http_dsm_elem_key[kind];
                }

                state = sw_j_arr_start;
                break;

            case 'n':
            case 't':
            case 'f':
                p->lit = (ch == 'n') ? 0 : (ch == 't') ? 1 : 2;
                n = ngx_http_dsm_lit_len[p->lit];

                if ((size_t) (last - pos) >= n
                    && ngx_http_dsm_eq(pos, ngx_http_dsm_lits[p->lit], n))
                {
                    pos += n - 1;
                    state = sw_j_after;
                    break;
                }

                /* a literal split across buffers */

                p->idx = 1;
                state = sw_j_lit;
                break;

            case '-':
            case '0': case '1': case '2': case '3': case '4':
            case '5': case '6': case '7': case '8': case '9':

                /* slot: NFIELDS or more for a number nobody needs */

                p->slot = p->key - key_u;
                p->num = (ch == '-') ? 0 : (uint64_t) (ch - '0');
                p->num_bad = (ch == '-');
                state = sw_j_num;

                if (p->slot < NGX_HTTP_DSM_USAGE_NFIELDS || ch == '-') {
                    break;
                }

                /* a number nobody needs: its digits at once */

                pos = ngx_http_dsm_digits(pos, last) - 1;
                break;

            default:
                goto invalid;
            }

            break;

        case sw_j_num:

            /* the digits in this buffer in one go */

            while ((u_char) (ch - '0') <= 9) {

                if (p->slot < NGX_HTTP_DSM_USAGE_NFIELDS && !p->num_bad) {
                    /* num < 2^53 here: no overflow */
                    v = p->num * 10 + (ch - '0');

                    if (v >= NGX_HTTP_DSM_USAGE_MAX) {
                        p->num_bad = 1;
                    }

                    p->num = v;
                }

                if (pos + 1 == last) {
                    break;
                }

                ch = *++pos;
            }

            if ((u_char) (ch - '0') <= 9) {
                /* the number goes on in the next buffer */
                break;
            }

            if (ch == '.' || ch == 'e' || ch == 'E' || ch == '-'
                || ch == '+')
            {
                p->num_bad = 1;
                break;
            }

            if (dsm_ws(ch)) {
                /* past a digit: the top of the loop ends the number */
                pos--;
                break;
            }

            ngx_http_dsm_number(p);
            state = sw_j_after;

            /* fall through */

        case sw_j_after:

            if (ch != ',') {

                if (ch != '}' && ch != ']') {
                    goto invalid;
                }

                rc = ngx_http_dsm_close(p, ch);

                if (rc == NGX_DONE) {
                    goto done;
                }

                if (rc == NGX_ERROR) {
                    goto invalid;
                }

                break;
            }

            if (p->ca) {
                p->key = ngx_http_dsm_elem_key[p->ck];
                state = sw_j_value;
                break;
            }

            state = sw_j_key;

            if (last - pos < 2 || pos[1] != '"') {
                break;
            }

            /* the usual ',"': on to the key */

            ch = *++pos;

            /* fall through */

        case sw_j_obj_start:

            if (ch == '}') {
                rc = ngx_http_dsm_close(p, ch);

                if (rc == NGX_DONE) {
                    goto done;
                }

                if (rc == NGX_ERROR) {
                    goto invalid;
                }

                state = sw_j_after;
                break;
            }

            /* fall through */

        case sw_j_key:

            if (ch != '"') {
                goto invalid;
            }

            p->key = ngx_http_dsm_probe(p->ck, pos + 1, last, &n);

            if (n) {
                /* a known key: pos to its closing quote */
                pos += n + 1;

            } else {
                /* an unknown key, or a key split across buffers */

                p->esc = 0;
                p->klen = 0;

                q = ngx_http_dsm_skip_str(p, pos + 1, last);

                if (q == NULL) {
                    if (p->ck != k_other) {
                        ngx_http_dsm_append(p, pos + 1, last);
                    }

                    state = sw_j_key_str;
                    pos = last - 1;
                    break;
                }

                pos = q;
            }

            if (last - pos < 2 || pos[1] != ':') {
                state = sw_j_colon;
                break;
            }

            pos++;
            state = sw_j_value;

            if (p->key != key_none || last - pos < 2 || pos[1] != '"') {
                break;
            }

            /* the usual "key":"string" nobody needs: skip it here */

            pos++;
            q = ngx_http_dsm_skip_str(p, pos + 1, last);

            if (q == NULL) {
                state = sw_j_str_skip;
                pos = last - 1;
                break;
            }

            pos = q;
            state = sw_j_after;
            break;

        case sw_j_key_str:

            /* the rest of a key split across buffers */

            q = ngx_http_dsm_str_end(p, pos, last);

            if (q == NULL) {
                if (p->ck != k_other) {
                    ngx_http_dsm_append(p, pos, last);
                }

                pos = last - 1;
                break;
            }

            if (p->ck == k_other) {
                p->key = key_none;

            } else {
                ngx_http_dsm_append(p, pos, q);

                if (p->klen <= NGX_HTTP_DSM_PARSE_KEYBUF) {
                    p->kbuf[p->klen] = '"';
                    p->key = ngx_http_dsm_key(p->ck, p->kbuf, p->klen);

                } else {
                    p->key = key_none;
                }
            }

            pos = q;
            state = sw_j_colon;
            break;

        case sw_j_colon:

            if (ch != ':') {
                goto invalid;
            }

            state = sw_j_value;
            break;

        case sw_j_lit:

            if (ch != (u_char) ngx_http_dsm_lits[p->lit][p->idx]) {
                goto invalid;
            }

            if (++p->idx == ngx_http_dsm_lit_len[p->lit]) {
                state = sw_j_after;
            }

            break;

        case sw_j_deep:

            /* beyond the depth limit: count brackets, skip strings */

            if (ch == '"') {
                p->esc = 0;
                state = sw_j_deep_str;

            } else if (ch == '{' || ch == '[') {
                p->depth++;

            } else if (ch == '}' || ch == ']') {
                if (--p->depth == NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
                    state = sw_j_after;
                }
            }

            break;

        case sw_j_str_first:

            /* the first byte of content, reasoning_content, text, ... */

            if (ch == '"') {
                state = sw_j_after;
                break;
            }

            ngx_http_dsm_token(p, p->key == key_content);

            /* ch is not '"': skip_str() looks no further back than pos */

            state = sw_j_str_skip;

            q = ngx_http_dsm_skip_str(p, pos, last);

            if (q == NULL) {
                pos = last - 1;
                break;
            }

            pos = q;
            state = sw_j_after;
            break;

        case sw_j_str_skip:
        case sw_j_deep_str:

            q = ngx_http_dsm_str_end(p, pos, last);

            if (q == NULL) {
                pos = last - 1;
                break;
            }

            pos = q;
            state = (state == sw_j_str_skip) ? sw_j_after : sw_j_deep;
            break;

        case sw_j_str_model:

            q = ngx_http_dsm_str_end(p, pos, last);

            n = (q ? q : last) - pos;
            if (n > sizeof(p->model) - 1 - p->model_len) {
                n = sizeof(p->model) - 1 - p->model_len;
            }

            ngx_memcpy(p->model + p->model_len, pos, n);
            p->model_len += n;

            if (q == NULL) {
                pos = last - 1;
                break;
            }

            p->model_set = 1;
            pos = q;

            if (p->mode & NGX_HTTP_DSM_PARSE_MODE_REQUEST) {
                goto done;
            }

            state = sw_j_after;
            break;

        case sw_j_str_enum:

            q = ngx_http_dsm_str_end(p, pos, last);

            ngx_http_dsm_append(p, pos, q ? q : last);

            if (q == NULL) {
                pos = last - 1;
                break;
            }

            ngx_http_dsm_enum(p);
            pos = q;
            state = sw_j_after;
            break;

        default: /* sw_j_end */
            return pos;
        }
    }

    p->jstate = state;

    return pos;

done:

    p->jstate = sw_j_end;

    return pos + 1;

invalid:

    /* pos is at the offending byte: SSE resumes after this event */

    p->invalid = 1;

    return pos;
}


/* ch is '}' or ']' closing the current level */

static ngx_http_dsm_inline ngx_int_t
ngx_http_dsm_close(ngx_http_dsm_parse_t *p, u_char ch)
{
    ngx_uint_t  d;

    if (p->ca != (ngx_uint_t) (ch == ']')) {
        return NGX_ERROR;
    }

    if (p->ck == k_usage || p->ck == k_a_usage) {
        ngx_http_dsm_commit(p, p->umask, p->u);
    }

    d = --p->depth;

    if (d == 0) {
        return NGX_DONE;
    }

    p->ck = (d <= NGX_HTTP_DSM_PARSE_KINDS) ? p->kind[d - 1] : k_other;
    p->ca = (ngx_uint_t) (p->arrays >> (d - 1)) & 1;

    return NGX_OK;
}


/* a number ended: a usage value is stored or makes the usage invalid */

static ngx_http_dsm_inline void
ngx_http_dsm_number(ngx_http_dsm_parse_t *p)
{
    if (p->slot >= NGX_HTTP_DSM_USAGE_NFIELDS) {
        return;
    }

    if (p->num_bad) {
        /* negative, fractional, an exponent, or 2^53 or more */
        ngx_http_dsm_bad_usage(p);
        return;
    }

    p->u[p->slot] = p->num;
    p->umask |= (ngx_uint_t) 1 << p->slot;
}


/* an "error" member: the body is an in-band error */

static void
ngx_http_dsm_error(ngx_http_dsm_parse_t *p)
{
    p->error = 1;

    if (p->error_class == NGX_HTTP_DSM_ERROR_NONE) {
        p->error_class = NGX_HTTP_DSM_ERROR_OTHER;
    }
}


/*
 * The closing quote of a string starting at pos, or NULL (the state for
 * sw_j_str_skip in p->esc) if it is not in [pos, last).  The byte before
 * pos is in the buffer (the opening quote), or *pos is not '"'.
 */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_skip_str(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char  *q;

    q = memchr(pos, '"', last - pos);

    if (q != NULL && q[-1] != '\\') {
        return q;
    }

    p->esc = 0;

    return ngx_http_dsm_str_end(p, pos, last);
}


/*
 * The usual DeepSeek stream chunk, a whole event in [pos, last):
 *
 *   data: {"id":"...","object":"chat.completion.chunk","created":DIGITS,
 *   "model":"...",["system_fingerprint":"...",]
 *   "choices":[{"index":0,"delta":{["role":"assistant",]
 *   "content":"TEXT" or "content":null,"reasoning_content":"TEXT"}
 *   [,"logprobs":null],"finish_reason":null or "WORD"}],
 *   "usage":null or {USAGE}} LF LF
 *
 * with no backslash before the closing quotes of the strings.  If it is
 * all there, makes the changes the general path would make for it and
 * returns the position after the blank line; else returns NULL having
 * changed nothing.  The head up to "delta":{ is the same in every chunk
 * of a stream but for the delta's first member: once a chunk matched, its
 * head up to the text is kept and the next heads are compared with one
 * memcmp(), and so is a tail with no finish reason and no usage.  The
 * fuzzer checks that both paths agree: an event split across buffers
 * takes the general one.
 */

static u_char *
ngx_http_dsm_sse_chunk(ngx_http_dsm_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char               *s, *text, *q;
    ngx_uint_t            answer, nonempty, full, tail;
    ngx_http_dsm_fast_t   f;

    f.model = NULL;
    f.finish = NULL;
    f.finish_stop = 0;
    f.usage = 0;

    if (p->memo_len
        && (size_t) (last - pos) > p->memo_len
        && ngx_memcmp(pos, p->memo, p->memo_len) == 0)
    {
        text = pos + p->memo_len;
        answer = p->memo_answer;
        full = 0;

    } else {
        s = ngx_http_dsm_chunk_head(pos, last, &f);

        if (s == NULL) {
            return NULL;
        }

        (void) ngx_http_dsm_match(&s, last, "\"role\":\"assistant\",", 19);

        if (!ngx_http_dsm_match(&s, last, "\"content\":", 10)) {
            return NULL;
        }

        answer = !ngx_http_dsm_match(&s, last,
                                     "null,\"reasoning_content\":", 25);

        if (!ngx_http_dsm_match(&s, last, "\"", 1)) {
            return NULL;
        }

        text = s;
        full = 1;
    }

    q = ngx_http_dsm_quote(text, last);

    if (q == NULL) {
        return NULL;
    }

    nonempty = (q != text);

    if (p->tail_len
        && (size_t) (last - q) >= p->tail_len
        && ngx_memcmp(q, p->tail, p->tail_len) == 0)
    {
        /* no finish reason, no usage */
        s = q + p->tail_len;
        tail = 0;

    } else {
        s = q + 1;

        if (!ngx_http_dsm_match(&s, last, "}", 1)) {
            return NULL;
        }

        s = ngx_http_dsm_choice_end(s, last, &f);

        if (s == NULL || !ngx_http_dsm_match(&s, last, "}\n\n", 3)) {
            return NULL;
        }

        tail = (f.finish == NULL && !f.usage);
    }

    /* all of it is there: what the general path would do */

    if (full && (size_t) (text - pos) <= NGX_HTTP_DSM_PARSE_MEMO) {
        ngx_memcpy(p->memo, pos, text - pos);
        p->memo_len = text - pos;
        p->memo_answer = answer;
    }

    if (tail && (size_t) (s - q) <= NGX_HTTP_DSM_PARSE_TAIL) {
        ngx_memcpy(p->tail, q, s - q);
        p->tail_len = s - q;
    }

    p->events++;
    p->first_data = 1;

    if (nonempty) {
        ngx_http_dsm_token(p, answer);
    }

    if (f.model || f.finish || f.usage) {
        ngx_http_dsm_fast_apply(p, &f);
    }

    return s;
}


/*
 * The head both fast paths share, from the opening brace:
 * {"id":"...","object":"OBJECT","created":DIGITS,"model":"...",
 * ["system_fingerprint":"...",] with OBJECT the n bytes from the quote
 * after the id to the colon before the digits, compared at once;
 * returns the position after it (at "choices"), or NULL.  The model
 * goes to f.
 */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_head(u_char *s, u_char *last, const char *object, size_t n,
    ngx_http_dsm_fast_t *f)
{
    u_char  *m;

#define dsm_room(lit)  (s + sizeof(lit) - 1 <= last)
#define dsm_next(lit)  ngx_http_dsm_next(&s, lit, sizeof(lit) - 1)

    /* the room for a run of literals is checked once, after each value */

    if (!dsm_room("{\"id\":\"")
        || !dsm_next("{\"id\":\"")
        || (s = ngx_http_dsm_quote(s, last)) == NULL
        || s + n > last
        || !ngx_http_dsm_next(&s, object, n)
        || (s = ngx_http_dsm_digits(s, last)) == NULL
        || !dsm_room(",\"model\":\"")
        || !dsm_next(",\"model\":\""))
    {
        return NULL;
    }

    m = s;
    s = ngx_http_dsm_quote(s, last);

    if (s == NULL
        || !dsm_room("\",\"system_fingerprint\":\"")
        || !dsm_next("\","))
    {
        return NULL;
    }

    f->model = m;
    f->model_len = s - 2 - m;

    if (dsm_next("\"system_fingerprint\":\"")) {
        s = ngx_http_dsm_quote(s, last);

        if (s == NULL || !dsm_room("\",") || !dsm_next("\",")) {
            return NULL;
        }
    }

#undef dsm_room
#undef dsm_next

    return s;
}


/*
 * A chunk's head, "data: {" to "delta":{ included, checked byte by byte;
 * returns the position after it, or NULL.
 */

static u_char *
ngx_http_dsm_chunk_head(u_char *pos, u_char *last, ngx_http_dsm_fast_t *f)
{
    u_char  *s;

#define dsm_match(lit)  ngx_http_dsm_match(&s, last, lit, sizeof(lit) - 1)

    s = pos;

    if (!dsm_match("data: ")) {
        return NULL;
    }

#define dsm_object  "\",\"object\":\"chat.completion.chunk\",\"created\":"

    s = ngx_http_dsm_head(s, last, dsm_object, sizeof(dsm_object) - 1, f);

#undef dsm_object

    if (s == NULL || !dsm_match("\"choices\":[{\"index\":0,\"delta\":{")) {
        return NULL;
    }

#undef dsm_match

    return s;
}


/*
 * A whole usual DeepSeek chat completion in [pos, last), in one buffer:
 *
 *   {"id":"...","object":"chat.completion","created":DIGITS,"model":"...",
 *   ["system_fingerprint":"...",]"choices":[{"index":0,"message":
 *   {"role":"assistant","content":"TEXT"[,"reasoning_content":"TEXT"]}
 *   [,"logprobs":null],"finish_reason":null or "WORD"}],
 *   "usage":null or {USAGE}[,"system_fingerprint":"..."]}
 *
 * Returns the position after the closing brace having made the changes
 * the general path would make for the document, or NULL having changed
 * nothing.
 */

static u_char *
ngx_http_dsm_json_doc(ngx_http_dsm_parse_t *p, u_char *pos, u_char *last)
{
    u_char               *s;
    ngx_uint_t            answer, reasoning;
    ngx_http_dsm_fast_t   f;

#define dsm_match(lit)  ngx_http_dsm_match(&s, last, lit, sizeof(lit) - 1)
#define dsm_room(lit)   (s + sizeof(lit) - 1 <= last)
#define dsm_next(lit)   ngx_http_dsm_next(&s, lit, sizeof(lit) - 1)

#define dsm_object  "\",\"object\":\"chat.completion\",\"created\":"

    s = ngx_http_dsm_head(pos, last, dsm_object, sizeof(dsm_object) - 1, &f);

#undef dsm_object

    if (s == NULL
        || !dsm_room("\"choices\":[{\"index\":0,\"message\":"
                     "{\"role\":\"assistant\",\"content\":")
        || !dsm_next("\"choices\":[{\"index\":0,\"message\":"
                     "{\"role\":\"assistant\",\"content\":"))
    {
        return NULL;
    }

    reasoning = 0;

    s = ngx_http_dsm_text(s, last, &answer);

    if (s == NULL || !dsm_room(",\"reasoning_content\":")) {
        return NULL;
    }

    if (dsm_next(",\"reasoning_content\":")) {
        s = ngx_http_dsm_text(s, last, &reasoning);

        if (s == NULL || !dsm_match("}")) {
            return NULL;
        }

    } else if (!dsm_next("}")) {
        return NULL;
    }

    s = ngx_http_dsm_choice_end(s, last, &f);

    if (s == NULL) {
        return NULL;
    }

    if (dsm_room(",\"system_fingerprint\":\"")
        && dsm_next(",\"system_fingerprint\":\""))
    {
        s = ngx_http_dsm_quote(s, last);

        if (s == NULL || !dsm_room("\"}") || !dsm_next("\"}")) {
            return NULL;
        }

    } else if (!dsm_match("}")) {
        return NULL;
    }

#undef dsm_match
#undef dsm_room
#undef dsm_next

    /* all of it is there: what the general path would do */

    p->first_data = 1;
    p->events = 1;

    if (answer) {
        ngx_http_dsm_token(p, 1);
    }

    if (reasoning) {
        ngx_http_dsm_token(p, 0);
    }

    ngx_http_dsm_fast_apply(p, &f);

    return s;
}


/*
 * After the delta or message object: [,"logprobs":null],
 * "finish_reason":null or "WORD"}],"usage":null or {USAGE}
 */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_choice_end(u_char *s, u_char *last, ngx_http_dsm_fast_t *f)
{
    u_char  *w;

#define dsm_match(lit)  ngx_http_dsm_match(&s, last, lit, sizeof(lit) - 1)
#define dsm_room(lit)   (s + sizeof(lit) - 1 <= last)
#define dsm_next(lit)   ngx_http_dsm_next(&s, lit, sizeof(lit) - 1)

    /* the longest way to the finish reason's end, its shorter ones too */

    if (!dsm_room(",\"logprobs\":null,\"finish_reason\":\"stop\"")) {
        return NULL;
    }

    (void) dsm_next(",\"logprobs\":null");

    if (!dsm_next(",\"finish_reason\":")) {
        return NULL;
    }

    f->finish = NULL;
    f->finish_stop = 0;

    if (!dsm_next("null")) {
        if (!dsm_next("\"")) {
            return NULL;
        }

        w = s;

        if (dsm_next("stop\"")) {
            f->finish = w;
            f->finish_len = 4;
            f->finish_stop = 1;

        } else {

            /* a word the enum can read: letters and '_', no escapes */

            while (s < last && ((*s >= 'a' && *s <= 'z') || *s == '_')) {
                s++;
            }

            if ((size_t) (s - w) > NGX_HTTP_DSM_PARSE_KEYBUF
                || !dsm_match("\""))
            {
                return NULL;
            }

            f->finish = w;
            f->finish_len = s - 1 - w;
        }
    }

    if (!dsm_room("}],\"usage\":null") || !dsm_next("}],\"usage\":")) {
        return NULL;
    }

    f->usage = 0;

    if (dsm_next("null")) {
        return s;
    }

#undef dsm_match
#undef dsm_room
#undef dsm_next

    s = ngx_http_dsm_usage(s, last, f);

    if (s != NULL) {
        f->usage = 1;
    }

    return s;
}


/*
 * DeepSeek's usage object: integer members in any order, the two details
 * objects with their one member each; anything else is left to the
 * general path.  Members are looked for in DeepSeek's order first, so
 * each usually costs one comparison.
 */

typedef struct {
    const char  *name;         /* from the opening quote to the colon */
    size_t       len;
    ngx_uint_t   slot;
    ngx_uint_t   nested;       /* a details object: one more '}' */
} ngx_http_dsm_umember_t;

#define dsm_um(name, slot, nested)                                           \
    { name, sizeof(name) - 1, slot, nested }

static const ngx_http_dsm_umember_t  ngx_http_dsm_umembers[] = {
    dsm_um("\"prompt_tokens\":", u_prompt, 0),
    dsm_um("\"completion_tokens\":", u_completion, 0),
    dsm_um("\"total_tokens\":", u_total, 0),
    dsm_um("\"prompt_tokens_details\":{\"cached_tokens\":", u_cached, 1),
    dsm_um("\"completion_tokens_details\":{\"reasoning_tokens\":",
           u_reasoning, 1),
    dsm_um("\"prompt_cache_hit_tokens\":", u_hit, 0),
    dsm_um("\"prompt_cache_miss_tokens\":", u_miss, 0)
};

#undef dsm_um

#define NGX_HTTP_DSM_UMEMBERS                                                \
    (sizeof(ngx_http_dsm_umembers) / sizeof(ngx_http_dsm_umember_t))


static u_char *
ngx_http_dsm_usage(u_char *s, u_char *last, ngx_http_dsm_fast_t *f)
{
    u_char                        *t;
    ngx_uint_t                     i, n;
    const ngx_http_dsm_umember_t  *m;

#define dsm_match(lit)  ngx_http_dsm_match(&s, last, lit, sizeof(lit) - 1)

    /* '{' and a byte: a usage that ends the buffer is no whole event */

    if (s + 2 > last || *s++ != '{') {
        return NULL;
    }

    f->umask = 0;

    if (*s == '}') {
        return s + 1;
    }

    t = ngx_http_dsm_usage_ordered(s, last, f);

    if (t != NULL) {
        return t;
    }

    i = 0;

    for ( ;; ) {
        m = NULL;

        for (n = 0; n < NGX_HTTP_DSM_UMEMBERS; n++) {
            if (ngx_http_dsm_match(&s, last, ngx_http_dsm_umembers[i].name,
                                   ngx_http_dsm_umembers[i].len))
            {
                m = &ngx_http_dsm_umembers[i];
            }

            i = (i + 1 == NGX_HTTP_DSM_UMEMBERS) ? 0 : i + 1;

            if (m) {
                break;
            }
        }

        if (m == NULL) {
            return NULL;
        }

        s = ngx_http_dsm_integer(s, last, &f->u[m->slot]);

        if (s == NULL || (m->nested && !dsm_match("}"))) {
            return NULL;
        }

        f->umask |= (ngx_uint_t) 1 << m->slot;

        if (s == last) {
            return NULL;
        }

        if (*s++ == '}') {
            return s;
        }

        if (s[-1] != ',') {
            return NULL;
        }
    }

#undef dsm_match
}


/*
 * The members of a usage object after its '{' in DeepSeek's own order,
 * as straight-line code: the usual case costs only the comparisons.
 */

static u_char *
ngx_http_dsm_usage_ordered(u_char *s, u_char *last, ngx_http_dsm_fast_t *f)
{
    uint64_t  *u;

#define dsm_room(lit)  (s + sizeof(lit) - 1 <= last)

    /*
     * An integer and the literal after it: one room check covers both,
     * 15 digits and the byte after them at most, then the literal.
     */

#define dsm_int(slot, lit)                                                   \
    (s + 16 + sizeof(lit) - 1 <= last                                        \
     && (s = ngx_http_dsm_integer16(s, &u[slot])) != NULL                    \
     && ngx_http_dsm_next(&s, lit, sizeof(lit) - 1))

    u = f->u;

    if (!dsm_room("\"prompt_tokens\":")
        || !ngx_http_dsm_next(&s, "\"prompt_tokens\":", 16)
        || !dsm_int(u_prompt, ",\"completion_tokens\":")
        || !dsm_int(u_completion, ",\"total_tokens\":")
        || !dsm_int(u_total, ",\"prompt_tokens_details\":{\"cached_tokens\":")
        || !dsm_int(u_cached, "},\"completion_tokens_details\":"
                              "{\"reasoning_tokens\":")
        || !dsm_int(u_reasoning, "},\"prompt_cache_hit_tokens\":")
        || !dsm_int(u_hit, ",\"prompt_cache_miss_tokens\":")
        || !dsm_int(u_miss, "}"))
    {
        return NULL;
    }

#undef dsm_int
#undef dsm_room

    f->umask = (1 << u_prompt) | (1 << u_completion) | (1 << u_total)
               | (1 << u_cached) | (1 << u_reasoning) | (1 << u_hit)
               | (1 << u_miss);

    return s;
}


/* a string from s (its opening quote); *nonempty: it has a byte */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_text(u_char *s, u_char *last, ngx_uint_t *nonempty)
{
    u_char  *t;

    if (s >= last || *s != '"') {
        return NULL;
    }

    t = ++s;
    s = ngx_http_dsm_quote_scan(s, last);

    if (s == NULL) {
        return NULL;
    }

    *nonempty = (s != t);

    return s + 1;
}


/*
 * An integer the general path reads as valid usage: no sign, fraction,
 * exponent or leading zero, and at most 15 digits, so below 2^53.
 * Usage numbers are mostly 1 to 4 digits: with the 16 bytes the longest
 * one and the byte after it take at hand, those are read straight, with
 * neither a loop nor a bound test.
 */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_integer(u_char *s, u_char *last, uint64_t *v)
{
    if (s + 16 > last) {
        return ngx_http_dsm_integer_end(s, last, v);
    }

    return ngx_http_dsm_integer16(s, v);
}


/* as above, with 16 bytes from s in the buffer */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_integer16(u_char *s, uint64_t *v)
{
    u_char      *d;
    uint64_t     n;
    ngx_uint_t   c;

    /* a byte below '0' wraps around: one test for both bounds */

    n = s[0] - (uint64_t) '0';

    if (n > 9) {
        return NULL;
    }

    if ((c = s[1] - (ngx_uint_t) '0') > 9) {
        *v = n;
        return s + 1;
    }

    if (n == 0) {
        /* a leading zero */
        return NULL;
    }

    n = n * 10 + c;

    if ((c = s[2] - (ngx_uint_t) '0') > 9) {
        *v = n;
        return s + 2;
    }

    n = n * 10 + c;

    if ((c = s[3] - (ngx_uint_t) '0') > 9) {
        *v = n;
        return s + 3;
    }

    n = n * 10 + c;

    /* 5 digits or more */

    for (d = s + 4; (c = *d - (ngx_uint_t) '0') <= 9; d++) {
        if (d - s == 15) {
            return NULL;
        }

        n = n * 10 + c;
    }

    *v = n;

    return d;
}


/* an integer as above that may end the buffer, byte by byte */

static u_char *
ngx_http_dsm_integer_end(u_char *s, u_char *last, uint64_t *v)
{
    u_char    *d;
    uint64_t   n;

    d = s;
    n = 0;

    while (s < last && (u_char) (*s - '0') <= 9) {
        n = n * 10 + (*s++ - '0');
    }

    if (s == d || s - d > 15 || (*d == '0' && s - d > 1)) {
        return NULL;
    }

    *v = n;

    return s;
}


/* sets the model, finish reason and usage a fast path read */

static ngx_http_dsm_inline void
ngx_http_dsm_fast_apply(ngx_http_dsm_parse_t *p, ngx_http_dsm_fast_t *f)
{
    u_char  *d;
    size_t   n;

    if (f->model && !p->model_set) {
        n = sizeof(p->model) - 1 - p->model_len;

        if (f->model_len < n) {
            n = f->model_len;
        }

        d = p->model + p->model_len;

        if (n - 8 <= 8) {

            /* 8 to 16 bytes, as most model names: two overlapping words */

            ngx_memcpy(d, f->model, 8);
            ngx_memcpy(d + n - 8, f->model + n - 8, 8);

        } else {
            ngx_memcpy(d, f->model, n);
        }

        p->model_len += n;
        p->model_set = 1;
    }

    if (f->finish_stop) {
        p->finish_reason = NGX_HTTP_DSM_FINISH_STOP;

    } else if (f->finish) {
        p->key = key_finish;
        p->klen = f->finish_len;
        ngx_memcpy(p->kbuf, f->finish, f->finish_len);
        ngx_http_dsm_enum(p);
    }

    if (f->usage) {
        ngx_http_dsm_commit(p, f->umask, f->u);
    }
}


/*
 * The stashed event goes on in [pos, last).  Returns where the scan goes
 * on, or NULL if all of [pos, last) was stashed too.
 */

static u_char *
ngx_http_dsm_stash_more(ngx_http_dsm_parse_t *p, u_char *pos, u_char *last)
{
    u_char  *q;
    size_t   n, len;

    q = memchr(pos, '\n', last - pos);

    if (q == NULL) {
        n = last - pos;

        if (p->stash_len + n <= NGX_HTTP_DSM_PARSE_STASH) {
            ngx_memcpy(p->stash + p->stash_len, pos, n);
            p->stash_len += n;
            return NULL;
        }

    } else if (q + 1 < last && q[1] == '\n') {
        n = q + 2 - pos;

        if (p->stash_len + n <= NGX_HTTP_DSM_PARSE_STASH) {

            /* the whole event, as if it had come in one buffer */

            ngx_memcpy(p->stash + p->stash_len, pos, n);
            len = p->stash_len + n;
            p->stash_len = 0;
            p->state = sw_line;

            (void) ngx_http_dsm_sse(p, p->stash, p->stash + len);

            return pos + n;
        }
    }

    ngx_http_dsm_unstash(p);

    return pos;
}


/* the stashed bytes through the general path, as the split came */

static void
ngx_http_dsm_unstash(ngx_http_dsm_parse_t *p)
{
    size_t  len;

    len = p->stash_len;
    p->stash_len = 0;
    p->state = sw_line;

    p->no_stash = 1;
    (void) ngx_http_dsm_sse(p, p->stash, p->stash + len);
    p->no_stash = 0;
}


/*
 * Before the results are read: a stashed event is read now.  Any time is
 * right: parsing goes on after it as if the buffer had been split there.
 */

void
ngx_http_dsm_parse_end(ngx_http_dsm_parse_t *p)
{
    if (p->state == sw_stash) {
        ngx_http_dsm_unstash(p);
    }
}


/* *s matches the n bytes of lit: s moves past them */

static ngx_http_dsm_inline ngx_uint_t
ngx_http_dsm_match(u_char **s, u_char *last, const char *lit, size_t n)
{
    if (*s + n > last || !ngx_http_dsm_eq(*s, lit, n)) {
        return 0;
    }

    *s += n;

    return 1;
}


/*
 * As above, the caller having checked that the n bytes are there.  A
 * literal of 24 to 64 bytes is compared 16 bytes at a time, the results
 * gathered and tested once.
 */

static ngx_http_dsm_inline ngx_uint_t
ngx_http_dsm_next(u_char **s, const char *lit, size_t n)
{
#if (NGX_HTTP_DSM_SSE2)
    __m128i  x;

#define dsm_eq16(i)                                                          \
    _mm_cmpeq_epi8(_mm_loadu_si128((__m128i *) (*s + (i))),                  \
                   _mm_loadu_si128((__m128i *) (lit + (i))))

    if (n >= 24 && n <= 64) {
        x = dsm_eq16(0);

        if (n > 32) {
            x = _mm_and_si128(x, dsm_eq16(16));
        }

        if (n > 48) {
            x = _mm_and_si128(x, dsm_eq16(32));
        }

        x = _mm_and_si128(x, dsm_eq16(n - 16));

        if (_mm_movemask_epi8(x) != 0xffff) {
            return 0;
        }

        *s += n;

        return 1;
    }

#undef dsm_eq16
#endif

    if (!ngx_http_dsm_eq(*s, lit, n)) {
        return 0;
    }

    *s += n;

    return 1;
}


/*
 * The closing quote of a string from s (the byte before s is its opening
 * quote), or NULL if it is not in [s, last).  Ids, model names and
 * stream text pieces are short: a string that ends unescaped within 32
 * bytes is found with two 16-byte compares instead of a memchr() call
 * (the second one ends the buffer if less than 32 bytes are left).
 */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_quote(u_char *s, u_char *last)
{
#if (NGX_HTTP_DSM_SSE2)
    u_char   *q, *t;
    __m128i   quote;
    int       m;

    if (s + 16 <= last) {
        quote = _mm_set1_epi8('"');
        t = s;

        m = _mm_movemask_epi8(_mm_cmpeq_epi8(
                _mm_loadu_si128((__m128i *) t), quote));

        if (m == 0) {
            t = (s + 32 <= last) ? s + 16 : last - 16;

            m = _mm_movemask_epi8(_mm_cmpeq_epi8(
                    _mm_loadu_si128((__m128i *) t), quote));
        }

        if (m) {
            q = t + __builtin_ctz(m);

            if (q[-1] != '\\') {
                return q;
            }
        }
    }
#endif

    return ngx_http_dsm_quote_scan(s, last);
}


/* as above, for text of any length */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_quote_scan(u_char *s, u_char *last)
{
    u_char  *q, *b;

    for ( ;; ) {
        q = memchr(s, '"', last - s);

        if (q == NULL || q[-1] != '\\') {
            return q;
        }

        /* the opening quote ends the run of backslashes */

        for (b = q - 1; b[-1] == '\\'; b--) { /* void */ }

        if (((q - b) & 1) == 0) {
            return q;
        }

        s = q + 1;
    }
}


/* after one or more digits from s, or NULL */

static ngx_http_dsm_inline u_char *
ngx_http_dsm_digits(u_char *s, u_char *last)
{
    u_char    *d;
    uint64_t   v;

    d = s;

    while (s + 8 <= last) {
        ngx_memcpy(&v, s, 8);

#if (defined __GNUC__ || defined __clang__)

        /*
         * the high bit of each byte that is no digit, and of bytes after
         * it: a borrow or carry only follows the first non-digit
         */

        v -= 0x3030303030303030ULL;
        v = (v | (v + 0x7676767676767676ULL)) & 0x8080808080808080ULL;

        if (v) {
            s += __builtin_ctzll(v) >> 3;
            return (s == d) ? NULL : s;
        }

#else

        /* all 8 bytes are '0'..'9' */

        if (((v & 0xf0f0f0f0f0f0f0f0ULL)
             | (((v + 0x0606060606060606ULL) & 0xf0f0f0f0f0f0f0f0ULL) >> 4))
            != 0x3333333333333333ULL)
        {
            break;
        }

#endif

        s += 8;
    }

    while (s < last && (u_char) (*s - '0') <= 9) {
        s++;
    }

    return (s == d) ? NULL : s;
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


static ngx_http_dsm_inline void
ngx_http_dsm_token(ngx_http_dsm_parse_t *p, ngx_uint_t answer)
{
    p->first_token = 1;
    p->has_content = 1;

    if (answer) {
        p->first_answer = 1;
    }
}


/* the usage object just read: m tells which of u it had */

static void
ngx_http_dsm_commit(ngx_http_dsm_parse_t *p, ngx_uint_t m, uint64_t *u)
{
    uint64_t  prompt, completion, total, hit, miss, reasoning;

    if (p->usage_invalid) {
        p->usage_seen++;
        return;
    }

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
