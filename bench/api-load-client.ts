/**
 * The load generator of `npm run bench:api`, run by bench/api-load.ts in a child process of its own so that it
 * does not share an event loop (or a core) with the server it measures. It runs one autocannon scenario against
 * 127.0.0.1 and prints one JSON line with the figures; it never talks to any other address.
 *
 *   node --import tsx bench/api-load-client.ts <scenario.json>
 */
import { readFileSync } from 'node:fs';
import autocannon, { type Options, type Result } from 'autocannon';

export interface LoadScenario {
  readonly name: string;
  /** https://127.0.0.1:<port> of the local gateway. */
  readonly url: string;
  readonly caFile: string;
  /**
   * notfound: GET of a path no route matches (the gateway answers 404 without running a function);
   * challenge: POST /auth/challenge {vin} (auth-api + one DynamoDB write);
   * download: POST /updates/{vin}/download with the vehicle's bearer token (vehicle-api: token check, rate
   * limit write, reads, assignment counter write, signature, presigned URL).
   */
  readonly kind: 'notfound' | 'challenge' | 'download';
  readonly connections: number;
  readonly durationSeconds: number;
  readonly warmupSeconds: number;
  /** The status every measured response must have. */
  readonly expectStatus: number;
  /** Requests go round-robin over these vehicles, so concurrent requests carry different VIN/token pairs. */
  readonly vehicles: readonly { readonly vin: string; readonly token: string }[];
  readonly firmwareVersion: string;
}

export interface LoadResult {
  readonly name: string;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly requests: number;
  /** Responses during the warm-up (not measured). */
  readonly warmupRequests: number;
  readonly requestsPerSecond: number;
  readonly latencyMs: {
    readonly mean: number;
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly max: number;
  };
  readonly statusCounts: Record<string, number>;
  /** Responses whose status was not expectStatus. */
  readonly unexpected: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly mismatches: number;
}

function requestFor(s: LoadScenario): Options['requests'] {
  let next = 0;
  const vehicle = () => {
    const v = s.vehicles[next % s.vehicles.length]!;
    next++;
    return v;
  };
  switch (s.kind) {
    case 'notfound':
      return [{ method: 'GET', path: '/bench/no-such-route' }];
    case 'challenge':
      return [
        {
          method: 'POST',
          setupRequest: (req) => ({
            ...req,
            path: '/auth/challenge',
            headers: { ...req.headers, 'content-type': 'application/json' },
            body: JSON.stringify({ vin: vehicle().vin }),
          }),
        },
      ];
    case 'download': {
      const body = JSON.stringify({ firmware_version: s.firmwareVersion });
      return [
        {
          method: 'POST',
          setupRequest: (req) => {
            const v = vehicle();
            return {
              ...req,
              path: `/updates/${v.vin}/download`,
              headers: {
                ...req.headers,
                'content-type': 'application/json',
                authorization: `Bearer ${v.token}`,
              },
              body,
            };
          },
        },
      ];
    }
  }
}

function verifierFor(s: LoadScenario): ((body: string) => boolean) | undefined {
  if (s.kind === 'download')
    return (body) => body.includes('"download_url"') && body.includes('"assignment"');
  if (s.kind === 'challenge') return (body) => body.includes('"nonce"');
  return undefined;
}

/**
 * autocannon's own latency histogram has 1 ms resolution, too coarse for the sub-millisecond baseline, so the
 * latency of every measured response (hrtime, fractional ms) is kept here and the percentiles computed exactly.
 */
async function run(s: LoadScenario): Promise<{ result: Result; latencies: Float64Array }> {
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  const instance = autocannon({
    url: s.url,
    connections: s.connections,
    duration: s.durationSeconds,
    timeout: 30,
    requests: requestFor(s),
    verifyBody: verifierFor(s),
    // autocannon connects with rejectUnauthorized: false whatever is passed; the CA is given for the record.
    tlsOptions: { ca: readFileSync(s.caFile, 'utf8') },
    servername: 'localhost',
    warmup: s.warmupSeconds > 0 ? { connections: s.connections, duration: s.warmupSeconds } : undefined,
  });
  instance.on('response', (_client: unknown, _status: number, _bytes: number, ms: number) => {
    if (n === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2);
      bigger.set(latencies);
      latencies = bigger;
    }
    latencies[n++] = ms;
  });
  const result = await instance;
  return { result, latencies: latencies.slice(0, n).sort() };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main() {
  const file = process.argv[2];
  if (!file) throw new Error('usage: api-load-client.ts <scenario.json>');
  const s = JSON.parse(readFileSync(file, 'utf8')) as LoadScenario;
  if (!/^https:\/\/127\.0\.0\.1:\d+$/.test(s.url)) throw new Error(`refusing to load anything but 127.0.0.1`);
  const { result: r, latencies } = await run(s);
  const statusCounts = Object.fromEntries(
    Object.entries(r.statusCodeStats).map(([code, { count }]) => [code, Number(count)]),
  );
  const total = Object.values(statusCounts).reduce((a, b) => a + b, 0);
  const result: LoadResult = {
    name: s.name,
    connections: s.connections,
    durationSeconds: r.duration,
    requests: total,
    warmupRequests: Object.values(r.warmup?.statusCodeStats ?? {}).reduce(
      (a, { count }) => a + Number(count),
      0,
    ),
    requestsPerSecond: total / r.duration,
    latencyMs: {
      mean: latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length),
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      max: percentile(latencies, 100),
    },
    statusCounts,
    unexpected: total - (statusCounts[String(s.expectStatus)] ?? 0),
    errors: r.errors,
    timeouts: r.timeouts,
    mismatches: r.mismatches,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
