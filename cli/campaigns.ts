/** `ota campaigns ...`: staged rollouts of a published release. */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CampaignExcluded } from '../protocol/operator-responses.js';
import { PAGE_LIMITS } from '../protocol/routes.js';
import type { ApiClient } from './api.js';
import { booleanOption, EXIT, numberOption, stringOption } from './args.js';
import type { Context } from './context.js';
import { CliError } from './errors.js';
import { send } from './http.js';
import { campaignBody, campaignVins, parseVinList, vinListUpload } from './inputs.js';
import {
  type CampaignVehiclesView,
  type CampaignView,
  campaignLine,
  campaignRows,
  campaignVehicleRows,
  countsText,
  preparationText,
  renderCampaign,
  terminalJson,
  terminalText,
} from './render.js';
import { describeS3Error } from './upload.js';

const path = (id: string, suffix = '') => `/campaigns/${encodeURIComponent(id)}${suffix}`;

/**
 * Creates the campaign; its targets are prepared in the background (202, preparing). A --vins-file of more than
 * 10,000 VINs goes up through the presigned URL the API answers, one VIN a line. Unless --no-wait, polls until
 * the campaign is created (exit 0) or failed (exit 3), showing the preparation's progress.
 */
export async function create(ctx: Context): Promise<number> {
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
  const list = vinListUpload(campaignVins(ctx.args.values, fromFile));
  const api = await ctx.api();
  let c = await api.post<CampaignView & { upload?: { url: string; headers: Record<string, string> } }>(
    '/campaigns',
    body,
  );
  if (list && c.upload) {
    const res = await send(new URL(c.upload.url), {
      method: 'PUT',
      headers: c.upload.headers,
      body: list,
      agent: ctx.agent(),
      signal: ctx.signal,
      maxResponseBytes: 64 * 1024,
    });
    if (res.status < 200 || res.status >= 300)
      throw new CliError(`upload of the VIN list refused: ${describeS3Error(res.status, res.body)}`);
    c = await api.post<CampaignView>(path(c.campaign_id, '/targets'), {});
  }
  if (!booleanOption(ctx.args.values, 'no-wait')) c = await waitPrepared(ctx, api, c);
  ctx.printJson(c);
  if (c.status === 'preparing') {
    ctx.print(
      `campaign ${c.campaign_id} (${c.name}) is preparing its targets in the background; follow it: ota campaigns status ${c.campaign_id}`,
    );
    return EXIT.ok;
  }
  if (c.status !== 'created') {
    ctx.print(
      `campaign ${c.campaign_id} ${c.status}: ${c.preparation?.failure_reason ?? c.halt_reason ?? ''}`,
    );
    return EXIT.stopped;
  }
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
  return EXIT.ok;
}

/**
 * A rollback campaign for campaign <id>: targets every vehicle that completed it, offers the bundle --bundle-id
 * (what they ran before) with the OEM-signed authorisation --authorisation (ota rollbacks sign), which each vehicle
 * checks before it lowers any ECU. The backend refuses an authorisation the OEM release key did not sign.
 */
export async function rollback(ctx: Context): Promise<number> {
  const id = ctx.args.positionals[0]!;
  const v = ctx.args.values;
  const file = ctx.path(stringOption(v, 'authorisation')!);
  let authorisation: unknown;
  try {
    authorisation = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CliError(`cannot read the authorisation ${file}: ${(err as Error).message}`);
  }
  const api = await ctx.api();
  const taken = await api.get<CampaignView>(path(id));
  const vins: string[] = [];
  for (const w of taken.waves) {
    const { items } = await api.getAll<CampaignVehiclesView['vehicles'][number]>(
      path(id, '/vehicles'),
      'vehicles',
      {
        wave: w.wave,
        limit: PAGE_LIMITS.max,
      },
    );
    for (const x of items) if (x.status === 'completed') vins.push(x.vin);
  }
  if (vins.length === 0) throw new CliError(`no vehicle completed campaign ${id}: nothing to roll back`);
  if (vins.length > 10_000)
    throw new CliError(`${vins.length} vehicles: roll back at most 10,000 per campaign`);
  const waves = stringOption(v, 'waves');
  const body = {
    ...(stringOption(v, 'campaign-id') !== undefined ? { campaign_id: stringOption(v, 'campaign-id') } : {}),
    name: stringOption(v, 'name') ?? `rollback of ${id}`,
    bundle_id: stringOption(v, 'bundle-id')!,
    targets: { vins },
    rollback: { campaign_id: id, authorisation },
    ...(waves !== undefined || booleanOption(v, 'skip-canary')
      ? {
          policy: {
            ...(waves !== undefined ? { waves: waves.split(',').map(Number) } : {}),
            ...(booleanOption(v, 'skip-canary') ? { skip_canary: true } : {}),
          },
        }
      : {}),
  };
  let c = await api.post<CampaignView>('/campaigns', body);
  c = await waitPrepared(ctx, api, c);
  ctx.printJson(c);
  if (c.status !== 'created') {
    ctx.print(`campaign ${c.campaign_id} ${c.status}: ${c.preparation?.failure_reason ?? ''}`);
    return EXIT.stopped;
  }
  ctx.print(
    [
      `created rollback campaign ${c.campaign_id} of ${id}: ${c.release_id}, ${c.target_count} of ${vins.length} vehicle(s)`,
      `start it: ota campaigns start ${c.campaign_id}`,
    ].join('\n'),
  );
  return EXIT.ok;
}

/** Polls a preparing campaign until it is not, noting progress on stderr when it changes. */
async function waitPrepared(ctx: Context, api: ApiClient, first: CampaignView): Promise<CampaignView> {
  let c = first;
  let shown = '';
  while (c.status === 'preparing') {
    const p = c.preparation;
    const text = p ? preparationText(p) : 'preparing';
    if (text !== shown && !ctx.json) ctx.note(`${c.campaign_id}: ${text}`);
    shown = text;
    if (p?.state === 'awaiting_targets') return c;
    await sleep(1000, undefined, { signal: ctx.signal });
    c = await api.get<CampaignView>(path(c.campaign_id));
  }
  return c;
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

const END_STATES = new Set(['completed', 'halted', 'cancelled', 'failed']);

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
