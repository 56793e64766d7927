// A real OAuth2 token endpoint for tokenkeeper's interop tests (tests/interop.rs).
//
// Runs the npm package oauth2-mock-server (pinned in package.json) on 127.0.0.1
// and tightens it where the stock package accepts anything:
//
// - Client authentication: the stock server never checks client credentials.
//   Here token requests must authenticate the one configured client with
//   exactly one method: `client_secret_basic` (id and secret form-urlencoded,
//   then base64, RFC 6749 §2.3.1, so they are form-decoded here) or
//   `client_secret_post` (client_id and client_secret in the form). Anything
//   else is 401 invalid_client (RFC 6749 §5.2).
// - Bodies must be application/x-www-form-urlencoded (the stock server also
//   takes JSON): anything else is 400 invalid_request.
// - Refresh tokens: the stock server hands out a new random refresh token on
//   each password and refresh_token grant (so it rotates) but accepts any
//   string as a refresh token. Here refresh tokens are one-time: only a token
//   this server issued and nobody redeemed yet is accepted; otherwise 400
//   invalid_grant. Without `scope`, a refresh keeps the originally granted
//   scope (RFC 6749 §6; the stock server says "dummy"); a broader one is 400
//   invalid_scope.
// - The password grant requires the configured user name and password.
//
// Every issued JWT carries what the server saw: `client_id`, `client_auth`
// (the method) and `grant_type`, so a test can check it by decoding the token.
//
// Configuration (environment): INTEROP_CLIENT_ID, INTEROP_CLIENT_SECRET,
// INTEROP_USERNAME, INTEROP_PASSWORD (defaults below).
//
// Once listening, prints one line of JSON on stdout:
//   {"event":"listening","url":"http://127.0.0.1:PORT","token_endpoint":".../token","issuer":"...","kid":"...","alg":"RS256"}
// then logs one line per token request on stderr. Exits when stdin ends (the
// test holds a pipe to it, so the server dies with the test process), or on
// SIGTERM/SIGINT.

import { Buffer } from 'node:buffer';
import { OAuth2Server } from 'oauth2-mock-server';

const CLIENT_ID = process.env.INTEROP_CLIENT_ID ?? 'tokenkeeper-interop';
const CLIENT_SECRET = process.env.INTEROP_CLIENT_SECRET ?? 'interop secret: a/b+c%d';
const USERNAME = process.env.INTEROP_USERNAME ?? 'alice';
const PASSWORD = process.env.INTEROP_PASSWORD ?? 'wonderland';

function log(message) {
  process.stderr.write(`[interop-server] ${message}\n`);
}

/**
 * The id and password of an HTTP Basic Authorization header (RFC 7617), or
 * undefined. Parsed here rather than with a package this project does not pin.
 */
function parseBasic(header) {
  const match = /^Basic +([A-Za-z0-9+/]+=*) *$/i.exec(header);
  if (!match) {
    return undefined;
  }
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) {
    return undefined;
  }
  return { name: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
}

/** application/x-www-form-urlencoded decoding of one value. */
function formDecode(value) {
  return decodeURIComponent(value.replace(/\+/g, ' '));
}

/**
 * How the request authenticates the client:
 * { ok: true, method, clientId } or { ok: false, reason }.
 */
function authenticate(req) {
  const body = req.body ?? {};
  const hasHeader = typeof req.headers.authorization === 'string';
  const hasPost = 'client_secret' in body;
  if (hasHeader && hasPost) {
    return { ok: false, reason: 'more than one client authentication method' };
  }
  if (hasHeader) {
    const credentials = parseBasic(req.headers.authorization);
    if (!credentials) {
      return { ok: false, reason: 'Authorization header is not HTTP Basic' };
    }
    let id;
    let secret;
    try {
      id = formDecode(credentials.name);
      secret = formDecode(credentials.pass);
    } catch {
      return { ok: false, reason: 'Basic credentials are not form-urlencoded' };
    }
    if (body.client_id !== undefined && body.client_id !== id) {
      return { ok: false, reason: 'client_id in the body differs from the Basic one' };
    }
    if (id !== CLIENT_ID || secret !== CLIENT_SECRET) {
      return { ok: false, reason: 'unknown client or wrong secret (client_secret_basic)' };
    }
    return { ok: true, method: 'client_secret_basic', clientId: id };
  }
  if (hasPost) {
    if (body.client_id !== CLIENT_ID || body.client_secret !== CLIENT_SECRET) {
      return { ok: false, reason: 'unknown client or wrong secret (client_secret_post)' };
    }
    return { ok: true, method: 'client_secret_post', clientId: body.client_id };
  }
  return { ok: false, reason: 'no client authentication' };
}

function scopeSet(scope) {
  return new Set((scope ?? '').split(' ').filter((s) => s !== ''));
}

// Refresh tokens this server issued and nobody redeemed yet: token -> scope.
const liveRefreshTokens = new Map();

/**
 * Checks a token request beyond what the stock server does. Returns
 * { ok: true, auth, scope, presented?, setScope? } or
 * { ok: false, status, error, description }. `setScope`: the response's scope
 * is replaced by `scope` (refresh grants; the stock server says "dummy").
 * Computed once per request and remembered on it (both hooks need it).
 */
function check(req) {
  if (req.interopCheck !== undefined) {
    return req.interopCheck;
  }
  req.interopCheck = checkUncached(req);
  return req.interopCheck;
}

function checkUncached(req) {
  const contentType = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (contentType !== 'application/x-www-form-urlencoded') {
    return {
      ok: false,
      status: 400,
      error: 'invalid_request',
      description: `the body must be application/x-www-form-urlencoded, not ${contentType || 'absent'}`,
    };
  }
  const auth = authenticate(req);
  if (!auth.ok) {
    return { ok: false, status: 401, error: 'invalid_client', description: auth.reason };
  }
  const body = req.body;
  switch (body.grant_type) {
    case 'client_credentials':
      return { ok: true, auth, scope: body.scope };
    case 'password':
      if (body.username !== USERNAME || body.password !== PASSWORD) {
        return { ok: false, status: 400, error: 'invalid_grant', description: 'wrong user name or password' };
      }
      return { ok: true, auth, scope: body.scope };
    case 'refresh_token': {
      const presented = body.refresh_token;
      if (typeof presented !== 'string' || !liveRefreshTokens.has(presented)) {
        return {
          ok: false,
          status: 400,
          error: 'invalid_grant',
          description: 'refresh token unknown or already used',
        };
      }
      const granted = liveRefreshTokens.get(presented);
      if (body.scope === undefined) {
        return { ok: true, auth, scope: granted, presented, setScope: true };
      }
      const grantedSet = scopeSet(granted);
      for (const s of scopeSet(body.scope)) {
        if (!grantedSet.has(s)) {
          return {
            ok: false,
            status: 400,
            error: 'invalid_scope',
            description: `scope ${s} was not granted`,
          };
        }
      }
      return { ok: true, auth, scope: body.scope, presented, setScope: true };
    }
    default:
      // The stock server answers invalid_grant itself, before the hooks.
      return { ok: true, auth, scope: body.scope };
  }
}

const server = new OAuth2Server();
const key = await server.issuer.keys.generate('RS256');

server.service.on('beforeTokenSigning', (token, req) => {
  const result = check(req);
  if (!result.ok) {
    return;
  }
  token.payload.client_id = result.auth.clientId;
  token.payload.client_auth = result.auth.method;
  token.payload.grant_type = req.body.grant_type;
  // Only access tokens carry a scope claim (ID tokens do not).
  if (result.setScope && 'scope' in token.payload) {
    if (result.scope === undefined) {
      delete token.payload.scope;
    } else {
      token.payload.scope = result.scope;
    }
  }
});

server.service.on('beforeResponse', (response, req) => {
  const result = check(req);
  const grant = req.body?.grant_type;
  if (!result.ok) {
    response.statusCode = result.status;
    response.body = { error: result.error, error_description: result.description };
    if (result.status === 401 && typeof req.headers.authorization === 'string') {
      // RFC 6749 §5.2: a 401 after HTTP authentication names the scheme.
      req.res.set('WWW-Authenticate', 'Basic realm="interop"');
    }
    log(`${grant} -> ${result.status} ${result.error}: ${result.description}`);
    return;
  }
  if (result.setScope) {
    if (result.scope === undefined) {
      delete response.body.scope;
    } else {
      response.body.scope = result.scope;
    }
  }
  if (result.presented !== undefined) {
    liveRefreshTokens.delete(result.presented);
  }
  if (typeof response.body.refresh_token === 'string') {
    liveRefreshTokens.set(response.body.refresh_token, result.scope);
  }
  const rotated = grant === 'refresh_token' ? ' (refresh token rotated)' : '';
  log(`${grant} -> ${response.statusCode} via ${result.auth.method}${rotated}`);
});

await server.start(0, '127.0.0.1');
const { port } = server.address();
const url = `http://127.0.0.1:${port}`;
server.issuer.url = url;

process.stdout.write(
  `${JSON.stringify({
    event: 'listening',
    url,
    token_endpoint: `${url}/token`,
    issuer: server.issuer.url,
    kid: key.kid,
    alg: key.alg,
  })}\n`,
);

let stopping = false;
function stop(why) {
  if (stopping) {
    return;
  }
  stopping = true;
  log(`stopping: ${why}`);
  // Do not wait for keep-alive connections to close.
  process.exit(0);
}

process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
