/**
 * What a command runs with: its parsed arguments, the output streams, the environment, an abort signal for
 * Ctrl-C, and the API client built on first use from the connection settings.
 */
import type { Agent } from 'node:https';
import { relative, resolve } from 'node:path';
import { AdminTokenAuthorizer, ApiClient, type Authorizer } from './api.js';
import { booleanOption, type ParsedCommand } from './args.js';
import { type Connection, resolveConnection } from './config.js';
import { createAgent } from './http.js';
import type { ProgressOutput } from './progress.js';
import { terminalJson, terminalText } from './render.js';

export interface Output extends ProgressOutput {
  write(text: string): unknown;
}

export interface Io {
  readonly stdout: Output;
  readonly stderr: Output;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** Aborted on Ctrl-C. */
  readonly signal: AbortSignal;
}

export class Context {
  private connection?: Connection;
  private authorizer?: Authorizer;
  private client?: Promise<ApiClient>;
  private readonly agents: Agent[] = [];

  constructor(
    readonly io: Io,
    readonly args: ParsedCommand,
  ) {}

  get json(): boolean {
    return booleanOption(this.args.values, 'json');
  }

  get signal(): AbortSignal {
    return this.io.signal;
  }

  /** A path given on the command line, relative to the working folder. */
  path(p: string): string {
    return resolve(this.io.cwd, p);
  }

  /** A path as shown to the operator: relative when under the working folder, absolute otherwise. */
  display(p: string): string {
    const rel = relative(this.io.cwd, p);
    return rel && !rel.startsWith('..') ? rel : p;
  }

  /** Human output on stdout (nothing with --json). */
  print(text = ''): void {
    const safe = terminalText(text);
    if (!this.json) this.io.stdout.write(safe.endsWith('\n') ? safe : `${safe}\n`);
  }

  /** Machine output on stdout (only with --json). */
  printJson(value: unknown): void {
    if (this.json) this.io.stdout.write(`${terminalJson(value, 2)}\n`);
  }

  /** Notes and warnings on stderr, kept off stdout so it stays parseable. */
  note(text: string): void {
    const safe = terminalText(text);
    this.io.stderr.write(safe.endsWith('\n') ? safe : `${safe}\n`);
  }

  connectionSettings(): Connection {
    this.connection ??= resolveConnection({ values: this.args.values, env: this.io.env, cwd: this.io.cwd });
    return this.connection;
  }

  /** An agent trusting the configured CA (uploads to presigned URLs use it too). */
  agent(maxSockets = 8): Agent {
    const agent = createAgent(this.connectionSettings().caFile, maxSockets);
    this.agents.push(agent);
    return agent;
  }

  api(): Promise<ApiClient> {
    this.client ??= (async () => {
      const c = this.connectionSettings();
      const creds = c.credentials;
      if (creds.kind === 'aws') {
        this.authorizer = await (await import('./aws-auth.js')).sigV4Authorizer({ region: creds.region });
      } else if (creds.kind === 'local-account') {
        const { localAccountAuthorizer } = await import('./local-account.js');
        this.authorizer = await localAccountAuthorizer(creds.file, creds.role);
      } else {
        this.authorizer = new AdminTokenAuthorizer(creds.file);
      }
      return new ApiClient(c, this.agent(), this.authorizer, this.signal);
    })();
    return this.client;
  }

  /** Secrets to mask in any output (the admin token once it was read). */
  secrets(): readonly string[] {
    return this.authorizer?.secrets() ?? [];
  }

  close(): void {
    for (const a of this.agents.splice(0)) a.destroy();
  }
}
