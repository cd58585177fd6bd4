/**
 * One campaign, live (refreshed every 3 s): while `preparing`, how far the background preparation has got (segments
 * done, vehicles scanned, targeted, excluded) and why it failed if it did; then charts per wave and per status,
 * failure reasons, the halt reason, what the downloads cost against the raw images (bytes saved by compression,
 * chunk reuse and deltas), and pause, resume, cancel with confirmation.
 */
import { useState } from 'preact/hooks';
import type { CampaignVehicles, CampaignView } from '../../protocol/operator-responses.js';
import { BarChart, colourOf } from '../chart.js';
import { bytes, ErrorNote, Progress, useCan, useLoad, useSession, when } from '../ui.js';
import { REFRESH_MS } from './campaigns.js';

const ACTIONS = ['start', 'pause', 'resume', 'cancel'] as const;
type Action = (typeof ACTIONS)[number];
const AVAILABLE: Record<Action, readonly string[]> = {
  start: ['created'],
  pause: ['running'],
  resume: ['paused', 'halted'],
  // A preparing campaign can be cancelled: the preparation stops and takes its targets back.
  cancel: ['preparing', 'created', 'running', 'paused', 'halted'],
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
          {c.preparation && <Preparation c={c} />}
          {c.transfer.downloads > 0 && <Transfer t={c.transfer} />}
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

/** The background preparation of the targets: progress while it runs, the totals once done, the failure. */
function Preparation({ c }: { c: CampaignView }) {
  const p = c.preparation!;
  const totals = `${p.targeted} targeted, ${p.excluded} excluded, ${p.scanned} scanned${
    p.duplicates ? `, ${p.duplicates} duplicates` : ''
  }${p.invalid ? `, ${p.invalid} invalid` : ''}`;
  return (
    <div class="card preparation" data-preparation={p.state}>
      <h2>Targets</h2>
      {p.state === 'awaiting_targets' && (
        <p>Waiting for the VIN list upload (until {when(p.upload_expires_at)}).</p>
      )}
      {p.state === 'running' && (
        <>
          <Progress label="Preparation" value={p.segments.done} max={p.segments.total} />
          <p role="status">
            Preparing: {p.segments.done} of {p.segments.total} segments done; {totals} so far.
          </p>
        </>
      )}
      {p.state === 'finished' && (
        <p>
          Prepared: {totals}. <span class="muted">Finished {when(p.finished_at)}</span>
        </p>
      )}
      {p.failure_reason && (
        <p class="error" role="alert">
          Preparation failed: {p.failure_reason}
        </p>
      )}
    </div>
  );
}

/** What the campaign's downloads cost: bytes fetched against the images delivered, as the vehicles reported them. */
function Transfer({ t }: { t: CampaignView['transfer'] }) {
  const saved = t.bytes_image > 0 ? (t.bytes_saved * 100) / t.bytes_image : 0;
  return (
    <div class="card transfer" data-downloads={t.downloads}>
      <h2>Downloads</h2>
      <Progress
        label="Bytes saved against the raw images"
        value={Math.max(0, t.bytes_saved)}
        max={t.bytes_image}
      />
      <p>
        {t.downloads} download{t.downloads === 1 ? '' : 's'}: {bytes(t.bytes_fetched)} fetched for{' '}
        {bytes(t.bytes_image)} of images, <strong>{saved.toFixed(1)}% saved</strong> ({bytes(t.bytes_saved)});{' '}
        {bytes(t.bytes_reused)} rebuilt from the vehicles' installed images.
      </p>
    </div>
  );
}
