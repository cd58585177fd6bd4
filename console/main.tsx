/**
 * The operator console: a single page served at /console/ on the same origin as the API (the local gateway, or
 * CloudFront in front of S3 and the API on AWS). It signs every API call with SigV4 using the signed-in role's
 * credentials; the API authorises, the console only hides the controls a role may not use.
 */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { PrincipalView } from '../protocol/fleet-view.js';
import { Api, type ConsoleConfig } from './api.js';
import { CognitoSignIn } from './cognito.js';
import type { Credentials } from './sigv4.js';
import { describeError, type Session, SessionContext } from './ui.js';
import { AuditLog } from './views/audit.js';
import { CampaignDetail } from './views/campaign-detail.js';
import { Campaigns } from './views/campaigns.js';
import { Overview } from './views/overview.js';
import { ReleaseDetail, Releases } from './views/releases.js';
import { VehicleDetail, Vehicles } from './views/vehicles.js';

const STORED = 'ota-console-session';

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function View({ hash }: { hash: string }) {
  const [, section = '', id] = hash.replace(/^#/, '').split('/');
  const param = id ? decodeURIComponent(id) : undefined;
  switch (section) {
    case 'releases':
      return param ? <ReleaseDetail id={param} /> : <Releases />;
    case 'vehicles':
      return param ? <VehicleDetail vin={param} /> : <Vehicles />;
    case 'campaigns':
      return param ? <CampaignDetail id={param} /> : <Campaigns />;
    case 'audit':
      return <AuditLog />;
    default:
      return <Overview />;
  }
}

const NAV = [
  ['', 'Overview'],
  ['releases', 'Releases'],
  ['vehicles', 'Vehicles'],
  ['campaigns', 'Campaigns'],
  ['audit', 'Audit log'],
] as const;

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const hash = useHash();
  const current = hash.replace(/^#\/?/, '').split('/')[0] ?? '';
  return (
    <SessionContext.Provider value={session}>
      <header>
        <a class="skip" href="#main">
          Skip to content
        </a>
        <span class="brand">Fleet OTA</span>
        <nav aria-label="Main">
          {NAV.map(([path, label]) => (
            <a key={path} href={`#/${path}`} aria-current={current === path ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who" data-role={session.me.role}>
          {session.me.actor} ({session.me.role})
        </span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        <View hash={hash} />
      </main>
    </SessionContext.Provider>
  );
}

function SignIn({
  config,
  onSession,
}: {
  config: ConsoleConfig;
  onSession: (c: Credentials) => Promise<void>;
}) {
  const [fields, setFields] = useState({ a: '', b: '', code: '' });
  const [challenge, setChallenge] = useState<
    { kind: 'SOFTWARE_TOKEN_MFA' | 'NEW_PASSWORD_REQUIRED'; session: string } | undefined
  >();
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const local = config.mode === 'local';
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      if (local) {
        await onSession({ accessKeyId: fields.a.trim(), secretAccessKey: fields.b.trim() });
        return;
      }
      const cognito = new CognitoSignIn(config);
      const step = challenge
        ? await cognito.respond(challenge.kind, challenge.session, fields.a, fields.code)
        : await cognito.start(fields.a, fields.b);
      if (step.kind === 'challenge') setChallenge({ kind: step.challenge, session: step.session });
      else await onSession(step.credentials);
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  const set = (k: keyof typeof fields) => (e: Event) =>
    setFields({ ...fields, [k]: (e.target as HTMLInputElement).value });
  return (
    <main id="main" class="signin">
      <form class="card" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Fleet OTA console</h1>
        {local ? (
          <p>
            Sign in with a local operator account: its access key id and secret from the local cloud's
            operators.json (npm start prints where it is).
          </p>
        ) : (
          <p>Sign in with your operator account.</p>
        )}
        <label>
          {local ? 'Access key id' : 'User name'}
          <input name="access-key-id" autoComplete="username" required value={fields.a} onInput={set('a')} />
        </label>
        {!challenge && (
          <label>
            {local ? 'Secret access key' : 'Password'}
            <input
              name="secret"
              type="password"
              autoComplete="current-password"
              required
              value={fields.b}
              onInput={set('b')}
            />
          </label>
        )}
        {challenge && (
          <label>
            {challenge.kind === 'SOFTWARE_TOKEN_MFA' ? 'Code from your authenticator app' : 'New password'}
            <input
              name="code"
              type={challenge.kind === 'SOFTWARE_TOKEN_MFA' ? 'text' : 'password'}
              required
              value={fields.code}
              onInput={set('code')}
            />
          </label>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}

function App({ config }: { config: ConsoleConfig }) {
  const [session, setSession] = useState<Session | undefined>();
  const [restoring, setRestoring] = useState(true);
  const begin = async (credentials: Credentials) => {
    const api = new Api(config, credentials);
    const me = await api.get<PrincipalView>('/me');
    // Per tab only: the credentials are gone when the tab closes.
    sessionStorage.setItem(STORED, JSON.stringify(credentials));
    setSession({ api, me });
  };
  useEffect(() => {
    const stored = sessionStorage.getItem(STORED);
    if (!stored) return setRestoring(false);
    begin(JSON.parse(stored) as Credentials)
      .catch(() => sessionStorage.removeItem(STORED))
      .finally(() => setRestoring(false));
  }, []);
  if (restoring) return <p>Loading…</p>;
  if (!session) return <SignIn config={config} onSession={begin} />;
  return (
    <Shell
      session={session}
      onSignOut={() => {
        sessionStorage.removeItem(STORED);
        setSession(undefined);
      }}
    />
  );
}

const config = (await (await fetch('config.json', { cache: 'no-store' })).json()) as ConsoleConfig;
render(<App config={config} />, document.getElementById('app')!);
