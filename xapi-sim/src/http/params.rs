//! Request parameters as xapi's `http.ml` reads them, sans-IO: URL query pairs, `Cookie` pairs and
//! `Authorization: Basic` credentials.
//!
//! - The query is split on `&`, or on `;` when it contains any `;`; each item is cut at its first
//!   `=` (a bare key has the value `""`); keys and values are URL-decoded (`+` is a space, `%XY`
//!   a byte; a malformed escape makes the whole request malformed).
//! - Cookies are `;`-separated `key=value` items, trimmed, decoded the same way.
//! - Lookups follow xapi: `session_id`, `task_id` and `subtask_of` prefer the cookie
//!   (`Xapi_http.ref_param_of_req`); `vdi`, `base`, `format` and flags prefer the query
//!   (`Importexport`: `query @ cookie`).

use std::fmt;

use base64::Engine as _;

/// Longest query or cookie text accepted (xapi bounds the whole request head).
pub const MAX_PARAMS_TEXT: usize = 64 * 1024;

/// Why parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsError {
    /// A `%` escape is not followed by two hex digits (xapi: `Malformed_url`).
    MalformedEscape {
        /// Byte offset of the `%` in the text.
        at: usize,
    },
    /// The text is longer than [`MAX_PARAMS_TEXT`].
    TooLong {
        /// Its length.
        found: usize,
    },
}

impl fmt::Display for ParamsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::MalformedEscape { at } => {
                write!(formatter, "malformed percent escape at byte {at}")
            }
            ParamsError::TooLong { found } => write!(
                formatter,
                "parameter text of {found} bytes exceeds {MAX_PARAMS_TEXT}"
            ),
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// xapi's `Http.urldecode`: `+` → space, `%XY` → byte. `base` is the offset of `text` in the
/// whole input, for error positions.
fn url_decode(text: &str, base: usize) -> Result<String, ParamsError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            b'%' => {
                let high = bytes.get(index + 1).copied().and_then(hex_value);
                let low = bytes.get(index + 2).copied().and_then(hex_value);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(ParamsError::MalformedEscape {
                        at: base.saturating_add(index),
                    });
                };
                out.push(high << 4 | low);
                index += 3;
            }
            other => {
                out.push(other);
                index += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn check_length(text: &str) -> Result<(), ParamsError> {
    if text.len() > MAX_PARAMS_TEXT {
        return Err(ParamsError::TooLong { found: text.len() });
    }
    Ok(())
}

fn split_pairs(
    text: &str,
    separator: char,
    trim: bool,
) -> Result<Vec<(String, String)>, ParamsError> {
    check_length(text)?;
    let mut pairs = Vec::new();
    let mut offset: usize = 0;
    for item in text.split(separator) {
        let start = offset;
        offset = offset.saturating_add(item.len()).saturating_add(1);
        let (lead, item) = if trim {
            let trimmed = item.trim_start();
            (item.len() - trimmed.len(), trimmed.trim_end())
        } else {
            (0, item)
        };
        if item.is_empty() {
            continue;
        }
        let base = start.saturating_add(lead);
        let (key, value, value_base) = match item.split_once('=') {
            Some((key, value)) => (key, value, base.saturating_add(key.len()).saturating_add(1)),
            None => (item, "", base),
        };
        pairs.push((url_decode(key, base)?, url_decode(value, value_base)?));
    }
    Ok(pairs)
}

/// The pairs of a URL query (`a=1&b&c=%2F`), in order.
///
/// # Errors
/// [`ParamsError`] for a malformed escape or an oversized query.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, ParamsError> {
    let separator = if query.contains(';') { ';' } else { '&' };
    split_pairs(query, separator, false)
}

/// The pairs of a `Cookie` header value (`session_id=OpaqueRef:…; task_id=…`).
///
/// # Errors
/// [`ParamsError`] for a malformed escape or an oversized header.
pub fn parse_cookies(header: &str) -> Result<Vec<(String, String)>, ParamsError> {
    split_pairs(header, ';', true)
}

/// Credentials of an `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    /// `Basic base64(user:password)`.
    Basic {
        /// User name.
        user: String,
        /// Password (never printed).
        password: String,
    },
    /// Any other scheme, or a Basic value that does not decode (xapi: `UnknownAuth`).
    Unknown,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorization::Basic { user, .. } => formatter
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Authorization::Unknown => formatter.write_str("Unknown"),
        }
    }
}

/// Reads an `Authorization` header value.
#[must_use]
pub fn parse_authorization(header: &[u8]) -> Authorization {
    let Ok(text) = std::str::from_utf8(header) else {
        return Authorization::Unknown;
    };
    let Some((scheme, credentials)) = text.trim().split_once(' ') else {
        return Authorization::Unknown;
    };
    if !scheme.eq_ignore_ascii_case("basic") || credentials.len() > MAX_PARAMS_TEXT {
        return Authorization::Unknown;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials.trim()) else {
        return Authorization::Unknown;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Authorization::Unknown;
    };
    match decoded.split_once(':') {
        Some((user, password)) => Authorization::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        },
        None => Authorization::Unknown,
    }
}

/// The parameters of one transfer request.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    query: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
}

impl fmt::Debug for Params {
    // Session refs are secrets: only the keys are shown.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |pairs: &[(String, String)]| -> Vec<String> {
            pairs.iter().map(|(key, _)| key.clone()).collect()
        };
        formatter
            .debug_struct("Params")
            .field("query", &keys(&self.query))
            .field("cookies", &keys(&self.cookies))
            .finish()
    }
}

impl Params {
    /// Parameters from a URL query (without `?`) and the `Cookie` header values.
    ///
    /// # Errors
    /// [`ParamsError`] as [`parse_query`] and [`parse_cookies`].
    pub fn parse<'a>(
        query: Option<&str>,
        cookie_headers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Params, ParamsError> {
        let query = match query {
            Some(query) => parse_query(query)?,
            None => Vec::new(),
        };
        let mut cookies = Vec::new();
        for header in cookie_headers {
            cookies.extend(parse_cookies(header)?);
        }
        Ok(Params { query, cookies })
    }

    fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The URL query pairs, decoded, in order (what a 302 carries).
    #[must_use]
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// The query value of `key` only (`ref` of `/export`, `use_compression`).
    #[must_use]
    pub fn query(&self, key: &str) -> Option<&str> {
        Params::first(&self.query, key)
    }

    /// A reference parameter (`session_id`, `task_id`, `subtask_of`): cookie first.
    #[must_use]
    pub fn reference(&self, key: &str) -> Option<&str> {
        Params::first(&self.cookies, key).or_else(|| Params::first(&self.query, key))
    }

    /// An ordinary parameter (`vdi`, `base`, `format`, `sr_id`…): query first.
    #[must_use]
    pub fn value(&self, key: &str) -> Option<&str> {
        Params::first(&self.query, key).or_else(|| Params::first(&self.cookies, key))
    }

    /// A presence flag (`chunked`): set whatever its value, even `chunked=false`.
    #[must_use]
    pub fn flag(&self, key: &str) -> bool {
        self.value(key).is_some()
    }
}

/// xapi's redirect query: `key=value` pairs of the URL query, joined with `&`, values as decoded
/// (xapi does not re-encode). Bytes that cannot appear in a header are percent-encoded so the
/// `Location` stays valid.
#[must_use]
pub fn redirect_query(pairs: &[(String, String)]) -> String {
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'"');
    pairs
        .iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(key, UNSAFE),
                percent_encoding::utf8_percent_encode(value, UNSAFE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn queries_decode_like_xapi() {
        // A raw import as xen-api's own tests send it: the bare `chunked` flag has value "",
        // `%3A` is ':' and '+' is a space.
        let query = "session_id=OpaqueRef%3Aabc&vdi=uuid-1&format=raw&chunked&label=a+b";
        assert_eq!(
            parse_query(query).unwrap(),
            pairs(&[
                ("session_id", "OpaqueRef:abc"),
                ("vdi", "uuid-1"),
                ("format", "raw"),
                ("chunked", ""),
                ("label", "a b"),
            ])
        );
        // Any ';' switches the separator: '&' is then part of the value.
        assert_eq!(
            parse_query("a=1;b=2&3").unwrap(),
            pairs(&[("a", "1"), ("b", "2&3")])
        );
        assert_eq!(
            parse_query("a=%zz").unwrap_err(),
            ParamsError::MalformedEscape { at: 2 }
        );
        assert_eq!(
            parse_query("ok=1&bad=%4").unwrap_err(),
            ParamsError::MalformedEscape { at: 9 }
        );
    }

    #[test]
    fn cookies_win_for_refs_and_the_query_wins_for_values() {
        let params = Params::parse(
            Some("session_id=from-query&vdi=query-vdi&chunked=false"),
            [
                "session_id=from-cookie; vdi=cookie-vdi",
                "task_id=OpaqueRef:t",
            ],
        )
        .unwrap();
        assert_eq!(params.reference("session_id"), Some("from-cookie"));
        assert_eq!(params.reference("task_id"), Some("OpaqueRef:t"));
        assert_eq!(params.value("vdi"), Some("query-vdi"));
        assert!(params.flag("chunked"));
        assert!(!params.flag("base"));
        assert!(!format!("{params:?}").contains("from-cookie"));
    }

    #[test]
    fn basic_credentials_decode_and_stay_secret() {
        // "root:se:cret" in base64.
        let parsed = parse_authorization(b"Basic cm9vdDpzZTpjcmV0");
        assert_eq!(
            parsed,
            Authorization::Basic {
                user: "root".to_owned(),
                password: "se:cret".to_owned()
            }
        );
        assert!(!format!("{parsed:?}").contains("se:cret"));
        assert_eq!(parse_authorization(b"Bearer abc"), Authorization::Unknown);
        assert_eq!(parse_authorization(b"Basic !!!"), Authorization::Unknown);
        assert_eq!(parse_authorization(&[0xff, 0xfe]), Authorization::Unknown);
    }

    #[test]
    fn redirect_queries_keep_decoded_values() {
        let query = redirect_query(&pairs(&[("session_id", "OpaqueRef:x"), ("n", "a b")]));
        assert_eq!(query, "session_id=OpaqueRef:x&n=a%20b");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn encoded_queries_round_trip(
            items in proptest::collection::vec(("[a-z_]{1,8}", "[ -~]{0,12}"), 0..6)
        ) {
            const SET: &percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC;
            let text = items
                .iter()
                .map(|(key, value)| format!(
                    "{key}={}",
                    percent_encoding::utf8_percent_encode(value, SET)
                ))
                .collect::<Vec<_>>()
                .join("&");
            prop_assert_eq!(parse_query(&text).unwrap(), items);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let _query = parse_query(&text);
            let _cookies = parse_cookies(&text);
            let _auth = parse_authorization(text.as_bytes());
        }
    }
}
