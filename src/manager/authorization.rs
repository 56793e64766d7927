//! The headers of a resource request: `Authorization`, and `DPoP` for a
//! bound token.

use std::fmt;
use std::sync::Arc;

use crate::token::Token;

/// The header values a resource request carries, from
/// [`TokenHandle::authorization`](crate::TokenHandle::authorization):
/// `Authorization: DPoP <token>` and a `DPoP` proof for a DPoP-bound token
/// (RFC 9449), `Authorization: Bearer <token>` alone for any other.
///
/// Both values hold the token (the proof its hash): `Debug` shows the
/// scheme alone.
#[derive(Clone)]
pub struct Authorization {
    token: Arc<Token>,
    authorization: String,
    dpop: Option<String>,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("scheme", &if self.is_dpop() { "DPoP" } else { "Bearer" })
            .field("dpop", &self.dpop.as_ref().map(|_| "<proof>"))
            .finish()
    }
}

impl Authorization {
    /// The headers of a bearer token.
    pub(crate) fn bearer(token: Arc<Token>) -> Authorization {
        let authorization = format!("Bearer {}", token.access_token().secret());
        Authorization {
            token,
            authorization,
            dpop: None,
        }
    }

    /// The headers of a DPoP-bound token, with its proof.
    #[cfg(feature = "jwt")]
    pub(crate) fn bound(token: Arc<Token>, proof: String) -> Authorization {
        let authorization = format!("DPoP {}", token.access_token().secret());
        Authorization {
            token,
            authorization,
            dpop: Some(proof),
        }
    }

    /// The value of the `Authorization` header: `DPoP <token>` or
    /// `Bearer <token>`.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// The value of the `DPoP` header, for a DPoP-bound token.
    pub fn dpop(&self) -> Option<&str> {
        self.dpop.as_deref()
    }

    /// Whether the token is DPoP-bound: the request carries a proof, and
    /// a resource server's `use_dpop_nonce` challenge is worth answering.
    pub fn is_dpop(&self) -> bool {
        self.dpop.is_some()
    }

    /// The token the headers carry: what to report with
    /// [`TokenHandle::refresh_rejected`](crate::TokenHandle::refresh_rejected)
    /// when the server rejects it.
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }
}
