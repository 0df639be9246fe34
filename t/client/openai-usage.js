#!/usr/bin/env node
// openai-usage.js - drives the official `openai` npm SDK (^6, installed here by
// scripts/deps.sh) through nginx to the DeepSeek mock, and writes the usage the SDK
// reports for every call as JSON. Used by t/25-openai-client.t.
//
//   node t/client/openai-usage.js --port P --out FILE [--rounds N]
//
// Calls per round, for each baseURL (http://127.0.0.1:P and http://127.0.0.1:P/v1):
//   chat.completions.create for deepseek-flash and deepseek-reasoner, each
//     non-streaming, streaming without stream_options, streaming with
//     stream_options {include_usage: true}
// plus, per round, FIM completions.create (baseURL .../beta), non-streaming and streaming.
// The usage numbers vary per call through the mock's X-Mock header (sent as a
// per-request header); the requested numbers are written too, for a cross-check.
// maxRetries: 0 (the SDK retries 5xx and connection errors twice by default, which
// would make requests_total differ from the calls made).
'use strict';

const path = require('path');
const fs = require('fs');

let port = 0, out = null, rounds = 2;
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--port') port = parseInt(process.argv[++i], 10);
  else if (a === '--out') out = process.argv[++i];
  else if (a === '--rounds') rounds = parseInt(process.argv[++i], 10);
  else { process.stderr.write(`openai-usage: unknown argument ${a}\n`); process.exit(2); }
}
if (!port || !out) { process.stderr.write('usage: openai-usage.js --port P --out FILE [--rounds N]\n'); process.exit(2); }

const mod = require(path.join(__dirname, 'node_modules', 'openai'));
const OpenAI = mod.OpenAI || mod.default || mod;
const version = require(path.join(__dirname, 'node_modules', 'openai', 'package.json')).version;

function client(baseURL) {
  return new OpenAI({ apiKey: 'sk-test-not-a-key', baseURL, maxRetries: 0, timeout: 20000 });
}

async function main() {
  const base = `http://127.0.0.1:${port}`;
  const calls = [];
  let n = 0;
  const next = (model) => {
    n++;
    const want = { prompt: 100 + 37 * n, hit: 11 * n, completion: 5 + 13 * n,
                   reasoning: /reasoner/.test(model) ? 3 * n : 0 };
    const mock = `prompt=${want.prompt};hit=${want.hit};completion=${want.completion};reasoning=${want.reasoning}`;
    return { want, mock };
  };

  for (let r = 0; r < rounds; r++) {
    for (const baseURL of [base, `${base}/v1`]) {
      const c = client(baseURL);
      for (const model of ['deepseek-flash', 'deepseek-reasoner']) {
        for (const mode of ['json', 'stream', 'stream_usage']) {
          const { want, mock } = next(model);
          const params = { model, messages: [{ role: 'user', content: `call ${n}` }] };
          if (mode !== 'json') params.stream = true;
          if (mode === 'stream_usage') params.stream_options = { include_usage: true };
          const rec = { n, api: 'chat', baseURL, model, mode, want, usage: null, served: null, text: '' };
          if (mode === 'json') {
            const res = await c.chat.completions.create(params, { headers: { 'X-Mock': mock } });
            rec.usage = res.usage;
            rec.served = res.model;
            rec.text = res.choices[0].message.content;
          } else {
            const stream = await c.chat.completions.create(params, { headers: { 'X-Mock': mock } });
            for await (const chunk of stream) {
              if (chunk.usage) rec.usage = chunk.usage;   // the last non-null usage
              if (chunk.model && !rec.served) rec.served = chunk.model;
              const d = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
              if (d && d.content) rec.text += d.content;
            }
          }
          calls.push(rec);
        }
      }
    }
    // FIM (beta)
    const fim = client(`${base}/beta`);
    for (const mode of ['json', 'stream']) {
      const model = 'deepseek-flash';
      const { want, mock } = next(model);
      const params = { model, prompt: 'def fib(n):', suffix: '\n    return a' };
      const rec = { n, api: 'fim', baseURL: `${base}/beta`, model, mode, want, usage: null, served: null, text: '' };
      if (mode === 'json') {
        const res = await fim.completions.create(params, { headers: { 'X-Mock': mock } });
        rec.usage = res.usage;
        rec.served = res.model;
        rec.text = res.choices[0].text;
      } else {
        const stream = await fim.completions.create(Object.assign({ stream: true }, params), { headers: { 'X-Mock': mock } });
        for await (const chunk of stream) {
          if (chunk.usage) rec.usage = chunk.usage;
          if (chunk.model && !rec.served) rec.served = chunk.model;
          if (chunk.choices && chunk.choices[0]) rec.text += chunk.choices[0].text || '';
        }
      }
      calls.push(rec);
    }
  }
  fs.writeFileSync(out, JSON.stringify({ sdk_version: version, calls }));
}

main().catch((e) => {
  process.stderr.write(`openai-usage: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
