/**
 * Every example under examples/ run as a user would (a child process, `node <script> --model
 * <fixture>`), so that they never rot:
 *
 * - with no chat model configured, the offline extractive fallback answers with cited sources;
 * - with an OpenAI-compatible endpoint configured (OPENAI_BASE_URL / OPENAI_API_KEY / CHAT_MODEL),
 *   the examples talk to it: here a small fake server on 127.0.0.1 that records the requests and
 *   answers (streaming or not), which checks the prompts, the memory and the streaming path.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/tiny-m3-A');
const EXAMPLES = join(ROOT, 'examples');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment without Hub, chat-model or debug settings, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(HF_|HUGGING_FACE_|TRANSFORMERS_OFFLINE|OPENAI_|CHAT_MODEL|BGEM3_DEBUG)/.test(k)) delete env[k];
  }
  return { ...env, ...extra };
}

/**
 * Runs `node <example>/<script> --model <fixture> …args` in the example's folder (async execFile),
 * optionally with `input` on stdin (not a TTY), and resolves with the exit code and output.
 */
function runExample(example: string, script: string, args: string[] = [], options: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [script, '--model', FIXTURE, ...args],
      { cwd: join(EXAMPLES, example), env: options.env ?? cleanEnv(), timeout: 90_000, maxBuffer: 16 * 2 ** 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    child.stdin?.end(options.input ?? '');
  });
}

function assertNoStack(text: string) {
  assert.doesNotMatch(text, /^\s+at .+:\d+:\d+\)?$/m, `a stack trace was printed:\n${text}`);
}

/** Question/answer blocks of the RAG examples: `Question:`, `Answer:`, then `  [n] <source> …` lines. */
function answers(stdout: string) {
  const blocks = stdout.split(/^Question: /m).slice(1);
  return blocks.map((b) => {
    const question = b.split('\n')[0];
    const answer = /^Answer: (.*)$/m.exec(b)?.[1] ?? '';
    const sources = [...b.matchAll(/^ {2}\[(\d+)\] (\S+)/gm)].map((m) => ({ n: Number(m[1]), source: m[2] }));
    return { question, answer, sources, hasSourcesHeader: /^Sources:$/m.test(b) };
  });
}

/** The files' texts, to check that extractive answers quote them. */
function texts(dir: string): string {
  return readdirSync(dir)
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n')
    .replace(/\s+/g, ' ');
}

// ---------------------------------------------------------------------------------------------
// A fake OpenAI-compatible chat completions endpoint on 127.0.0.1 (no other address is used).

interface ChatRequest {
  model: string;
  stream?: boolean;
  messages: { role: string; content: string | { type: string; text?: string }[] }[];
}

const content = (m: ChatRequest['messages'][number]) => (typeof m.content === 'string' ? m.content : m.content.map((c) => c.text ?? '').join(''));

class FakeOpenAI {
  requests: ChatRequest[] = [];
  private server: Server | undefined;
  /** The reply to a request: a standalone question for condense prompts, else a cited answer. */
  reply = (req: ChatRequest): string => {
    const system = req.messages.find((m) => m.role === 'system');
    if (system && /standalone question/.test(content(system))) return `STANDALONE(${content(req.messages[req.messages.length - 1])})`;
    return `Fake answer number ${this.requests.length} citing [1] and [2].`;
  };

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
          res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: `no route ${req.url}` } }));
          return;
        }
        const parsed = JSON.parse(body) as ChatRequest;
        this.requests.push(parsed);
        const text = this.reply(parsed);
        const base = { id: `chatcmpl-${this.requests.length}`, created: 1_700_000_000, model: parsed.model };
        if (parsed.stream) {
          res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
          const pieces = text.split(/(?<= )/);
          pieces.forEach((p, i) => {
            const delta = i === 0 ? { role: 'assistant', content: p } : { content: p };
            res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`);
          });
          res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
          res.end('data: [DONE]\n\n');
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              ...base,
              object: 'chat.completion',
              choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
              usage: { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 },
            }),
          );
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

// ---------------------------------------------------------------------------------------------

describe('examples against the fixture model', () => {
  const fake = new FakeOpenAI();
  let llmEnv: NodeJS.ProcessEnv;
  before(async () => {
    const baseURL = await fake.start();
    llmEnv = cleanEnv({ OPENAI_BASE_URL: baseURL, OPENAI_API_KEY: 'test-key', CHAT_MODEL: 'fake-chat-model' });
  });
  after(() => fake.stop());

  test('langchain-rag: LCEL chain answers both questions with cited sources (offline extractive chat model)', async () => {
    const r = await runExample('langchain-rag', 'rag.mjs');
    assert.equal(r.code, 0, r.stderr);
    assertNoStack(r.stderr);
    assert.match(r.stdout, /^Chat model: extractive \(offline fallback/m);
    assert.match(r.stdout, /Indexed 4 files as \d+ chunks/);
    const docs = texts(join(EXAMPLES, 'langchain-rag/docs'));
    const qa = answers(r.stdout);
    assert.equal(qa.length, 2, r.stdout);
    for (const { answer, sources, hasSourcesHeader } of qa) {
      assert.ok(hasSourcesHeader);
      assert.deepEqual(sources.map((s) => s.n), [1, 2, 3]);
      for (const s of sources) assert.match(s.source, /^docs\/[\w.-]+\.txt,?$/);
      const cited = [...answer.matchAll(/\[(\d+)\]/g)].map((m) => Number(m[1]));
      assert.ok(cited.length > 0, `no citation in: ${answer}`);
      for (const n of cited) assert.ok(sources.some((s) => s.n === n), `[${n}] is not listed`);
      // extractive: every cited sentence is quoted from the shipped files
      for (const sentence of answer.split(/\s*\[\d+\]\s*/).filter(Boolean)) assert.ok(docs.includes(sentence), `not from docs/: ${sentence}`);
    }
    // per-source scores of the hybrid retriever are shown
    assert.match(r.stdout, /dense -?\d\.\d{3}, sparse \d+\.\d{3}, colbert -?\d\.\d{3} → -?\d+\.\d{3}/);
  });

  test('langchain-rag: with OPENAI_BASE_URL/CHAT_MODEL it uses that endpoint, sending the numbered sources', async () => {
    fake.requests = [];
    const r = await runExample('langchain-rag', 'rag.mjs', ['--question', 'What is MaxSim?'], { env: llmEnv });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Chat model: fake-chat-model at http:\/\/127\.0\.0\.1:\d+\/v1 \(OpenAI-compatible, @langchain\/openai\)/m);
    const [qa] = answers(r.stdout);
    assert.equal(qa.answer, 'Fake answer number 1 citing [1] and [2].');
    assert.equal(qa.sources.length, 3);
    assert.equal(fake.requests.length, 1);
    const req = fake.requests[0];
    assert.equal(req.model, 'fake-chat-model');
    const system = content(req.messages[0]);
    assert.match(system, /cite the source\(s\)/);
    assert.match(system, /^\[1\] \(docs\/[\w.-]+\.txt\) /m);
    assert.match(system, /^\[3\] \(docs\//m);
    assert.equal(content(req.messages[req.messages.length - 1]), 'What is MaxSim?');
  });

  test('llamaindex-query-engine: VectorStoreIndex + hybrid retriever + ColBERT reranker answer with sources (offline LLM)', async () => {
    const r = await runExample('llamaindex-query-engine', 'query.mjs');
    assert.equal(r.code, 0, r.stderr);
    assertNoStack(r.stderr);
    assert.match(r.stdout, /^LLM: extractive \(offline fallback/m);
    assert.match(r.stdout, /hybrid retriever \(top 5\) → ColBERT reranker \(top 3\) → LLM/);
    const data = texts(join(EXAMPLES, 'llamaindex-query-engine/data'));
    const qa = answers(r.stdout);
    assert.equal(qa.length, 2, r.stdout);
    for (const { answer, sources } of qa) {
      assert.ok(answer.length > 20, `empty answer: ${answer}`);
      assert.ok(data.includes(answer.slice(0, 40)), `the extractive answer quotes the data: ${answer}`);
      assert.deepEqual(sources.map((s) => s.n), [1, 2, 3]);
      for (const s of sources) assert.match(s.source, /^data\/[\w.-]+\.txt$/);
    }
    // each source shows the reranker's score and the ensemble's per-mode scores, best first
    const colbert = [...r.stdout.matchAll(/\(ColBERT (\d\.\d{3}); hybrid: dense -?\d\.\d{3}, sparse \d+\.\d{3}, colbert -?\d\.\d{3} → -?\d+\.\d{3}\)/g)].map((m) => Number(m[1]));
    assert.equal(colbert.length, 6);
    for (const i of [1, 2, 4, 5]) assert.ok(colbert[i - 1] >= colbert[i], 'sources sorted by the ColBERT reranker');
  });

  test('llamaindex-query-engine: with OPENAI_BASE_URL/CHAT_MODEL it uses @llamaindex/openai with the retrieved context', async () => {
    fake.requests = [];
    const r = await runExample('llamaindex-query-engine', 'query.mjs', ['--question', 'Who created Hangul?'], { env: llmEnv });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^LLM: fake-chat-model at http:\/\/127\.0\.0\.1:\d+\/v1 \(OpenAI-compatible, @llamaindex\/openai\)/m);
    const [qa] = answers(r.stdout);
    assert.match(qa.answer, /^Fake answer number \d citing \[1\] and \[2\]\.$/);
    assert.equal(qa.sources.length, 3);
    assert.ok(fake.requests.length >= 1);
    const prompt = fake.requests.map((q) => q.messages.map(content).join('\n')).join('\n');
    assert.match(prompt, /Context information is below/);
    assert.match(prompt, /Query: Who created Hangul\?/);
    assert.match(prompt, /source: data\/[\w.-]+\.txt/);
  });

  test('chatbot: two questions from stdin (not a TTY), the second answered with memory of the first', async () => {
    const r = await runExample('chatbot', 'chatbot.mjs', [], { input: 'Which planet is the largest?\nHow many moons does it have?\n' });
    assert.equal(r.code, 0, r.stderr);
    assertNoStack(r.stderr);
    assert.match(r.stdout, /^Chat model: extractive \(offline fallback/m);
    const turns = r.stdout.split(/^You: /m).slice(1);
    assert.equal(turns.length, 2, r.stdout);
    assert.match(turns[0], /^Which planet is the largest\?\nBot: .+\[1\].*\n {2}Sources: \[1\] knowledge\/\S+\.txt {2}\[2\] /);
    assert.doesNotMatch(turns[0], /memory:/);
    // the follow-up is searched together with the previous question (the fallback's condensing)
    assert.match(turns[1], /^How many moons does it have\?\n {2}\(memory: 1 earlier turn; searching for: Which planet is the largest\? How many moons does it have\?\)\nBot: .+\[1\]/);
    assert.match(turns[1], /Sources: \[1\] knowledge\//);
    const knowledge = texts(join(EXAMPLES, 'chatbot/knowledge'));
    for (const t of turns) {
      const answer = /^Bot: (.*)$/m.exec(t)![1];
      for (const sentence of answer.split(/\s*\[\d+\]\s*/).filter(Boolean)) assert.ok(knowledge.includes(sentence), `not from knowledge/: ${sentence}`);
    }
  });

  test('chatbot with an LLM: condenses the follow-up with the history, keeps the turns in the prompt, streams the answers', async () => {
    fake.requests = [];
    const r = await runExample('chatbot', 'chatbot.mjs', [], { env: llmEnv, input: 'Which planet has rings?\n\nWhat is its largest moon?\n' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Chat model: fake-chat-model at http:\/\/127\.0\.0\.1:\d+\/v1/m);
    // answer 1 (streamed), condense (not streamed), answer 2 (streamed)
    assert.equal(fake.requests.length, 3, JSON.stringify(fake.requests.map((q) => q.messages.map(content))));
    const [a1, condense, a2] = fake.requests;
    assert.equal(a1.stream, true);
    assert.equal(a2.stream, true);
    assert.ok(!condense.stream);
    assert.match(content(condense.messages[0]), /standalone question/);
    assert.deepEqual(
      condense.messages.slice(1).map((m) => [m.role, content(m)]),
      [
        ['user', 'Which planet has rings?'],
        ['assistant', 'Fake answer number 1 citing [1] and [2].'],
        ['user', 'What is its largest moon?'],
      ],
    );
    // the second answer's prompt: sources, then the first turn, then the question
    assert.match(content(a2.messages[0]), /^\[1\] \(knowledge\//m);
    assert.deepEqual(
      a2.messages.slice(1).map((m) => [m.role, content(m)]),
      [
        ['user', 'Which planet has rings?'],
        ['assistant', 'Fake answer number 1 citing [1] and [2].'],
        ['user', 'What is its largest moon?'],
      ],
    );
    assert.match(r.stdout, /searching for: STANDALONE\(What is its largest moon\?\)/);
    assert.match(r.stdout, /^Bot: Fake answer number 1 citing \[1\] and \[2\]\.$/m);
    assert.match(r.stdout, /^Bot: Fake answer number 3 citing \[1\] and \[2\]\.$/m);
  });

  test('an example given a model directory that does not exist exits 1 with one clear message', async () => {
    const r = await new Promise<Run>((resolve) => {
      execFile(process.execPath, ['rag.mjs', '--model', join(EXAMPLES, 'no-such-model')], { cwd: join(EXAMPLES, 'langchain-rag'), env: cleanEnv() }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as NodeJS.ErrnoException).code) : 0, stdout: String(stdout), stderr: String(stderr) }),
      );
    });
    assert.equal(r.code, 1);
    assertNoStack(r.stderr);
    assert.match(r.stderr, /^langchain-rag: cannot load the model .*no-such-model: model not found/m);
  });

  test('every example folder has a README and a private @bgem3-examples package with a start script', () => {
    for (const name of readdirSync(EXAMPLES, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)) {
      const pkg = JSON.parse(readFileSync(join(EXAMPLES, name, 'package.json'), 'utf8'));
      assert.equal(pkg.name, `@bgem3-examples/${name}`);
      assert.equal(pkg.private, true);
      assert.match(pkg.scripts.start, /^node \.\.\/ensure-built\.mjs core( langchain| llamaindex)? && node \w+\.mjs$/);
      for (const [dep, range] of Object.entries<string>(pkg.dependencies)) if (dep.startsWith('@bgem3/')) assert.equal(range, 'workspace:*');
      assert.ok(readFileSync(join(EXAMPLES, name, 'README.md'), 'utf8').includes('pnpm'), `${name}/README.md`);
    }
  });
});
