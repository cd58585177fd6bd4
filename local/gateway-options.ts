/**
 * What the local API Gateway stand-in takes (TLS, port, credentials, routes, throttle, timeout, the handler loader
 * and the logger), apart from local/gateway.ts, which serves requests with it: callers that only configure or
 * load handlers (cloud-options.ts, lambda-runtime.ts, bench/) need these types, not the server.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import type { AuditEntry } from '../protocol/audit.js';
import type { FunctionName, RouteDefinition } from '../protocol/routes.js';
import type { TlsMaterial } from './ca.js';
import type { ConsoleFiles } from './console-files.js';
import type { LocalOperatorAccount } from './operator-accounts.js';
import type { ThrottleSettings } from './throttle.js';

export type ProxyHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;
/** Returns the `handler` export of lambdas/<fn>/handler.ts, or a stand-in for it in tests. */
export type HandlerLoader = (fn: FunctionName) => Promise<ProxyHandler>;

export interface GatewayLogger {
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

export interface LocalGatewayProps {
  /** Server key and certificate (the local CA's 127.0.0.1 certificate). */
  readonly tls: TlsMaterial;
  /** TCP port on 127.0.0.1; 0 picks a free one. */
  readonly port: number;
  /** Bearer token that operator routes require, standing in for IAM authorisation. */
  readonly adminToken: string;
  /**
   * Operator routes also take requests signed with SigV4 (service execute-api) with these credentials, as the
   * deployed API's IAM authorisation does, so `ota ... --aws` works against the local cloud too.
   * @default admin token only
   */
  readonly sigv4?: {
    readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
    readonly region: string;
  };
  /**
   * Local operator accounts (one per role): operator requests signed with their credentials act with their role,
   * and a route whose `roles` leave that role out answers 403. The admin token and the `sigv4` credentials act as
   * admin. @default none
   */
  readonly operators?: readonly LocalOperatorAccount[];
  /**
   * Records the refusals the gateway makes itself (a signed-in role calling a route it may not), as the
   * operator-api function records the mutations it answers. @default not recorded
   */
  readonly audit?: (entry: AuditEntry) => Promise<void>;
  /** The operator console, served at /console/ on the API's origin. @default not served */
  readonly console?: ConsoleFiles;
  readonly loadHandler: HandlerLoader;
  /** @default ROUTES */
  readonly routes?: readonly RouteDefinition[];
  /** Per-source-IP token bucket. @default { ratePerSecond: 100, burst: 200 } */
  readonly throttle?: ThrottleSettings;
  /** How long a handler may run before the caller gets 504, as API Gateway's integration timeout. @default 29000 */
  readonly timeoutMs?: number;
  /** @default JSON lines on stderr */
  readonly logger?: GatewayLogger;
  /** Milliseconds since the epoch. @default Date.now */
  readonly clock?: () => number;
  /**
   * Routes the local cloud itself answers, not a function (GET only, operator token): `GET /local/alerts` lists the
   * local alarms' records (local/alarms.ts). They have no AWS counterpart, so they are not in ROUTES or the
   * OpenAPI document: on AWS the alerts go to the stack's SNS topic. @default none
   */
  readonly localRoutes?: Readonly<Record<string, () => unknown>>;
}
