//! Which proxy a request of [`UreqClient::new`](super::UreqClient::new)
//! goes through: the proxy environment variables read as curl reads them,
//! and loopback never proxied.
//!
//! ureq's own reading of the environment differs from curl's in ways that
//! matter here: it sends requests to `127.0.0.1` through `HTTPS_PROXY` like
//! any other (a token, and the client secret with it, handed to a proxy for
//! a server on this very machine), it takes `ALL_PROXY` before the
//! variable of the URL's scheme, it honours `HTTP_PROXY` (which curl
//! ignores, as CGI servers set it from a request header), and its
//! `NO_PROXY` entries match a host exactly where curl matches a domain and
//! its subdomains. So the agent gets no proxy from the environment, and each
//! request is routed here.

use std::net::{IpAddr, Ipv4Addr};

use url::{Host, Url};

/// The proxy settings read from the environment once, when the client is
/// made.
pub(super) struct ProxyEnv {
    /// For `http` URLs: `http_proxy`, else `all_proxy` / `ALL_PROXY`.
    http: Option<ProxySetting>,
    /// For `https` URLs: `https_proxy` / `HTTPS_PROXY`, else `all_proxy` /
    /// `ALL_PROXY`.
    https: Option<ProxySetting>,
    /// `no_proxy` / `NO_PROXY`.
    no_proxy: NoProxy,
}

/// One proxy variable's value.
enum ProxySetting {
    Usable(ureq::Proxy),
    /// A value this client cannot use (not a URL, or a SOCKS proxy, which
    /// this build of ureq cannot speak). Requests that would go through it
    /// fail rather than go around a proxy the user asked for.
    Unusable {
        variable: &'static str,
        why: &'static str,
    },
}

/// How one request is sent.
pub(super) enum Route<'a> {
    /// Without a proxy.
    Direct,
    /// Through this proxy (an HTTP `CONNECT` tunnel).
    Proxy(&'a ureq::Proxy),
    /// Not at all: the proxy variable that applies is unusable. The message
    /// names the variable, never its value (it may hold a password).
    Refused(String),
}

impl ProxyEnv {
    /// The settings in this process's environment.
    pub(super) fn from_env() -> ProxyEnv {
        ProxyEnv::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings in the variables `var` returns; a variable that is
    /// empty counts as unset.
    pub(super) fn from_vars(var: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|&name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let all = first(&["all_proxy", "ALL_PROXY"]);
        // curl reads `http_proxy` in lower case only: CGI servers put a
        // request's `Proxy:` header in `HTTP_PROXY`.
        let http = first(&["http_proxy"]).or_else(|| all.clone());
        let https = first(&["https_proxy", "HTTPS_PROXY"]).or(all);
        let no_proxy = first(&["no_proxy", "NO_PROXY"])
            .map_or_else(NoProxy::default, |(_, v)| NoProxy::parse(&v));
        ProxyEnv {
            http: http.map(|(name, value)| ProxySetting::parse(name, &value)),
            https: https.map(|(name, value)| ProxySetting::parse(name, &value)),
            no_proxy,
        }
    }

    /// How a request to `url` is sent.
    pub(super) fn route(&self, url: &Url) -> Route<'_> {
        let Some(host) = url.host() else {
            return Route::Direct;
        };
        if is_loopback(&host) {
            return Route::Direct;
        }
        let setting = match url.scheme() {
            "http" => self.http.as_ref(),
            "https" => self.https.as_ref(),
            _ => None,
        };
        let Some(setting) = setting else {
            return Route::Direct;
        };
        if self.no_proxy.matches(&host, url.port_or_known_default()) {
            return Route::Direct;
        }
        match setting {
            ProxySetting::Usable(proxy) => Route::Proxy(proxy),
            ProxySetting::Unusable { variable, why } => Route::Refused(format!(
                "the proxy in {variable} cannot be used: {why}; fix it, unset it, or exclude \
                 this host with NO_PROXY"
            )),
        }
    }
}

impl ProxySetting {
    /// `[scheme://][user:password@]host[:port]`, as curl takes it: no
    /// scheme means `http`, no port means 1080 (443 for an `https` proxy).
    fn parse(variable: &'static str, value: &str) -> ProxySetting {
        let unusable = |why| ProxySetting::Unusable { variable, why };
        let value = value.trim();
        let with_scheme = if value.contains("://") {
            value.to_owned()
        } else {
            format!("http://{value}")
        };
        let Ok(url) = Url::parse(&with_scheme) else {
            return unusable("not a proxy URL");
        };
        let default_port = match url.scheme() {
            "http" => 1080,
            "https" => 443,
            "socks4" | "socks4a" | "socks5" | "socks5h" | "socks" => {
                return unusable("SOCKS proxies are not supported, only http and https ones")
            }
            _ => return unusable("not an http or https proxy URL"),
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return unusable("no proxy host");
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => String::new(),
            (user, None) => format!("{user}@"),
            (user, Some(password)) => format!("{user}:{password}@"),
        };
        let port = url.port().unwrap_or(default_port);
        match ureq::Proxy::new(&format!("{}://{credentials}{host}:{port}", url.scheme())) {
            Ok(proxy) => ProxySetting::Usable(proxy),
            Err(_) => unusable("not a proxy URL"),
        }
    }
}

/// Whether `host` is this machine's loopback interface: `localhost`,
/// `127.0.0.0/8`, `::1` (and `127.0.0.0/8` mapped into IPv6). Requests to
/// it never go through a proxy.
pub(super) fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The hosts that go direct, from `NO_PROXY`.
///
/// As curl reads it: entries separated by commas (or blanks); `*` alone
/// matches every host; a name matches itself and its subdomains
/// (`example.com` matches `example.com` and `www.example.com`, not
/// `notexample.com`), a leading dot changes nothing, case and trailing dots
/// are ignored; IP addresses (IPv6 without brackets) match the same address
/// written in the URL, and with `/bits` a network (CIDR). Beyond curl: `*`
/// as one entry among others also matches every host, a leading `*.` is
/// read like a leading dot, and an entry may end in `:port`
/// (`[v6]:port` for IPv6) to match that port only.
#[derive(Default)]
struct NoProxy {
    all: bool,
    entries: Vec<NoProxyEntry>,
}

struct NoProxyEntry {
    pattern: Pattern,
    port: Option<u16>,
}

enum Pattern {
    /// A domain, lower case, without leading or trailing dots.
    Domain(String),
    /// A network: an address and how many leading bits must match.
    Network(IpAddr, u8),
}

impl NoProxy {
    fn parse(value: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for token in value
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
        {
            if token == "*" {
                no_proxy.all = true;
            } else if let Some(entry) = NoProxyEntry::parse(token) {
                no_proxy.entries.push(entry);
            }
        }
        no_proxy
    }

    fn matches(&self, host: &Host<&str>, port: Option<u16>) -> bool {
        self.all
            || self.entries.iter().any(|entry| {
                entry.port.is_none_or(|p| Some(p) == port) && entry.pattern.matches(host)
            })
    }
}

impl NoProxyEntry {
    /// One entry; `None` for one that cannot match anything.
    fn parse(token: &str) -> Option<NoProxyEntry> {
        // `[v6]` or `[v6]:port`.
        if let Some(rest) = token.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?.parse().ok()?),
            };
            return Some(NoProxyEntry {
                pattern: Pattern::network(inside)?,
                port,
            });
        }
        // A bare IPv6 address (or network) has colons of its own.
        if token.matches(':').count() > 1 {
            return Some(NoProxyEntry {
                pattern: Pattern::network(token)?,
                port: None,
            });
        }
        let (name, port) = match token.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse().ok()?)),
            None => (token, None),
        };
        let pattern = if name.contains('/') || name.parse::<Ipv4Addr>().is_ok() {
            Pattern::network(name)?
        } else {
            let name = name.trim_end_matches('.');
            let name = name.strip_prefix("*.").unwrap_or(name);
            let name = name.strip_prefix('.').unwrap_or(name);
            if name.is_empty() {
                return None;
            }
            Pattern::Domain(name.to_ascii_lowercase())
        };
        Some(NoProxyEntry { pattern, port })
    }
}

impl Pattern {
    /// `address` or `address/bits`.
    fn network(text: &str) -> Option<Pattern> {
        let (address, bits) = match text.split_once('/') {
            Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Pattern::Network(address, bits))
    }

    fn matches(&self, host: &Host<&str>) -> bool {
        match (self, host) {
            (Pattern::Domain(domain), Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == *domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
            (Pattern::Network(IpAddr::V4(net), bits), Host::Ipv4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*ip) & mask == u32::from(*net) & mask
            }
            (Pattern::Network(IpAddr::V6(net), bits), Host::Ipv6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*ip) & mask == u128::from(*net) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn host(url: &str) -> (Url, bool) {
        let url = Url::parse(url).unwrap();
        let loopback = is_loopback(&url.host().unwrap());
        (url, loopback)
    }

    /// Whether `NO_PROXY=no_proxy` sends a request to `url` direct.
    fn direct(no_proxy: &str, url: &str) -> bool {
        let (url, _) = host(url);
        NoProxy::parse(no_proxy).matches(&url.host().unwrap(), url.port_or_known_default())
    }

    #[test]
    fn no_proxy_names_match_the_domain_and_its_subdomains_as_curl_does() {
        for (no_proxy, url, expected) in [
            // curl's own examples.
            ("ample.com", "http://ample.com/", true),
            ("ample.com", "http://ample.com:80/", true),
            ("ample.com", "http://www.ample.com/", true),
            ("ample.com", "http://www.example.com/", false),
            ("ample.com", "http://ample.com.org/", false),
            ("local.com", "http://www.notlocal.com/", false),
            // A leading dot (or `*.`) changes nothing.
            (".ample.com", "http://ample.com/", true),
            (".ample.com", "http://a.b.ample.com/", true),
            ("*.ample.com", "http://www.ample.com/", true),
            ("*.ample.com", "http://xample.com/", false),
            // Case and trailing dots do not matter.
            ("Ample.COM.", "https://WWW.ample.com./", true),
            // Lists: commas and blanks, empty entries skipped.
            ("foo, ample.com", "http://ample.com/", true),
            ("foo ample.com", "http://ample.com/", true),
            (",,foo,,", "http://ample.com/", false),
            ("", "http://ample.com/", false),
            // `*`.
            ("*", "https://anything.example/", true),
            ("foo,*", "https://anything.example/", true),
            ("*foo", "https://anything.example/", false),
            // Ports.
            ("ample.com:8443", "https://ample.com:8443/", true),
            ("ample.com:8443", "https://ample.com/", false),
            ("ample.com:443", "https://ample.com/", true),
            ("ample.com:notaport", "https://ample.com/", false),
            // IP addresses and networks.
            ("10.1.2.3", "http://10.1.2.3/", true),
            ("10.1.2.3", "http://10.1.2.4/", false),
            ("10.1.2.3:8080", "http://10.1.2.3:8080/", true),
            ("10.1.2.3:8080", "http://10.1.2.3/", false),
            ("192.168.0.0/16", "http://192.168.44.5/", true),
            ("192.168.0.0/16", "http://192.169.0.1/", false),
            ("0.0.0.0/0", "http://8.8.8.8/", true),
            ("10.0.0.0/33", "http://10.0.0.1/", false),
            ("2001:db8::1", "http://[2001:db8::1]/", true),
            ("2001:db8::1", "http://[2001:db8::2]/", false),
            ("2001:db8::/32", "http://[2001:db8:ffff::9]/", true),
            ("2001:db8::/32", "http://[2001:db9::9]/", false),
            ("[2001:db8::1]:8443", "https://[2001:db8::1]:8443/", true),
            ("[2001:db8::1]:8443", "https://[2001:db8::1]/", false),
            // A name never matches an address, nor an address a name.
            ("10.1.2.3", "http://host10.1.2.3.example/", false),
            ("example", "http://10.1.2.3/", false),
        ] {
            assert_eq!(
                direct(no_proxy, url),
                expected,
                "NO_PROXY={no_proxy:?} {url}"
            );
        }
    }

    #[test]
    fn loopback_is_localhost_127_8_and_ipv6_1() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST.:8080/",
            "http://127.0.0.1:1234/",
            "http://127.255.0.9/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(host(url).1, "{url}");
        }
        for url in [
            "http://localhost.example/",
            "http://mylocalhost/",
            "http://128.0.0.1/",
            "http://[::2]/",
            "http://10.0.0.1/",
        ] {
            assert!(!host(url).1, "{url}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_vars(|name| vars.get(name).cloned())
    }

    /// Where a request to `url` goes: "direct", the proxy's `host:port`,
    /// or "refused: <message>".
    fn route(env: &ProxyEnv, url: &str) -> String {
        match env.route(&Url::parse(url).unwrap()) {
            Route::Direct => "direct".into(),
            Route::Proxy(proxy) => format!("{}:{}", proxy.host(), proxy.port()),
            Route::Refused(why) => format!("refused: {why}"),
        }
    }

    const EVERY_PROXY_VARIABLE: [&str; 6] = [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ];

    #[test]
    fn loopback_is_never_proxied() {
        let vars: Vec<(&str, &str)> = EVERY_PROXY_VARIABLE
            .iter()
            .map(|name| (*name, "http://proxy.example:3128"))
            .collect();
        let env = env(&vars);
        for url in [
            "http://127.0.0.1:8080/token",
            "https://127.0.0.1/token",
            "http://localhost:8080/token",
            "https://[::1]:8443/token",
        ] {
            assert_eq!(route(&env, url), "direct", "{url}");
        }
        assert_eq!(
            route(&env, "https://auth.example/token"),
            "proxy.example:3128"
        );
    }

    #[test]
    fn variables_are_chosen_by_scheme_as_curl_does() {
        let https = "https://auth.example/token";
        let http = "http://auth.example/token";
        assert_eq!(route(&env(&[]), https), "direct");
        assert_eq!(route(&env(&[]), http), "direct");

        let all = env(&[("ALL_PROXY", "all.example:1")]);
        assert_eq!(route(&all, https), "all.example:1");
        assert_eq!(route(&all, http), "all.example:1");

        // The scheme's own variable before ALL_PROXY; lower case first.
        let env1 = env(&[
            ("ALL_PROXY", "all.example:1"),
            ("HTTPS_PROXY", "upper.example:2"),
            ("https_proxy", "lower.example:3"),
        ]);
        assert_eq!(route(&env1, https), "lower.example:3");
        assert_eq!(route(&env1, http), "all.example:1");
        let env2 = env(&[("HTTPS_PROXY", "upper.example:2"), ("https_proxy", "")]);
        assert_eq!(route(&env2, https), "upper.example:2");

        // HTTP_PROXY is not read (curl: CGI sets it from a request header).
        let env3 = env(&[("HTTP_PROXY", "upper.example:2")]);
        assert_eq!(route(&env3, http), "direct");
        let env4 = env(&[("http_proxy", "lower.example:3")]);
        assert_eq!(route(&env4, http), "lower.example:3");
        assert_eq!(route(&env4, https), "direct");
    }

    #[test]
    fn proxy_values_default_like_curl() {
        assert_eq!(
            route(
                &env(&[("https_proxy", "proxy.example")]),
                "https://a.example/"
            ),
            "proxy.example:1080"
        );
        assert_eq!(
            route(
                &env(&[("https_proxy", "https://proxy.example")]),
                "https://a.example/"
            ),
            "proxy.example:443"
        );
        assert_eq!(
            route(
                &env(&[("https_proxy", "http://user:pa%40ss@proxy.example:8080/")]),
                "https://a.example/"
            ),
            "proxy.example:8080"
        );
    }

    #[test]
    fn an_unusable_proxy_refuses_the_request_without_showing_the_value() {
        for value in [
            "socks5://user:hunter2@proxy.example:1080",
            "ftp://hunter2@x",
            "http://",
        ] {
            let env = env(&[("HTTPS_PROXY", value)]);
            let routed = route(&env, "https://auth.example/token");
            assert!(routed.starts_with("refused: "), "{value}: {routed}");
            assert!(routed.contains("HTTPS_PROXY"), "{value}: {routed}");
            assert!(!routed.contains("hunter2"), "{value}: {routed}");
            // NO_PROXY and loopback still go direct.
            assert_eq!(route(&env, "https://127.0.0.1/token"), "direct");
        }
    }

    #[test]
    fn no_proxy_excludes_hosts_and_lower_case_wins() {
        let env1 = env(&[
            ("HTTPS_PROXY", "proxy.example:3128"),
            ("no_proxy", "internal.example, 10.0.0.0/8"),
            ("NO_PROXY", "auth.example"),
        ]);
        assert_eq!(
            route(&env1, "https://auth.internal.example/token"),
            "direct"
        );
        assert_eq!(route(&env1, "https://10.2.3.4/token"), "direct");
        assert_eq!(
            route(&env1, "https://auth.example/token"),
            "proxy.example:3128"
        );
        let env2 = env(&[("HTTPS_PROXY", "proxy.example:3128"), ("NO_PROXY", "*")]);
        assert_eq!(route(&env2, "https://auth.example/token"), "direct");
    }

    #[test]
    fn a_socks_proxy_is_refused_as_such() {
        let env = env(&[("https_proxy", "socks5h://proxy.example:1080")]);
        let routed = route(&env, "https://auth.example/token");
        assert!(
            routed.contains("SOCKS proxies are not supported"),
            "{routed}"
        );
    }

    #[test]
    fn a_bracketed_ipv6_no_proxy_entry_without_a_port_matches_every_port() {
        assert!(direct("[fd00::1]", "https://[fd00::1]/token"));
        assert!(direct("[fd00::1]", "http://[fd00::1]:8080/token"));
        assert!(!direct("[fd00::1]", "https://[fd00::2]/token"));
    }
}
