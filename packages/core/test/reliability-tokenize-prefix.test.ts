/**
 * Tokenising long texts is bounded by maxLength (issue 17): the tokenizer sees a prefix cut at a
 * safe point instead of the whole text, and the ids are exactly those of whole-text tokenisation
 * followed by FlagEmbedding's truncation. The reference here is Hugging Face's `tokenizers` run on
 * each whole text, truncated by hand: `[<s>] + pieces[:maxLength-2] + [</s>]`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Tokenizer } from 'tokenizers';
import { UnspacedPairs, M3Tokenizer, cutPoint } from '../src/tokenizer/m3-tokenizer.ts';
import { FIXTURE } from './helpers/fixture.ts';

const TOKENIZER = join(FIXTURE, 'tokenizer.json');

/** mulberry32: a small seeded PRNG, so every run checks the same texts. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['the', 'river', 'Paris', 'tea', 'internationalisation', 'a', 'I', "l'eau", 'naïve', 'café', 'Ωμέγα', 'Москва', 'straße', 'x1y2z3', 'https://example.com/a?b=c', '42', '3.14'];
const CJK = ['北京', '東京都', '한국어', 'ひらがな', '中华人民共和国', '的', '一'];
const EMOJI = ['😀', '👍🏽', '👩‍👩‍👧', '🇫🇷', '❤️', '🧑🏿‍🚀'];
const MARKS = ['\u0301', '\u0308', '\u200d', '\ufe0f', '\u093f', '\u0600', '\u200b', '\u00ad'];
const SPACES = [' ', ' ', ' ', ' ', '  ', '   ', '\t', '\n', '\r\n', '\u00a0', '\u3000', '\u2028', ' \u0301', ' \ufe0f', '\u0600 ', ' \u200d', '\u200b '];

function randomText(r: () => number, length: number): string {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  let s = r() < 0.2 ? pick(SPACES) : '';
  while (s.length < length) {
    const k = r();
    if (k < 0.5) s += pick(WORDS);
    else if (k < 0.7) s += pick(CJK).repeat(1 + Math.floor(r() * 4));
    else if (k < 0.8) s += pick(EMOJI);
    else s += pick(WORDS) + pick(MARKS);
    s += r() < 0.1 ? '' : pick(SPACES);
  }
  return s;
}

test('tokenising a safe prefix gives exactly the whole-text ids, over 900 texts with CJK, emoji, marks and every kind of whitespace at the cut', async () => {
  const m3 = M3Tokenizer.load(TOKENIZER);
  const reference = Tokenizer.fromFile(TOKENIZER);
  const special = m3.special;
  const r = rng(17);
  let checked = 0;
  let cut = 0;
  for (const maxLength of [2, 3, 4, 7, 16, 33, 64, 130, 512]) {
    const texts = Array.from({ length: 100 }, (_, i) => randomText(r, i % 10 === 0 ? 2 + Math.floor(r() * 40) : 200 + Math.floor(r() * 6000)));
    const before = m3.charsTokenized;
    const got = await m3.encode(texts, maxLength);
    const whole = texts.reduce((n, t) => n + (t.isWellFormed() ? t : t.toWellFormed()).length, 0);
    if (m3.charsTokenized - before < whole) cut++;
    const ref = await reference.encodeBatch(
      texts.map((t) => (t.isWellFormed() ? t : t.toWellFormed())),
      { addSpecialTokens: false },
    );
    texts.forEach((t, i) => {
      const pieces = ref[i].getIds();
      const keep = maxLength - 2;
      const want = [special.cls, ...pieces.slice(0, keep), special.eos];
      assert.deepEqual(Array.from(got[i].ids), want, `maxLength ${maxLength}, text ${i} (${JSON.stringify(t.slice(0, 60))}…)`);
      assert.equal(got[i].truncated, pieces.length > keep, `truncated flag of text ${i} at maxLength ${maxLength}`);
      checked++;
    });
  }
  assert.equal(checked, 900);
  assert.ok(cut >= 8, `the prefix path was taken for ${cut} of 9 maxLengths`);
});

test('the cut never falls inside a grapheme cluster or a run of spaces', () => {
  assert.equal(cutPoint('short', 10), 5);
  assert.equal(cutPoint('aaaa bbbb cccc', 3), 4);
  assert.equal(cutPoint('aaaa   bbbb cccc', 5), 11, 'inside a run of spaces: the next run');
  assert.equal(cutPoint('aaaa \u0301bbb cccc', 3), 9, 'a space followed by a combining mark is skipped');
  assert.equal(cutPoint('aaa\u0600 bbbb cccc', 3), 9, 'a space after a Prepend character is skipped');
  assert.equal(cutPoint('aaaa 👍\u{1F3FD} bbb', 3), 4);
  assert.equal(cutPoint('北京北京北京北京', 3), 8, 'no space: the whole text');
});

test('200 texts of 100 KB at maxLength 512: the tokenizer sees a bounded prefix of each, not 20 MB', async () => {
  const m3 = M3Tokenizer.load(TOKENIZER);
  const base = 'The quick brown fox jumps over the lazy dog near the river bank, 北京 東京. ';
  const texts = Array.from({ length: 200 }, (_, i) => `${i} ${base.repeat(Math.ceil(100_000 / base.length))}`.slice(0, 100_000));
  const got = await m3.encode(texts, 512);
  assert.ok(got.every((t) => t.ids.length === 512 && t.truncated));
  // 510 pieces × 8 characters is the first prefix (4,080 characters, to the next space).
  assert.ok(m3.charsTokenized < 200 * 5_000, `${m3.charsTokenized} characters tokenised`);
  const ref = Tokenizer.fromFile(TOKENIZER);
  const whole = await ref.encodeBatch(texts.slice(0, 3), { addSpecialTokens: false });
  whole.forEach((e, i) => assert.deepEqual(Array.from(got[i].ids.subarray(1, 511)), e.getIds().slice(0, 510)));
});

test('a long text whose prefix gives too few pieces (zero-width and spaces only) is retried with a longer one, then whole', async () => {
  const m3 = M3Tokenizer.load(TOKENIZER);
  const reference = Tokenizer.fromFile(TOKENIZER);
  // U+200B normalises to nothing here: thousands of characters, almost no pieces.
  const texts = ['\u200b '.repeat(20_000) + 'a b c d e f', `${'\u200b'.repeat(9_000)} word `.repeat(5), 'x '.repeat(50)];
  const got = await m3.encode(texts, 8);
  const ref = await reference.encodeBatch(texts, { addSpecialTokens: false });
  texts.forEach((_, i) => {
    const p = ref[i].getIds();
    assert.deepEqual(Array.from(got[i].ids), [m3.special.cls, ...p.slice(0, 6), m3.special.eos], `text ${i}`);
    assert.equal(got[i].truncated, p.length > 6);
  });
});

test('a tokenizer with another pipeline is not cut: every text is tokenised whole, with the same result as before', async () => {
  const json = JSON.parse(readFileSync(TOKENIZER, 'utf8'));
  json.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Punctuation', behavior: 'Isolated' }, json.pre_tokenizer] };
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-tok-'));
  try {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    const m3 = M3Tokenizer.load(join(dir, 'tokenizer.json'));
    assert.equal(m3.prefixSafe, false);
    assert.equal(M3Tokenizer.load(TOKENIZER).prefixSafe, true, "the fixture's (BGE-M3's) pipeline is cut");
    const text = 'words, and punctuation! '.repeat(2000);
    const [got] = await m3.encode([text], 16);
    assert.equal(m3.charsTokenized, text.length);
    const ref = (await Tokenizer.fromString(JSON.stringify(json)).encodeBatch([text], { addSpecialTokens: false }))[0].getIds();
    assert.deepEqual(Array.from(got.ids), [m3.special.cls, ...ref.slice(0, 14), m3.special.eos]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CJK text without spaces is cut between two characters no piece joins: exactly the whole-text ids, with a vocabulary dense in CJK pieces', async () => {
  // The fixture's vocabulary plus 600 CJK pieces of 2–4 characters over a small alphabet, with
  // varied scores: Viterbi has many competing segmentations, and edges cross most positions.
  const json = JSON.parse(readFileSync(TOKENIZER, 'utf8'));
  const alphabet = [...'的一是不了人我在有他这中大来上国'];
  const r = rng(9);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  const known = new Set(json.model.vocab.map((v: [string, number]) => v[0]));
  let added = 0;
  while (added < 600) {
    const piece = Array.from({ length: 2 + Math.floor(r() * 3) }, () => pick(alphabet)).join('');
    if (known.has(piece)) continue;
    known.add(piece);
    json.model.vocab.push([piece, -2 - r() * 10]);
    added++;
  }
  const dir = mkdtempSync(join(tmpdir(), 'bgem3-tok-cjk-'));
  try {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    const m3 = M3Tokenizer.load(join(dir, 'tokenizer.json'));
    const reference = Tokenizer.fromString(JSON.stringify(json));
    const extras = ['。', '，', '\u3000', 'か\u3099', 'が', '한국어', 'ｶ', '北京', '😀', '\u3099'];
    let checked = 0;
    for (const maxLength of [3, 5, 9, 17, 40, 100]) {
      const texts = Array.from({ length: 60 }, () => {
        let s = '';
        const n = 300 + Math.floor(r() * 2500);
        while (s.length < n) s += r() < 0.9 ? pick(alphabet) : pick(extras);
        return s;
      });
      const before = m3.charsTokenized;
      const got = await m3.encode(texts, maxLength);
      assert.ok(m3.charsTokenized - before < texts.reduce((a, t) => a + t.length, 0) / 2, `maxLength ${maxLength}: the prefixes were cut`);
      const ref = await reference.encodeBatch(texts, { addSpecialTokens: false });
      texts.forEach((t, i) => {
        const p = ref[i].getIds();
        assert.deepEqual(Array.from(got[i].ids), [m3.special.cls, ...p.slice(0, maxLength - 2), m3.special.eos], `maxLength ${maxLength}, text ${i}: ${t.slice(0, 40)}…`);
        checked++;
      });
    }
    assert.equal(checked, 360);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * The lemma itself, not only its use: for every cut point, the pieces of the prefix are a prefix
 * of the pieces of the whole text (all of them, not just the first maxLength - 2, which lie far
 * before the cut). Texts mix the CJK alphabet of the dense vocabulary, spaces and the fixture's
 * words; cut points are asked for at many positions of each text.
 */
test('every cut point, by space or between CJK characters, gives a prefix whose pieces are a prefix of the whole text’s', async () => {
  const json = JSON.parse(readFileSync(TOKENIZER, 'utf8'));
  const alphabet = [...'的一是不了人我在有他这中大来上国กขคงจ'];
  const r = rng(23);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  const known = new Set(json.model.vocab.map((v: [string, number]) => v[0]));
  for (let added = 0; added < 600; ) {
    const piece = (r() < 0.2 ? '▁' : '') + Array.from({ length: 2 + Math.floor(r() * 3) }, () => pick(alphabet)).join('');
    if (known.has(piece)) continue;
    known.add(piece);
    json.model.vocab.push([piece, -2 - r() * 10]);
    added++;
  }
  // Pieces that composition would change if a cut split a cluster: 가 + ᆨ = 각, ก + ำ.
  for (const piece of ['가', '각', 'ก', 'กำ', 'ำ', 'ᆨ']) if (!known.has(piece)) json.model.vocab.push([piece, -3]);
  const pairs = UnspacedPairs.fromPieces(json.model.vocab.map((v: [string, number]) => v[0]));
  assert.ok(pairs.size > 200, `${pairs.size} CJK pairs`);
  const tok = Tokenizer.fromString(JSON.stringify(json));
  const extras = ['。', '\u3000', 'か\u3099', '한국어', '가\u11a8', '\u1100\u1161', 'ｶ', 'ก\u0e33', 'ก\u0e34', 'เก', '▁', '的▁', ' ', ' ', '  ', '\t', 'word', 'café', '😀'];
  const prefixes: string[] = [];
  const wholes: string[] = [];
  while (prefixes.length < 3000) {
    let t = '';
    const n = 40 + Math.floor(r() * 400);
    while (t.length < n) t += r() < 0.85 ? pick(alphabet) : pick(extras);
    for (let k = 0; k < 5; k++) {
      const c = cutPoint(t, 1 + Math.floor(r() * t.length), pairs);
      if (c < t.length) {
        prefixes.push(t.slice(0, c));
        wholes.push(t);
      }
    }
  }
  const [p, w] = await Promise.all([tok.encodeBatch(prefixes, { addSpecialTokens: false }), tok.encodeBatch(wholes, { addSpecialTokens: false })]);
  prefixes.forEach((pre, i) => {
    const a = p[i].getIds();
    const b = w[i].getIds();
    assert.deepEqual(a, b.slice(0, a.length), `cut at ${pre.length} of ${JSON.stringify(wholes[i])}`);
  });
});
