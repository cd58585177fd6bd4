/** Fleet overview: vehicles per model and version, and the campaigns that are not finished. */
import type { VehicleList } from '../../protocol/fleet-view.js';
import type { CampaignList } from '../../protocol/operator-responses.js';
import { BarChart, colourOf } from '../chart.js';
import { allPages, ErrorNote, useLoad, useSession } from '../ui.js';

/** The overview counts at most this many scan pages (500 vehicles each) and says so when the fleet is larger. */
const MAX_PAGES = 20;
const FINISHED = new Set(['completed', 'cancelled', 'failed']);

export function Overview() {
  const { api } = useSession();
  const fleet = useLoad(async () => {
    const { items, partial } = await allPages(
      (token) => api.get<VehicleList>('/vehicles', { next_token: token }),
      (page) => page.vehicles,
      MAX_PAGES,
    );
    const perModel = new Map<string, Map<string, number>>();
    for (const v of items) {
      const version = v.ecus.map((e) => `${e.ecu} ${e.version}`).join(', ');
      const versions = perModel.get(v.model) ?? new Map<string, number>();
      versions.set(version, (versions.get(version) ?? 0) + 1);
      perModel.set(v.model, versions);
    }
    return { perModel, counted: items.length, partial };
  }, []);
  // Every page of campaigns (up to 20 of 1,000): an active campaign may be on any page.
  const campaigns = useLoad(
    () =>
      allPages(
        (token) => api.get<CampaignList>('/campaigns', { limit: 1000, next_token: token }),
        (page) => page.campaigns,
      ),
    [],
    5000,
  );

  const models = [...(fleet.data?.perModel.keys() ?? [])].sort();
  const versions = [...new Set(models.flatMap((m) => [...fleet.data!.perModel.get(m)!.keys()]))].sort();
  const active = (campaigns.data?.items ?? []).filter((c) => !FINISHED.has(c.status));
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Fleet overview</h1>
      <ErrorNote error={fleet.error} />
      {fleet.data && (
        <>
          <p>
            {fleet.data.counted} vehicles
            {fleet.data.partial && ` counted (the first ${MAX_PAGES * 500} registered; the fleet is larger)`}
          </p>
          <h2>Vehicles per model and version</h2>
          <BarChart
            label="Vehicles per model, stacked by ECU version"
            labels={models}
            stacked
            datasets={versions.map((v, i) => ({
              label: v,
              colour: colourOf(v, i),
              data: models.map((m) => fleet.data!.perModel.get(m)!.get(v) ?? 0),
            }))}
          />
          <table>
            <caption>Vehicles per model and version</caption>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Versions</th>
                <th scope="col">Vehicles</th>
              </tr>
            </thead>
            <tbody>
              {models.flatMap((m) =>
                [...fleet.data!.perModel.get(m)!].map(([version, n]) => (
                  <tr key={`${m} ${version}`}>
                    <td>{m}</td>
                    <td>{version}</td>
                    <td>{n}</td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </>
      )}
      <h2>Active campaigns</h2>
      <ErrorNote error={campaigns.error} />
      {active.length === 0 ? (
        <p>No active campaign.</p>
      ) : (
        <ul>
          {active.map((c) => (
            <li key={c.campaign_id}>
              <a href={`#/campaigns/${c.campaign_id}`}>{c.name}</a> ({c.campaign_id}): {c.status}
              {c.status === 'preparing'
                ? `, ${c.preparation?.targeted ?? 0} targeted so far`
                : `, wave ${c.current_wave + 1} of ${c.waves.length}, ${c.counts.completed ?? 0} of ${c.target_count} completed`}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
