// Disaggregated `weft serve` (1 prefill + 1 decode rank under mpirun) when the decode rank dies
// (docs/serving.md "Disaggregated prefill and decode"): kill -9 of rank 1 mid-load makes every
// request, streaming or not, fail within 60 s with an error naming the rank (HTTP 500, or an
// error event in the stream, which the openai client raises as an APIError), and the server
// exit non-zero with rank 0 naming the rank; a plain SIGTERM to every rank (what scancel does)
// still drains and exits 0. Under `mpirun --enable-recovery` with two decode instances, kill -9 of
// one's rank fails the requests on that instance that had output (naming it) within 60 s, starts
// those that had none again on the other; the others complete, and the server goes on serving
// exactly with the instance left.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { writeLlama } from './lib/model.mjs';

const WEFT = process.env.WEFT_BINARY;
const MPIRUN = (process.env.WEFT_MPIRUN || 'mpirun --allow-run-as-root --oversubscribe').split(' ');
assert.ok(WEFT, 'WEFT_BINARY is not set');
fs.mkdirSync(process.env.WEFT_TMP || '/tmp', { recursive: true });
const TMP = fs.mkdtempSync(path.join(process.env.WEFT_TMP || '/tmp', 'serve-disagg-failure-'));

// No tokenizer: token-id prompts. A long context, so that no request can finish before the kill.
const MODEL = writeLlama(path.join(TMP, 'model'), {
  vocab: 256, hidden: 32, inter: 64, layers: 2, heads: 4, kvHeads: 2, maxPositions: 4096,
});
const MAX_TOKENS = 3000;

const servers = [];
function startServer({ ranks = 2, decodeRanks = 1, mpiArgs = [], args = [] } = {}) {
  const argv = [...MPIRUN.slice(1), ...mpiArgs, '-np', String(ranks), WEFT, 'serve', '--model', MODEL,
    '--port', '0', '--prefill-ranks', String(ranks - decodeRanks), '--decode-ranks', String(decodeRanks),
    '--served-model-name', 'tiny', ...args];
  const proc = spawn(MPIRUN[0], argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { proc, stdout: '', stderr: '', exited: null };
  servers.push(server);
  proc.stderr.on('data', (d) => { server.stderr += d; });
  server.exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    server.exited = { code, signal, at: Date.now() };
    resolve(server.exited);
  }));
  return new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      server.stdout += d;
      const m = server.stdout.match(/^weft: listening on (http:\/\/\S+)\n/m);
      if (m && !server.url) {
        server.url = m[1];
        resolve(server);
      }
    });
    server.exit.then((e) => reject(new Error(`server exited ${JSON.stringify(e)}: ${server.stderr}`)));
  });
}
after(() => {
  for (const s of servers) if (!s.exited) s.proc.kill('SIGKILL');
});

// The pid of world rank `rank` among mpirun's children.
function rankPid(server, rank) {
  const pids = execFileSync('pgrep', ['-P', String(server.proc.pid)], { encoding: 'utf8' }).trim().split('\n');
  for (const pid of pids) {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    if (env.includes(`OMPI_COMM_WORLD_RANK=${rank}`)) return Number(pid);
  }
  throw new Error(`no rank ${rank} among mpirun's children ${pids}`);
}

// `n` long completions, alternately streaming and not; `begun` resolves once every streaming
// one has its first chunk (decoding has begun). Each settles to { ok, ms, chunks, error }.
function load(server, n, maxTokens = MAX_TOKENS) {
  const client = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000 });
  const firsts = [];
  const requests = Array.from({ length: n }, (_, i) => {
    const stream = i % 2 === 0;
    let first;
    if (stream) firsts.push(new Promise((r) => { first = r; }));
    return (async () => {
      // 40 tokens (two blocks move from the prefill rank), distinct per request.
      const prompt = [...Array.from({ length: 39 }, (_, k) => (k * 7 + 3) % 256), i];
      // return_token_ids: without a tokenizer the text is empty, and only token ids make chunks.
      const body = { model: 'tiny', prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream, return_token_ids: true };
      let chunks = 0;
      let finish = null;
      try {
        const r = await client.completions.create(body);
        const ids = [];
        if (stream) {
          for await (const c of r) {
            ++chunks;
            first();
            finish = c.choices[0]?.finish_reason ?? finish;
            ids.push(...(c.choices[0]?.token_ids ?? []));
          }
        } else {
          finish = r.choices[0].finish_reason;
          ids.push(...r.choices[0].token_ids);
        }
        return { stream, ok: true, finish, chunks, ids, at: Date.now() };
      } catch (error) {
        return { stream, ok: false, error, chunks, at: Date.now() };
      }
    })();
  });
  return { requests, begun: Promise.all(firsts) };
}

// Starts 10 long requests, kill -9s world rank `rank` once every stream has begun (then calls
// `afterKill`, if given, and returns what it returns as `late`), and waits (at most 60 s) for the
// 10 to settle: { results, late, killed, bound, settled }.
async function killUnderLoad(s, rank, afterKill = () => null) {
  const { requests, begun } = load(s, 10);
  await begun;
  const killed = Date.now();
  process.kill(rankPid(s, rank), 'SIGKILL');
  const late = afterKill();
  const bound = new Promise((r) => setTimeout(() => r('timeout'), 60000).unref());
  const results = await Promise.race([Promise.all(requests), bound]);
  assert.notEqual(results, 'timeout', 'a request was still open 60 s after the kill');
  return { results, late, killed, bound, settled: Math.max(...results.map((r) => r.at)) - killed };
}

test('kill -9 of the decode rank: every request fails naming rank 1, rank 0 exits 76', async (t) => {
  const s = await startServer();
  const { results, killed, bound, settled } = await killUnderLoad(s, 1);
  const exit = await Promise.race([s.exit, bound]);
  assert.notEqual(exit, 'timeout', 'the server was still up 60 s after the kill');
  t.diagnostic(`requests settled ${settled} ms after the kill; server exited ${exit.at - killed} ms after it, code ${exit.code}`);
  assert.ok(settled < 60000);
  for (const [i, r] of results.entries()) {
    // None can reach 3000 tokens in the second before mpirun ends the job.
    assert.equal(r.ok, false, `request ${i} finished (${r.finish}) instead of failing`);
    assert.ok(r.error instanceof OpenAI.APIError && !(r.error instanceof OpenAI.APIConnectionError),
      `request ${i} (${r.stream ? 'streaming' : 'whole'}): not an error answer but ${r.error}`);
    assert.match(r.error.message, /rank 1 \(decode instance 0\) sent no heartbeat/, `request ${i}`);
    if (!r.stream) assert.equal(r.error.status, 500, `request ${i}`);
    if (r.stream) assert.ok(r.chunks > 0, `request ${i} had streamed before the kill`);
  }
  assert.notEqual(exit.code, 0);
  assert.match(s.stderr, /weft serve: rank 0: rank 1 \(decode instance 0\) sent no heartbeat .*exit code 76/);
  assert.match(s.stderr, /process rank 1 .*signal 9/s);  // mpirun's own report
});

test('SIGTERM to every rank (as scancel sends) still drains: exit 0, streams end with abort', async () => {
  const s = await startServer();
  const { requests, begun } = load(s, 4);
  await begun;
  for (const rank of [0, 1]) process.kill(rankPid(s, rank), 'SIGTERM');
  const results = await Promise.all(requests);
  for (const [i, r] of results.entries()) {
    assert.ok(r.ok, `request ${i}: ${r.error}`);
    assert.equal(r.finish, 'abort', `request ${i}`);
  }
  const exit = await s.exit;
  assert.equal(exit.code, 0, s.stderr);
  assert.doesNotMatch(s.stderr, /sent no heartbeat/);
});

test('--enable-recovery, two decode instances: kill -9 of one fails only its requests, serving goes on', async (t) => {
  const s = await startServer({ ranks: 3, decodeRanks: 2, mpiArgs: ['--enable-recovery'], args: ['--decode-tp', '1', '--comm-timeout', '3'] });
  // The tokens of a short request before the loss: the instance left must give the same after.
  const before = await load(s, 2, 24).requests[0];
  assert.ok(before.ok, String(before.error));
  // Four short requests sent just after the kill, before the server knows: the router gives two
  // of them to the dead instance, and they must start again on the other one.
  const { results, late, bound, settled } = await killUnderLoad(s, 2, () => load(s, 4, 24).requests);
  t.diagnostic(`requests settled ${settled} ms after the kill`);
  let failed = 0;
  for (const [i, r] of results.entries()) {
    if (r.ok) {
      assert.equal(r.finish, 'length', `request ${i}`);
      assert.equal(r.ids.length, MAX_TOKENS, `request ${i}`);
      continue;
    }
    ++failed;
    assert.ok(r.error instanceof OpenAI.APIError && !(r.error instanceof OpenAI.APIConnectionError),
      `request ${i}: not an error answer but ${r.error}`);
    assert.match(r.error.message, /rank 2 \(decode instance 1\) is lost \(rank 2 sent no heartbeat/, `request ${i}`);
  }
  // The router spread the ten over both instances: half of them were on the dead one. Those
  // with output fail (every stream has some); one that had none yet starts again elsewhere.
  assert.ok(failed >= 3 && failed <= 5, `${failed} failed`);
  assert.equal(s.exited, null, `the server ended: ${s.stderr}`);
  for (const [i, r] of (await Promise.all(late)).entries()) {
    assert.ok(r.ok, `request ${i} sent after the kill: ${r.error}`);
    if (i === 0) assert.deepEqual(r.ids, before.ids, 'the same prompt, sent after the kill');
  }
  // The instance left serves every new request, exactly as before.
  const after = await Promise.all(load(s, 6, 24).requests);
  for (const [i, r] of after.entries()) {
    assert.ok(r.ok, `request ${i} after the loss: ${r.error}`);
    if (i === 0) assert.deepEqual(r.ids, before.ids, "the same prompt after the loss");
  }
  const m = await (await fetch(s.url + '/metrics')).text();
  assert.match(m, /^weft_lost_decode_instances 1$/m);
  // Normally 2 of the late requests went to the dead instance; on a loaded machine one may
  // arrive after the loss is known and go straight to the live one.
  const rerouted = Number(m.match(/^weft_rerouted_requests_total (\d+)$/m)[1]);
  t.diagnostic(`${failed} failed, ${rerouted} started again elsewhere`);
  assert.ok(rerouted >= 5 - failed && rerouted <= 2 + 5 - failed, `${rerouted} rerouted`);
  assert.match(m, /^weft_requests_running 0$/m);  // rank 0's prefills of the dead instance's requests are gone
  assert.match(s.stderr, /weft: rank 0: rank 2 sent no heartbeat .*going on without rank 2\n/);
  for (const rank of [0, 1]) process.kill(rankPid(s, rank), 'SIGTERM');  // as scancel does
  const exit = await Promise.race([s.exit, bound]);
  assert.notEqual(exit, 'timeout', 'the server did not stop');
  assert.match(s.stderr, /weft serve: rank 0: served on without rank 2 \(decode instance 1\)/);
  assert.match(s.stderr, /weft: server stopped/);
});
