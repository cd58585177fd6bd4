/** `ota alerts`: the local cloud's operator alerts (local/alarms.ts). On AWS they are SNS notifications. */
import type { AlertRecord } from '../lambdas/core/alerts.js';
import { stringOption } from './args.js';
import type { Context } from './context.js';
import { ApiError, CliError } from './errors.js';

const KINDS = new Set(['campaign_halted', 'failure_rate', 'dead_letters', 'ingest_rejections']);

export async function list(ctx: Context): Promise<void> {
  const kind = stringOption(ctx.args.values, 'kind');
  if (kind !== undefined && !KINDS.has(kind))
    throw new CliError(`--kind must be one of ${[...KINDS].join(', ')}`);
  const api = await ctx.api();
  let alerts: AlertRecord[];
  try {
    ({ alerts } = await api.get<{ alerts: AlertRecord[] }>('/local/alerts'));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 403))
      throw new CliError(
        'this API has no alert list: on AWS, alerts are sent to the stack\'s SNS topic (subscribe with cdk context alertEmails / alertWebhooks, README "Operator alerts")',
      );
    throw err;
  }
  const shown = kind === undefined ? alerts : alerts.filter((a) => a.kind === kind);
  ctx.printJson({ alerts: shown });
  ctx.print(
    shown.length === 0
      ? 'no alerts'
      : shown.map((a) => `${a.raised_at}  ${a.kind.padEnd(17)}  ${a.message}`).join('\n'),
  );
}
