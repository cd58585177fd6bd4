/** Small shared pieces of the console: the session context, error and time rendering, polling. */
import { createContext } from 'preact';
import { useContext, useEffect, useState } from 'preact/hooks';
import type { PrincipalView } from '../protocol/fleet-view.js';
import { type Api, ApiError, can } from './api.js';

export interface Session {
  readonly api: Api;
  readonly me: PrincipalView;
}

export const SessionContext = createContext<Session | undefined>(undefined);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error('no session');
  return s;
}

/** Whether the signed-in role may call this route (its controls are not shown otherwise). */
export function useCan(method: 'GET' | 'POST', resource: string): boolean {
  return can(useSession().me.role, method, resource);
}

export function describeError(err: unknown): string {
  if (err instanceof ApiError) return `${err.status} ${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

export function ErrorNote({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  return (
    <p class="error" role="alert">
      {describeError(error)}
    </p>
  );
}

export const when = (iso: string | null | undefined) =>
  iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }) : '-';

export const bytes = (n: number) =>
  n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;

/** Loads with `load`, again every `everyMs` (if given) while mounted, and on reload(); errors kept, not thrown. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number) {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const value = await load();
        if (live) {
          setData(value);
          setError(undefined);
        }
      } catch (err) {
        if (live) setError(err);
      }
      if (live && everyMs) timer = setTimeout(run, everyMs);
    };
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, reload: () => setTick((t) => t + 1) };
}

export function Progress({ label, value, max }: { label: string; value: number; max: number }) {
  const pct = max > 0 ? Math.round((value / max) * 100) : 0;
  return (
    <div class="progress">
      <label>
        {label}: {pct}%
        <progress value={value} max={max} aria-label={label} />
      </label>
    </div>
  );
}

/**
 * A paginated listing (every list route answers a page and a next_token): loads the current page, again every
 * `everyMs`, and keeps the tokens of the pages before it so the operator can go forward and back.
 */
export function usePaged<T extends { next_token: string | null }>(
  load: (token: string | undefined) => Promise<T>,
  deps: unknown[],
  everyMs?: number,
) {
  const [tokens, setTokens] = useState<string[]>([]);
  const token = tokens[tokens.length - 1];
  const page = useLoad(() => load(token), [...deps, token], everyMs);
  return {
    ...page,
    /** Back to the first page (a new filter). */
    first: () => setTokens([]),
    pager: (labels: { back: string; forward: string } = { back: 'Previous page', forward: 'Next page' }) => (
      <div class="pager">
        {tokens.length > 0 && (
          <button type="button" onClick={() => setTokens(tokens.slice(0, -1))}>
            {labels.back}
          </button>
        )}
        {page.data?.next_token && (
          <button type="button" onClick={() => setTokens([...tokens, page.data!.next_token!])}>
            {labels.forward}
          </button>
        )}
      </div>
    ),
  };
}

/** Every page of a listing, up to `maxPages` (for counts and choices); `partial` says it stopped early. */
export async function allPages<T extends { next_token: string | null }, I>(
  load: (token: string | undefined) => Promise<T>,
  items: (page: T) => readonly I[],
  maxPages = 20,
): Promise<{ items: I[]; partial: boolean }> {
  const all: I[] = [];
  let token: string | undefined;
  let pages = 0;
  do {
    const page = await load(token);
    all.push(...items(page));
    token = page.next_token ?? undefined;
  } while (token && ++pages < maxPages);
  return { items: all, partial: token !== undefined };
}
