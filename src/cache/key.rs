use std::fmt;

/// FNV-1a, 128-bit (the parameters of the FNV reference): a fixed,
/// documented function, so a key computed by one build, Rust version or
/// machine is the key computed by any other.
const FNV_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// Whom a cached token is for: a 128-bit digest of what the token was asked
/// with (token URL, client id, grant type and its parameters), never the
/// secrets themselves.
///
/// Every cache entry records the key it was written with, and a read with
/// another key is a miss, so two clients pointed at one cache file (or one
/// Redis prefix) never serve each other's token. The grants compute their
/// own key ([`TokenSource::cache_key`](crate::TokenSource::cache_key)); for
/// other sources, set one with
/// [`Chain::cache_key`](crate::cache::Chain::cache_key).
///
/// The digest is FNV-1a over length-prefixed fields: stable across builds
/// and platforms, and enough to keep honest clients apart, but not a
/// cryptographic hash. It is no defence against someone who can write the
/// cache (they can copy any key); the file cache's ownership and permission
/// checks are. A chain with no key uses [`CacheKey::unkeyed`], the key built
/// from no fields, so its entries are read only by other chains without a
/// key.
///
/// ```
/// use tokenkeeper::cache::CacheKey;
///
/// let a = CacheKey::builder().field("client_id", "a").build();
/// let b = CacheKey::builder().field("client_id", "b").build();
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().len(), 32);
/// assert_eq!(CacheKey::builder().build(), CacheKey::unkeyed());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    digest: u128,
}

impl CacheKey {
    /// Starts a key; add what the token depends on with
    /// [`field`](CacheKeyBuilder::field).
    pub fn builder() -> CacheKeyBuilder {
        CacheKeyBuilder { state: FNV_OFFSET }
    }

    /// The key of chains whose source has none (the key built from no
    /// fields).
    ///
    /// ```
    /// use tokenkeeper::cache::CacheKey;
    /// assert_eq!(CacheKey::unkeyed().to_string(), "6c62272e07bb014262b821756295c58d");
    /// ```
    pub const fn unkeyed() -> CacheKey {
        CacheKey { digest: FNV_OFFSET }
    }

    /// Reads the 32 lowercase hex digits that `Display` writes.
    pub(crate) fn from_hex(hex: &str) -> Option<CacheKey> {
        let valid = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return None;
        }
        u128::from_str_radix(hex, 16)
            .ok()
            .map(|digest| CacheKey { digest })
    }
}

impl fmt::Display for CacheKey {
    /// 32 lowercase hex digits, as stored in cache entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.digest)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({:032x})", self.digest)
    }
}

/// Builds a [`CacheKey`] from named fields, in order.
///
/// Each name and value goes into the digest with its length in front, so
/// `("ab", "c")` and `("a", "bc")` give different keys; the order of the
/// fields counts.
///
/// ```
/// use tokenkeeper::cache::CacheKey;
///
/// let key = CacheKey::builder()
///     .field("token_url", "https://auth.example.com/token")
///     .field("client_id", "svc")
///     .field("scope", "read")
///     .build();
/// assert_ne!(key, CacheKey::builder().field("token_url", "https://auth.example.com/tokenclient_idsvc").build());
/// ```
#[derive(Clone, Debug)]
pub struct CacheKeyBuilder {
    state: u128,
}

impl CacheKeyBuilder {
    /// Adds a field. Values that are secrets (a refresh token) may be
    /// added: only the digest is kept and shown.
    pub fn field(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.feed(name.as_bytes());
        self.feed(value.as_ref());
        self
    }

    /// The key.
    pub fn build(self) -> CacheKey {
        CacheKey { digest: self.state }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        for byte in len.to_le_bytes().iter().chain(bytes) {
            self.state = (self.state ^ u128::from(*byte)).wrapping_mul(FNV_PRIME);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_fnv_1a_128() {
        // The reference value of FNV-1a 128 for "a".
        let mut b = CacheKey::builder();
        b.state = (b.state ^ u128::from(b'a')).wrapping_mul(FNV_PRIME);
        assert_eq!(b.build().to_string(), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn keys_are_stable_and_fields_are_length_prefixed() {
        let key = CacheKey::builder().field("client_id", "a").build();
        // Computed once; a change here orphans every cache entry written.
        assert_eq!(key.to_string(), "2ab70ced45cb1f191d91f57b4a17f7cb");
        assert_ne!(
            CacheKey::builder().field("ab", "c").build(),
            CacheKey::builder().field("a", "bc").build()
        );
        assert_ne!(
            CacheKey::builder().field("a", "").field("b", "").build(),
            CacheKey::builder().field("b", "").field("a", "").build()
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_anything_else() {
        let key = CacheKey::builder().field("x", "y").build();
        assert_eq!(CacheKey::from_hex(&key.to_string()), Some(key));
        for bad in [
            "",
            "zz",
            &key.to_string().to_uppercase(),
            &format!("+{}", &key.to_string()[1..]),
        ] {
            assert_eq!(CacheKey::from_hex(bad), None, "{bad}");
        }
    }
}
