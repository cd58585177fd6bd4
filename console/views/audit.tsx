/** The audit log: every operator mutation and refusal, newest first, with filters. */
import { useState } from 'preact/hooks';
import type { AuditPage } from '../../protocol/audit.js';
import { ErrorNote, usePaged, useSession, when } from '../ui.js';

export function AuditLog() {
  const { api } = useSession();
  const [filter, setFilter] = useState({ actor: '', role: '', outcome: '', target: '' });
  const [applied, setApplied] = useState(filter);
  const page = usePaged(
    (token) => api.get<AuditPage>('/audit', { ...applied, limit: 50, next_token: token }),
    [applied],
  );
  const update = (name: keyof typeof filter) => (e: Event) =>
    setFilter({ ...filter, [name]: (e.target as HTMLInputElement | HTMLSelectElement).value });
  const text = (name: keyof typeof filter, label: string) => (
    <label>
      {label}
      <input name={name} value={filter[name]} onInput={update(name)} />
    </label>
  );
  const choice = (name: keyof typeof filter, label: string, options: string[]) => (
    <label>
      {label}
      <select name={name} value={filter[name]} onChange={update(name)}>
        <option value="">any</option>
        {options.map((o) => (
          <option key={o}>{o}</option>
        ))}
      </select>
    </label>
  );
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit log</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          page.first();
          setApplied(filter);
        }}
      >
        {text('actor', 'Actor')}
        {choice('role', 'Role', ['viewer', 'operator', 'release-manager', 'admin', 'iam', 'unknown'])}
        {choice('outcome', 'Outcome', ['allowed', 'refused', 'failed'])}
        {text('target', 'Target')}
        <button type="submit">Filter</button>
      </form>
      <ErrorNote error={page.error} />
      <table class="audit">
        <caption>Audit entries, newest first</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Actor</th>
            <th scope="col">Role</th>
            <th scope="col">Action</th>
            <th scope="col">Target</th>
            <th scope="col">Outcome</th>
            <th scope="col">Source IP</th>
          </tr>
        </thead>
        <tbody>
          {page.data?.entries.map((e) => (
            <tr key={e.event_id} class={`outcome-${e.outcome}`}>
              <td>{when(e.at)}</td>
              <td>{e.actor}</td>
              <td>{e.role}</td>
              <td>
                <code>{e.action}</code>
              </td>
              <td>{e.target ?? '-'}</td>
              <td>
                {e.outcome} ({e.status})
              </td>
              <td>{e.source_ip}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {page.pager({ back: 'Newer', forward: 'Older' })}
    </section>
  );
}
