
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
    sw_event_name
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


typedef struct {
    size_t       len;
    const char  *name;
    ngx_uint_t   key;
} ngx_http_dsm_key_t;


#define dsm_key(s, k)  { sizeof(s) - 1, s, k }

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_top[] = {
    dsm_key("model", key_model),
    dsm_key("usage", key_usage),
    dsm_key("choices", key_choices),
    dsm_key("error", key_error),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_choice[] = {
    dsm_key("delta", key_delta),
    dsm_key("finish_reason", key_finish),
    dsm_key("message", key_delta),
    dsm_key("text", key_content),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_delta[] = {
    dsm_key("content", key_content),
    dsm_key("reasoning_content", key_reasoning),
    dsm_key("tool_calls", key_tool_calls),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_usage[] = {
    dsm_key("prompt_tokens", key_u + u_prompt),
    dsm_key("completion_tokens", key_u + u_completion),
    dsm_key("total_tokens", key_u + u_total),
    dsm_key("prompt_cache_hit_tokens", key_u + u_hit),
    dsm_key("prompt_cache_miss_tokens", key_u + u_miss),
    dsm_key("completion_tokens_details", key_ctd),
    dsm_key("prompt_tokens_details", key_ptd),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_ctd[] = {
    dsm_key("reasoning_tokens", key_u + u_reasoning),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_ptd[] = {
    dsm_key("cached_tokens", key_u + u_cached),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_a_top[] = {
    dsm_key("model", key_model),
    dsm_key("usage", key_a_usage),
    dsm_key("delta", key_a_block),
    dsm_key("content", key_a_content),
    dsm_key("message", key_a_message),
    dsm_key("stop_reason", key_stop),
    dsm_key("content_block", key_a_block),
    dsm_key("error", key_error),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_a_message[] = {
    dsm_key("model", key_model),
    dsm_key("usage", key_a_usage),
    dsm_key("content", key_a_content),
    dsm_key("stop_reason", key_stop),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_a_usage[] = {
    dsm_key("input_tokens", key_u + u_input),
    dsm_key("output_tokens", key_u + u_output),
    dsm_key("cache_read_input_tokens", key_u + u_cache_read),
    dsm_key("cache_creation_input_tokens", key_u + u_cache_creation),
    { 0, NULL, 0 }
};

static const ngx_http_dsm_key_t  ngx_http_dsm_keys_a_block[] = {
    dsm_key("text", key_content),
    dsm_key("type", key_a_type),
    dsm_key("thinking", key_reasoning),
    dsm_key("stop_reason", key_stop),
    dsm_key("partial_json", key_content),
    { 0, NULL, 0 }
};


static const ngx_http_dsm_key_t  *ngx_http_dsm_keys[k_last] = {
    NULL,                               /* k_other */
    ngx_http_dsm_keys_top,
    NULL,                               /* k_choices */
    ngx_http_dsm_keys_choice,
    ngx_http_dsm_keys_delta,
    ngx_http_dsm_keys_usage,
    ngx_http_dsm_keys_ctd,
    ngx_http_dsm_keys_ptd,
    ngx_http_dsm_keys_a_top,
    ngx_http_dsm_keys_a_message,
    ngx_http_dsm_keys_a_usage,
    NULL,                               /* k_a_blocks */
    ngx_http_dsm_keys_a_block
};


/* the kind of an object opened as the value of an action */
static const u_char  ngx_http_dsm_obj_kind[key_last] = {
    k_other,                            /* key_none */
    k_top,                              /* key_doc, k_a_top if Anthropic */
    k_other,                            /* key_model */
    k_usage,                            /* key_usage */
    k_other,                            /* key_choices */
    k_other,                            /* key_error */
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
    k_other, k_other, k_other, k_other, k_other, k_other,
    k_other, k_other, k_other, k_other, k_other
};


/* the action for the elements of an array of a kind */
static const u_char  ngx_http_dsm_elem_key[k_last] = {
    key_none, key_none, key_choice, key_none, key_none, key_none, key_none,
    key_none, key_none, key_none, key_none, key_a_block, key_none
};


static const char  *ngx_http_dsm_lits[] = { "null", "true", "false" };
static const size_t  ngx_http_dsm_lit_len[] = { 4, 4, 5 };


#define dsm_ws(ch)  ((ch) == ' ' || (ch) == '\n' || (ch) == '\r'             \
                     || (ch) == '\t')

#define dsm_kind(p)                                                          \
    (((p)->depth && (p)->depth <= NGX_HTTP_DSM_PARSE_KINDS)                  \
     ? (ngx_uint_t) (p)->kind[(p)->depth - 1] : (ngx_uint_t) k_other)

#define dsm_is_array(p)  (((p)->arrays >> ((p)->depth - 1)) & 1)

#define dsm_streq(s, l, lit)                                                 \
    ((l) == sizeof(lit) - 1 && ngx_memcmp(s, lit, sizeof(lit) - 1) == 0)


static u_char *ngx_http_dsm_json(ngx_http_deepseek_metrics_parse_t *p,
    u_char *pos, u_char *last);
static ngx_int_t ngx_http_dsm_sse(ngx_http_deepseek_metrics_parse_t *p,
    u_char *pos, u_char *last);
static u_char *ngx_http_dsm_str_end(ngx_http_deepseek_metrics_parse_t *p,
    u_char *pos, u_char *last);
static ngx_uint_t ngx_http_dsm_key(ngx_uint_t kind, u_char *k, size_t len);
static void ngx_http_dsm_append(ngx_http_deepseek_metrics_parse_t *p,
    u_char *pos, u_char *last);
static void ngx_http_dsm_enum(ngx_http_deepseek_metrics_parse_t *p);
static void ngx_http_dsm_token(ngx_http_deepseek_metrics_parse_t *p,
    ngx_uint_t answer);
static void ngx_http_dsm_commit(ngx_http_deepseek_metrics_parse_t *p);
static uint64_t ngx_http_dsm_add(uint64_t a, uint64_t b);


void
ngx_http_deepseek_metrics_parse_init(ngx_http_deepseek_metrics_parse_t *p,
    ngx_uint_t mode)
{
    ngx_memzero(p, sizeof(ngx_http_deepseek_metrics_parse_t));

    p->mode = mode;
    p->state = sw_line;
    p->jstate = sw_j_doc;
}


ngx_int_t
ngx_http_deepseek_metrics_parse(ngx_http_deepseek_metrics_parse_t *p,
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

    if (p->mode & NGX_HTTP_DSM_PARSE_MODE_SSE) {
        return ngx_http_dsm_sse(p, pos, last);
    }

    if (ngx_http_dsm_json(p, pos, last) == NULL) {
        return NGX_ERROR;
    }

    if (p->jstate == sw_j_end) {
        p->done = 1;
        return NGX_DONE;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_deepseek_metrics_parse_outcome(ngx_http_deepseek_metrics_parse_t *p)
{
    if (p->invalid) {
        return NGX_HTTP_DSM_OUTCOME_INVALID_JSON;
    }

    if (p->error) {
        return NGX_HTTP_DSM_OUTCOME_ERROR_BODY;
    }

    if (p->finish_reason == NGX_HTTP_DSM_FINISH_CONTENT_FILTER) {
        return NGX_HTTP_DSM_OUTCOME_CONTENT_FILTER;
    }

    if (p->finish_reason == NGX_HTTP_DSM_FINISH_INSUFFICIENT) {
        return NGX_HTTP_DSM_OUTCOME_INSUFFICIENT;
    }

    if (!p->done) {
        return p->events ? NGX_HTTP_DSM_OUTCOME_TRUNCATED
                         : NGX_HTTP_DSM_OUTCOME_QUEUE_TIMEOUT;
    }

    if (!p->has_content) {
        return NGX_HTTP_DSM_OUTCOME_EMPTY_RESPONSE;
    }

    return NGX_HTTP_DSM_OUTCOME_COMPLETE;
}


static ngx_int_t
ngx_http_dsm_sse(ngx_http_deepseek_metrics_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char      ch, *q, *end;
    const char  *pat;

    for ( ;; ) {

        if (pos >= last) {
            return NGX_OK;
        }

        ch = *pos;

        switch (p->state) {

        case sw_line:

            if (ch == 'd') {
                if (last - pos >= 5 && ngx_memcmp(pos, "data:", 5) == 0) {
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
                    goto invalid;
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
                goto invalid;
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

            goto invalid;

        case sw_data_json:
            q = memchr(pos, '\n', last - pos);
            end = q ? q + 1 : last;

            pos = ngx_http_dsm_json(p, pos, end);

            if (pos == NULL) {
                return NGX_ERROR;
            }

            if (p->jstate == sw_j_end) {
                p->in_doc = 0;
                p->doc_done = 1;
                p->state = sw_data_tail;
                break;
            }

            if (q) {
                if (p->jstate >= sw_j_key_str) {
                    /* a line break inside a string */
                    goto invalid;
                }

                p->state = sw_line;
            }

            break;

        case sw_data_tail:

            if (ch == ' ' || ch == '\t' || ch == '\r') {
                pos++;
                break;
            }

            if (ch == '\n') {
                pos++;
                p->state = sw_line;
                break;
            }

            goto invalid;

        case sw_done_match:

            if (ch != (u_char) "[DONE]"[p->idx]) {
                goto invalid;
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
    }

invalid:

    p->invalid = 1;
    return NGX_ERROR;
}


/*
 * Scans JSON in [pos, last).  Returns the position after the byte that
 * closed the top-level value (jstate == sw_j_end), or last, or NULL if
 * the input is invalid.
 */

static u_char *
ngx_http_dsm_json(ngx_http_deepseek_metrics_parse_t *p, u_char *pos,
    u_char *last)
{
    u_char      ch, *q;
    size_t      n;
    uint64_t    v;
    ngx_uint_t  state, kind, d;

    state = p->jstate;

    while (pos < last) {

        ch = *pos;

        switch (state) {

        case sw_j_doc:

            if (dsm_ws(ch)) {
                pos++;
                break;
            }

            if (ch != '{' && ch != '[') {
                goto invalid;
            }

            p->first_data = 1;
            p->events = 1;
            p->key = key_doc;

            /* fall through */

        case sw_j_value:

            switch (ch) {

            case '"':
                pos++;
                p->esc = 0;

                switch (p->key) {

                case key_model:
                    state = p->model_set ? sw_j_str_skip : sw_j_str_model;
                    break;

                case key_content:
                case key_reasoning:
                    state = sw_j_str_first;
                    break;

                case key_finish:
                case key_stop:
                case key_a_type:
                    p->klen = 0;
                    state = sw_j_str_enum;
                    break;

                case key_error:
                    p->error = 1;

                    /* fall through */

                default:
                    state = sw_j_str_skip;
                }

                break;

            case '{':
            case '[':
                pos++;
                d = ++p->depth;

                if (d > NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
                    p->too_deep = 1;
                    state = sw_j_deep;
                    break;
                }

                if (ch == '{') {
                    p->arrays &= ~((uint64_t) 1 << (d - 1));
                    kind = ngx_http_dsm_obj_kind[p->key];

                    if (p->key == key_doc
                        && (p->mode & NGX_HTTP_DSM_PARSE_MODE_ANTHROPIC))
                    {
                        kind = k_a_top;

                    } else if (p->key == key_usage) {
                        p->umask = 0;

                    } else if (p->key == key_error) {
                        p->error = 1;
                    }

                    state = sw_j_obj_start;

                } else {
                    p->arrays |= (uint64_t) 1 << (d - 1);

                    if (p->key == key_choices) {
                        kind = k_choices;

                    } else if (p->key == key_a_content) {
                        kind = k_a_blocks;

                    } else {
                        kind = k_other;
                    }

                    state = (p->key == key_tool_calls) ? sw_j_tools
                                                       : sw_j_arr_start;
                    p->key = ngx_http_dsm_elem_key[kind];
                }

                if (d <= NGX_HTTP_DSM_PARSE_KINDS) {
                    p->kind[d - 1] = (u_char) kind;
                }

                break;

            case 'n':
            case 't':
            case 'f':
                p->lit = (ch == 'n') ? 0 : (ch == 't') ? 1 : 2;
                n = ngx_http_dsm_lit_len[p->lit];

                if ((size_t) (last - pos) >= n
                    && ngx_memcmp(pos, ngx_http_dsm_lits[p->lit], n) == 0)
                {
                    pos += n;
                    state = sw_j_after;
                    break;
                }

                p->idx = 1;
                pos++;
                state = sw_j_lit;
                break;

            case ' ':
            case '\n':
            case '\r':
            case '\t':
                pos++;
                break;

            default:

                if ((ch < '0' || ch > '9') && ch != '-') {
                    goto invalid;
                }

                p->num = 0;
                p->num_bad = 0;
                p->slot = p->key - key_u;
                state = sw_j_num;
            }

            break;

        case sw_j_obj_start:

            if (ch == '}') {
                goto close;
            }

            /* fall through */

        case sw_j_key:

            if (ch == '"') {
                pos++;
                p->esc = 0;
                p->klen = 0;
                state = sw_j_key_str;
                break;
            }

            if (dsm_ws(ch)) {
                pos++;
                break;
            }

            goto invalid;

        case sw_j_key_str:
            kind = dsm_kind(p);
            q = ngx_http_dsm_str_end(p, pos, last);

            if (q == NULL) {
                if (kind != k_other) {
                    ngx_http_dsm_append(p, pos, last);
                }

                pos = last;
                break;
            }

            if (kind == k_other) {
                p->key = key_none;

            } else if (p->klen == 0) {
                p->key = ngx_http_dsm_key(kind, pos, q - pos);

            } else {
                ngx_http_dsm_append(p, pos, q);
                p->key = ngx_http_dsm_key(kind, p->kbuf, p->klen);
            }

            pos = q + 1;

            if (pos < last && *pos == ':') {
                pos++;
                state = sw_j_value;
                break;
            }

            state = sw_j_colon;
            break;

        case sw_j_colon:

            if (ch == ':') {
                pos++;
                state = sw_j_value;
                break;
            }

            if (dsm_ws(ch)) {
                pos++;
                break;
            }

            goto invalid;

        case sw_j_after:

            if (ch == ',') {
                pos++;

                if (dsm_is_array(p)) {
                    p->key = ngx_http_dsm_elem_key[dsm_kind(p)];
                    state = sw_j_value;
                    break;
                }

                state = sw_j_key;
                break;
            }

            if (ch == '}' || ch == ']') {
                goto close;
            }

            if (dsm_ws(ch)) {
                pos++;
                break;
            }

            goto invalid;

        case sw_j_tools:

            if (dsm_ws(ch)) {
                pos++;
                break;
            }

            if (ch != ']') {
                ngx_http_dsm_token(p, 1);
            }

            /* fall through */

        case sw_j_arr_start:

            if (ch == ']') {
                goto close;
            }

            if (dsm_ws(ch)) {
                pos++;
                break;
            }

            state = sw_j_value;
            break;

        case sw_j_str_skip:
            q = ngx_http_dsm_str_end(p, pos, last);

            if (q == NULL) {
                pos = last;
                break;
            }

            pos = q + 1;
            state = sw_j_after;
            break;

        case sw_j_str_first:

            if (ch == '"') {
                pos++;
                state = sw_j_after;
                break;
            }

            ngx_http_dsm_token(p, p->key == key_content);
            state = sw_j_str_skip;
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
                pos = last;
                break;
            }

            p->model_set = 1;
            pos = q + 1;

            if (p->mode & NGX_HTTP_DSM_PARSE_MODE_REQUEST) {
                p->jstate = sw_j_end;
                return pos;
            }

            state = sw_j_after;
            break;

        case sw_j_str_enum:
            q = ngx_http_dsm_str_end(p, pos, last);

            ngx_http_dsm_append(p, pos, q ? q : last);

            if (q == NULL) {
                pos = last;
                break;
            }

            ngx_http_dsm_enum(p);
            pos = q + 1;
            state = sw_j_after;
            break;

        case sw_j_num:
            v = p->num;

            for ( ;; ) {
                d = (ngx_uint_t) (ch - '0');

                if (d <= 9) {
                    if (v > (uint64_t) 1844674407370955161ULL
                        || (v == (uint64_t) 1844674407370955161ULL && d > 5))
                    {
                        v = (uint64_t) -1;

                    } else {
                        v = v * 10 + d;
                    }

                } else if (ch == '.' || ch == 'e' || ch == 'E' || ch == '-'
                           || ch == '+')
                {
                    p->num_bad = 1;

                } else {
                    break;
                }

                if (++pos == last) {
                    break;
                }

                ch = *pos;
            }

            p->num = v;

            if (pos == last) {
                break;
            }

            if (p->slot < NGX_HTTP_DSM_USAGE_NFIELDS && !p->num_bad) {
                p->u[p->slot] = v;
                p->umask |= (ngx_uint_t) 1 << p->slot;
            }

            state = sw_j_after;
            break;

        case sw_j_lit:

            if (ch != (u_char) ngx_http_dsm_lits[p->lit][p->idx]) {
                goto invalid;
            }

            pos++;

            if (++p->idx == ngx_http_dsm_lit_len[p->lit]) {
                state = sw_j_after;
            }

            break;

        case sw_j_deep:

            for ( ;; ) {
                if (ch == '"') {
                    pos++;
                    p->esc = 0;
                    state = sw_j_deep_str;
                    break;
                }

                if (ch == '{' || ch == '[') {
                    p->depth++;

                } else if (ch == '}' || ch == ']') {
                    if (--p->depth == NGX_HTTP_DSM_PARSE_MAX_DEPTH) {
                        pos++;
                        state = sw_j_after;
                        break;
                    }
                }

                if (++pos == last) {
                    break;
                }

                ch = *pos;
            }

            break;

        case sw_j_deep_str:
            q = ngx_http_dsm_str_end(p, pos, last);

            if (q == NULL) {
                pos = last;
                break;
            }

            pos = q + 1;
            state = sw_j_deep;
            break;

        case sw_j_end:
            p->jstate = state;
            return pos;
        }

        continue;

    close:

        /* ch is '}' or ']' closing the current level */

        if (dsm_is_array(p) != (ngx_uint_t) (ch == ']')) {
            goto invalid;
        }

        kind = dsm_kind(p);

        if (kind == k_usage || kind == k_a_usage) {
            ngx_http_dsm_commit(p);
        }

        pos++;

        if (--p->depth == 0) {
            p->jstate = sw_j_end;
            return pos;
        }

        state = sw_j_after;
    }

    p->jstate = state;
    return pos;

invalid:

    p->invalid = 1;
    return NULL;
}


/*
 * Finds the closing quote of a string in [pos, last), honouring
 * backslash escapes, with p->esc carrying an escape across buffers.
 */

static u_char *
ngx_http_dsm_str_end(ngx_http_deepseek_metrics_parse_t *p, u_char *pos,
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


static ngx_uint_t
ngx_http_dsm_key(ngx_uint_t kind, u_char *k, size_t len)
{
    const ngx_http_dsm_key_t  *e;

    e = ngx_http_dsm_keys[kind];

    if (e == NULL) {
        return key_none;
    }

    for ( /* void */ ; e->len; e++) {
        if (e->len == len && e->name[0] == (char) k[0]
            && ngx_memcmp(e->name, k, len) == 0)
        {
            return e->key;
        }
    }

    return key_none;
}


static void
ngx_http_dsm_append(ngx_http_deepseek_metrics_parse_t *p, u_char *pos,
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
ngx_http_dsm_enum(ngx_http_deepseek_metrics_parse_t *p)
{
    u_char      *s;
    size_t       l;
    ngx_uint_t   f;

    s = p->kbuf;
    l = p->klen;

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
ngx_http_dsm_token(ngx_http_deepseek_metrics_parse_t *p, ngx_uint_t answer)
{
    p->first_token = 1;
    p->has_content = 1;

    if (answer) {
        p->first_answer = 1;
    }
}


static void
ngx_http_dsm_commit(ngx_http_deepseek_metrics_parse_t *p)
{
    uint64_t    *u, prompt, completion, total, hit, miss, reasoning;
    ngx_uint_t   m;

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


static uint64_t
ngx_http_dsm_add(uint64_t a, uint64_t b)
{
    return (a + b < a) ? (uint64_t) -1 : a + b;
}
