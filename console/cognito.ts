/**
 * Sign-in on AWS without an SDK in the bundle: Cognito's user pool (InitiateAuth USER_PASSWORD_AUTH, then the MFA
 * or new-password challenge) gives an ID token; the identity pool exchanges it for the temporary credentials of
 * the IAM role of the user's group (GetId, GetCredentialsForIdentity). Plain JSON calls to the public endpoints.
 */
import type { ConsoleConfig } from './api.js';
import type { Credentials } from './sigv4.js';

async function call<T>(url: string, target: string, body: unknown): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': target },
    body: JSON.stringify(body),
  });
  const answer = (await res.json()) as T & { message?: string; __type?: string };
  if (!res.ok) throw new Error(answer.message ?? answer.__type ?? `sign-in failed (${res.status})`);
  return answer;
}

export type SignInStep =
  | { kind: 'done'; credentials: Credentials; expiresAt: number }
  | { kind: 'challenge'; challenge: 'SOFTWARE_TOKEN_MFA' | 'NEW_PASSWORD_REQUIRED'; session: string };

interface AuthAnswer {
  AuthenticationResult?: { IdToken: string };
  ChallengeName?: string;
  Session?: string;
}

export class CognitoSignIn {
  constructor(private readonly config: ConsoleConfig) {}

  private get idp() {
    return `https://cognito-idp.${this.config.region}.amazonaws.com/`;
  }

  start(username: string, password: string): Promise<SignInStep> {
    return this.next(
      call<AuthAnswer>(this.idp, 'AWSCognitoIdentityProviderService.InitiateAuth', {
        AuthFlow: 'USER_PASSWORD_AUTH',
        ClientId: this.config.clientId,
        AuthParameters: { USERNAME: username, PASSWORD: password },
      }),
    );
  }

  /** Answers the MFA code (SOFTWARE_TOKEN_MFA) or the new password (NEW_PASSWORD_REQUIRED). */
  respond(
    challenge: 'SOFTWARE_TOKEN_MFA' | 'NEW_PASSWORD_REQUIRED',
    session: string,
    username: string,
    answer: string,
  ): Promise<SignInStep> {
    const key = challenge === 'SOFTWARE_TOKEN_MFA' ? 'SOFTWARE_TOKEN_MFA_CODE' : 'NEW_PASSWORD';
    return this.next(
      call<AuthAnswer>(this.idp, 'AWSCognitoIdentityProviderService.RespondToAuthChallenge', {
        ChallengeName: challenge,
        ClientId: this.config.clientId,
        Session: session,
        ChallengeResponses: { USERNAME: username, [key]: answer },
      }),
    );
  }

  private async next(pending: Promise<AuthAnswer>): Promise<SignInStep> {
    const answer = await pending;
    if (answer.AuthenticationResult) return this.credentials(answer.AuthenticationResult.IdToken);
    if (answer.ChallengeName === 'SOFTWARE_TOKEN_MFA' || answer.ChallengeName === 'NEW_PASSWORD_REQUIRED') {
      return { kind: 'challenge', challenge: answer.ChallengeName, session: answer.Session ?? '' };
    }
    throw new Error(`unsupported sign-in step ${answer.ChallengeName ?? '(none)'}`);
  }

  private async credentials(idToken: string): Promise<SignInStep> {
    const identity = `https://cognito-identity.${this.config.region}.amazonaws.com/`;
    const Logins = { [`cognito-idp.${this.config.region}.amazonaws.com/${this.config.userPoolId}`]: idToken };
    const { IdentityId } = await call<{ IdentityId: string }>(identity, 'AWSCognitoIdentityService.GetId', {
      IdentityPoolId: this.config.identityPoolId,
      Logins,
    });
    const { Credentials: c } = await call<{
      Credentials: { AccessKeyId: string; SecretKey: string; SessionToken: string; Expiration: number };
    }>(identity, 'AWSCognitoIdentityService.GetCredentialsForIdentity', { IdentityId, Logins });
    return {
      kind: 'done',
      credentials: { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretKey, sessionToken: c.SessionToken },
      expiresAt: c.Expiration * 1000,
    };
  }
}
