/**
 * Campaigns: the list, a page at a time; creation with a preview of the targeted vehicles and the wave plan. A
 * created campaign is `preparing` (202) while its targets are written in the background: the console goes to its
 * page (campaign-detail.tsx), which shows the preparation's progress and then the rollout.
 */
import { useState } from 'preact/hooks';
import { DEFAULT_POLICY, policyProblems, waveSizes } from '../../lambdas/core/campaign-policy.js';
import type { VehicleList } from '../../protocol/fleet-view.js';
import type { CampaignCreated, CampaignList, ReleaseList } from '../../protocol/operator-responses.js';
import { allPages, ErrorNote, useCan, useLoad, usePaged, useSession, when } from '../ui.js';

export const REFRESH_MS = 3000;
/** Campaigns per page of the list. */
const PAGE_SIZE = 25;

export function Campaigns() {
  const { api } = useSession();
  const list = usePaged(
    (token) => api.get<CampaignList>('/campaigns', { limit: PAGE_SIZE, next_token: token }),
    [],
    REFRESH_MS * 2,
  );
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
                {c.status === 'preparing' && c.preparation
                  ? `${c.preparation.targeted} targeted so far`
                  : `${c.counts.completed ?? 0} / ${c.target_count}`}
              </td>
              <td>{when(c.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.pager()}
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
  const { items, partial } = await allPages(
    (token) => api.get<VehicleList>('/vehicles', { ...filter, next_token: token }),
    (page) => page.vehicles,
  );
  return { count: items.length, partial };
}

function CreateCampaign() {
  const { api } = useSession();
  // Every page of releases (up to 20 of 1,000), so an older published release can still be chosen.
  const releases = useLoad(
    () =>
      allPages(
        (token) => api.get<ReleaseList>('/releases', { limit: 1000, next_token: token }),
        (page) => page.releases,
      ),
    [],
  );
  const published = (releases.data?.items ?? []).filter((r) => r.status === 'published');
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
      const { body: c } = await api.post<CampaignCreated>('/campaigns', {
        name: form.name,
        release_id: form.release_id,
        targets,
        policy: { waves, ...(form.skip_canary ? { skip_canary: true } : {}) },
      });
      // 202 preparing: its targets are written in the background; the campaign's page shows the progress.
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
      <button type="submit" disabled={state === 'creating'}>
        Create campaign
      </button>
      {state && <p role="status">Campaign: {state}</p>}
      <ErrorNote error={error} />
    </form>
  );
}
