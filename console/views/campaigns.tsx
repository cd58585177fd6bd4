/**
 * Campaigns: the list; creation with a preview of the targeted vehicles and the wave plan; one campaign live
 * (refreshed every 3 s) with charts per wave and per status, failure reasons, the halt reason, and pause, resume,
 * cancel with confirmation.
 */
import { useState } from 'preact/hooks';
import { DEFAULT_POLICY, policyProblems, waveSizes } from '../../lambdas/core/campaign-policy.js';
import type { VehicleList } from '../../protocol/fleet-view.js';
import type {
  CampaignList,
  CampaignVehicles,
  CampaignView,
  ReleaseList,
} from '../../protocol/operator-responses.js';
import { BarChart, colourOf } from '../chart.js';
import { ErrorNote, useCan, useLoad, useSession, when } from '../ui.js';

export const REFRESH_MS = 3000;

export function Campaigns() {
  const { api } = useSession();
  const list = useLoad(() => api.get<CampaignList>('/campaigns', { limit: 100 }), [], REFRESH_MS * 2);
  const canCreate = useCan('POST', '/campaigns');
  return (
    <section aria-labelledby="campaigns-title">
      <h1 id="campaigns-title">Campaigns</h1>
      {canCreate && <CreateCampaign />}
      <ErrorNote error={list.error} />
      <table>
        <caption>Campaigns</caption>
        <thead>
          <tr>
            <th scope="col">Campaign</th>
            <th scope="col">Release</th>
            <th scope="col">Status</th>
            <th scope="col">Completed</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.campaigns.map((c) => (
            <tr key={c.campaign_id}>
              <td>
                <a href={`#/campaigns/${c.campaign_id}`}>{c.name}</a>{' '}
                <span class="muted">{c.campaign_id}</span>
              </td>
              <td>{c.release_id}</td>
              <td>{c.status}</td>
              <td>
                {c.counts.completed ?? 0} / {c.target_count}
              </td>
              <td>{when(c.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function parseWaves(text: string): number[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
}

/** Vehicles the filter matches, counted from the registry (the campaign then excludes those already updated). */
async function previewCount(
  api: ReturnType<typeof useSession>['api'],
  filter: { model?: string; version?: string },
): Promise<{ count: number; partial: boolean }> {
  let count = 0;
  let token: string | undefined;
  let pages = 0;
  do {
    const page: VehicleList = await api.get('/vehicles', { ...filter, next_token: token });
    count += page.vehicles.length;
    token = page.next_token ?? undefined;
  } while (token && ++pages < 20);
  return { count, partial: token !== undefined };
}

function CreateCampaign() {
  const { api } = useSession();
  const releases = useLoad(() => api.get<ReleaseList>('/releases', { limit: 100 }), []);
  const published = (releases.data?.releases ?? []).filter((r) => r.status === 'published');
  const [form, setForm] = useState({
    name: '',
    release_id: '',
    model: '',
    current_version: '',
    vins: '',
    waves: DEFAULT_POLICY.waves.join(', '),
    skip_canary: false,
  });
  const [preview, setPreview] = useState<{ count: number; partial: boolean } | undefined>();
  const [error, setError] = useState<unknown>();
  const [state, setState] = useState<string | undefined>();
  const waves = parseWaves(form.waves);
  const problems = policyProblems({ ...DEFAULT_POLICY, waves });
  const set = (name: keyof typeof form) => (e: Event) => {
    const t = e.target as HTMLInputElement;
    setForm({ ...form, [name]: t.type === 'checkbox' ? t.checked : t.value });
    if (name === 'model' || name === 'current_version' || name === 'vins') setPreview(undefined);
  };
  const vins = form.vins.split(/[\s,]+/).filter(Boolean);
  const targets =
    vins.length > 0
      ? { vins }
      : {
          filter: {
            ...(form.model ? { model: form.model } : {}),
            ...(form.current_version ? { current_version: form.current_version } : {}),
          },
        };

  const doPreview = async () => {
    setError(undefined);
    try {
      setPreview(
        vins.length > 0
          ? { count: vins.length, partial: false }
          : await previewCount(api, {
              model: form.model || undefined,
              version: form.current_version || undefined,
            }),
      );
    } catch (err) {
      setError(err);
    }
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    try {
      setState('creating');
      let { body: c } = await api.post<CampaignView>('/campaigns', {
        name: form.name,
        release_id: form.release_id,
        targets,
        policy: { waves, ...(form.skip_canary ? { skip_canary: true } : {}) },
      });
      // POST /campaigns may answer 202 with a preparing campaign: its targets are written in the background.
      while ((c.status as string) === 'preparing') {
        setState('preparing');
        await new Promise((r) => setTimeout(r, 500));
        c = await api.get<CampaignView>(`/campaigns/${c.campaign_id}`);
      }
      setState(c.status);
      location.hash = `#/campaigns/${c.campaign_id}`;
    } catch (err) {
      setState(undefined);
      setError(err);
    }
  };
  const sizes = preview ? waveSizes(preview.count, waves) : undefined;
  return (
    <form class="card" onSubmit={submit} aria-labelledby="create-title">
      <h2 id="create-title">New campaign</h2>
      <label>
        Name
        <input name="name" required maxLength={128} value={form.name} onInput={set('name')} />
      </label>
      <label>
        Release
        <select name="release_id" required value={form.release_id} onChange={set('release_id')}>
          <option value="">choose a published release</option>
          {published.map((r) => (
            <option key={r.release_id} value={r.release_id}>
              {r.release_id} ({r.ecu} {r.version})
            </option>
          ))}
        </select>
      </label>
      <fieldset>
        <legend>Targets: a filter, or a list of VINs</legend>
        <label>
          Model
          <input name="model" value={form.model} onInput={set('model')} />
        </label>
        <label>
          Current version
          <input name="current_version" value={form.current_version} onInput={set('current_version')} />
        </label>
        <label>
          VINs (instead of the filter)
          <textarea name="vins" rows={2} value={form.vins} onInput={set('vins')} />
        </label>
        <button type="button" onClick={doPreview}>
          Preview targets
        </button>
        {preview && (
          <p role="status" data-preview={preview.count}>
            {preview.count}
            {preview.partial ? '+' : ''} vehicles match
            {sizes && `; waves of ${sizes.join(', ')} vehicles`}
          </p>
        )}
      </fieldset>
      <label>
        Waves (cumulative percentages)
        <input name="waves" value={form.waves} onInput={set('waves')} aria-describedby="waves-help" />
      </label>
      <p id="waves-help" class="muted">
        {problems.length ? problems.join('; ') : `${waves.length} waves`}
      </p>
      <label class="inline">
        <input type="checkbox" name="skip_canary" checked={form.skip_canary} onChange={set('skip_canary')} />
        First wave above the canary limit (small test fleets)
      </label>
      <button type="submit" disabled={state === 'creating' || state === 'preparing'}>
        Create campaign
      </button>
      {state && <p role="status">Campaign: {state}</p>}
      <ErrorNote error={error} />
    </form>
  );
}

const ACTIONS = ['start', 'pause', 'resume', 'cancel'] as const;
type Action = (typeof ACTIONS)[number];
const AVAILABLE: Record<Action, readonly string[]> = {
  start: ['created'],
  pause: ['running'],
  resume: ['paused', 'halted'],
  cancel: ['created', 'running', 'paused', 'halted'],
};

export function CampaignDetail({ id }: { id: string }) {
  const { api } = useSession();
  const campaign = useLoad(() => api.get<CampaignView>(`/campaigns/${id}`), [id], REFRESH_MS);
  const [error, setError] = useState<unknown>();
  const allowed = {
    start: useCan('POST', '/campaigns/{campaignId}/start'),
    pause: useCan('POST', '/campaigns/{campaignId}/pause'),
    resume: useCan('POST', '/campaigns/{campaignId}/resume'),
    cancel: useCan('POST', '/campaigns/{campaignId}/cancel'),
  };
  const c = campaign.data;
  const act = async (action: Action) => {
    if (!window.confirm(`${action[0]!.toUpperCase()}${action.slice(1)} campaign ${id}?`)) return;
    setError(undefined);
    try {
      await api.post(`/campaigns/${id}/${action}`, {});
      campaign.reload();
    } catch (err) {
      setError(err);
    }
  };
  const statuses = c ? [...new Set(c.waves.flatMap((w) => Object.keys(w.counts)))].sort() : [];
  return (
    <section aria-labelledby="campaign-title">
      <h1 id="campaign-title">Campaign {c?.name ?? id}</h1>
      <ErrorNote error={campaign.error} />
      {c && (
        <>
          <p class="status-line">
            Status: <strong data-status={c.status}>{c.status}</strong>, wave {c.current_wave + 1} of{' '}
            {c.waves.length}, {c.counts.completed ?? 0} of {c.target_count} completed. Release {c.release_id}{' '}
            ({c.ecu} {c.version}). <span class="muted">Updated {when(c.updated_at)}</span>
          </p>
          {c.halt_reason && (
            <p class="error" role="alert">
              Halted: {c.halt_reason}
            </p>
          )}
          <div class="actions">
            {ACTIONS.filter((a) => allowed[a] && AVAILABLE[a].includes(c.status)).map((a) => (
              <button type="button" key={a} onClick={() => act(a)} class={a === 'cancel' ? 'danger' : ''}>
                {a[0]!.toUpperCase()}
                {a.slice(1)}
              </button>
            ))}
          </div>
          <ErrorNote error={error} />
          <div class="charts">
            <div>
              <h2>Per wave</h2>
              <BarChart
                label="Vehicles per wave, stacked by status"
                stacked
                labels={c.waves.map((w) => `Wave ${w.wave + 1} (${w.size})`)}
                datasets={statuses.map((s, i) => ({
                  label: s,
                  colour: colourOf(s, i),
                  data: c.waves.map((w) => w.counts[s] ?? 0),
                }))}
              />
            </div>
            <div>
              <h2>Per status</h2>
              <BarChart
                label="Vehicles per status"
                horizontal
                labels={Object.keys(c.counts)}
                datasets={[
                  {
                    label: 'vehicles',
                    colour: '#2f6fb8',
                    data: Object.values(c.counts),
                  },
                ]}
              />
            </div>
          </div>
          <table>
            <caption>Waves</caption>
            <thead>
              <tr>
                <th scope="col">Wave</th>
                <th scope="col">Size</th>
                <th scope="col">Started</th>
                <th scope="col">Succeeded</th>
                <th scope="col">Failed</th>
                <th scope="col">By status</th>
              </tr>
            </thead>
            <tbody>
              {c.waves.map((w) => (
                <tr key={w.wave}>
                  <td>{w.wave + 1}</td>
                  <td>{w.size}</td>
                  <td>{when(w.started_at)}</td>
                  <td>{w.succeeded}</td>
                  <td>{w.failed}</td>
                  <td>
                    {Object.entries(w.counts)
                      .map(([s, n]) => `${s} ${n}`)
                      .join(', ')}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {c.waves.some((w) => w.failed > 0) && (
            <Failures id={id} waves={c.waves.filter((w) => w.failed > 0).map((w) => w.wave)} />
          )}
          {c.excluded.count > 0 && (
            <p>
              Excluded: {c.excluded.count} (
              {Object.entries(c.excluded.by_reason)
                .map(([r, n]) => `${r} ${n}`)
                .join(', ')}
              )
            </p>
          )}
        </>
      )}
    </section>
  );
}

/** Failure reasons of the waves with failures (first page of each). */
function Failures({ id, waves }: { id: string; waves: number[] }) {
  const { api } = useSession();
  const failed = useLoad(
    async () =>
      (
        await Promise.all(
          waves.map((wave) => api.get<CampaignVehicles>(`/campaigns/${id}/vehicles`, { wave, limit: 1000 })),
        )
      ).flatMap((p) => p.vehicles.filter((v) => v.reason)),
    [id, waves.join()],
    REFRESH_MS * 2,
  );
  const reasons = new Map<string, number>();
  for (const v of failed.data ?? []) reasons.set(v.reason!, (reasons.get(v.reason!) ?? 0) + 1);
  return (
    <>
      <h2>Failure reasons</h2>
      <ErrorNote error={failed.error} />
      <ul>
        {[...reasons].map(([reason, n]) => (
          <li key={reason}>
            {reason}: {n}
          </li>
        ))}
      </ul>
    </>
  );
}
