//! The entry the shared caches (file, Redis) store: the format version, the
//! key the token is for, and the token.
//!
//! `{"version":2,"key":"<32 hex digits>","token":{...}}`. Version 1 had no
//! key; its entries (and any other version) are misses, replaced by the next
//! write.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::cache::{CacheError, CacheKey};
use crate::token::Token;

const LOG: &str = "tokenkeeper::cache";

/// The version of the entry written; other versions are misses.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// How far in the future an entry may say it was issued (another machine's
/// clock may run ahead of ours by this much).
pub(crate) const MAX_CLOCK_SKEW_MS: u64 = 5 * 60_000;

/// The longest lifetime an entry may claim: a year. OAuth2 access tokens
/// live minutes to hours; an entry that claims more was not written by an
/// honest client and would otherwise be served for decades.
pub(crate) const MAX_LIFETIME_MS: u64 = 365 * 86_400_000;

#[derive(Serialize)]
struct EntryRef<'a> {
    version: u32,
    key: String,
    token: &'a Token,
}

#[derive(Deserialize)]
struct Stored {
    version: u32,
    #[serde(default)]
    key: Option<String>,
    token: Token,
}

/// What a read found.
pub(crate) enum Found {
    /// A token written with our key.
    Token(Token),
    /// A well-formed entry written with another key.
    OtherKey,
}

/// The bytes of an entry for `token` written with `key`.
pub(crate) fn encode(key: CacheKey, token: &Token) -> Result<Vec<u8>, CacheError> {
    serde_json::to_vec(&EntryRef {
        version: FORMAT_VERSION,
        key: key.to_string(),
        token,
    })
    .map_err(|e| CacheError::new(format!("cannot encode the token: {e}")).with_cause(e))
}

/// Parses an entry: its key and token. The error says what is wrong
/// without quoting the contents.
pub(crate) fn decode(bytes: &[u8]) -> Result<(CacheKey, Token), CacheError> {
    let stored = serde_json::from_slice::<Stored>(bytes)
        .map_err(|e| CacheError::new(describe_json_error(&e)))?;
    if stored.version != FORMAT_VERSION {
        return Err(CacheError::new(format!(
            "format version {}, expected {FORMAT_VERSION}",
            stored.version
        )));
    }
    let key = stored
        .key
        .as_deref()
        .and_then(CacheKey::from_hex)
        .ok_or_else(|| CacheError::new("not a token entry (no key of 32 hex digits)"))?;
    Ok((key, stored.token))
}

/// Reads an entry for `key` at `now_ms` (ms since the Unix epoch): another
/// key is [`Found::OtherKey`]; an entry issued in the future (beyond the
/// clock skew) or living longer than a year is corrupt.
pub(crate) fn open(bytes: &[u8], key: CacheKey, now_ms: u64) -> Result<Found, CacheError> {
    let (stored, token) = decode(bytes)?;
    if stored != key {
        return Ok(Found::OtherKey);
    }
    if token.issued_ms() > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(CacheError::new(
            "corrupt (issued in the future, beyond 5 minutes of clock skew)",
        ));
    }
    if token.expiry_ms().saturating_sub(token.issued_ms()) > MAX_LIFETIME_MS {
        return Err(CacheError::new(
            "corrupt (expires more than a year after it was issued)",
        ));
    }
    Ok(Found::Token(token))
}

/// What is wrong with a JSON entry, without quoting it: serde's messages
/// for syntax errors name positions only, but its messages for data of the
/// wrong type quote the data, which may be a token.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("corrupt ({e})"),
        Category::Data => format!(
            "not a token entry (wrong or missing fields near line {} column {})",
            e.line(),
            e.column()
        ),
    }
}

/// Logs, at debug level, that a cache holds an entry for another key: once,
/// until an entry for our own key is read again, not on every read.
#[derive(Default)]
pub(crate) struct OtherKeyNotice(AtomicBool);

impl OtherKeyNotice {
    pub(crate) fn found(&self, cache: impl FnOnce() -> String) {
        if !self.0.swap(true, Ordering::Relaxed) {
            log::debug!(
                target: LOG,
                "{} holds a token for another client, grant or scope (another cache key); \
                 a miss, replaced by the next write",
                cache()
            );
        }
    }

    pub(crate) fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::token::{AccessToken, LifetimePolicy};

    const NOW: u64 = 1_700_000_000_000;

    fn token(issued_ms: u64, lifetime: Duration) -> Token {
        Token::new_ms(
            AccessToken::new("t"),
            issued_ms,
            lifetime,
            &LifetimePolicy::default(),
        )
    }

    fn found(bytes: &[u8], key: CacheKey) -> Option<Token> {
        match open(bytes, key, NOW) {
            Ok(Found::Token(t)) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn an_entry_is_read_only_with_its_own_key() {
        let mine = CacheKey::builder().field("client_id", "mine").build();
        let theirs = CacheKey::builder().field("client_id", "theirs").build();
        let t = token(NOW, Duration::from_secs(60));
        let bytes = encode(mine, &t).unwrap();
        assert_eq!(found(&bytes, mine), Some(t));
        assert!(matches!(open(&bytes, theirs, NOW), Ok(Found::OtherKey)));
        assert!(matches!(
            open(&bytes, CacheKey::unkeyed(), NOW),
            Ok(Found::OtherKey)
        ));
    }

    #[test]
    fn version_1_entries_and_missing_keys_are_errors() {
        let t = token(NOW, Duration::from_secs(60));
        let v1 = serde_json::to_vec(&serde_json::json!({"version": 1, "token": t})).unwrap();
        let e = decode(&v1).unwrap_err().to_string();
        assert!(e.contains("format version 1"), "{e}");
        let no_key = serde_json::to_vec(&serde_json::json!({"version": 2, "token": t})).unwrap();
        assert!(decode(&no_key).is_err());
        let bad_key = serde_json::to_vec(
            &serde_json::json!({"version": 2, "key": "SECRET-LOOKING-VALUE", "token": t}),
        )
        .unwrap();
        let e = decode(&bad_key).unwrap_err().to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn future_and_absurdly_long_entries_are_corrupt() {
        let key = CacheKey::unkeyed();
        let skewed = token(NOW + MAX_CLOCK_SKEW_MS, Duration::from_secs(60));
        assert!(found(&encode(key, &skewed).unwrap(), key).is_some());
        let future = token(NOW + MAX_CLOCK_SKEW_MS + 1, Duration::from_secs(60));
        assert!(open(&encode(key, &future).unwrap(), key, NOW).is_err());
        let year = token(NOW, Duration::from_millis(MAX_LIFETIME_MS));
        assert!(found(&encode(key, &year).unwrap(), key).is_some());
        let longer = token(NOW, Duration::from_millis(MAX_LIFETIME_MS + 1));
        assert!(open(&encode(key, &longer).unwrap(), key, NOW).is_err());
    }

    #[test]
    fn five_minutes_of_skew_and_a_year_of_lifetime_are_accepted_no_more() {
        let key = CacheKey::unkeyed();
        let minute = Duration::from_secs(60);
        let day = Duration::from_secs(86_400);
        let ahead = |ms: u64| found(&encode(key, &token(NOW + ms, minute)).unwrap(), key);
        assert!(ahead(4 * 60_000).is_some(), "another clock 4 min ahead");
        assert!(ahead(6 * 60_000).is_none(), "6 min ahead is no skew");
        let living = |lifetime: Duration| found(&encode(key, &token(NOW, lifetime)).unwrap(), key);
        assert!(living(day * 30).is_some(), "a 30-day token");
        assert!(living(day * 364).is_some(), "a 364-day token");
        assert!(living(day * 366).is_none(), "a 366-day token");
    }

    #[test]
    fn a_bad_entry_is_described_by_what_is_wrong_without_quoting_it() {
        let e = decode(b"{\"version\":2,").unwrap_err().to_string();
        assert!(e.starts_with("corrupt ("), "{e}");
        let e = decode(br#"{"version":"SECRET-TOKEN"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("not a token entry (wrong or missing fields near line 1 column"),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");
    }
}
