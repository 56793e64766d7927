// A real OpenID provider for tokenkeeper's interop tests (tests/interop.rs):
// the npm package oidc-provider (pinned in package.json) on 127.0.0.1, which
// verifies client assertions itself: the signature with the client's
// registered key (or, for client_secret_jwt, its secret), the algorithm the
// client registered, `iss`, `aud` (its issuer identifier or its token
// endpoint), `exp`, and a `jti` never seen before.
//
// Static clients, each allowed the client_credentials grant only, with the
// scopes `api:read api:write`:
//
// - `pkjwt-es256`: private_key_jwt, ES256, the public JWK in INTEROP_ES256_JWK
// - `pkjwt-rs256`: private_key_jwt, RS256, the public JWK in INTEROP_RS256_JWK
// - `csjwt`:       client_secret_jwt, HS256, the secret INTEROP_CLIENT_SECRET
// - `basic`:       client_secret_basic, the same secret
// - `dpop`:        client_secret_basic, the same secret, and
//                  `dpop_bound_access_tokens`: every token request must
//                  carry a DPoP proof (RFC 9449), and its access token is
//                  bound to the proof's key (`token_type` DPoP, `cnf.jkt`)
// - `dpop-nonce`:  as `dpop`, and its proofs must carry a server nonce: the
//                  first request is answered 400 `use_dpop_nonce` with a
//                  `DPoP-Nonce` header
//
// DPoP is on for every client (a proof is checked and binds the token
// whenever one is sent), with proofs signed ES256, EdDSA, RS256 or PS256;
// `node dpop-check.js` checks this set-up by hand.
//
// Resource indicators (RFC 8707) are on, as client_credentials access tokens
// for an API need them: a request without `resource` gets the default one,
// `urn:tokenkeeper:interop`, and every access token is a JWT (RS256, with a
// key made at start) whose `aud` is the resource and whose `client_id` is the
// authenticated client, living INTEROP_TTL seconds (60 by default).
//
// Discovery: oidc-provider serves /.well-known/openid-configuration (not the
// RFC 8414 document), listing the methods and algorithms above.
//
// Once listening, prints one line of JSON on stdout:
//   {"event":"listening","url":"http://127.0.0.1:PORT","issuer":"...","token_endpoint":"..."}
// and logs each token request's outcome on stderr. Exits when stdin ends (the
// test holds a pipe to it), or on SIGTERM/SIGINT.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const SECRET = process.env.INTEROP_CLIENT_SECRET ?? 'interop client_secret_jwt secret, 32+ bytes';
const TTL = Number(process.env.INTEROP_TTL ?? '60');
const RESOURCE = 'urn:tokenkeeper:interop';
const SCOPES = 'api:read api:write';

function log(message) {
  process.stderr.write(`[oidc-provider] ${message}\n`);
}

function publicJwk(variable) {
  const text = process.env[variable];
  if (!text) {
    log(`${variable} is not set`);
    process.exit(2);
  }
  return JSON.parse(text);
}

function client(id, method, alg, extra) {
  return {
    client_id: id,
    token_endpoint_auth_method: method,
    ...(alg ? { token_endpoint_auth_signing_alg: alg } : {}),
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: SCOPES,
    ...extra,
  };
}

// The issuer names the port, so the server listens before the provider is
// made.
const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [
    client('pkjwt-es256', 'private_key_jwt', 'ES256', { jwks: { keys: [publicJwk('INTEROP_ES256_JWK')] } }),
    client('pkjwt-rs256', 'private_key_jwt', 'RS256', { jwks: { keys: [publicJwk('INTEROP_RS256_JWK')] } }),
    client('csjwt', 'client_secret_jwt', 'HS256', { client_secret: SECRET }),
    client('basic', 'client_secret_basic', undefined, { client_secret: SECRET }),
    client('dpop', 'client_secret_basic', undefined, { client_secret: SECRET, dpop_bound_access_tokens: true }),
    client('dpop-nonce', 'client_secret_basic', undefined, { client_secret: SECRET, dpop_bound_access_tokens: true }),
  ],
  clientAuthMethods: ['client_secret_basic', 'client_secret_jwt', 'private_key_jwt'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256', 'EdDSA'],
    dPoPSigningAlgValues: ['ES256', 'EdDSA', 'RS256', 'PS256'],
  },
  scopes: ['api:read', 'api:write'],
  jwks: { keys: [{ ...signing, kid: 'interop', alg: 'RS256', use: 'sig' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      // The client is authenticated before the grant checks the proof.
      requireNonce: (ctx) => ctx.oidc.client?.clientId === 'dpop-nonce',
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        audience: resource,
        scope: SCOPES,
        accessTokenTTL: TTL,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

provider.on('grant.success', (ctx) => {
  log(`token -> 200 for ${ctx.oidc.client?.clientId} via ${ctx.oidc.client?.clientAuthMethod}`);
});
provider.on('grant.error', (ctx, error) => {
  log(`token -> ${error.statusCode} ${error.error}: ${error.error_description}${error.cause ? ` (${error.cause.message})` : ''}`);
});

server.on('request', provider.callback());

process.stdout.write(
  `${JSON.stringify({
    event: 'listening',
    url: issuer,
    issuer,
    token_endpoint: `${issuer}/token`,
  })}\n`,
);

let stopping = false;
function stop(why) {
  if (stopping) {
    return;
  }
  stopping = true;
  log(`stopping: ${why}`);
  process.exit(0);
}

process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
