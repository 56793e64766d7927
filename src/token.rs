//! Tokens, the secret strings inside them, and when a token turns stale.
//!
//! A [`Token`] carries an [`AccessToken`] (and optionally a [`RefreshToken`]
//! and an [`IdToken`]) together with three instants:
//!
//! ```text
//!  issued            stale            expiry
//!    |---- Fresh -----|---- Stale -----|---- Expired ...
//!                      ^ refresh here   ^ stop using it
//! ```
//!
//! A [`LifetimePolicy`] turns the lifetime an authority grants into those
//! instants: by default a token turns stale at 75% of its lifetime, and the
//! stale window (the time left to refresh while the old token still works)
//! is never shorter than 30 s or half the lifetime, whichever is smaller.
//!
//! The secret types never print their value: `Debug` and `Display` show a
//! placeholder under every format flag, and the value is read with an explicit
//! `secret()` call.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tokenkeeper::{AccessToken, LifetimePolicy, Token, TokenStatus};
//!
//! let policy = LifetimePolicy::default();
//! let token = Token::new(AccessToken::new("abc"), SystemTime::now(), Duration::from_secs(3600), &policy);
//! let fresh_for = token.stale_at().duration_since(token.issued_at()).unwrap();
//! assert_eq!(fresh_for, Duration::from_secs(2700)); // 75% of an hour
//! assert_eq!(token.status(), TokenStatus::Fresh);
//! assert!(token.expires_in() <= Duration::from_secs(3600));
//! assert_eq!(format!("{:?}", token.access_token()), "AccessToken(<redacted>)");
//! assert_eq!(token.access_token().secret(), "abc");
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::time::{duration_ms, from_ms, system_now_ms, test_support, to_ms, until, Utc};

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// `Debug` and `Display` print a placeholder, never the value, whatever
        /// the format flags; [`secret`](Self::secret) reads the value. Serde
        /// writes and reads the full value as a plain string.
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// Returns the value. Take care where it goes.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Unwraps the value.
            pub fn into_secret(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad("<redacted>")
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

/// An OAuth2 client identifier.
///
/// Not a secret (it travels in the clear beside the secret, and operators
/// need it in logs to tell clients apart), so unlike the types below it
/// prints its value.
///
/// ```
/// let id = tokenkeeper::ClientId::new("service-a");
/// assert_eq!(id.as_str(), "service-a");
/// assert_eq!(id.to_string(), "service-a");
/// assert_eq!(format!("{id:?}"), r#"ClientId("service-a")"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client identifier.
    pub fn new(value: impl Into<String>) -> ClientId {
        ClientId(value.into())
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl From<String> for ClientId {
    fn from(value: String) -> Self {
        ClientId(value)
    }
}

impl From<&str> for ClientId {
    fn from(value: &str) -> Self {
        ClientId(value.to_owned())
    }
}

secret_string!(
    /// An OAuth2 client secret.
    ///
    /// ```
    /// let secret = tokenkeeper::ClientSecret::new("hunter2");
    /// assert_eq!(format!("{secret:>12}"), "  <redacted>");
    /// ```
    ClientSecret
);
secret_string!(
    /// An access token: what a service sends as `Authorization: Bearer ...`.
    ///
    /// ```
    /// let token = tokenkeeper::AccessToken::new("eyJhbGciOi...");
    /// assert_eq!(format!("{token:#?}"), "AccessToken(<redacted>)");
    /// ```
    AccessToken
);
secret_string!(
    /// A refresh token, redeemed for a new access token.
    ///
    /// ```
    /// let token = tokenkeeper::RefreshToken::new("r1");
    /// assert!(!format!("{token:?}").contains("r1"));
    /// ```
    RefreshToken
);
secret_string!(
    /// An OpenID Connect ID token.
    ///
    /// ```
    /// let token = tokenkeeper::IdToken::new("id1");
    /// assert!(!format!("{token}").contains("id1"));
    /// ```
    IdToken
);

/// Where a token is in its life at a given instant.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{AccessToken, LifetimePolicy, Token, TokenStatus};
///
/// let issued = SystemTime::now();
/// let t = Token::new(AccessToken::new("a"), issued, Duration::from_secs(100), &LifetimePolicy::default());
/// assert_eq!(t.status_at(issued), TokenStatus::Fresh);
/// assert_eq!(t.status_at(issued + Duration::from_secs(75)), TokenStatus::Stale);
/// assert_eq!(t.status_at(issued + Duration::from_secs(100)), TokenStatus::Expired);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    /// Before the stale instant: use it, no refresh needed.
    Fresh,
    /// Between stale and expiry: still valid, a refresh is due.
    Stale,
    /// At or after expiry: must not be used.
    Expired,
}

/// An access token and the instants that govern its refresh.
///
/// The invariant `issued <= stale <= expiry` always holds, for deserialized
/// tokens too. Instants are kept to the millisecond (an instant given with
/// more precision is rounded down), an instant before the Unix epoch counts
/// as the epoch, and one after the year 9999 as the end of time, which reads
/// back as the last millisecond of that year: a token from an authority that
/// grants an absurd lifetime never expires rather than overflowing.
///
/// The durations ([`expires_in`](Token::expires_in),
/// [`stale_in`](Token::stale_in)) and [`status`](Token::status) read the
/// system clock; their `_at` forms take the instant to judge at, for a
/// manager on another [`Clock`](crate::Clock).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{AccessToken, LifetimePolicy, RefreshToken, Token};
///
/// let issued = SystemTime::now();
/// let token = Token::new(AccessToken::new("a"), issued, Duration::from_secs(60), &LifetimePolicy::default())
///     .with_refresh_token(RefreshToken::new("r"));
/// assert_eq!(token.lifetime(), Duration::from_secs(60));
/// // A 30 s stale window beats 25% of 60 s.
/// assert_eq!(token.expires_at().duration_since(token.stale_at()).unwrap(), Duration::from_secs(30));
/// assert!(token.stale_in() <= Duration::from_secs(30));
/// assert_eq!(token.refresh_token().map(|r| r.secret()), Some("r"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TokenRepr")]
pub struct Token {
    access_token: AccessToken,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<IdToken>,
    token_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<String>,
    // Milliseconds since the Unix epoch, the crate's inner frame of time
    // and the cache entry format.
    issued_ms: u64,
    stale_ms: u64,
    expiry_ms: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("id_token", &self.id_token)
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("issued_at", &Utc(self.issued_at()))
            .field("stale_at", &Utc(self.stale_at()))
            .field("expires_at", &Utc(self.expires_at()))
            .finish()
    }
}

/// The unchecked shape of a serialized token; `Token` validates it.
#[derive(Deserialize)]
struct TokenRepr {
    access_token: AccessToken,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(default)]
    id_token: Option<IdToken>,
    #[serde(default = "bearer")]
    token_type: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    issued_token_type: Option<String>,
    issued_ms: u64,
    stale_ms: u64,
    expiry_ms: u64,
}

/// A token that cannot be used: its instants break `issued <= stale <=
/// expiry`, or (when read back from a cache) its access token is empty or
/// has characters that cannot go into an HTTP header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidToken {
    reason: &'static str,
}

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

const BAD_TIMES: InvalidToken = InvalidToken {
    reason: "token times must satisfy issued <= stale <= expiry",
};

impl std::error::Error for InvalidToken {}

impl TryFrom<TokenRepr> for Token {
    type Error = InvalidToken;

    fn try_from(r: TokenRepr) -> Result<Self, InvalidToken> {
        // A cache file is input too: what goes into an Authorization header
        // is held to the same rule as an authority's answer.
        let value = r.access_token.secret();
        if value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(InvalidToken {
                reason: "the access token is empty or has characters not allowed in an HTTP header",
            });
        }
        let token = Token::from_parts_ms(r.access_token, r.issued_ms, r.stale_ms, r.expiry_ms)?;
        Ok(Token {
            refresh_token: r.refresh_token,
            id_token: r.id_token,
            token_type: r.token_type,
            scope: r.scope,
            issued_token_type: r.issued_token_type,
            ..token
        })
    }
}

impl Token {
    /// Makes a token issued at `issued_at` that lives for `lifetime`, with
    /// its stale instant placed by `policy`.
    pub fn new(
        access_token: AccessToken,
        issued_at: SystemTime,
        lifetime: Duration,
        policy: &LifetimePolicy,
    ) -> Token {
        Token::new_ms(access_token, to_ms(issued_at), lifetime, policy)
    }

    test_support! {
        /// [`Token::new`] with the issue instant in ms since the Unix epoch.
        fn new_ms(
            access_token: AccessToken,
            issued_ms: u64,
            lifetime: Duration,
            policy: &LifetimePolicy,
        ) -> Token {
            let expiry_ms = issued_ms.saturating_add(duration_ms(lifetime));
            // Saturation may shorten the lifetime at the end of time; the window
            // is taken from what is left so the invariant still holds.
            let stale_ms = expiry_ms - policy.stale_window_ms(expiry_ms - issued_ms);
            Token::unchecked(access_token, issued_ms, stale_ms, expiry_ms)
        }

        /// [`Token::from_parts`] with instants in ms since the Unix epoch.
        fn from_parts_ms(
            access_token: AccessToken,
            issued_ms: u64,
            stale_ms: u64,
            expiry_ms: u64,
        ) -> Result<Token, InvalidToken> {
            if issued_ms <= stale_ms && stale_ms <= expiry_ms {
                Ok(Token::unchecked(access_token, issued_ms, stale_ms, expiry_ms))
            } else {
                Err(BAD_TIMES)
            }
        }
    }

    /// A token with the given instants, which the caller has checked.
    fn unchecked(
        access_token: AccessToken,
        issued_ms: u64,
        stale_ms: u64,
        expiry_ms: u64,
    ) -> Token {
        Token {
            access_token,
            refresh_token: None,
            id_token: None,
            token_type: bearer(),
            scope: None,
            issued_token_type: None,
            issued_ms,
            stale_ms,
            expiry_ms,
        }
    }

    /// Makes a token from explicit instants, checking `issued <= stale <= expiry`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokenkeeper::{AccessToken, Token};
    ///
    /// let now = SystemTime::now();
    /// let (stale, expiry) = (now + Duration::from_secs(45), now + Duration::from_secs(60));
    /// assert!(Token::from_parts(AccessToken::new("a"), now, stale, expiry).is_ok());
    /// assert!(Token::from_parts(AccessToken::new("a"), now, expiry, stale).is_err());
    /// ```
    pub fn from_parts(
        access_token: AccessToken,
        issued_at: SystemTime,
        stale_at: SystemTime,
        expires_at: SystemTime,
    ) -> Result<Token, InvalidToken> {
        Token::from_parts_ms(
            access_token,
            to_ms(issued_at),
            to_ms(stale_at),
            to_ms(expires_at),
        )
    }

    /// Attaches a refresh token.
    pub fn with_refresh_token(mut self, refresh_token: RefreshToken) -> Token {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// Attaches an ID token.
    pub fn with_id_token(mut self, id_token: IdToken) -> Token {
        self.id_token = Some(id_token);
        self
    }

    /// Sets the token type the authority reported (`Bearer` by default).
    pub fn with_token_type(mut self, token_type: impl Into<String>) -> Token {
        self.token_type = token_type.into();
        self
    }

    /// Sets the scope the authority granted.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Token {
        self.scope = Some(scope.into());
        self
    }

    /// Records the `issued_token_type` of a token exchange (RFC 8693
    /// §2.2.1): what kind of token the access token is.
    pub fn with_issued_token_type(mut self, issued_token_type: impl Into<String>) -> Token {
        self.issued_token_type = Some(issued_token_type.into());
        self
    }

    /// The `issued_token_type` a token exchange answered with (RFC 8693
    /// §2.2.1), such as `urn:ietf:params:oauth:token-type:access_token` or
    /// `urn:ietf:params:oauth:token-type:jwt`; `None` for other grants.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokenkeeper::{AccessToken, LifetimePolicy, Token};
    ///
    /// let token = Token::new(AccessToken::new("t"), SystemTime::now(), Duration::from_secs(60), &LifetimePolicy::default())
    ///     .with_issued_token_type("urn:ietf:params:oauth:token-type:jwt");
    /// assert_eq!(token.issued_token_type(), Some("urn:ietf:params:oauth:token-type:jwt"));
    /// ```
    pub fn issued_token_type(&self) -> Option<&str> {
        self.issued_token_type.as_deref()
    }

    /// The token type, `Bearer` unless the authority said otherwise.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// The scope the authority granted, if it said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the authority issued one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The ID token, if the authority issued one.
    pub fn id_token(&self) -> Option<&IdToken> {
        self.id_token.as_ref()
    }

    /// When the token was received.
    pub fn issued_at(&self) -> SystemTime {
        from_ms(self.issued_ms)
    }

    /// When the token turns stale and should be refreshed.
    pub fn stale_at(&self) -> SystemTime {
        from_ms(self.stale_ms)
    }

    /// When the token expires and must no longer be used.
    pub fn expires_at(&self) -> SystemTime {
        from_ms(self.expiry_ms)
    }

    /// How long the token lives, from issue to expiry.
    pub fn lifetime(&self) -> Duration {
        until(self.issued_ms, self.expiry_ms)
    }

    /// The time left until the token expires, on the system clock; zero once
    /// it has expired.
    pub fn expires_in(&self) -> Duration {
        until(system_now_ms(), self.expiry_ms)
    }

    /// The time left until the token turns stale (and a refresh is due), on
    /// the system clock; zero once it is stale.
    pub fn stale_in(&self) -> Duration {
        until(system_now_ms(), self.stale_ms)
    }

    /// The status of the token now, on the system clock.
    pub fn status(&self) -> TokenStatus {
        self.status_at_ms(system_now_ms())
    }

    /// The status of the token at `now`.
    pub fn status_at(&self, now: SystemTime) -> TokenStatus {
        self.status_at_ms(to_ms(now))
    }

    /// Whether the token may still be used now, on the system clock (fresh
    /// or stale).
    pub fn is_valid(&self) -> bool {
        self.is_valid_at_ms(system_now_ms())
    }

    /// Whether the token may still be used at `now` (fresh or stale).
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.is_valid_at_ms(to_ms(now))
    }

    test_support! {
        /// When the token was received, in ms since the Unix epoch.
        fn issued_ms(&self) -> u64 {
            self.issued_ms
        }

        /// When the token turns stale, in ms since the Unix epoch.
        fn stale_ms(&self) -> u64 {
            self.stale_ms
        }

        /// When the token expires, in ms since the Unix epoch.
        fn expiry_ms(&self) -> u64 {
            self.expiry_ms
        }

        /// [`Token::status_at`] with `now_ms` in ms since the Unix epoch.
        fn status_at_ms(&self, now_ms: u64) -> TokenStatus {
            if now_ms < self.stale_ms {
                TokenStatus::Fresh
            } else if now_ms < self.expiry_ms {
                TokenStatus::Stale
            } else {
                TokenStatus::Expired
            }
        }

        /// [`Token::is_valid_at`] with `now_ms` in ms since the Unix epoch.
        fn is_valid_at_ms(&self, now_ms: u64) -> bool {
            now_ms < self.expiry_ms
        }
    }
}

/// Where the stale instant falls within a token's lifetime.
///
/// The stale window is the time between stale and expiry. It is the larger
/// of `100% - stale_percent` of the lifetime and `min(min_stale_window,
/// lifetime / 2)`, and never longer than the lifetime.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{AccessToken, FetchContext, LifetimePolicy, ManualClock, Token};
///
/// let policy = LifetimePolicy::default()
///     .stale_percent(50)
///     .default_lifetime(Duration::from_secs(120));
/// let token = Token::new(AccessToken::new("a"), SystemTime::now(), Duration::from_secs(100), &policy);
/// assert_eq!(token.expires_at().duration_since(token.stale_at()).unwrap(), Duration::from_secs(50));
///
/// // A token that comes without a lifetime gets the default one.
/// let cx = FetchContext::new(ManualClock::default(), policy);
/// assert_eq!(cx.token(AccessToken::new("b"), None).lifetime(), Duration::from_secs(120));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimePolicy {
    stale_percent: u8,
    min_stale_window: Duration,
    default_lifetime: Duration,
}

impl Default for LifetimePolicy {
    /// Stale at 75%, a stale window of at least `min(30 s, lifetime / 2)`, and
    /// 5 minutes for tokens that come without a lifetime (a cautious guess:
    /// an early refresh costs one request, a late one fails calls).
    fn default() -> Self {
        LifetimePolicy {
            stale_percent: 75,
            min_stale_window: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(300),
        }
    }
}

impl LifetimePolicy {
    /// Sets at what percentage of its lifetime a token turns stale; values
    /// above 100 count as 100.
    pub fn stale_percent(mut self, percent: u8) -> Self {
        self.stale_percent = percent.min(100);
        self
    }

    /// Sets the shortest stale window (capped at half the lifetime).
    pub fn min_stale_window(mut self, window: Duration) -> Self {
        self.min_stale_window = window;
        self
    }

    /// Sets the lifetime assumed for a token that comes without one.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    test_support! {
        /// The lifetime assumed for a token that comes without one.
        fn default_lifetime_value(&self) -> Duration {
            self.default_lifetime
        }
    }

    /// The stale window for a token living `lifetime_ms`; never more than
    /// `lifetime_ms`.
    pub(crate) fn stale_window_ms(&self, lifetime_ms: u64) -> u64 {
        let by_percent = mul_div(lifetime_ms, u64::from(100 - self.stale_percent), 100);
        let floor = duration_ms(self.min_stale_window).min(lifetime_ms / 2);
        by_percent.max(floor).min(lifetime_ms)
    }
}

fn bearer() -> String {
    "Bearer".to_owned()
}

/// `value * num / den` without overflow, for `num <= den`.
fn mul_div(value: u64, num: u64, den: u64) -> u64 {
    (u128::from(value) * u128::from(num) / u128::from(den)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(issued: u64, lifetime_ms: u64) -> Token {
        Token::new_ms(
            AccessToken::new("t"),
            issued,
            Duration::from_millis(lifetime_ms),
            &LifetimePolicy::default(),
        )
    }

    #[test]
    fn stale_and_expiry_for_typical_lifetimes() {
        // (lifetime, expected stale offset from issue)
        let cases = [
            (0, 0),
            (1_000, 500),             // window = half the lifetime
            (20_000, 10_000),         // window = half the lifetime (< 30 s)
            (59_000, 29_500),         // half is 29.5 s < 30 s
            (3_600_000, 2_700_000),   // 25% = 15 min > 30 s
            (86_400_000, 64_800_000), // 25% of a day
            (120_000, 90_000),        // 25% = 30 s exactly
            (100_000, 70_000),        // 25% = 25 s < 30 s window
        ];
        for (lifetime, stale_offset) in cases {
            let t = token(1_000, lifetime);
            assert_eq!(t.expiry_ms(), 1_000 + lifetime, "lifetime {lifetime}");
            assert_eq!(t.stale_ms(), 1_000 + stale_offset, "lifetime {lifetime}");
            assert!(t.issued_ms() <= t.stale_ms() && t.stale_ms() <= t.expiry_ms());
        }
    }

    #[test]
    fn zero_lifetime_is_expired_at_issue() {
        let t = token(7, 0);
        assert_eq!((t.issued_ms(), t.stale_ms(), t.expiry_ms()), (7, 7, 7));
        assert_eq!(t.status_at_ms(7), TokenStatus::Expired);
    }

    #[test]
    fn arithmetic_saturates_at_the_end_of_time() {
        let t = Token::new_ms(
            AccessToken::new("t"),
            u64::MAX - 10,
            Duration::MAX,
            &LifetimePolicy::default(),
        );
        assert_eq!(t.expiry_ms(), u64::MAX);
        assert!(t.issued_ms() <= t.stale_ms() && t.stale_ms() <= t.expiry_ms());
    }

    #[test]
    fn invariant_holds_for_many_policies_and_lifetimes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let policy = LifetimePolicy::default()
                .stale_percent(rng.u8(..))
                .min_stale_window(Duration::from_millis(rng.u64(..)));
            let lifetime = match rng.u8(..4) {
                0 => rng.u64(..),
                _ => rng.u64(..100_000),
            };
            let t = Token::new_ms(
                AccessToken::new("t"),
                rng.u64(..),
                Duration::from_millis(lifetime),
                &policy,
            );
            assert!(t.issued_ms() <= t.stale_ms() && t.stale_ms() <= t.expiry_ms());
        }
    }

    #[test]
    fn status_boundaries() {
        let t = token(0, 100_000);
        assert_eq!(t.status_at_ms(69_999), TokenStatus::Fresh);
        assert_eq!(t.status_at_ms(70_000), TokenStatus::Stale);
        assert_eq!(t.status_at_ms(99_999), TokenStatus::Stale);
        assert_eq!(t.status_at_ms(100_000), TokenStatus::Expired);
        assert!(t.is_valid_at_ms(99_999) && !t.is_valid_at_ms(100_000));
    }

    #[test]
    fn typed_instants_and_durations() {
        use std::time::UNIX_EPOCH;
        let issued = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let t = Token::new(
            AccessToken::new("t"),
            issued + Duration::from_micros(999), // below a millisecond: dropped
            Duration::from_secs(100),
            &LifetimePolicy::default(),
        );
        assert_eq!(t.issued_at(), issued);
        assert_eq!(t.stale_at(), issued + Duration::from_secs(70));
        assert_eq!(t.expires_at(), issued + Duration::from_secs(100));
        assert_eq!(t.lifetime(), Duration::from_secs(100));
        let at = |secs| issued + Duration::from_secs(secs);
        assert_eq!(t.status_at(at(69)), TokenStatus::Fresh);
        assert_eq!(
            t.status_at(at(70) - Duration::from_micros(1)),
            TokenStatus::Fresh
        );
        assert_eq!(t.status_at(at(70)), TokenStatus::Stale);
        assert_eq!(t.status_at(at(100)), TokenStatus::Expired);
        assert!(t.is_valid_at(at(99)) && !t.is_valid_at(at(100)));
        // Issued in 2023: long expired on the system clock.
        assert_eq!(t.status(), TokenStatus::Expired);
        assert!(!t.is_valid());
        assert_eq!(
            (t.expires_in(), t.stale_in()),
            (Duration::ZERO, Duration::ZERO)
        );

        let now = SystemTime::now();
        let live = Token::new(
            AccessToken::new("t"),
            now,
            Duration::from_secs(3600),
            &LifetimePolicy::default(),
        );
        assert_eq!(live.status(), TokenStatus::Fresh);
        assert!(live.is_valid());
        let (expires_in, stale_in) = (live.expires_in(), live.stale_in());
        assert!(expires_in <= Duration::from_secs(3600) && expires_in > Duration::from_secs(3500));
        assert!(stale_in <= Duration::from_secs(2700) && stale_in > Duration::from_secs(2600));

        let parts = Token::from_parts(AccessToken::new("t"), at(0), at(50), at(60)).unwrap();
        assert_eq!(
            (parts.issued_ms(), parts.stale_ms(), parts.expiry_ms()),
            (1_700_000_000_000, 1_700_000_050_000, 1_700_000_060_000)
        );
        assert_eq!(
            Token::from_parts(AccessToken::new("t"), at(0), at(61), at(60)),
            Err(BAD_TIMES)
        );
    }

    #[test]
    fn instants_saturate_before_the_epoch_and_after_the_year_9999() {
        use std::time::UNIX_EPOCH;
        let before = UNIX_EPOCH - Duration::from_secs(60);
        let t = Token::new(
            AccessToken::new("t"),
            before,
            Duration::from_secs(100),
            &LifetimePolicy::default(),
        );
        assert_eq!(t.issued_at(), UNIX_EPOCH);
        assert_eq!(t.expires_at(), UNIX_EPOCH + Duration::from_secs(100));
        let forever = Token::new(
            AccessToken::new("t"),
            SystemTime::now(),
            Duration::MAX,
            &LifetimePolicy::default(),
        );
        let end = UNIX_EPOCH + Duration::from_millis(crate::time::END_MS);
        assert_eq!(forever.expires_at(), end);
        assert_eq!(forever.expiry_ms(), u64::MAX);
        assert_eq!(forever.status(), TokenStatus::Fresh);
        // The end of time read back is the end of time again.
        let again = Token::from_parts(
            AccessToken::new("t"),
            forever.issued_at(),
            forever.stale_at(),
            end,
        )
        .unwrap();
        assert_eq!(again.expiry_ms(), u64::MAX);
    }

    #[test]
    fn debug_shows_instants_in_utc_and_no_secret() {
        let t = token(1_796_649_969_123, 60_000).with_refresh_token(RefreshToken::new("s3cr3t"));
        let debug = format!("{t:?}");
        assert!(
            debug.contains("issued_at: 2026-12-07T13:26:09.123Z"),
            "{debug}"
        );
        assert!(
            debug.contains("stale_at: 2026-12-07T13:26:39.123Z"),
            "{debug}"
        );
        assert!(
            debug.contains("expires_at: 2026-12-07T13:27:09.123Z"),
            "{debug}"
        );
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("_ms"),
            "{debug}"
        );
    }

    #[test]
    fn stale_percent_and_window_are_configurable() {
        let p = LifetimePolicy::default()
            .stale_percent(90)
            .min_stale_window(Duration::ZERO);
        assert_eq!(p.stale_window_ms(100_000), 10_000);
        let p = LifetimePolicy::default().stale_percent(200);
        assert_eq!(p.stale_window_ms(100_000), 30_000); // 100% stale: window is the floor
    }

    #[test]
    fn secrets_never_print() {
        let values = [
            format!("{}", ClientSecret::new("s3cr3t")),
            format!("{:?}", ClientSecret::new("s3cr3t")),
            format!("{:#?}", AccessToken::new("s3cr3t")),
            format!("{:>40}", RefreshToken::new("s3cr3t")),
            format!("{:<40?}", IdToken::new("s3cr3t")),
            format!("{:.3}", AccessToken::new("s3cr3t")),
            format!(
                "{:?}",
                token(0, 10).with_refresh_token(RefreshToken::new("s3cr3t"))
            ),
            format!("{:#?}", token(0, 10).with_id_token(IdToken::new("s3cr3t"))),
        ];
        for v in values {
            assert!(!v.contains("s3cr3t") && !v.contains("s3c"), "{v}");
        }
    }

    #[test]
    fn serde_round_trips_the_full_value() {
        let t = token(5, 60_000)
            .with_refresh_token(RefreshToken::new("refresh-1"))
            .with_id_token(IdToken::new("id-1"));
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"access_token\":\"t\"") && json.contains("refresh-1"));
        let back: Token = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(!json.contains("issued_token_type"), "{json}");
        let exchanged = t.with_issued_token_type("urn:ietf:params:oauth:token-type:jwt");
        let json = serde_json::to_string(&exchanged).unwrap();
        let back: Token = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.issued_token_type(),
            Some("urn:ietf:params:oauth:token-type:jwt")
        );
        let secret: ClientSecret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(secret.secret(), "abc");
    }

    #[test]
    fn deserialize_rejects_broken_invariant() {
        let json = r#"{"access_token":"t","issued_ms":10,"stale_ms":5,"expiry_ms":20}"#;
        assert!(serde_json::from_str::<Token>(json).is_err());
    }

    #[test]
    fn deserialize_rejects_header_unsafe_access_tokens() {
        for bad in ["", "a b", "a\\r\\nX-Injected: 1", "t\\u00e9"] {
            let json =
                format!(r#"{{"access_token":"{bad}","issued_ms":1,"stale_ms":2,"expiry_ms":3}}"#);
            assert!(serde_json::from_str::<Token>(&json).is_err(), "{json}");
        }
    }
}
