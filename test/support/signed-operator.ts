/** Operator calls signed with SigV4 as one of the local cloud's operator accounts (the role's credentials). */
import { sigV4Authorizer } from '../../cli/aws-auth.js';
import type { LocalOperatorAccount } from '../../local/operator-accounts.js';
import type { OperatorRole } from '../../protocol/roles.js';
import { type HttpResponse, https } from './https.js';

export class SignedOperator {
  private constructor(
    readonly api: string,
    readonly ca: string,
    readonly account: LocalOperatorAccount,
    private readonly sign: Awaited<ReturnType<typeof sigV4Authorizer>>,
  ) {}

  static async as(
    cloud: { endpoints: { api: string }; caCertPem: string; operators: readonly LocalOperatorAccount[] },
    role: OperatorRole,
  ): Promise<SignedOperator> {
    const account = cloud.operators.find((a) => a.role === role);
    if (!account) throw new Error(`no ${role} account`);
    const sign = await sigV4Authorizer({ region: 'us-east-1', credentials: async () => account });
    return new SignedOperator(cloud.endpoints.api, cloud.caCertPem, account, sign);
  }

  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<HttpResponse> {
    const url = new URL(`${this.api}${path}`);
    const text = body === undefined ? '' : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const signed = await this.sign.headers({ method, url, headers, body: text });
    return https(url.toString(), {
      method,
      headers: { ...headers, ...signed },
      body: body === undefined ? undefined : text,
      ca: this.ca,
    });
  }
}
