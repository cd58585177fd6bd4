/**
 * X-Ray tracing of the functions, without the X-Ray SDK. The Powertools Tracer wraps aws-xray-sdk-core, which with
 * its cls-hooked, semver and patchers was about 120 KiB of every bundle and a share of every cold start, to do three
 * things here: a `## handler` subsegment annotated with ColdStart and Service, one subsegment per AWS SDK call
 * (service, operation, status, request id, retries), and the trace header on those calls. This does the same with
 * the documented daemon protocol: one UDP datagram per closed subsegment, `{"format":"json","version":1}` then the
 * subsegment document, to AWS_XRAY_DAEMON_ADDRESS, for the sampled trace in `_X_AMZN_TRACE_ID` (set by Lambda for
 * each invocation). Lambda's own facade segment remains the parent of `## handler`.
 *
 * Off unless the trace header says Sampled=1 and POWERTOOLS_TRACE_ENABLED is not "false" (the local cloud sets it
 * false, and has no daemon). A send that fails is dropped: tracing never fails an invocation.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';

/** An open subsegment: where its children hang and what it becomes when closed. */
interface Open {
  readonly traceId: string;
  readonly parentId: string;
  readonly id: string;
  readonly name: string;
  readonly start: number;
}

type Doc = Record<string, unknown>;

const HEADER = '{"format":"json","version":1}\n';
const now = () => Date.now() / 1000;
const newId = () => randomBytes(8).toString('hex');

let socket: Socket | undefined;
let coldStart = true;
/** The `## handler` subsegment of the invocation running now (Lambda runs one at a time per instance). */
let current: Open | undefined;

/** Root and parent of the sampled trace Lambda handed this invocation, or undefined when not traced. */
export function traceContext(
  env: NodeJS.ProcessEnv = process.env,
): { root: string; parent: string } | undefined {
  if (env.POWERTOOLS_TRACE_ENABLED?.toLowerCase() === 'false') return undefined;
  const fields = Object.fromEntries(
    (env._X_AMZN_TRACE_ID ?? '').split(';').map((kv) => kv.split('=') as [string, string]),
  );
  if (fields.Sampled !== '1' || !fields.Root || !fields.Parent) return undefined;
  return { root: fields.Root, parent: fields.Parent };
}

function daemon(): { host: string; port: number } | undefined {
  const address = process.env.AWS_XRAY_DAEMON_ADDRESS;
  // Either host:port, or "udp:host:port tcp:host:port"; segments go over UDP.
  const udp = address?.split(' ').find((a) => !a.startsWith('tcp:'));
  const m = /^(?:udp:)?(.+):(\d+)$/.exec(udp ?? '');
  return m ? { host: m[1]!, port: Number(m[2]) } : undefined;
}

/** Sends one closed subsegment to the daemon; errors are dropped. */
export function emit(doc: Doc): void {
  const to = daemon();
  if (!to) return;
  if (!socket) {
    socket = createSocket('udp4');
    // The socket must not keep the process (or a test) alive on its own.
    socket.unref();
    socket.on('error', () => undefined);
  }
  socket.send(`${HEADER}${JSON.stringify(doc)}`, to.port, to.host, () => undefined);
}

function close(open: Open, extra: Doc): void {
  emit({
    type: 'subsegment',
    trace_id: open.traceId,
    parent_id: open.parentId,
    id: open.id,
    name: open.name,
    start_time: open.start,
    end_time: now(),
    ...extra,
  });
}

/**
 * Runs one invocation inside a `## handler` subsegment (annotated ColdStart and Service, marked fault when it
 * throws), when the invocation is traced; otherwise just runs it.
 */
export async function traceInvocation<R>(run: () => Promise<R>): Promise<R> {
  const ctx = traceContext();
  const cold = coldStart;
  coldStart = false;
  if (!ctx) return run();
  const open: Open = {
    traceId: ctx.root,
    parentId: ctx.parent,
    id: newId(),
    name: '## handler',
    start: now(),
  };
  current = open;
  const annotations = {
    ColdStart: cold,
    Service: process.env.POWERTOOLS_SERVICE_NAME ?? 'service_undefined',
  };
  try {
    const result = await run();
    close(open, { annotations });
    return result;
  } catch (err) {
    const e = err as Error;
    close(open, {
      annotations,
      fault: true,
      cause: { exceptions: [{ id: newId(), message: e?.message, type: e?.name }] },
    });
    throw err;
  } finally {
    if (current === open) current = undefined;
  }
}

/** The slice of an AWS SDK v3 client this needs: its middleware stack and service id. */
interface SdkClient {
  readonly config: { serviceId?: string };
  readonly middlewareStack: {
    add(
      mw: (
        next: (args: { request?: unknown }) => Promise<{ response?: unknown; output?: unknown }>,
        context: { commandName?: string },
      ) => (args: { request?: unknown }) => Promise<{ response?: unknown; output?: unknown }>,
      options: { step: 'build'; name: string; priority?: 'low' },
    ): void;
  };
}

/**
 * Records every call of an AWS SDK v3 client as a subsegment of the current `## handler` (namespace aws, with the
 * operation, HTTP status, request id and retries), and sends the trace header with it so downstream services join
 * the trace. At the build step, so one subsegment spans the call's retries. Returns the client.
 */
export function traceClient<C>(client: C): C {
  const sdk = client as unknown as SdkClient;
  sdk.middlewareStack.add(
    (next, context) => async (args) => {
      const parent = current;
      if (!parent) return next(args);
      const open: Open = {
        traceId: parent.traceId,
        parentId: parent.id,
        id: newId(),
        name: sdk.config.serviceId ?? 'AWS',
        start: now(),
      };
      const request = args.request as { headers?: Record<string, string> } | undefined;
      if (request?.headers) {
        request.headers['x-amzn-trace-id'] = `Root=${open.traceId};Parent=${open.id};Sampled=1`;
      }
      const operation = (context.commandName ?? '').replace(/Command$/, '');
      try {
        const result = await next(args);
        const response = result.response as { statusCode?: number; headers?: Record<string, string> };
        const meta = (result.output as { $metadata?: { requestId?: string; attempts?: number } })?.$metadata;
        close(open, {
          namespace: 'aws',
          aws: { operation, request_id: meta?.requestId, retries: Math.max(0, (meta?.attempts ?? 1) - 1) },
          http: { response: { status: response?.statusCode } },
        });
        return result;
      } catch (err) {
        const e = err as Error & { $metadata?: { httpStatusCode?: number; requestId?: string } };
        const status = e.$metadata?.httpStatusCode;
        close(open, {
          namespace: 'aws',
          aws: { operation, request_id: e.$metadata?.requestId },
          http: { response: { status } },
          ...(status === 429 ? { throttle: true } : {}),
          ...(status !== undefined && status < 500 ? { error: true } : { fault: true }),
          cause: { exceptions: [{ id: newId(), message: e.message, type: e.name, remote: true }] },
        });
        throw err;
      }
    },
    { step: 'build', name: 'otaXRayCapture', priority: 'low' },
  );
  return client;
}
