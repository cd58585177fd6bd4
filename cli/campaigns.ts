/** `ota campaigns ...`: staged rollouts of a published release. */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CampaignExcluded } from '../protocol/operator-responses.js';
import { PAGE_LIMITS } from '../protocol/routes.js';
import type { ApiClient } from './api.js';
import { booleanOption, EXIT, numberOption, stringOption } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';
import { campaignBody, parseVinList } from './inputs.js';
import {
  type CampaignVehiclesView,
  type CampaignView,
  campaignLine,
  campaignRows,
  campaignVehicleRows,
  countsText,
  renderCampaign,
  terminalJson,
  terminalText,
} from './render.js';

const path = (id: string, suffix = '') => `/campaigns/${encodeURIComponent(id)}${suffix}`;

export async function create(ctx: Context): Promise<void> {
  const file = stringOption(ctx.args.values, 'vins-file');
  let fromFile: string[] = [];
  if (file !== undefined) {
    const p = ctx.path(file);
    try {
      fromFile = parseVinList(readFileSync(p, 'utf8'));
    } catch (err) {
      throw new CliError(`cannot read the VIN file ${p} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (fromFile.length === 0) throw new CliError(`${p} lists no VINs`);
  }
  const body = campaignBody(ctx.args.values, fromFile);
  const api = await ctx.api();
  const c = await api.post<CampaignView>('/campaigns', body);
  ctx.printJson(c);
  ctx.print(
    [
      `created campaign ${c.campaign_id} (${c.name}): ${c.release_id}, ${c.target_count} vehicle(s) in ${c.waves.length} wave(s) of ${c.waves.map((w) => w.size).join(', ')}`,
      ...(c.excluded.count
        ? [
            `excluded ${c.excluded.count}: ${excludedText(c)} (list them: ota campaigns excluded ${c.campaign_id})`,
          ]
        : []),
      `start it: ota campaigns start ${c.campaign_id}`,
    ].join('\n'),
  );
}

/** start, pause, resume, cancel: POST with an empty body; the API refuses a transition that does not apply. */
export function action(name: 'start' | 'pause' | 'resume' | 'cancel') {
  return async (ctx: Context): Promise<void> => {
    const id = ctx.args.positionals[0]!;
    const api = await ctx.api();
    let c = await api.post<CampaignView>(path(id, `/${name}`), {});
    // Cancel withdraws offers in the background (202, cancelling); wait for the end so the answer is final.
    while (c.status === 'cancelling') {
      await sleep(1000, undefined, { signal: ctx.signal });
      c = await api.get<CampaignView>(path(id));
    }
    ctx.printJson(c);
    ctx.print(`${c.campaign_id}: ${c.status}${c.halt_reason ? ` (halt reason: ${c.halt_reason})` : ''}`);
  };
}

const END_STATES = new Set(['completed', 'halted', 'cancelled']);

export async function status(ctx: Context): Promise<number> {
  const id = ctx.args.positionals[0]!;
  const watch = booleanOption(ctx.args.values, 'watch');
  const interval = numberOption(ctx.args.values, 'interval', { min: 0.2, max: 3600 }) ?? 2;
  const api = await ctx.api();
  if (!watch) {
    const c = await api.get<CampaignView>(path(id));
    ctx.printJson(c);
    ctx.print(renderCampaign(c).join('\n'));
    return EXIT.ok;
  }
  return watchCampaign(ctx, api, id, interval * 1000);
}

/**
 * Polls the campaign until it ends (completed: exit 0; halted or cancelled: exit 3) or Ctrl-C (130). A terminal
 * gets the status redrawn in place; a pipe gets one line per change; --json one JSON document per line per change.
 */
export async function watchCampaign(
  ctx: Context,
  api: ApiClient,
  id: string,
  intervalMs: number,
): Promise<number> {
  const out = ctx.io.stdout;
  const tty = !ctx.json && out.isTTY === true;
  let previous = '';
  let drawn = 0;
  try {
    for (;;) {
      const c = await api.get<CampaignView>(path(id));
      const { updated_at: _ignored, ...state } = c;
      const key = JSON.stringify(state);
      const now = new Date();
      if (tty) {
        const width = Math.max(20, (out.columns || 80) - 1);
        const lines = [
          ...renderCampaign(c),
          '',
          `${now.toISOString().slice(11, 19)}  refreshing every ${intervalMs / 1000}s; Ctrl-C to stop`,
        ]
          .map(terminalText)
          .map((l) => (l.length > width ? l.slice(0, width) : l));
        out.write(`${drawn ? `\x1b[${drawn}A\r\x1b[J` : ''}${lines.join('\n')}\n`);
        drawn = lines.length;
      } else if (key !== previous) {
        out.write(ctx.json ? `${terminalJson(c)}\n` : `${terminalText(campaignLine(c, now))}\n`);
      }
      previous = key;
      if (END_STATES.has(c.status)) {
        if (!ctx.json && c.status !== 'completed') {
          ctx.note(
            `campaign ${c.campaign_id} ${c.status}${c.halt_reason ? `: ${c.halt_reason}` : ''} (${countsText(c.counts)})`,
          );
        }
        return c.status === 'completed' ? EXIT.ok : EXIT.stopped;
      }
      await sleep(intervalMs, undefined, { signal: ctx.signal });
    }
  } catch (err) {
    if (ctx.signal.aborted) return EXIT.interrupted;
    throw err;
  }
}

export const pageLimit = (ctx: Context) =>
  numberOption(ctx.args.values, 'limit', { integer: true, min: 1, max: PAGE_LIMITS.max });

export async function list(ctx: Context): Promise<void> {
  const api = await ctx.api();
  const { items } = await api.getAll<CampaignView>('/campaigns', 'campaigns', { limit: pageLimit(ctx) });
  ctx.printJson({ campaigns: items });
  ctx.print(campaignRows(items).join('\n'));
}

export async function vehicles(ctx: Context): Promise<void> {
  const id = ctx.args.positionals[0]!;
  const wave = numberOption(ctx.args.values, 'wave', { integer: true, min: 0 }) ?? 0;
  const api = await ctx.api();
  const { items } = await api.getAll<CampaignVehiclesView['vehicles'][number]>(
    path(id, '/vehicles'),
    'vehicles',
    {
      wave,
      limit: pageLimit(ctx),
    },
  );
  const view: CampaignVehiclesView = { campaign_id: id, wave, vehicles: items, next_token: null };
  ctx.printJson(view);
  ctx.print([`campaign ${id}, wave ${wave}`, ...campaignVehicleRows(view)].join('\n'));
}

export async function excluded(ctx: Context): Promise<void> {
  const id = ctx.args.positionals[0]!;
  const api = await ctx.api();
  const { items } = await api.getAll<CampaignExcluded['excluded'][number]>(
    path(id, '/excluded'),
    'excluded',
    {
      limit: pageLimit(ctx),
    },
  );
  ctx.printJson({ campaign_id: id, excluded: items });
  ctx.print(
    items.length ? items.map((e) => `${e.vin}  ${e.reason}`).join('\n') : `campaign ${id} excluded no target`,
  );
}

function excludedText(c: CampaignView): string {
  return Object.entries(c.excluded.by_reason)
    .map(([reason, n]) => `${reason} ${n}`)
    .join(', ');
}
