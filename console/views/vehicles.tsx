/** Vehicles: search by VIN, model and version; one vehicle with its ECUs, updates and status history timeline. */
import { useState } from 'preact/hooks';
import type { VehicleHistory, VehicleList, VehicleSummary } from '../../protocol/fleet-view.js';
import type { VehicleView } from '../../protocol/operator-responses.js';
import { ErrorNote, useLoad, useSession, when } from '../ui.js';

/** A search reads scan pages until it has this many matches or the registry ends. */
const WANTED = 50;
const MAX_PAGES = 20;

export function Vehicles() {
  const { api } = useSession();
  const [form, setForm] = useState({ vin_prefix: '', model: '', version: '' });
  const [query, setQuery] = useState(form);
  const found = useLoad(async () => {
    const vehicles: VehicleSummary[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page: VehicleList = await api.get('/vehicles', { ...query, next_token: token });
      vehicles.push(...page.vehicles);
      token = page.next_token ?? undefined;
      pages++;
    } while (token && vehicles.length < WANTED && pages < MAX_PAGES);
    return { vehicles: vehicles.slice(0, WANTED), more: token !== undefined || vehicles.length > WANTED };
  }, [query]);
  const input = (name: keyof typeof form, label: string, placeholder: string) => (
    <label>
      {label}
      <input
        name={name}
        value={form[name]}
        placeholder={placeholder}
        onInput={(e) => setForm({ ...form, [name]: (e.target as HTMLInputElement).value.trim() })}
      />
    </label>
  );
  return (
    <section aria-labelledby="vehicles-title">
      <h1 id="vehicles-title">Vehicles</h1>
      <form
        class="filters"
        aria-label="Search vehicles"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery({ ...form, vin_prefix: form.vin_prefix.toUpperCase() });
        }}
      >
        {input('vin_prefix', 'VIN starts with', '1HGCM')}
        {input('model', 'Model', 'Model T')}
        {input('version', 'Version (any ECU)', '2.0.0')}
        <button type="submit">Search</button>
      </form>
      <ErrorNote error={found.error} />
      <table>
        <caption>Vehicles{found.data?.more ? ` (first ${WANTED} matches)` : ''}</caption>
        <thead>
          <tr>
            <th scope="col">VIN</th>
            <th scope="col">Model</th>
            <th scope="col">ECU versions</th>
            <th scope="col">Registered</th>
            <th scope="col">Revoked</th>
          </tr>
        </thead>
        <tbody>
          {found.data?.vehicles.map((v) => (
            <tr key={v.vin}>
              <td>
                <a href={`#/vehicles/${v.vin}`}>{v.vin}</a>
              </td>
              <td>{v.model}</td>
              <td>{v.ecus.map((e) => `${e.ecu} ${e.version}`).join(', ')}</td>
              <td>{when(v.registered_at)}</td>
              <td>{when(v.revoked_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function VehicleDetail({ vin }: { vin: string }) {
  const { api } = useSession();
  const vehicle = useLoad(() => api.get<VehicleView>(`/vehicles/${vin}`), [vin], 5000);
  const history = useLoad(
    () => api.get<VehicleHistory>(`/vehicles/${vin}/history`, { limit: 100 }),
    [vin],
    5000,
  );
  const v = vehicle.data;
  return (
    <section aria-labelledby="vehicle-title">
      <h1 id="vehicle-title">Vehicle {vin}</h1>
      <ErrorNote error={vehicle.error} />
      {v && (
        <>
          <dl class="facts">
            <dt>Model</dt>
            <dd>{v.model}</dd>
            <dt>Registered</dt>
            <dd>{when(v.registered_at)}</dd>
            <dt>Certificate</dt>
            <dd>
              <code>{v.certificate_id}</code>
            </dd>
            <dt>Revoked</dt>
            <dd>{when(v.revoked_at)}</dd>
          </dl>
          <table>
            <caption>ECUs</caption>
            <thead>
              <tr>
                <th scope="col">ECU</th>
                <th scope="col">Hardware</th>
                <th scope="col">Version</th>
              </tr>
            </thead>
            <tbody>
              {v.ecus.map((e) => (
                <tr key={e.ecu}>
                  <td>{e.ecu}</td>
                  <td>{e.hardware_id}</td>
                  <td>{e.version}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <table>
            <caption>Updates</caption>
            <thead>
              <tr>
                <th scope="col">Release</th>
                <th scope="col">Campaign</th>
                <th scope="col">Status</th>
                <th scope="col">Attempt</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {v.updates.map((u) => (
                <tr key={u.update_id}>
                  <td>{u.release_id}</td>
                  <td>
                    {u.campaign_id ? <a href={`#/campaigns/${u.campaign_id}`}>{u.campaign_id}</a> : '-'}
                  </td>
                  <td>
                    {u.status}
                    {u.reason ? ` (${u.reason})` : ''}
                  </td>
                  <td>{u.attempt}</td>
                  <td>{when(u.updated_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h2>History</h2>
      <ErrorNote error={history.error} />
      <ol class="timeline" aria-label="Status history, newest first">
        {history.data?.events.map((e, i) => (
          <li key={`${e.at}-${i}`} class={e.applied ? '' : 'ignored'}>
            <time dateTime={e.at}>{when(e.at)}</time> <strong>{e.status}</strong>
            {e.progress !== null && ` ${e.progress}%`} via {e.source}
            {e.reason && ` (${e.reason})`}
            {!e.applied && ' (not applied)'} <span class="muted">{e.update_id}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}
