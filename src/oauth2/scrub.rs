//! Scrubbing the secrets the library sends from the text servers send back.
//!
//! An authority, a proxy or a gateway may echo a request back: in an
//! `error_description`, an HTML error page, even a 200. What comes back is
//! rarely the raw secret: it is the form-urlencoded body (`%2F`, or `%2f`
//! after a re-encoding; `+` or `%20` for a space), the `Authorization`
//! header's base64, or either of those inside a JSON string (`\/`, `\"`,
//! `\u00e9`) or an HTML page (`&quot;`, `&#233;`).
//!
//! A [`Scrubber`] holds needles: strings the library sent, each matched
//! character by character where every character may appear in any of those
//! encodings (one way for one character, another way for the next, in either
//! hex case). That covers the encodings and their mixes without listing each
//! combination. Encodings that are not character-wise (base64) are needles of
//! their own, computed once per endpoint.
//!
//! Scrubbing only runs on text that is about to be kept in an error or a
//! log line, or published on a token: never on the usual success (a
//! `Bearer` token with the scope asked for, or none), so that path pays
//! nothing for it.

use std::borrow::Cow;
use std::cell::OnceCell;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// What replaces a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// The shortest stretch of text replaced. A shorter match (a secret of
/// three characters or fewer, sent as is) is left alone: replacing every
/// "s" garbles text and hides nothing worth hiding. Encodings of a short
/// secret are longer and still replaced.
const MIN_MATCH: usize = 4;

/// The shortest base64 fragment of a secret matched on its own (without the
/// client id before it): shorter ones occur by chance in ordinary text.
const MIN_FRAGMENT: usize = 8;

/// The secrets sent to one endpoint, ready to be found in any encoding.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrubber {
    needles: Vec<Needle>,
    /// Whether a match can start at a byte: the first byte of any
    /// encoding of any needle's first character.
    starts: StartBytes,
}

/// A string the library sent, to find in any encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Needle {
    chars: Vec<char>,
    /// Base64 without its padding: `=` after it belongs to the match.
    base64: bool,
}

#[derive(Clone, Debug)]
struct StartBytes([bool; 256]);

impl Default for StartBytes {
    fn default() -> Self {
        StartBytes([false; 256])
    }
}

impl Scrubber {
    /// A scrubber for the secrets in `secrets`, each as sent in a form.
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) fn from_secrets(secrets: &[&str]) -> Scrubber {
        let mut scrubber = Scrubber::default();
        for secret in secrets {
            scrubber.add_secret(secret);
        }
        scrubber
    }

    /// Adds a secret the library sends as a form value, a JSON string or a
    /// header value (a refresh token, a client assertion, a subject token):
    /// the raw value in any character encoding, and its form-urlencoded and
    /// JSON-escaped forms again (for servers that encode or escape what
    /// they echo once more: a JSON body quoted in a JSON string).
    pub(crate) fn add_secret(&mut self, secret: &str) {
        let trimmed = secret.trim_matches(char::is_control);
        if trimmed.is_empty() {
            return;
        }
        self.add_needle(trimmed, false);
        let encoded = form_encode(secret);
        if encoded != secret {
            self.add_needle(&encoded, false);
        }
        let escaped = json_escape(trimmed);
        if escaped != trimmed {
            self.add_needle(&escaped, false);
        }
    }

    /// Adds a client secret, sent either in the form
    /// (`client_secret_post`) or in HTTP Basic (`client_secret_basic`,
    /// `base64(urlencode(id) ":" urlencode(secret))`): the secret as
    /// [`add_secret`](Self::add_secret) does, and the base64 of the pair as
    /// the library sends it and as others do (raw id and secret, the URL-safe
    /// alphabet, with or without padding). Fragments of the secret's base64
    /// at each of the three alignments catch a pair built with another id.
    pub(crate) fn add_client_secret(&mut self, client_id: &str, secret: &str) {
        self.add_secret(secret);
        if secret.is_empty() {
            return;
        }
        let encoded = form_encode(secret);
        let pairs = [
            format!("{}:{}", form_encode(client_id), encoded),
            format!("{client_id}:{secret}"),
        ];
        for pair in &pairs {
            // The unpadded form is a prefix of the padded one: one needle
            // finds both.
            self.add_needle(&STANDARD_NO_PAD.encode(pair), true);
            self.add_needle(&URL_SAFE_NO_PAD.encode(pair), true);
        }
        for bytes in [secret.as_bytes(), encoded.as_bytes()] {
            for offset in 0..3 {
                for (fragment, at_end) in base64_fragments(bytes, offset) {
                    if fragment.len() >= MIN_FRAGMENT {
                        self.add_needle(&fragment, at_end);
                    }
                }
            }
        }
    }

    fn add_needle(&mut self, needle: &str, base64: bool) {
        let chars: Vec<char> = needle.chars().collect();
        if chars.is_empty() || self.needles.iter().any(|n| n.chars == chars) {
            return;
        }
        for byte in 0..=255u8 {
            if !self.starts.0[usize::from(byte)] && can_start(chars[0], byte) {
                self.starts.0[usize::from(byte)] = true;
            }
        }
        self.needles.push(Needle { chars, base64 });
    }

    /// Whether there is nothing to scrub.
    pub(crate) fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every match of a needle, in any encoding, replaced by
    /// [`REDACTED`]. Borrowed when nothing matched.
    pub(crate) fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.needles.is_empty() {
            return Cow::Borrowed(text);
        }
        let bytes = text.as_bytes();
        let mut buffers = (Vec::new(), Vec::new());
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut at = 0;
        while at < bytes.len() {
            if self.starts.0[usize::from(bytes[at])] {
                let end = self
                    .needles
                    .iter()
                    .filter_map(|needle| {
                        let end = longest_match(&needle.chars, bytes, at, &mut buffers)?;
                        Some(if needle.base64 {
                            end + padding(&bytes[end..])
                        } else {
                            end
                        })
                    })
                    .filter(|end| end - at >= MIN_MATCH)
                    .max();
                if let Some(end) = end {
                    let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    // `at` is where a character starts (a needle never
                    // starts on a UTF-8 continuation byte) and `end` where
                    // one ends: whole characters are matched.
                    out.push_str(&text[copied..at]);
                    out.push_str(REDACTED);
                    copied = end;
                    at = end;
                    continue;
                }
            }
            at += 1;
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut out) => {
                out.push_str(&text[copied..]);
                Cow::Owned(out)
            }
        }
    }
}

/// The secrets of one request: the endpoint's, and the request's own (a
/// refresh token), combined only if some text has to be scrubbed.
pub(crate) struct Secrets<'a> {
    endpoint: &'a Scrubber,
    extra: &'a [&'a str],
    combined: OnceCell<Scrubber>,
}

impl<'a> Secrets<'a> {
    /// The endpoint's secrets and `extra` ones.
    pub(crate) fn new(endpoint: &'a Scrubber, extra: &'a [&'a str]) -> Secrets<'a> {
        Secrets {
            endpoint,
            extra,
            combined: OnceCell::new(),
        }
    }

    /// One scrubber for all of them, made on first use.
    fn scrubber(&self) -> &Scrubber {
        if self.extra.is_empty() {
            return self.endpoint;
        }
        self.combined.get_or_init(|| {
            let mut all = self.endpoint.clone();
            for secret in self.extra {
                all.add_secret(secret);
            }
            all
        })
    }

    /// `text` without any of the secrets, in any encoding.
    pub(crate) fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.scrubber().scrub(text)
    }

    /// Whether there is nothing to scrub.
    pub(crate) fn is_empty(&self) -> bool {
        self.extra.is_empty() && self.endpoint.is_empty()
    }
}

/// The length of the base64 padding (`=` or `%3D`, at most two) at the
/// start of `text`.
fn padding(text: &[u8]) -> usize {
    let mut at = 0;
    for _ in 0..2 {
        if text.get(at) == Some(&b'=') {
            at += 1;
        } else if percent_encoded(b"=", &text[at..]).is_some() {
            at += 3;
        } else {
            break;
        }
    }
    at
}

/// `application/x-www-form-urlencoded`, as the library sends values.
fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The inside of the JSON string of `value`, as the library writes it.
fn json_escape(value: &str) -> String {
    let quoted = serde_json::Value::from(value).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// The base64 characters of `bytes` that do not depend on what comes
/// before them, when `offset` bytes come before them (modulo 3), in both
/// alphabets: all the rest when `bytes` end the input (as the secret ends
/// `id:secret`; padding may follow), and whole groups of three bytes only
/// when something follows. The flag says which.
fn base64_fragments(bytes: &[u8], offset: usize) -> Vec<(String, bool)> {
    let skip = (3 - offset % 3) % 3;
    let rest = bytes.get(skip..).unwrap_or_default();
    let whole = &rest[..rest.len() / 3 * 3];
    let mut fragments = Vec::with_capacity(4);
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        fragments.push((engine.encode(rest), true));
        if whole.len() < rest.len() {
            fragments.push((engine.encode(whole), false));
        }
    }
    fragments
}

/// Whether an encoding of `c` can start with `byte`.
fn can_start(c: char, byte: u8) -> bool {
    let mut utf8 = [0; 4];
    let raw = c.encode_utf8(&mut utf8).as_bytes()[0];
    byte == raw
        || byte == b'%'
        || byte == b'\\'
        || byte == b'&'
        || (c == ' ' && byte == b'+')
        // A control character matches nothing (they are dropped from
        // server text before it is scrubbed): the next one may start.
        || c.is_control()
}

/// The end of the longest match of `needle` in `text` at `start`, with
/// each character in any encoding. Walks the needle one character at a
/// time, keeping every position the text can be at (encodings of
/// different lengths can both match), so the cost stays linear in the
/// needle whatever the text.
fn longest_match(
    needle: &[char],
    text: &[u8],
    start: usize,
    (here, next): &mut (Vec<usize>, Vec<usize>),
) -> Option<usize> {
    here.clear();
    here.push(start);
    for &c in needle {
        next.clear();
        for &at in here.iter() {
            encodings_of(c, text, at, next);
        }
        if next.is_empty() {
            return None;
        }
        next.sort_unstable();
        next.dedup();
        std::mem::swap(here, next);
    }
    here.last().copied()
}

/// Pushes onto `ends` where each encoding of `c` found at `at` ends.
fn encodings_of(c: char, text: &[u8], at: usize, ends: &mut Vec<usize>) {
    let rest = &text[at..];
    let mut utf8 = [0; 4];
    let raw = c.encode_utf8(&mut utf8).as_bytes();
    if c.is_control() {
        ends.push(at);
    }
    if rest.starts_with(raw) {
        ends.push(at + raw.len());
    }
    match rest.first() {
        Some(b'+') if c == ' ' => ends.push(at + 1),
        Some(b'%') => {
            if let Some(len) = percent_encoded(raw, rest) {
                ends.push(at + len);
            }
        }
        Some(b'\\') => {
            if let Some(len) = json_escaped(c, rest) {
                ends.push(at + len);
            }
        }
        Some(b'&') => {
            if let Some(len) = html_escaped(c, rest) {
                ends.push(at + len);
            }
        }
        _ => {}
    }
}

/// The length of `%HH` for each byte of `raw` at the start of `text`, hex
/// in either case.
fn percent_encoded(raw: &[u8], text: &[u8]) -> Option<usize> {
    let mut at = 0;
    for &byte in raw {
        match text.get(at..at + 3)? {
            [b'%', high, low] if hex_byte(*high, *low)? == byte => at += 3,
            _ => return None,
        }
    }
    Some(at)
}

/// The length of a JSON escape of `c` at the start of `text`: `\"`, `\\`,
/// `\/`, `\n` and friends, or `\uXXXX` (a surrogate pair beyond the BMP),
/// hex in either case.
fn json_escaped(c: char, text: &[u8]) -> Option<usize> {
    let short = match c {
        '"' => Some(b'"'),
        '\\' => Some(b'\\'),
        '/' => Some(b'/'),
        '\u{8}' => Some(b'b'),
        '\u{c}' => Some(b'f'),
        '\n' => Some(b'n'),
        '\r' => Some(b'r'),
        '\t' => Some(b't'),
        _ => None,
    };
    if short.is_some() && text.get(1).copied() == short {
        return Some(2);
    }
    let mut units = [0; 2];
    let mut at = 0;
    for &unit in c.encode_utf16(&mut units).iter() {
        match text.get(at..at + 6)? {
            [b'\\', b'u', digits @ ..] if hex_u16(digits)? == unit => at += 6,
            _ => return None,
        }
    }
    Some(at)
}

/// The length of an HTML character reference to `c` at the start of
/// `text`: `&amp;` and the other four named ones, `&#233;`, `&#xE9;`.
fn html_escaped(c: char, text: &[u8]) -> Option<usize> {
    let named: &[u8] = match c {
        '&' => b"&amp;",
        '<' => b"&lt;",
        '>' => b"&gt;",
        '"' => b"&quot;",
        '\'' => b"&apos;",
        _ => b"",
    };
    if !named.is_empty() && text.starts_with(named) {
        return Some(named.len());
    }
    let digits = text.strip_prefix(b"&#")?;
    let (radix, digits, prefix) = match digits.first() {
        Some(b'x' | b'X') => (16, &digits[1..], 3),
        _ => (10, digits, 2),
    };
    let len = digits
        .iter()
        .take(8)
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    if len == 0 || digits.get(len) != Some(&b';') {
        return None;
    }
    let value = std::str::from_utf8(&digits[..len]).ok()?;
    (u32::from_str_radix(value, radix).ok()? == u32::from(c)).then_some(prefix + len + 1)
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    Some(hex_digit(high)? << 4 | hex_digit(low)?)
}

fn hex_u16(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |value, &d| {
        Some(value << 4 | u16::from(hex_digit(d)?))
    })
}

fn hex_digit(d: u8) -> Option<u8> {
    char::from(d).to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const ID: &str = "my client";
    const SECRET: &str = "p@ss+w/rd=%&x y\"\\é€";

    fn client() -> Scrubber {
        let mut s = Scrubber::default();
        s.add_client_secret(ID, SECRET);
        s
    }

    /// Every form the secret may come back in, built independently of the
    /// scrubber, the way the servers and proxies that echo them do.
    fn encodings(id: &str, secret: &str) -> Vec<String> {
        let plus = form_encode(secret);
        let lower_hex = |s: &str| {
            let mut out = String::new();
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '%' {
                    out.extend(chars.by_ref().take(2).map(|d| d.to_ascii_lowercase()));
                }
            }
            out
        };
        let pct20 = plus.replace('+', "%20");
        let json = serde_json::to_string(secret).unwrap();
        let json = json[1..json.len() - 1].to_owned();
        let json_slash = json.replace('/', "\\/");
        let json_ascii: String = json_slash
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    let mut units = [0; 2];
                    c.encode_utf16(&mut units)
                        .iter()
                        .map(|u| format!("\\u{u:04x}"))
                        .collect()
                }
            })
            .collect();
        let sent_pair = format!("{}:{}", form_encode(id), plus);
        let raw_pair = format!("{id}:{secret}");
        let mut all = vec![
            secret.to_owned(),
            plus.clone(),
            lower_hex(&plus),
            pct20.clone(),
            lower_hex(&pct20),
            json.clone(),
            json_slash,
            upper_hex_escapes(&json_ascii),
            json_ascii,
            html_escape(secret),
        ];
        for pair in [&sent_pair, &raw_pair] {
            for engine in [&STANDARD, &URL_SAFE] {
                let padded = engine.encode(pair);
                all.push(format!("Basic {padded}"));
                all.push(padded.trim_end_matches('=').to_owned());
                all.push(padded);
            }
        }
        all
    }

    fn upper_hex_escapes(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("\\u") {
            out.push_str(&rest[..at + 2]);
            out.push_str(&rest[at + 2..at + 6].to_uppercase());
            rest = &rest[at + 6..];
        }
        out.push_str(rest);
        out
    }

    fn html_escape(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '&' => "&amp;".to_owned(),
                '"' => "&quot;".to_owned(),
                c if !c.is_ascii() => format!("&#{};", u32::from(c)),
                c => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn every_encoding_of_a_client_secret_is_scrubbed() {
        let scrubber = client();
        for form in encodings(ID, SECRET) {
            for text in [
                form.clone(),
                format!("echo: client_secret={form}&grant_type=x"),
                format!("<pre>Authorization: {form}</pre>"),
            ] {
                let out = scrubber.scrub(&text);
                assert!(!out.contains(&form), "{form:?} survived in {out:?}");
                assert!(out.contains(REDACTED), "{out:?}");
            }
        }
    }

    #[test]
    fn mixed_encodings_in_one_echo() {
        // Hex case changing mid-way, a JSON escape next to a percent one.
        let text = "p%40ss%2bw\\/rd%3D%25%26x%20y\\\"\\\\\\u00E9%E2%82%ac!";
        assert_eq!(client().scrub(text), format!("{REDACTED}!"));
    }

    #[test]
    fn fragments_catch_a_pair_with_another_id() {
        let scrubber = client();
        for id in ["x", "xy", "xyz", "another-client"] {
            let other = STANDARD.encode(format!("{id}:{}", form_encode(SECRET)));
            let out = scrubber.scrub(&other);
            // The id survives, and at most the one group of four
            // characters it shares with the secret.
            assert!(out.ends_with(REDACTED), "{other} → {out}");
            let id_len = STANDARD.encode(format!("{id}:")).len();
            assert!(out.len() <= id_len + 4 + REDACTED.len(), "{other} → {out}");
        }
    }

    #[test]
    fn short_secrets_keep_their_long_encodings_scrubbed() {
        let mut scrubber = Scrubber::default();
        scrubber.add_client_secret("client-a", "s&");
        // The raw secret is too short to replace without garbling text...
        assert_eq!(scrubber.scrub("this is s& that"), "this is s& that");
        // ...its encodings are not.
        let basic = STANDARD.encode("client-a:s%26");
        assert_eq!(scrubber.scrub(&basic), REDACTED);
        assert_eq!(scrubber.scrub("x=s%26;"), format!("x={REDACTED};"));
    }

    #[test]
    fn refresh_tokens_and_later_credentials_plug_in_with_one_call() {
        let endpoint = client();
        let extra = ["rt/é+1 2"];
        let secrets = Secrets::new(&endpoint, &extra);
        assert_eq!(
            secrets.scrub("refresh_token=rt%2F%C3%A9%2B1+2 and p%40ss"),
            format!("refresh_token={REDACTED} and p%40ss")
        );
        assert_eq!(
            secrets.scrub(
                &STANDARD.encode("my+client:p%40ss%2Bw%2Frd%3D%25%26x+y%22%5C%C3%A9%E2%82%AC")
            ),
            REDACTED
        );
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let scrubber = client();
        for text in [
            "invalid_client: client authentication failed",
            "<html><body>502 Bad Gateway</body></html>",
            "%%%% \\u \\\\ &#; &#x; &amp; p@s",
            "",
        ] {
            assert!(matches!(scrubber.scrub(text), Cow::Borrowed(_)), "{text}");
        }
        assert!(Scrubber::default().is_empty());
        assert_eq!(Scrubber::default().scrub("anything"), "anything");
    }

    #[test]
    fn control_characters_in_secrets_match_their_escapes_or_nothing() {
        let mut scrubber = Scrubber::default();
        scrubber.add_secret("ab\ncd\tef");
        assert_eq!(scrubber.scrub("x abcd\tef y"), format!("x {REDACTED} y"));
        assert_eq!(scrubber.scrub("ab\\ncd\\tef"), REDACTED);
        assert_eq!(scrubber.scrub("ab%0Acd%09ef"), REDACTED);
    }

    #[test]
    fn escapes_of_every_kind() {
        let mut scrubber = Scrubber::default();
        scrubber.add_secret("a😀b<c>'d");
        for text in [
            // A surrogate pair, hex in either case.
            "a\\ud83d\\uDE00b<c>'d",
            // HTML: named, decimal, hex with either x.
            "a&#128512;b&lt;c&gt;&apos;d",
            "a&#x1F600;b&#60;c&#X3E;&#39;d",
            // Percent-encoded UTF-8.
            "a%F0%9F%98%80b%3Cc%3E%27d",
        ] {
            assert_eq!(scrubber.scrub(text), REDACTED, "{text}");
        }
        // Near misses stay.
        for text in [
            "a&#128513;b<c>'d",
            "a\\ud83d\\ude01b<c>'d",
            "a%F0%9F%98%81b<c>'d",
        ] {
            assert_eq!(scrubber.scrub(text), text);
        }
    }

    #[test]
    fn base64_in_either_alphabet_with_its_padding() {
        let mut scrubber = Scrubber::default();
        scrubber.add_client_secret("id", "s?>s?>");
        let pair = "id:s%3F%3Es%3F%3E";
        for engine in [&STANDARD, &URL_SAFE] {
            let padded = engine.encode(pair);
            assert!(padded.ends_with('='), "{padded}");
            assert_eq!(
                scrubber.scrub(&format!("{padded}.")),
                format!("{REDACTED}.")
            );
        }
        // Raw bytes that base64 to `+` and `/`, JSON- and percent-escaped.
        let raw = STANDARD.encode("id:s?>s?>");
        assert!(raw.contains('/') || raw.contains('+'), "{raw}");
        let escaped = raw
            .replace('/', "\\/")
            .replace('+', "%2B")
            .replace('=', "%3D");
        assert_eq!(scrubber.scrub(&escaped), REDACTED, "{escaped}");
    }

    #[test]
    fn hostile_text_costs_linear_time() {
        let mut scrubber = Scrubber::default();
        scrubber.add_secret(&"%".repeat(64));
        let text = "%25".repeat(20_000);
        let out = scrubber.scrub(&text);
        assert!(out.starts_with(REDACTED), "{}", &out[..40]);
    }
}
