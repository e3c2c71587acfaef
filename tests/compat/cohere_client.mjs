// cohere_client.mjs: drives a `nimrank serve` gateway with the official Cohere JavaScript SDK
// (npm cohere-ai, installed by tests/compat/setup.sh) through POST /v1/rerank and /v2/rerank.
//   NIMRANK_URL=http://127.0.0.1:4000 NIMRANK_KEY=master NIMRANK_MODEL=group \
//     node tests/compat/cohere_client.mjs
// Prints "ok - name" / "not ok - name: reason" per check, then "N passed, N failed".
// Exit 0 when all passed, 1 when some failed, 2 on bad usage, 3 (SKIP) when the SDK is missing.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const npmDir = path.resolve(process.env.NIMRANK_NPM_DIR || path.join(here, '../../build/npm'));
// An ES module import would look for node_modules next to this file; resolve from the cache.
let sdk;
try {
  sdk = createRequire(path.join(npmDir, 'package.json'))('cohere-ai');
} catch (e) {
  console.log(`SKIP: cohere-ai not found under ${npmDir} (run tests/compat/setup.sh)`);
  process.exit(3);
}
const { CohereClient, CohereClientV2, Cohere } = sdk;

const { NIMRANK_URL: url, NIMRANK_KEY: key, NIMRANK_MODEL: model } = process.env;
if (!url || !key || !model) {
  console.error('usage: NIMRANK_URL=... NIMRANK_KEY=... NIMRANK_MODEL=... node cohere_client.mjs');
  process.exit(2);
}

// The SDK retries 408/429/5xx twice by default (1 s, 2 s backoff): off, so errors show at once.
const opts = (token) => ({ environment: url, token, maxRetries: 0, timeoutInSeconds: 30 });
const v1 = new CohereClient(opts(key));
const v2 = new CohereClientV2(opts(key));
const v1Bad = new CohereClient(opts(`${key}-wrong`));
const v2Bad = new CohereClientV2(opts(`${key}-wrong`));

const query = 'What is the capital of the United States?';
const docs = [
  'Carson City is the capital city of the American state of Nevada.',
  'The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific. '
    + 'Its capital is Saipan.',
  'Washington, D.C. (also known as simply Washington or D.C.) is the capital of the '
    + 'United States. It is a federal district.',
  'Capitalization in English grammar is the use of a capital letter at the start of a word.',
  'Zürich, 東京 and Kraków are not capitals of the United States — “quotes” and \\ too.',
];
const objDocs = docs.map((text, i) => ({ text, title: `doc ${i}` }));

// The SDK parses responses with skipValidation: it renames the fields it knows (relevance_score
// -> relevanceScore) but keeps a value of the wrong type as it came (relevanceScore: "0.9"),
// leaves a missing field absent (even `results`), passes unknown fields through unrenamed, and
// at most prints console.warn("Failed to validate..."). So the checks below assert the shapes
// themselves and count those warnings as failures.
const warnings = [];
console.warn = (...a) => warnings.push(a.join(' '));

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Checks a parsed rerank response: sent = the texts sent, topN as asked, back = whether the
// documents must come back (true), must not (false) or may (undefined).
function checkResults(r, { sent, topN, back }) {
  const n = sent.length;
  assert(r && Array.isArray(r.results), `results is not a list: ${JSON.stringify(r)}`);
  assert(typeof r.id === 'string' && r.id.length > 0, `id is not a non-empty string: ${r.id}`);
  const want = Math.min(topN ?? n, n);
  assert(r.results.length === want, `${r.results.length} results, want ${want}`);
  const seen = new Set();
  r.results.forEach((it, k) => {
    const at = `results[${k}]`;
    assert(Number.isInteger(it.index) && it.index >= 0 && it.index < n,
      `${at}.index ${it.index} not in [0, ${n})`);
    assert(!seen.has(it.index), `${at}.index ${it.index} repeated`);
    seen.add(it.index);
    assert(Number.isFinite(it.relevanceScore),
      `${at}.relevance_score ${JSON.stringify(it.relevanceScore)} is not a number`);
    if (k > 0) {
      const prev = r.results[k - 1].relevanceScore;
      assert(prev >= it.relevanceScore, `not sorted: ${at} ${it.relevanceScore} > ${prev}`);
    }
    if (back === false) assert(it.document === undefined, `${at}.document present, not asked`);
    if (back || it.document !== undefined) {
      assert(it.document && typeof it.document.text === 'string',
        `${at}.document is not {text}: ${JSON.stringify(it.document)}`);
      assert(it.document.text === sent[it.index],
        `${at}.document.text ${JSON.stringify(it.document.text)} is not document ${it.index}`);
    }
  });
  if (r.meta !== undefined) {
    const m = r.meta;
    assert(m && typeof m === 'object', `meta is not an object: ${JSON.stringify(m)}`);
    if (m.apiVersion !== undefined) {
      assert(typeof m.apiVersion?.version === 'string', `meta.api_version.version missing`);
    }
    if (m.billedUnits !== undefined) {
      assert(m.billedUnits && typeof m.billedUnits === 'object', `meta.billed_units not an object`);
    }
  }
}

// Expects the call to be rejected with the SDK's error class for `status`, carrying the
// gateway's JSON error body {error: {message, type, code: "<status>"}} (the SDK only parses
// the body as JSON when the Content-Type says so).
async function expectError(promise, cls, status, type) {
  let r;
  try {
    r = await promise;
  } catch (e) {
    assert(e instanceof cls, `got ${e.constructor.name} (status ${e.statusCode}): `
      + `${String(e.message).split('\n')[0]}, want ${cls.name}`);
    assert(e.statusCode === status, `statusCode ${e.statusCode}, want ${status}`);
    const err = e.body && e.body.error;
    // A string body means the SDK did not see a JSON Content-Type on the error response.
    assert(err && typeof err.message === 'string', `body is not {error: {message}}`
      + `${typeof e.body === 'string' ? ' (a string: Content-Type not JSON?)' : ''}: `
      + JSON.stringify(e.body));
    assert(err.code === String(status), `error.code ${JSON.stringify(err.code)}, want "${status}"`);
    if (type) assert(err.type === type, `error.type ${JSON.stringify(err.type)}, want "${type}"`);
    return;
  }
  throw new Error(`succeeded, want ${cls.name}: ${JSON.stringify(r)}`);
}

let passed = 0;
let failed = 0;
async function check(name, fn) {
  warnings.length = 0;
  try {
    await fn();
    assert(warnings.length === 0, `SDK warned: ${warnings.join(' | ').replace(/\n/g, ' ')}`);
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${String(e.message ?? e).split('\n').slice(0, 3).join(' ')}`);
  }
}

await check('v1 strings, topN 3, returnDocuments', async () => {
  const { data, rawResponse } = await v1.rerank({ model, query, documents: docs, topN: 3,
    returnDocuments: true }).withRawResponse();
  assert(/^application\/json/.test(rawResponse.headers.get('content-type') ?? ''),
    `Content-Type ${rawResponse.headers.get('content-type')}`);
  checkResults(data, { sent: docs, topN: 3, back: true });
});
await check('v1 strings, no topN, returnDocuments false', async () => {
  const r = await v1.rerank({ model, query, documents: docs, returnDocuments: false });
  checkResults(r, { sent: docs, back: false });
});
await check('v1 {text, title} objects, topN 2, returnDocuments', async () => {
  const r = await v1.rerank({ model, query, documents: objDocs, topN: 2, returnDocuments: true });
  checkResults(r, { sent: docs, topN: 2, back: true });
});
await check('v1 topN larger than the documents', async () => {
  const r = await v1.rerank({ model, query, documents: docs.slice(0, 2), topN: 10 });
  checkResults(r, { sent: docs.slice(0, 2), topN: 10 });
});
await check('v1 wrong token -> UnauthorizedError 401', () =>
  expectError(v1Bad.rerank({ model, query, documents: docs }), Cohere.UnauthorizedError, 401,
    'auth_error'));
await check('v1 unknown model -> NotFoundError 404', () =>
  expectError(v1.rerank({ model: `${model}-no-such-model`, query, documents: docs }),
    Cohere.NotFoundError, 404));

await check('v2 strings, topN 2', async () => {
  const r = await v2.rerank({ model, query, documents: docs, topN: 2 });
  checkResults(r, { sent: docs, topN: 2 });
});
await check('v2 strings, no topN', async () => {
  const r = await v2.rerank({ model, query, documents: docs });
  checkResults(r, { sent: docs });
});
await check('v2 one document', async () => {
  const r = await v2.rerank({ model, query, documents: [docs[2]], topN: 1 });
  checkResults(r, { sent: [docs[2]], topN: 1 });
});
await check('v2 wrong token -> UnauthorizedError 401', () =>
  expectError(v2Bad.rerank({ model, query, documents: docs }), Cohere.UnauthorizedError, 401,
    'auth_error'));
await check('v2 unknown model -> NotFoundError 404', () =>
  expectError(v2.rerank({ model: `${model}-no-such-model`, query, documents: docs }),
    Cohere.NotFoundError, 404));

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
