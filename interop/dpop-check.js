// A check by hand of oidc-provider.js's DPoP (RFC 9449) set-up, with proofs
// signed by `jose` (the JOSE library oidc-provider itself depends on):
//
//   npm ci --prefix interop && node interop/dpop-check.js
//
// Starts oidc-provider.js, then asks for client-credentials tokens:
// `dpop` with a proof gets `token_type` DPoP and an access token whose
// `cnf.jkt` is the proof key's thumbprint; without a proof it is refused;
// a replayed proof is refused; `dpop-nonce` is first answered
// `use_dpop_nonce` with a `DPoP-Nonce` header, then accepts a proof with
// that nonce. Prints one line per check and exits 1 on the first failure.

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import {
  calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT,
} from 'jose';

const SECRET = 'interop client_secret_jwt secret, 32+ bytes';

async function publicJwk(alg) {
  const { publicKey } = await generateKeyPair(alg, { extractable: true });
  return JSON.stringify(await exportJWK(publicKey));
}

const provider = spawn(process.execPath, [fileURLToPath(new URL('oidc-provider.js', import.meta.url))], {
  env: {
    ...process.env,
    INTEROP_ES256_JWK: await publicJwk('ES256'),
    INTEROP_RS256_JWK: await publicJwk('RS256'),
  },
  stdio: ['pipe', 'pipe', 'inherit'],
});
const [line] = await createInterface({ input: provider.stdout })[Symbol.asyncIterator]().next()
  .then(({ value }) => [value]);
const { token_endpoint: tokenEndpoint } = JSON.parse(line);

function check(what, ok, detail) {
  process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok ? '' : `: ${JSON.stringify(detail)}`}\n`);
  if (!ok) {
    provider.kill();
    process.exit(1);
  }
}

const { privateKey, publicKey } = await generateKeyPair('ES256');
const jwk = await exportJWK(publicKey);
const jkt = await calculateJwkThumbprint(jwk);

function proof(nonce) {
  return new SignJWT({
    htm: 'POST', htu: tokenEndpoint, jti: randomUUID(), ...(nonce ? { nonce } : {}),
  })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
    .setIssuedAt()
    .sign(privateKey);
}

async function token(client, dpop) {
  const response = await fetch(tokenEndpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(client)}:${encodeURIComponent(SECRET)}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      ...(dpop ? { dpop } : {}),
    },
    body: 'grant_type=client_credentials&scope=api%3Aread',
  });
  return { status: response.status, nonce: response.headers.get('dpop-nonce'), body: await response.json() };
}

try {
  const first = await proof();
  const bound = await token('dpop', first);
  check('dpop: a proof gets token_type DPoP', bound.status === 200 && bound.body.token_type === 'DPoP', bound);
  const claims = decodeJwt(bound.body.access_token);
  check('dpop: the access token is bound to the key (cnf.jkt)', claims.cnf?.jkt === jkt, claims);

  const without = await token('dpop');
  check('dpop: no proof is refused', without.status === 400 && without.body.error === 'invalid_grant', without);

  const replayed = await token('dpop', first);
  check('dpop: a replayed proof is refused', replayed.status === 400, replayed);

  const challenge = await token('dpop-nonce', await proof());
  check(
    'dpop-nonce: a proof without nonce gets use_dpop_nonce and a DPoP-Nonce',
    challenge.status === 400 && challenge.body.error === 'use_dpop_nonce' && !!challenge.nonce,
    challenge,
  );
  const answered = await token('dpop-nonce', await proof(challenge.nonce));
  check('dpop-nonce: a proof with the nonce gets token_type DPoP', answered.status === 200 && answered.body.token_type === 'DPoP', answered);

  const plain = await token('basic');
  check('basic: no proof still gets a Bearer token', plain.status === 200 && plain.body.token_type === 'Bearer', plain);
} finally {
  provider.kill();
}
