/** `ota audit list`: the operator audit log, newest first, one page at a time (it only grows). */
import type { AuditPage } from '../protocol/audit.js';
import { stringOption } from './args.js';
import { pageLimit } from './campaigns.js';
import type { Context } from './context.js';
import { table } from './render.js';

export function auditRows(page: AuditPage): string[] {
  return table(
    ['AT', 'ACTOR', 'ROLE', 'ACTION', 'TARGET', 'OUTCOME', 'STATUS', 'SOURCE IP'],
    page.entries.map((e) => [
      e.at,
      e.actor,
      e.role,
      e.action,
      e.target ?? '-',
      e.outcome,
      e.status,
      e.source_ip,
    ]),
  );
}

export async function list(ctx: Context): Promise<void> {
  const api = await ctx.api();
  const v = ctx.args.values;
  const page = await api.get<AuditPage>('/audit', {
    actor: stringOption(v, 'actor'),
    role: stringOption(v, 'role'),
    outcome: stringOption(v, 'outcome'),
    target: stringOption(v, 'target'),
    limit: pageLimit(ctx) ?? 50,
    next_token: stringOption(v, 'next-token'),
  });
  ctx.printJson(page);
  const rows = page.entries.length ? auditRows(page) : ['no audit entries match'];
  if (page.next_token) rows.push('', `more: --next-token ${page.next_token}`);
  ctx.print(rows.join('\n'));
}
