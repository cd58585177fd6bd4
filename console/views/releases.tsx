/** Releases: the list, one release with its manifest, and upload + publish of a signed release with progress. */
import { useState } from 'preact/hooks';
import type { ReleaseCreated, ReleaseList, ReleaseView } from '../../protocol/operator-responses.js';
import { bytes, ErrorNote, Progress, useCan, useLoad, usePaged, useSession, when } from '../ui.js';

/** Releases per page of the list. */
const PAGE_SIZE = 25;

export function Releases() {
  const { api } = useSession();
  const list = usePaged(
    (token) => api.get<ReleaseList>('/releases', { limit: PAGE_SIZE, next_token: token }),
    [],
  );
  const canCreate = useCan('POST', '/releases');
  return (
    <section aria-labelledby="releases-title">
      <h1 id="releases-title">Releases</h1>
      {canCreate && <UploadRelease onDone={list.reload} />}
      <ErrorNote error={list.error} />
      <table>
        <caption>Releases</caption>
        <thead>
          <tr>
            <th scope="col">Release</th>
            <th scope="col">ECU</th>
            <th scope="col">Version</th>
            <th scope="col">Size</th>
            <th scope="col">Status</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.releases.map((r) => (
            <tr key={r.release_id}>
              <td>
                <a href={`#/releases/${r.release_id}`}>{r.release_id}</a>
              </td>
              <td>{r.ecu}</td>
              <td>{r.version}</td>
              <td>{bytes(r.size)}</td>
              <td>{r.status}</td>
              <td>{when(r.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.pager()}
    </section>
  );
}

/** PUTs a blob to a presigned URL, reporting bytes sent; answers the ETag (multipart parts need it). */
function put(url: string, body: Blob, onProgress: (sent: number) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () =>
      xhr.status >= 200 && xhr.status < 300
        ? resolve(xhr.getResponseHeader('etag') ?? '')
        : reject(new Error(`upload answered ${xhr.status}`));
    xhr.onerror = () => reject(new Error('upload failed (network or CORS)'));
    xhr.send(body);
  });
}

function UploadRelease({ onDone }: { onDone: () => void }) {
  const { api } = useSession();
  const [manifest, setManifest] = useState<File | undefined>();
  const [image, setImage] = useState<File | undefined>();
  const [sent, setSent] = useState<number | undefined>();
  const [verified, setVerified] = useState<{ done: number; size: number } | undefined>();
  const [state, setState] = useState<string | undefined>();
  const [error, setError] = useState<unknown>();
  const busy = state !== undefined && state !== 'published' && state !== 'failed';

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!manifest || !image) return;
    setError(undefined);
    setSent(0);
    setVerified(undefined);
    try {
      setState('creating');
      const signed = JSON.parse(await manifest.text()) as unknown;
      const created = (await api.post<ReleaseCreated>('/releases', signed)).body;
      setState('uploading');
      const up = created.upload;
      let publish: { upload_id?: string; parts?: { part_number: number; etag: string }[] } = {};
      if (up.method === 'PUT') {
        await put(up.url, image, setSent);
      } else {
        const parts: { part_number: number; etag: string }[] = [];
        for (const p of up.parts) {
          const start = (p.part_number - 1) * up.part_size;
          const etag = await put(p.url, image.slice(start, start + up.part_size), (n) => setSent(start + n));
          parts.push({ part_number: p.part_number, etag });
        }
        publish = { upload_id: up.upload_id, parts };
      }
      setSent(image.size);
      setState('verifying');
      let release = (await api.post<ReleaseView>(`/releases/${created.release_id}/publish`, publish)).body;
      while (release.status === 'verifying') {
        setVerified({ done: release.verification?.bytes_verified ?? 0, size: release.size });
        await new Promise((r) => setTimeout(r, 500));
        release = await api.get<ReleaseView>(`/releases/${created.release_id}`);
      }
      setVerified({ done: release.size, size: release.size });
      setState(release.status);
      if (release.status !== 'published') setError(new Error(release.failure_reason ?? release.status));
      onDone();
    } catch (err) {
      setState('failed');
      setError(err);
    }
  };
  return (
    <form class="card" onSubmit={submit} aria-labelledby="upload-title">
      <h2 id="upload-title">Upload and publish a release</h2>
      <p>A manifest signed with an OEM release key (ota firmware sign) and its image.</p>
      <label>
        Signed manifest (JSON)
        <input
          type="file"
          name="manifest"
          accept="application/json,.json"
          required
          onChange={(e) => setManifest((e.target as HTMLInputElement).files?.[0])}
        />
      </label>
      <label>
        Firmware image
        <input
          type="file"
          name="image"
          required
          onChange={(e) => setImage((e.target as HTMLInputElement).files?.[0])}
        />
      </label>
      <button type="submit" disabled={busy || !manifest || !image}>
        Upload and publish
      </button>
      {sent !== undefined && image && <Progress label="Upload" value={sent} max={image.size} />}
      {verified && <Progress label="Verification" value={verified.done} max={verified.size} />}
      {state && (
        <p role="status" data-state={state}>
          Release: {state}
        </p>
      )}
      <ErrorNote error={error} />
    </form>
  );
}

export function ReleaseDetail({ id }: { id: string }) {
  const { api } = useSession();
  const release = useLoad(() => api.get<ReleaseView>(`/releases/${encodeURIComponent(id)}`), [id], 5000);
  const r = release.data;
  return (
    <section aria-labelledby="release-title">
      <h1 id="release-title">Release {id}</h1>
      <ErrorNote error={release.error} />
      {r && (
        <dl class="facts">
          <dt>Status</dt>
          <dd>{r.status}</dd>
          <dt>ECU</dt>
          <dd>{r.ecu}</dd>
          <dt>Version</dt>
          <dd>{r.version}</dd>
          <dt>Hardware</dt>
          <dd>{r.hardware_ids.join(', ')}</dd>
          <dt>Size</dt>
          <dd>
            {bytes(r.size)} ({r.size} bytes)
          </dd>
          <dt>SHA-256</dt>
          <dd>
            <code>{r.sha256}</code>
          </dd>
          <dt>Chunks</dt>
          <dd>
            {r.manifest.manifest.chunks.length} of {bytes(r.manifest.manifest.chunk_size)}, each with its own
            digest
          </dd>
          <dt>Signer key ids</dt>
          <dd>
            {r.manifest.signatures.map((s) => (
              <code key={s.key_id}>{s.key_id} </code>
            ))}
          </dd>
          <dt>Created</dt>
          <dd>{when(r.created_at)}</dd>
          <dt>Published</dt>
          <dd>{when(r.published_at)}</dd>
          {r.failure_reason && (
            <>
              <dt>Failure</dt>
              <dd>{r.failure_reason}</dd>
            </>
          )}
        </dl>
      )}
      {r && (
        <details>
          <summary>Manifest</summary>
          <pre>
            {JSON.stringify(
              { ...r.manifest.manifest, chunks: `${r.manifest.manifest.chunks.length} digests` },
              null,
              2,
            )}
          </pre>
        </details>
      )}
    </section>
  );
}
