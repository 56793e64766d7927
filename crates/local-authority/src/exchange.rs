//! The token exchange grant (RFC 8693), checked for real: the subject
//! token (and the actor token, if any) must be an access token this server
//! issued and that is still valid, or one registered with
//! [`LocalAuthority::add_subject_token`](crate::LocalAuthority::add_subject_token),
//! presented with its type; anything else is `invalid_grant`.

use crate::{Exchange, State};

/// The `grant_type` of token exchange.
pub(crate) const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of this server's access tokens.
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Checks an exchange of `client_id` with `params`, records it, and
/// returns the `issued_token_type`; or the error code and why.
pub(crate) fn exchange(
    state: &mut State,
    client_id: &str,
    params: &[(String, String)],
) -> Result<String, (&'static str, String)> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let all = |name: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let invalid_request = |why: &str| ("invalid_request", why.to_owned());
    let subject_token =
        param("subject_token").ok_or_else(|| invalid_request("missing subject_token"))?;
    let subject_token_type =
        param("subject_token_type").ok_or_else(|| invalid_request("missing subject_token_type"))?;
    check(state, "subject", &subject_token, &subject_token_type)?;
    let actor_token = param("actor_token");
    let actor_token_type = param("actor_token_type");
    match (&actor_token, &actor_token_type) {
        (Some(token), Some(token_type)) => check(state, "actor", token, token_type)?,
        (Some(_), None) => return Err(invalid_request("actor_token without actor_token_type")),
        (None, Some(_)) => return Err(invalid_request("actor_token_type without actor_token")),
        (None, None) => {}
    }
    let requested_token_type = param("requested_token_type");
    let issued = requested_token_type
        .clone()
        .unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_owned());
    state.exchanges.push(Exchange {
        client_id: client_id.to_owned(),
        subject_token,
        subject_token_type,
        actor_token,
        actor_token_type,
        requested_token_type,
        audiences: all("audience"),
        resources: all("resource"),
        scope: param("scope"),
    });
    Ok(issued)
}

/// Whether `token` of `token_type` may be exchanged: an access token of
/// this server's, valid and not revoked, or a registered token of that
/// type.
fn check(
    state: &State,
    role: &str,
    token: &str,
    token_type: &str,
) -> Result<(), (&'static str, String)> {
    let known = if state.access_tokens.contains_key(token) {
        if token_type != ACCESS_TOKEN_TYPE {
            return Err((
                "invalid_request",
                format!("the {role} token is an access token, not of type {token_type}"),
            ));
        }
        state.token_is_valid(token) && !state.revoked.contains(token)
    } else {
        match state.subject_tokens.get(token) {
            Some(registered) if registered != token_type => {
                return Err((
                    "invalid_request",
                    format!("the {role} token is not of type {token_type}"),
                ))
            }
            Some(_) => true,
            None => false,
        }
    };
    if known {
        Ok(())
    } else {
        Err((
            "invalid_grant",
            format!("the {role} token is unknown, expired or revoked"),
        ))
    }
}
