#!/usr/bin/env node
// deepseek-mock.js - a mock DeepSeek API upstream for the test suite.
// Node 20, built-in modules only (http, zlib). No npm dependencies.
//
// Start:  node t/mock/deepseek-mock.js --port P [--host 127.0.0.1]
//         --port 0 picks a free port. The mock always prints "LISTENING <port>"
//         on stdout once it accepts connections. SIGTERM/SIGINT: graceful exit
//         (listener closed, open sockets destroyed, exit code 0).
//
// ROUTES (matched by path SUFFIX, query string ignored, so any prefix works:
// /v1/chat/completions, /beta/chat/completions, /deepseek/v1/chat/completions):
//   .../chat/completions   chat (OpenAI format)       object chat.completion[.chunk]
//   .../completions        FIM (/beta/completions)    object text_completion, choices[].text
//   .../models             GET model list
//   .../user/balance       GET balance
//   .../messages           Anthropic Messages format (/anthropic/v1/messages)
//   /__mock/stats          GET JSON {"total":N,"connections":N,"paths":{"/chat/completions":N,...},
//                          "last":[{method,path,headers,body}]} (last 50 requests; connections =
//                          TCP connections accepted, for upstream keepalive checks)
//   /__mock/reset          zero the stats
//   anything else          404 DeepSeek-style error (unless X-Mock as=KIND is given)
// Every response carries an `x-ds-trace-id` header. Connection keep-alive is
// supported (keepAliveTimeout 120 s, so nginx upstream keepalive never races it).
//
// STREAMING: a JSON request body with "stream": true gives SSE
// (Content-Type: text/event-stream; charset=utf-8), otherwise a JSON body.
// Plain JSON responses carry Content-Length unless a timing/shaping key is used
// (keepalive_ms, delay_ms, split, truncate_*, size, chunked=1): then the body is
// chunked (HTTP/1.1 request) or close-delimited (HTTP/1.0 request, nginx's default).
//
// Chat SSE stream layout (DeepSeek's):
//   [": keep-alive\n\n" comments during keepalive_ms]
//   data: {first chunk: delta {"role":"assistant","content":""}          (non-reasoner)
//                       delta {"role":"assistant","content":null,"reasoning_content":""} (reasoner)}
//   data: {delta {"content":null,"reasoning_content":"..."}}   x reasoning_chunks
//   data: {delta {"content":"..."}}                            x chunks
//      (or tool call deltas with tool_calls=1)
//   data: {delta {"content":""}, finish_reason, "usage":{...}} (usage only here; "usage":null before)
//   [data: {"choices":[],"usage":{...}}  with usage_only_chunk=1; then the finish chunk has usage null]
//   data: [DONE]
// Each event ends with a blank line ("\n\n", or "\r\n\r\n" with crlf=1).
//
// DETERMINISTIC DEFAULTS (tests compute exact sums from these):
//   prompt=20 hit=8 miss=prompt-hit (=12) completion=30 total=prompt+completion (=50)
//   reasoning=0, except models matching /reasoner/ : reasoning=12 (part of completion)
//   reasoning_chunks=0, except models matching /reasoner/ : 2 (text "Let me think.")
//   content="Hello! How can I help you today?" chunks=3 (content split in 3 nearly equal parts;
//      extra chunks beyond the content length carry ".")
//   model = the request's "model" (JSON body) or "deepseek-flash" when absent
//   empty=1 makes completion default 0
//   keepalive_every_ms=200, split_delay_ms=30, delay_ms=0
//   Anthropic usage: input_tokens=miss, cache_read_input_tokens=hit, output_tokens=completion
//      (cache_creation=N: cache_creation_input_tokens=N and input_tokens=miss-N; both are misses)
//
// SCENARIO CONTROL: request header  X-Mock: key=value;key=value;...
// (values are percent-decoded, so content=a%3Bb gives "a;b"). Keys:
//   status=N          error status (400 401 402 422 429 500 503, any other N allowed) with
//                     DeepSeek body {"error":{"message","type","param":null,"code"}}
//                     (Anthropic paths: {"type":"error","error":{"type","message"}}).
//                     status=200 is the normal answer.
//   prompt=N hit=N miss=N completion=N reasoning=N   usage numbers
//   no_miss=1         omit prompt_cache_miss_tokens     cached_null=1  prompt_tokens_details.cached_tokens=null
//   no_usage=1        no usage at all (null everywhere)  usage_first=1 JSON: usage before choices
//   content=TEXT chunks=N reasoning_chunks=N reasoning_text=TEXT
//   keepalive_ms=N    send keep-alive comments (SSE) / "\n" lines (JSON) for N ms before the first
//                     data event (first one immediately); keepalive_every_ms=N interval
//   delay_ms=N        sleep between data events
//   crlf=1            CRLF line endings in SSE
//   split=a,b,c       write the exact response BODY in pieces cut at these byte offsets (each piece
//                     one TCP write, split_delay_ms=N between, default 30). In split mode the whole
//                     body is generated first (delay_ms/keepalive timing ignored, keep-alive comments
//                     are still included: count = ceil(keepalive_ms/keepalive_every_ms)).
//   split_every=N     cut every N bytes (same rules as split)
//   truncate_after=N  close the connection abruptly after N body bytes (no terminating chunk)
//   truncate_events=N close abruptly after N complete data events (comments do not count)
//   queue_timeout_ms=N  200 + keep-alive comments (SSE) / "\n" (JSON) for N ms, then end the body
//                     cleanly with no data and close (DeepSeek's 10-minute queue limit).
//                     queue_abort=1: close abruptly instead of ending cleanly.
//   finish=stop|length|content_filter|insufficient_system_resource|tool_calls
//   empty=1           complete answer without any content/reasoning/tool_calls
//   tool_calls=1      answer with a tool call (finish_reason tool_calls by default)
//   gzip=1            Content-Encoding: gzip regardless of Accept-Encoding (streamed with sync
//                     flushes; split/truncate_* apply to the compressed bytes)
//   usage_only_chunk=1  trailing chunk {"choices":[],"usage":{...}} before [DONE]
//   no_done=1         end the stream cleanly without "data: [DONE]"
//   model=NAME        served model in the response    no_model=1  omit "model" in the response
//   sleep_ms=N        sleep before sending the response headers (504 tests)
//   size=N            body of about N bytes (content generated lazily in 1000-char pieces,
//                     never held in memory; SSE and JSON)
//   hang=1            never respond (socket kept until the client closes it)
//   stream=0|1        override the request body's "stream"
//   as=chat|fim|models|balance|messages   force the route kind
//   pause_after=N pause_ms=M   SSE: pause M ms after the Nth data event (a mid-stream stall);
//                     pause_keepalives=1 sends ": keep-alive" comments every keepalive_every_ms
//                     during the pause (DeepSeek's behaviour while it is busy)
// BALANCE (GET .../user/balance; DeepSeek's body, amounts as JSON strings):
//   balance_currency=CNY balance_total=110.00 balance_granted=10.00 balance_topped_up=100.00
//                     (values inserted as given, still JSON strings)
//   balance_available=0|1 (default 1)   balance_extra=CUR:TOTAL:GRANTED:TOPPED (a second info)
//   balance_empty=1   "balance_infos":[]     balance_pad=N  an extra "pad" member of N bytes first
//   chunked=1         JSON without Content-Length      close=1   Connection: close
//   ctype=TYPE        override Content-Type           trace_id=ID  fixed x-ds-trace-id
//   raw=BASE64        send exactly these bytes as the whole response (status line, headers and
//                     body: invalid framing, hostile bodies), then close the connection
'use strict';

const http = require('http');
const zlib = require('zlib');

// ---------------------------------------------------------------- arguments
let port = 0, host = '127.0.0.1';
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--port') port = parseInt(process.argv[++i], 10);
  else if (a === '--host') host = process.argv[++i];
  else if (a === '--help' || a === '-h') {
    process.stdout.write('usage: node deepseek-mock.js --port P [--host H]\n');
    process.exit(0);
  } else { process.stderr.write(`deepseek-mock: unknown argument ${a}\n`); process.exit(2); }
}

// ---------------------------------------------------------------- stats
let stats = { total: 0, connections: 0, paths: {}, last: [] };
let traceSeq = 0;
const sockets = new Set();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class Aborted extends Error {}

function parseMock(h) {
  const o = {};
  if (!h) return o;
  for (const part of String(h).split(';')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    const k = (eq < 0 ? p : p.slice(0, eq)).trim();
    let v = eq < 0 ? '1' : p.slice(eq + 1).trim();
    try { v = decodeURIComponent(v); } catch (e) { /* keep raw */ }
    o[k] = v;
  }
  return o;
}

const num = (v, d) => (v === undefined || v === '' || isNaN(Number(v)) ? d : Number(v));
const flag = (v) => v !== undefined && v !== '0' && v !== 'false' && v !== '';

function routeKind(path) {
  if (path.endsWith('/chat/completions')) return 'chat';
  if (path.endsWith('/completions')) return 'fim';
  if (path.endsWith('/models')) return 'models';
  if (path.endsWith('/user/balance')) return 'balance';
  if (path.endsWith('/messages')) return 'messages';
  return null;
}

const ERRORS = {
  400: ['Invalid request: the model does not exist or the request body is malformed', 'invalid_request_error', 'invalid_request_error'],
  401: ['Authentication Fails, Your api key: ****mock is invalid', 'authentication_error', 'invalid_request_error'],
  402: ['Insufficient Balance', 'unknown_error', 'invalid_request_error'],
  404: ['Not Found', 'invalid_request_error', 'not_found'],
  422: ['Invalid Parameters', 'invalid_request_error', 'invalid_request_error'],
  429: ['Rate Limit Reached', 'rate_limit_error', 'rate_limit_exceeded'],
  500: ['Server Error', 'api_error', 'server_error'],
  503: ['Server Overloaded', 'service_unavailable_error', 'server_overloaded'],
};
const ANTHROPIC_ERR = {
  400: 'invalid_request_error', 401: 'authentication_error', 402: 'billing_error',
  403: 'permission_error', 404: 'not_found_error', 422: 'invalid_request_error',
  429: 'rate_limit_error', 500: 'api_error', 503: 'overloaded_error',
};

function errorBody(status, kind) {
  const e = ERRORS[status] || [`Mock error ${status}`, 'api_error', String(status)];
  if (kind === 'messages') {
    return JSON.stringify({ type: 'error', error: { type: ANTHROPIC_ERR[status] || 'api_error', message: e[0] } });
  }
  return JSON.stringify({ error: { message: e[0], type: e[1], param: null, code: e[2] } });
}

function splitText(text, n) {
  const cp = Array.from(text);
  const out = [];
  if (n <= 0) return out;
  const base = Math.floor(cp.length / n), extra = cp.length % n;
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const len = base + (i < extra ? 1 : 0);
    const piece = cp.slice(pos, pos + len).join('');
    pos += len;
    out.push(piece === '' ? '.' : piece);
  }
  return out;
}

const FILLER = ('The quick brown fox jumps over the lazy dog. ').repeat(23).slice(0, 1000);

// ---------------------------------------------------------------- scenario
function scenario(m, reqBody, kind) {
  const model = reqBody && typeof reqBody.model === 'string' ? reqBody.model : 'deepseek-flash';
  const served = m.model !== undefined ? m.model : model;
  const reasoner = /reasoner/i.test(served) || /reasoner/i.test(model);
  const empty = flag(m.empty);
  const prompt = num(m.prompt, 20);
  const hit = num(m.hit, 8);
  const miss = num(m.miss, prompt - hit);
  const completion = num(m.completion, empty ? 0 : 30);
  const reasoning = num(m.reasoning, reasoner ? 12 : 0);
  const cacheCreation = Math.min(num(m.cache_creation, 0), miss);
  let stream = !!(reqBody && reqBody.stream === true);
  if (m.stream !== undefined) stream = flag(m.stream);
  const s = {
    kind, stream, model: served, noModel: flag(m.no_model), reasoner, empty,
    toolCalls: flag(m.tool_calls) && !empty,
    content: m.content !== undefined ? m.content : 'Hello! How can I help you today?',
    chunks: Math.max(0, num(m.chunks, 3)),
    reasoningChunks: empty ? 0 : Math.max(0, num(m.reasoning_chunks, reasoner ? 2 : 0)),
    reasoningText: m.reasoning_text !== undefined ? m.reasoning_text : 'Let me think.',
    keepaliveMs: num(m.keepalive_ms, 0), keepaliveEvery: Math.max(1, num(m.keepalive_every_ms, 200)),
    delayMs: num(m.delay_ms, 0), crlf: flag(m.crlf),
    pauseAfter: num(m.pause_after, 0), pauseMs: num(m.pause_ms, 0), pauseKeepalives: flag(m.pause_keepalives),
    finish: m.finish || (flag(m.tool_calls) && !empty ? 'tool_calls' : 'stop'),
    usageOnly: flag(m.usage_only_chunk), noDone: flag(m.no_done), noUsage: flag(m.no_usage),
    usageFirst: flag(m.usage_first), size: num(m.size, 0),
    usage: {
      prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: flag(m.cached_null) ? null : hit },
      completion_tokens_details: { reasoning_tokens: reasoning },
      prompt_cache_hit_tokens: hit,
    },
    anthropicUsage: { input_tokens: miss - cacheCreation, cache_creation_input_tokens: cacheCreation,
                      cache_read_input_tokens: hit, output_tokens: completion },
    id: 'mock-' + (++traceSeq).toString(16).padStart(8, '0') + '-' + Date.now().toString(16),
    created: Math.floor(Date.now() / 1000),
  };
  if (!flag(m.no_miss)) s.usage.prompt_cache_miss_tokens = miss;
  return s;
}

// An async generator of body items: Buffers/strings (bytes), {sleep: ms}, {event: true}
// (marks the end of a complete data event, for truncate_events).
function* keepalives(s, nl, isJson) {
  if (s.keepaliveMs <= 0) return;
  const n = Math.max(1, Math.ceil(s.keepaliveMs / s.keepaliveEvery));
  for (let i = 0; i < n; i++) {
    yield isJson ? '\n' : ': keep-alive' + nl + nl;
    yield { sleep: Math.min(s.keepaliveEvery, s.keepaliveMs - i * s.keepaliveEvery) };
  }
}

// a mid-stream pause; keep-alive comments during it with pause_keepalives=1
function* pause(s, nl) {
  if (!s.pauseKeepalives) { yield { sleep: s.pauseMs }; return; }
  for (let t = 0; t < s.pauseMs; t += s.keepaliveEvery) {
    yield { sleep: Math.min(s.keepaliveEvery, s.pauseMs - t) };
    yield ': keep-alive' + nl + nl;
  }
}

function* contentPieces(s) {
  if (s.size > 0) {
    // lazily generated filler of about s.size bytes (stream: one event per piece)
    const per = s.stream ? 1280 : 1000; // approx bytes per SSE event / JSON piece
    const n = Math.max(1, Math.ceil(s.size / per));
    for (let i = 0; i < n; i++) yield FILLER;
    return;
  }
  yield* splitText(s.content, s.chunks);
}

function chatChunk(s, delta, finish, usage, choicesEmpty) {
  const o = { id: s.id, object: 'chat.completion.chunk', created: s.created };
  if (!s.noModel) o.model = s.model;
  o.system_fingerprint = 'fp_mock_prod0820_fp8_kvcache';
  o.choices = choicesEmpty ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish }];
  o.usage = usage;
  return o;
}

function fimChunk(s, text, finish, usage, choicesEmpty) {
  const o = { id: s.id, object: 'text_completion', created: s.created };
  if (!s.noModel) o.model = s.model;
  o.system_fingerprint = 'fp_mock_prod0820_fp8_kvcache';
  o.choices = choicesEmpty ? [] : [{ text, index: 0, logprobs: null, finish_reason: finish }];
  o.usage = usage;
  return o;
}

function* sseBody(s) {
  const nl = s.crlf ? '\r\n' : '\n';
  let nev = 0;
  const ev = function* (obj) {
    yield 'data: ' + (typeof obj === 'string' ? obj : JSON.stringify(obj)) + nl + nl;
    if (++nev === s.pauseAfter && s.pauseMs > 0) yield* pause(s, nl);
  };
  const gap = function* () { if (s.delayMs > 0) yield { sleep: s.delayMs }; };
  yield* keepalives(s, nl, false);
  const usage = s.noUsage ? null : s.usage;
  if (s.kind === 'messages') { yield* anthropicSse(s, nl); return; }
  const mk = s.kind === 'fim'
    ? (d, f, u, e) => fimChunk(s, d === null ? '' : (d.content || ''), f, u, e)
    : (d, f, u, e) => chatChunk(s, d, f, u, e);
  if (s.kind === 'chat') {
    yield* ev(mk(s.reasoner ? { role: 'assistant', content: null, reasoning_content: '' } : { role: 'assistant', content: '' }, null, null));
    yield { event: true };
    yield* gap();
    for (const p of splitText(s.reasoningText, s.reasoningChunks)) {
      yield* ev(mk({ content: null, reasoning_content: p }, null, null));
      yield { event: true };
      yield* gap();
    }
  }
  if (s.toolCalls && s.kind === 'chat') {
    const tc = [
      { tool_calls: [{ index: 0, id: 'call_00_mock', type: 'function', function: { name: 'get_weather', arguments: '' } }] },
      { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] },
      { tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] },
    ];
    for (const d of tc) { yield* ev(mk(Object.assign({ content: null }, d), null, null)); yield { event: true }; yield* gap(); }
  } else if (!s.empty) {
    for (const p of contentPieces(s)) {
      yield* ev(mk({ content: p }, null, null));
      yield { event: true };
      yield* gap();
    }
  }
  yield* ev(mk({ content: '' }, s.finish, s.usageOnly ? null : usage));
  yield { event: true };
  if (s.usageOnly) { yield* gap(); yield* ev(mk(null, null, usage, true)); yield { event: true }; }
  if (!s.noDone) { yield* gap(); yield* ev('[DONE]'); yield { event: true }; }
}

function* anthropicSse(s, nl) {
  const ev = (type, obj) => 'event: ' + type + nl + 'data: ' + JSON.stringify(obj) + nl + nl;
  const gap = function* () { if (s.delayMs > 0) yield { sleep: s.delayMs }; };
  const msg = { id: 'msg_' + s.id, type: 'message', role: 'assistant' };
  if (!s.noModel) msg.model = s.model;
  Object.assign(msg, { content: [], stop_reason: null, stop_sequence: null,
    usage: s.noUsage ? null : Object.assign({}, s.anthropicUsage, { output_tokens: 0 }) });
  yield ev('message_start', { type: 'message_start', message: msg });
  yield { event: true };
  let idx = 0;
  if (s.reasoningChunks > 0) {
    yield ev('content_block_start', { type: 'content_block_start', index: idx, content_block: { type: 'thinking', thinking: '' } });
    for (const p of splitText(s.reasoningText, s.reasoningChunks)) {
      yield* gap();
      yield ev('content_block_delta', { type: 'content_block_delta', index: idx, delta: { type: 'thinking_delta', thinking: p } });
      yield { event: true };
    }
    yield ev('content_block_stop', { type: 'content_block_stop', index: idx });
    idx++;
  }
  yield ev('ping', { type: 'ping' });
  if (s.toolCalls) {
    yield ev('content_block_start', { type: 'content_block_start', index: idx, content_block: { type: 'tool_use', id: 'toolu_mock', name: 'get_weather', input: {} } });
    for (const p of ['{"city":', '"Paris"}']) {
      yield* gap();
      yield ev('content_block_delta', { type: 'content_block_delta', index: idx, delta: { type: 'input_json_delta', partial_json: p } });
      yield { event: true };
    }
    yield ev('content_block_stop', { type: 'content_block_stop', index: idx });
  } else if (!s.empty) {
    yield ev('content_block_start', { type: 'content_block_start', index: idx, content_block: { type: 'text', text: '' } });
    for (const p of contentPieces(s)) {
      yield* gap();
      yield ev('content_block_delta', { type: 'content_block_delta', index: idx, delta: { type: 'text_delta', text: p } });
      yield { event: true };
    }
    yield ev('content_block_stop', { type: 'content_block_stop', index: idx });
  }
  yield* gap();
  const stop = { stop: 'end_turn', length: 'max_tokens', tool_calls: 'tool_use' }[s.finish] || s.finish;
  yield ev('message_delta', { type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null },
    usage: s.noUsage ? null : { output_tokens: s.anthropicUsage.output_tokens } });
  yield { event: true };
  if (!s.noDone) { yield ev('message_stop', { type: 'message_stop' }); yield { event: true }; }
}

function jsonEscapeInner(str) { const j = JSON.stringify(str); return j.slice(1, -1); }

function* jsonBody(s) {
  yield* keepalives(s, '\n', true);
  const MARK = '@@MOCK_CONTENT@@';
  const usage = s.noUsage ? null : s.usage;
  let o;
  if (s.kind === 'messages') {
    const content = [];
    if (s.reasoningChunks > 0) content.push({ type: 'thinking', thinking: s.reasoningText });
    if (s.toolCalls) content.push({ type: 'tool_use', id: 'toolu_mock', name: 'get_weather', input: { city: 'Paris' } });
    else if (!s.empty) content.push({ type: 'text', text: MARK });
    o = { id: 'msg_' + s.id, type: 'message', role: 'assistant' };
    if (!s.noModel) o.model = s.model;
    const stop = { stop: 'end_turn', length: 'max_tokens', tool_calls: 'tool_use' }[s.finish] || s.finish;
    Object.assign(o, { content, stop_reason: stop, stop_sequence: null, usage: s.noUsage ? null : s.anthropicUsage });
  } else {
    o = { id: s.id, object: s.kind === 'fim' ? 'text_completion' : 'chat.completion', created: s.created };
    if (!s.noModel) o.model = s.model;
    if (s.usageFirst) o.usage = usage;
    let choice;
    if (s.kind === 'fim') {
      choice = { index: 0, text: s.empty ? '' : MARK, logprobs: null, finish_reason: s.finish };
    } else {
      const msg = { role: 'assistant', content: s.empty ? '' : (s.toolCalls ? '' : MARK) };
      if (s.reasoningChunks > 0) msg.reasoning_content = s.reasoningText;
      if (s.toolCalls) msg.tool_calls = [{ index: 0, id: 'call_00_mock', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }];
      choice = { index: 0, message: msg, logprobs: null, finish_reason: s.finish };
    }
    o.choices = [choice];
    if (!s.usageFirst) o.usage = usage;
    o.system_fingerprint = 'fp_mock_prod0820_fp8_kvcache';
  }
  const text = JSON.stringify(o);
  const at = text.indexOf(MARK);
  if (at < 0) { yield text; yield { event: true }; return; }
  yield text.slice(0, at);
  if (s.size > 0) { for (const p of contentPieces(s)) { yield p; if (s.delayMs > 0) yield { sleep: s.delayMs }; } }
  else {
    const pieces = splitText(s.content, Math.max(1, s.chunks));
    for (let i = 0; i < pieces.length; i++) {
      yield jsonEscapeInner(s.chunks === 0 ? '' : pieces[i]);
      if (s.delayMs > 0 && i + 1 < pieces.length) yield { sleep: s.delayMs };
    }
  }
  yield text.slice(at + MARK.length);
  yield { event: true };
}

function* queueTimeoutBody(s, isJson) {
  const nl = s.crlf ? '\r\n' : '\n';
  yield* keepalives(Object.assign({}, s, { keepaliveMs: s.queueMs }), nl, isJson);
}

// ---------------------------------------------------------------- sending
async function sendItems(req, res, items, m) {
  const sock = req.socket;
  let dead = false;
  const onClose = () => { dead = true; };
  res.on('close', onClose);
  sock.setNoDelay(true);

  const truncAfter = m.truncate_after !== undefined ? num(m.truncate_after, -1) : -1;
  const truncEvents = m.truncate_events !== undefined ? num(m.truncate_events, -1) : -1;
  let cuts = null;
  if (m.split !== undefined) cuts = String(m.split).split(',').map((x) => parseInt(x, 10)).filter((x) => x > 0).sort((a, b) => a - b);
  const splitEvery = num(m.split_every, 0);
  const splitDelay = num(m.split_delay_ms, 30);
  const gzip = flag(m.gzip);
  let sent = 0, events = 0;

  const rawWrite = (buf) => new Promise((resolve) => {
    if (dead) throw new Aborted();
    if (res.write(buf)) resolve();
    else {
      const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
      res.on('drain', done); res.on('close', done);
    }
  });
  const abort = async () => {
    // abrupt close: no terminating chunk; give the kernel the bytes already written
    await sleep(20);
    sock.destroy();
    dead = true;
    throw new Aborted();
  };
  // body-level writer that honours truncate_after (on wire bytes, i.e. compressed with gzip=1)
  const bodyWrite = async (buf) => {
    if (dead) throw new Aborted();
    if (buf.length === 0) return;
    if (truncAfter >= 0 && sent + buf.length >= truncAfter) {
      const part = buf.subarray(0, truncAfter - sent);
      if (part.length) await rawWrite(part);
      sent += part.length;
      await abort();
    }
    await rawWrite(buf);
    sent += buf.length;
  };

  let gz = null;
  const out = [];
  if (gzip) {
    gz = zlib.createGzip();
    gz.on('data', (d) => out.push(d));
  }
  const gzPush = (buf) => new Promise((resolve) => { gz.write(buf); gz.flush(zlib.constants.Z_SYNC_FLUSH, resolve); });
  const drainGz = async () => { while (out.length) await emit(out.shift()); };
  const emit = async (buf) => { await bodyWrite(buf); };

  try {
    if (cuts || splitEvery > 0) {
      // generate the whole body (with gzip: compressed), then cut it at the offsets
      const parts = [];
      for (const it of items) {
        if (typeof it === 'string') parts.push(Buffer.from(it));
        else if (Buffer.isBuffer(it)) parts.push(it);
      }
      let body = Buffer.concat(parts);
      if (gzip) body = zlib.gzipSync(body);
      let offs = cuts || [];
      if (splitEvery > 0) { offs = []; for (let o = splitEvery; o < body.length; o += splitEvery) offs.push(o); }
      let prev = 0;
      for (const c of offs.concat([body.length])) {
        if (c <= prev || c > body.length) continue;
        await bodyWrite(body.subarray(prev, c));
        prev = c;
        if (prev < body.length && splitDelay > 0) await sleep(splitDelay);
      }
    } else {
      for (const it of items) {
        if (dead) throw new Aborted();
        if (it && it.sleep !== undefined) { if (it.sleep > 0) await sleep(it.sleep); continue; }
        if (it && it.event) {
          events++;
          if (truncEvents >= 0 && events >= truncEvents) { if (gz) await drainGz(); await abort(); }
          continue;
        }
        const buf = Buffer.isBuffer(it) ? it : Buffer.from(it);
        if (gz) { await gzPush(buf); await drainGz(); }
        else await emit(buf);
      }
      if (gz) {
        await new Promise((resolve) => { gz.on('end', resolve); gz.end(); });
        await drainGz();
      }
    }
    if (m.queue_abort !== undefined && flag(m.queue_abort)) await abort();
    if (!dead) res.end();
  } catch (e) {
    if (!(e instanceof Aborted)) throw e;
  } finally {
    res.off('close', onClose);
  }
}

// ---------------------------------------------------------------- handler
async function handle(req, res, rawBody) {
  const url = new URL(req.url, 'http://mock');
  const path = url.pathname;

  if (path === '/__mock/stats') {
    const b = JSON.stringify(stats);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) });
    res.end(b);
    return;
  }
  if (path === '/__mock/reset') {
    stats = { total: 0, connections: 0, paths: {}, last: [] };
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 11 });
    res.end('{"ok":true}');
    return;
  }

  stats.total++;
  stats.paths[path] = (stats.paths[path] || 0) + 1;
  stats.last.push({ method: req.method, path: req.url, headers: req.headers, body: rawBody.toString('utf8').slice(0, 4096) });
  if (stats.last.length > 50) stats.last.shift();

  const m = parseMock(req.headers['x-mock']);
  if (m.raw !== undefined) {
    // raw=BASE64: exactly these bytes as the whole response (status line, headers, body;
    // hostile framing and bodies), then the connection is closed
    req.socket.end(Buffer.from(m.raw, 'base64'));
    return;
  }
  if (flag(m.hang)) return; // never respond; the socket stays until the peer closes it
  if (num(m.sleep_ms, 0) > 0) await sleep(num(m.sleep_ms, 0));
  if (res.destroyed || req.socket.destroyed) return;

  let reqBody = null;
  if (rawBody.length) { try { reqBody = JSON.parse(rawBody.toString('utf8')); } catch (e) { reqBody = null; } }
  const kind = m.as || routeKind(path);
  const headers = { 'x-ds-trace-id': m.trace_id || ('ds-' + (traceSeq + 1).toString(16).padStart(12, '0')) };
  if (flag(m.close)) headers['Connection'] = 'close';
  const status = num(m.status, kind ? 200 : 404);

  if (status !== 200 || !kind) {
    const b = errorBody(status, kind);
    headers['Content-Type'] = m.ctype || 'application/json';
    headers['Content-Length'] = Buffer.byteLength(b);
    res.writeHead(status, headers);
    res.end(b);
    return;
  }

  if (kind === 'models' || kind === 'balance') {
    const b = kind === 'models'
      ? JSON.stringify({ object: 'list', data: ['deepseek-flash', 'deepseek-v4-pro'].map((id) => ({ id, object: 'model', owned_by: 'deepseek' })) })
      : balanceBody(m);
    headers['Content-Type'] = m.ctype || 'application/json';
    headers['Content-Length'] = Buffer.byteLength(b);
    res.writeHead(200, headers);
    res.end(b);
    return;
  }

  const s = scenario(m, reqBody, kind);
  s.queueMs = num(m.queue_timeout_ms, 0);
  const shaping = ['keepalive_ms', 'delay_ms', 'split', 'split_every', 'truncate_after', 'truncate_events', 'size', 'queue_timeout_ms']
    .some((k) => m[k] !== undefined) || flag(m.chunked);
  if (flag(m.gzip)) headers['Content-Encoding'] = 'gzip';
  let items;
  if (s.stream) {
    headers['Content-Type'] = m.ctype || 'text/event-stream; charset=utf-8';
    headers['Cache-Control'] = 'no-cache';
    items = s.queueMs > 0 ? queueTimeoutBody(s, false) : sseBody(s);
  } else {
    headers['Content-Type'] = m.ctype || 'application/json';
    items = s.queueMs > 0 ? queueTimeoutBody(s, true) : jsonBody(s);
    if (!shaping) {
      // fixed body with Content-Length
      let body = Buffer.from(Array.from(items).filter((x) => typeof x === 'string').join(''));
      if (flag(m.gzip)) body = zlib.gzipSync(body);
      headers['Content-Length'] = body.length;
      res.writeHead(200, headers);
      res.end(body);
      return;
    }
  }
  if (s.queueMs > 0) headers['Connection'] = 'close';
  res.writeHead(200, headers);
  await sendItems(req, res, items, m);
}

// DeepSeek's GET /user/balance body (amounts are JSON strings)
function balanceBody(m) {
  const info = (c, t, g, u) => ({ currency: c, total_balance: t, granted_balance: g, topped_up_balance: u });
  const infos = flag(m.balance_empty) ? [] : [info(m.balance_currency || 'CNY', m.balance_total || '110.00',
    m.balance_granted || '10.00', m.balance_topped_up || '100.00')];
  if (m.balance_extra) infos.push(info(...m.balance_extra.split(':')));
  const o = {};
  if (num(m.balance_pad, 0) > 0) o.pad = 'x'.repeat(num(m.balance_pad, 0));
  o.is_available = m.balance_available === undefined ? true : flag(m.balance_available);
  o.balance_infos = infos;
  return JSON.stringify(o);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks)).catch((e) => {
      process.stderr.write(`deepseek-mock: handler error: ${e && e.stack}\n`);
      try { res.destroy(); } catch (x) { /* ignore */ }
    });
  });
  req.on('error', () => {});
  res.on('error', () => {});
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 130000;
server.requestTimeout = 0;
server.on('connection', (sock) => {
  sockets.add(sock);
  stats.connections++;
  sock.setNoDelay(true);
  sock.on('close', () => sockets.delete(sock));
  sock.on('error', () => {});
});
server.on('clientError', (err, sock) => { try { sock.destroy(); } catch (e) { /* ignore */ } });

server.listen(port, host, () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  for (const s of sockets) s.destroy();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
