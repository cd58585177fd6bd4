/**
 * Every test file bounds its own run time and runs all its tests. A file whose top-level suite, test or hook has
 * no timeout can hang `npm test` (and CI) forever when a server never answers, and a skipped or focused test
 * makes a green run say less than it seems to. Scanned from the source, strings and comments set aside.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const TEST_DIRS = ['test/unit', 'test/cdk', 'test/integration'];
const SUITES = new Set(['describe', 'suite', 'it', 'test']);
const HOOKS = new Set(['before', 'after', 'beforeEach', 'afterEach']);

interface Call {
  readonly name: string;
  readonly line: number;
  /** The argument texts, code only (strings and comments blanked). */
  readonly args: string[];
}

/**
 * The source with the contents of strings, template literals, regular expressions and comments replaced by
 * spaces (newlines kept), so that brackets and words inside them count for nothing.
 */
export function codeOnly(src: string): string {
  const out = src.split('');
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' ';
  };
  let i = 0;
  let lastSignificant = '';
  // Template literals nest through ${ }: the stack holds the brace depth at which each substitution started.
  const templates: number[] = [];
  let braces = 0;
  while (i < src.length) {
    const c = src[i]!;
    const next = src[i + 1];
    if (c === '/' && next === '/') {
      const end = src.indexOf('\n', i);
      const stop = end === -1 ? src.length : end;
      blank(i, stop);
      i = stop;
    } else if (c === '/' && next === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end === -1 ? src.length : end + 2;
      blank(i, stop);
      i = stop;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== c && src[j] !== '\n') j += src[j] === '\\' ? 2 : 1;
      blank(i + 1, j);
      i = j + 1;
      lastSignificant = c;
    } else if (c === '`' || (c === '}' && templates.length > 0 && templates.at(-1) === braces)) {
      if (c === '}') {
        templates.pop();
        braces--;
      }
      let j = i + 1;
      while (j < src.length && src[j] !== '`' && !(src[j] === '$' && src[j + 1] === '{'))
        j += src[j] === '\\' ? 2 : 1;
      blank(i + 1, j);
      if (src[j] === '$') {
        braces++;
        templates.push(braces);
        i = j + 2;
      } else i = j + 1;
      lastSignificant = '`';
    } else if (c === '/' && (lastSignificant === '' || '(,=:[!&|?{};+-*%<>~^'.includes(lastSignificant))) {
      // A regular expression literal: a slash where an operand is expected.
      let j = i + 1;
      let inClass = false;
      while (j < src.length && src[j] !== '\n' && (inClass || src[j] !== '/')) {
        if (src[j] === '\\') j++;
        else if (src[j] === '[') inClass = true;
        else if (src[j] === ']') inClass = false;
        j++;
      }
      blank(i + 1, j);
      i = j + 1;
      lastSignificant = '/';
    } else {
      if (c === '{') braces++;
      else if (c === '}') braces--;
      if (!/\s/.test(c)) lastSignificant = /[\w$]/.test(c) ? 'a' : c;
      i++;
    }
  }
  return out.join('');
}

/** The calls made at the top level of a file (depth 0), with their arguments split at top-level commas. */
export function topLevelCalls(code: string): Call[] {
  const calls: Call[] = [];
  let depth = 0;
  for (let i = 0; i < code.length; i++) {
    const c = code[i]!;
    if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) depth--;
    if (depth !== 0 || !/[A-Za-z_$]/.test(c) || /[\w$.]/.test(code[i - 1] ?? '')) continue;
    const m = /^([A-Za-z_$][\w$]*)\s*\(/.exec(code.slice(i, i + 40));
    if (!m || !(SUITES.has(m[1]!) || HOOKS.has(m[1]!))) continue;
    const args: string[] = [];
    let d = 0;
    let start = i + m[0].length;
    let j = start;
    for (; j < code.length; j++) {
      const ch = code[j]!;
      if ('([{'.includes(ch)) d++;
      else if (')]}'.includes(ch)) {
        if (d === 0) break;
        d--;
      } else if (ch === ',' && d === 0) {
        args.push(code.slice(start, j).trim());
        start = j + 1;
      }
    }
    const last = code.slice(start, j).trim();
    if (last) args.push(last);
    calls.push({ name: m[1]!, line: code.slice(0, i).split('\n').length, args });
    i = j;
  }
  return calls;
}

const isFunction = (arg: string) => /^(async\b|function\b|\(|[\w$]+\s*=>)/.test(arg);

/** What is wrong with one test file, as readable lines (empty when it is fine). */
export function problems(source: string): string[] {
  const code = codeOnly(source);
  const found: string[] = [];
  const calls = topLevelCalls(code);
  if (!calls.some((c) => SUITES.has(c.name))) found.push('no top-level describe/it/test');
  for (const call of calls) {
    // Options are every argument that is neither the name (a string, blanked) nor the function.
    const options = call.args.filter((a, k) => !isFunction(a) && !(k === 0 && SUITES.has(call.name)));
    if (!options.some((o) => /timeout/i.test(o))) {
      found.push(`line ${call.line}: top-level ${call.name}() has no { timeout }`);
    }
  }
  for (const m of code.matchAll(/\.(skip|only|todo)\s*\(|\b(skip|only|todo)\s*:/g)) {
    found.push(`line ${code.slice(0, m.index).split('\n').length}: ${m[0]} (no skipped or focused tests)`);
  }
  return found;
}

function testFiles(): string[] {
  return TEST_DIRS.flatMap((dir) =>
    readdirSync(join(ROOT, dir))
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => join(ROOT, dir, f)),
  );
}

describe('test hygiene', { timeout: 30_000 }, () => {
  it('every test file bounds its top-level suites, tests and hooks, and skips or focuses nothing', () => {
    const files = testFiles();
    assert.ok(files.length > 40, `found only ${files.length} test files`);
    const report = files.flatMap((f) =>
      problems(readFileSync(f, 'utf8')).map((p) => `${relative(ROOT, f)}: ${p}`),
    );
    assert.deepEqual(report, []);
  });

  it('finds what it looks for, and is not fooled by strings, comments or regular expressions', () => {
    const good = [
      "import { after, before, describe, it } from 'node:test';",
      "// describe('not a call', () => {}); .only( in a comment",
      'const TIMEOUT = { timeout: 5_000 };',
      'before(async () => { await start(); }, { timeout: 30_000 });',
      'after(() => stop(), TIMEOUT);',
      "describe('a (suite', { timeout: 60_000 }, () => {",
      "  it('uses .skip( in a string', () => assert.match('x', /\\)\\.only\\(/));",
      // A test named by a template literal with a nested template in a substitution.
      `  it(\`template $\{\`nested $\{1}\`} name\`, () => {});`,
      '});',
      "it('top-level test', TIMEOUT, async () => {});",
    ].join('\n');
    assert.deepEqual(problems(good), []);

    assert.deepEqual(problems("describe('s', () => {\n  it('t', { timeout: 1 }, () => {});\n});"), [
      'line 1: top-level describe() has no { timeout }',
    ]);
    assert.deepEqual(problems("describe('s', { timeout: 1 }, () => {});\nbefore(async () => {});"), [
      'line 2: top-level before() has no { timeout }',
    ]);
    assert.deepEqual(
      problems(
        "describe('s', { timeout: 1 }, () => {\n  it.only('t', () => {});\n  it('u', { skip: true }, () => {});\n});",
      ),
      ['line 2: .only( (no skipped or focused tests)', 'line 3: skip: (no skipped or focused tests)'],
    );
    assert.deepEqual(problems('const x = 1;\n'), ['no top-level describe/it/test']);
  });
});
