//! Connection URLs with optional credentials, parsed like Xen Orchestra's `xen-api` package
//! (`_parseUrl.mjs`) but refusing the inputs it silently misreads.
//!
//! Accepted: `[http:|https:][//…]` + `[user[:password]@]` + host (`name`, IPv4, `[IPv6]`) +
//! `[:port]` + `[/path]`. User and password are percent-decoded (no `+` → space). Refused, each
//! with a message saying what to write instead: an unencoded `@` in the credentials (XO would
//! take `root:p@ss@host` as password `p`, host `ss@host`), a bare `%`, `?` or `#` anywhere, an
//! upper-case or unknown scheme, an empty user before a password, a bad port.
//!
//! ```
//! use xenapi::ConnectUrl;
//! let url = ConnectUrl::parse("https://root:p%40ss@pool.lan").unwrap();
//! assert_eq!(url.user(), Some("root"));
//! assert_eq!(url.password().map(|secret| secret.expose()), Some("p@ss"));
//! assert_eq!(url.to_string(), "https://root@pool.lan/"); // never the password
//!
//! let error = ConnectUrl::parse("https://root:p@ss@pool.lan").unwrap_err();
//! assert!(error.to_string().contains("%40"));
//! ```

use std::fmt;
use std::path::Path;

use crate::error::Error;

/// A secret string (password). `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Secret, Error> {
        match std::env::var(name) {
            Ok(text) if !text.is_empty() => Ok(Secret(text)),
            Ok(_) => Err(Error::Credentials {
                reason: format!("environment variable {name} is empty"),
            }),
            Err(_) => Err(Error::Credentials {
                reason: format!("environment variable {name} is not set or not UTF-8"),
            }),
        }
    }

    /// Reads a secret from a file: its first line, without the line ending.
    pub fn from_file(path: &Path) -> Result<Secret, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            Error::io(
                format!("reading the password file {}", path.display()),
                source,
            )
        })?;
        let first = text.lines().next().unwrap_or_default();
        if first.is_empty() {
            return Err(Error::Credentials {
                reason: format!("password file {} is empty", path.display()),
            });
        }
        Ok(Secret(first.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Cleartext (port 80).
    Http,
    /// TLS (port 443), the default.
    Https,
}

impl Scheme {
    /// `"http"` / `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 / 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where to connect, and possibly as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
    user: Option<String>,
    password: Option<Secret>,
}

impl ConnectUrl {
    /// A URL for `host` with the default scheme (https), port and path.
    pub fn for_host(host: &str) -> ConnectUrl {
        ConnectUrl {
            scheme: Scheme::Https,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: 443,
            path: "/".into(),
            user: None,
            password: None,
        }
    }

    /// Parses a connection URL (see the module docs for the grammar and the refusals).
    pub fn parse(input: &str) -> Result<ConnectUrl, Error> {
        let fail = |reason: String| Err(Error::Url { reason });
        if input.trim() != input {
            return fail(
                "the URL has leading or trailing whitespace (was more than one argument joined?)"
                    .into(),
            );
        }
        if input.contains(char::is_whitespace) && !input.contains('@') {
            return fail("the URL contains whitespace (was more than one argument joined?)".into());
        }
        let (scheme, rest) = split_scheme(input)?;
        let rest = rest.trim_start_matches('/');
        if rest.contains('?') || rest.contains('#') {
            return fail(
                "`?` and `#` are not allowed: a query or fragment has no meaning here; if they are part of the \
                 password, write them as %3F and %23"
                    .into(),
            );
        }
        let ats = rest.matches('@').count();
        if ats > 1 {
            return fail(
                "more than one `@`: an `@` inside the user name or password must be percent-encoded as %40 \
                 (e.g. https://root:p%40ss@host)"
                    .into(),
            );
        }
        let (userinfo, hostpart) = match rest.split_once('@') {
            Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (info, None),
                };
                if user.is_empty() {
                    return fail("empty user name before `@`".into());
                }
                let user = percent_decode(user, "user name")?;
                let password = match password {
                    Some(password) if !password.is_empty() => {
                        Some(Secret(percent_decode(password, "password")?))
                    }
                    _ => None,
                };
                (Some(user), password)
            }
        };
        let (authority, path) = match hostpart.find('/') {
            Some(index) => hostpart.split_at(index),
            None => (hostpart, "/"),
        };
        let (host, port) = split_host_port(authority)?;
        Ok(ConnectUrl {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
            path: path.to_owned(),
            user,
            password,
        })
    }

    /// http or https.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// Host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Base path (`/` normally).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// User from the URL, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// Password from the URL, if any.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The same scheme, port and path on another host (a `HOST_IS_SLAVE` redirect).
    pub fn with_host(&self, host: &str) -> ConnectUrl {
        ConnectUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            ..self.clone()
        }
    }

    /// Sets the scheme (keeping a default port in step).
    pub fn with_scheme(mut self, scheme: Scheme) -> ConnectUrl {
        if self.port == self.scheme.default_port() {
            self.port = scheme.default_port();
        }
        self.scheme = scheme;
        self
    }

    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> ConnectUrl {
        self.port = port;
        self
    }

    /// `host` or `[v6]`, with `:port` unless it is the scheme's default: the HTTP `Host` header.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL path for an endpoint relative to the base path (`jsonrpc` → `/jsonrpc`).
    pub fn endpoint(&self, relative: &str) -> String {
        let base = self.path.trim_end_matches('/');
        format!("{base}/{}", relative.trim_start_matches('/'))
    }
}

/// Prints the URL without the password.
impl fmt::Display for ConnectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(user) = &self.user {
            let encoded = percent_encoding::utf8_percent_encode(user, USERINFO);
            write!(f, "{encoded}@")?;
        }
        write!(f, "{}{}", self.authority(), self.path)
    }
}

impl fmt::Debug for ConnectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectUrl({self})")
    }
}

const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'@')
    .add(b':')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b' ');

fn split_scheme(input: &str) -> Result<(Scheme, &str), Error> {
    if let Some(rest) = input.strip_prefix("https:") {
        return Ok((Scheme::Https, rest));
    }
    if let Some(rest) = input.strip_prefix("http:") {
        return Ok((Scheme::Http, rest));
    }
    let lower = input.to_ascii_lowercase();
    if lower.starts_with("https:") || lower.starts_with("http:") {
        return Err(Error::Url {
            reason: "write the scheme in lower case (`https://`)".into(),
        });
    }
    if let Some((scheme, _)) = input.split_once("://")
        && !scheme.contains(['@', ':', '/'])
    {
        return Err(Error::Url {
            reason: format!("unsupported scheme `{scheme}`: use https:// or http://"),
        });
    }
    Ok((Scheme::Https, input))
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), Error> {
    let fail = |reason: &str| {
        Err(Error::Url {
            reason: reason.to_owned(),
        })
    };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return fail("unterminated `[` in an IPv6 address");
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return fail("the bracketed host is not an IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return fail("unexpected text after the IPv6 address"),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return fail("missing host");
    }
    if host.contains(|c: char| c.is_whitespace() || matches!(c, '%' | '[' | ']' | '@')) {
        return fail("invalid character in the host name");
    }
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(number) if number > 0 && text.bytes().all(|byte| byte.is_ascii_digit()) => {
                Some(number)
            }
            _ => return fail("the port must be a number from 1 to 65535"),
        },
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str, what: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(position) = bytes
        .get(index..)
        .and_then(|rest| rest.iter().position(|byte| *byte == b'%'))
    {
        let at = index + position;
        let valid = bytes
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if !valid {
            return Err(Error::Url {
                reason: format!(
                    "a `%` in the {what} must start an escape like %40; write a literal `%` as %25"
                ),
            });
        }
        index = at + 3;
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| Error::Url {
            reason: format!("the {what} does not decode to UTF-8"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> ConnectUrl {
        ConnectUrl::parse(input).unwrap()
    }

    #[test]
    fn xen_orchestra_vectors() {
        // xo-replication spec §1.3, inputs XO accepts with the same meaning.
        let url = parse("https://root:p%40ss@host.lan");
        assert_eq!(
            (url.user(), url.password().map(Secret::expose)),
            (Some("root"), Some("p@ss"))
        );
        let url = parse("root:secret@10.0.0.1");
        assert_eq!(
            (url.scheme(), url.host(), url.port()),
            (Scheme::Https, "10.0.0.1", 443)
        );
        let url = parse("http://root:pa:ss@host:8080");
        assert_eq!(
            (url.scheme(), url.port(), url.password().map(Secret::expose)),
            (Scheme::Http, 8080, Some("pa:ss"))
        );
        assert_eq!(parse("https://ro%3Aot:pw@host").user(), Some("ro:ot"));
        let url = parse("https://root:pw@[fe80::1]:443");
        assert_eq!(
            (url.host(), url.port(), url.authority()),
            ("fe80::1", 443, "[fe80::1]".to_owned())
        );
        assert_eq!(parse("https:/root:pw@host").host(), "host");
        assert_eq!(parse("https://root@host").password(), None);
        assert_eq!(parse("https://root:@host").password(), None);
        assert_eq!(
            parse("https://root:pw word@host")
                .password()
                .map(Secret::expose),
            Some("pw word")
        );
        let bare = parse("pool.lan");
        assert_eq!(
            (bare.user(), bare.path(), bare.endpoint("jsonrpc")),
            (None, "/", "/jsonrpc".to_owned())
        );
    }

    #[test]
    fn refusals_say_how_to_fix() {
        let cases = [
            ("https://root:p@ss@host", "%40"),
            ("https://user@domain:pw@host", "%40"),
            ("https://root:p%ss@host", "%25"),
            ("https://root:pw@host/?x=1", "%3F"),
            ("https://root:pw@host#f", "%23"),
            ("HTTPS://root:pw@host", "lower case"),
            ("ftp://root:pw@host", "unsupported scheme"),
            ("https://:pw@host", "empty user"),
            ("https://root:pw@host:abc", "port"),
            ("https://root:pw@host:0", "port"),
            ("https://root:pw@", "missing host"),
            ("https://root:pw@[fe80::1", "IPv6"),
            (" https://host", "whitespace"),
            ("https://a b", "whitespace"),
        ];
        for (input, hint) in cases {
            let error = ConnectUrl::parse(input).unwrap_err().to_string();
            assert!(error.contains(hint), "{input}: {error}");
            assert!(
                !error.contains("pw"),
                "{input}: the message leaks the password: {error}"
            );
        }
    }

    #[test]
    fn display_and_debug_hide_the_password() {
        let url = parse("https://ad%40min:topsecret@[2001:db8::1]:8443/base/");
        assert_eq!(url.to_string(), "https://ad%40min@[2001:db8::1]:8443/base/");
        assert!(!format!("{url:?}").contains("topsecret"));
        assert_eq!(url.endpoint("jsonrpc"), "/base/jsonrpc");
        assert_eq!(url.with_host("192.0.2.10").authority(), "192.0.2.10:8443");
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(Secret::from_file(&path).is_err());
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
        assert!(Secret::from_env("XENAPI_TEST_SURELY_UNSET_VARIABLE").is_err());
        assert_eq!(format!("{:?}", Secret::new("x")), "<redacted>");
    }
}
