/**
 * The operator console on the local cloud: the built files (dist/console, `npm run build:console`) served by the
 * gateway at /console/, on the same origin as the API, so the console's signed calls need no CORS. config.json
 * tells the console it signs in with local accounts. The headers are the ones CloudFront adds on AWS.
 */
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';

export const CONSOLE_PATH = '/console/';

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  json: 'application/json; charset=utf-8',
};

/**
 * Content security policy of the console: its own scripts and styles only, API calls to its origin, uploads to the
 * storage `uploadOrigins` (presigned S3 URLs), no framing.
 */
export function consoleSecurityHeaders(uploadOrigins: readonly string[]): Record<string, string> {
  return {
    'content-security-policy': [
      "default-src 'self'",
      "script-src 'self'",
      "style-src 'self'",
      "img-src 'self' data:",
      `connect-src 'self' ${uploadOrigins.join(' ')}`.trim(),
      "frame-ancestors 'none'",
      "base-uri 'none'",
      "form-action 'self'",
      "object-src 'none'",
    ].join('; '),
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'strict-transport-security': 'max-age=31536000; includeSubDomains',
    'cache-control': 'no-store',
  };
}

export interface ConsoleFiles {
  /** The built console (index.html, app.js, styles.css). */
  readonly dir: string;
  /** Served as /console/config.json. */
  readonly config: Readonly<Record<string, unknown>>;
  /** Origins the console may upload to (connect-src). */
  readonly uploadOrigins: readonly string[];
}

/** Answers a GET for /console or anything under it; false when the path is not the console's. */
export async function serveConsole(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  files: ConsoleFiles,
): Promise<boolean> {
  if (path !== '/console' && !path.startsWith(CONSOLE_PATH)) return false;
  const send = (status: number, type: string, body: string | Buffer) => {
    for (const [k, v] of Object.entries(consoleSecurityHeaders(files.uploadOrigins))) res.setHeader(k, v);
    res.setHeader('content-type', type);
    res.setHeader('content-length', Buffer.byteLength(body));
    res.statusCode = status;
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    send(405, TYPES.json!, JSON.stringify({ error: { code: 'method_not_allowed', message: 'Use GET' } }));
    return true;
  }
  if (path === '/console') {
    res.setHeader('location', CONSOLE_PATH);
    send(301, TYPES.html!, '');
    return true;
  }
  const name = path.slice(CONSOLE_PATH.length) || 'index.html';
  if (name === 'config.json') {
    send(200, TYPES.json!, JSON.stringify(files.config));
    return true;
  }
  // Only the files the build writes: no path from the request ever reaches the file system unchecked.
  if (!/^(index\.html|app\.js|styles\.css)$/.test(name)) {
    send(404, TYPES.json!, JSON.stringify({ error: { code: 'not_found', message: 'No such console file' } }));
    return true;
  }
  try {
    send(200, TYPES[name.split('.').pop()!]!, await readFile(join(files.dir, name)));
  } catch {
    send(
      404,
      TYPES.json!,
      JSON.stringify({
        error: { code: 'console_not_built', message: 'The console is not built: npm run build:console' },
      }),
    );
  }
  return true;
}
