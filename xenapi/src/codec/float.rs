//! Float text forms: C's `%.16g` (ocaml-rpc's XML-RPC `<double>`), Yojson's JSON floats, and a
//! lenient parser for both.

/// Formats like C `printf("%.{precision}g")` with glibc's spelling of non-finite values
/// (`nan`, `-nan`, `inf`, `-inf`).
pub fn format_g(value: f64, precision: usize) -> String {
    if value.is_nan() {
        return if value.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if value.is_infinite() {
        return if value < 0.0 {
            "-inf".into()
        } else {
            "inf".into()
        };
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let precision = precision.max(1);
    let scientific = format!("{:.*e}", precision - 1, value);
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let precision_i64 = i64::try_from(precision).unwrap_or(i64::MAX);
    if exponent < -4 || exponent >= precision_i64 {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    } else {
        let decimals = usize::try_from(precision_i64 - 1 - exponent).unwrap_or(0);
        strip_fraction_zeros(&format!("{value:.decimals$}")).to_owned()
    }
}

fn strip_fraction_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// XML-RPC `<double>` text as xapi writes it: `%.16g` (`1`, `0.25`, `1.5e-07`, `nan`).
pub fn xapi_xml_double(value: f64) -> String {
    format_g(value, 16)
}

/// A `<double>` that reads back to the same bits: `%.16g`, or `%.17g` when 16 digits lose
/// precision. Used on the client side, where exactness matters more than xapi's look.
pub fn exact_xml_double(value: f64) -> String {
    let short = format_g(value, 16);
    if !value.is_finite() || parse_float(&short) == Some(value) {
        short
    } else {
        format_g(value, 17)
    }
}

/// A JSON number as Yojson (xapi's JSON printer) writes it: `NaN`, `Infinity`, `-Infinity`;
/// otherwise `%.16g`, falling back to `%.17g` when that does not read back exactly, with `.0`
/// appended when the text would otherwise look like an int (`1.0`, not `1`).
pub fn yojson_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let mut text = exact_xml_double(value);
    if text
        .bytes()
        .all(|byte| byte.is_ascii_digit() || byte == b'-')
    {
        text.push_str(".0");
    }
    text
}

/// Parses a float the way OCaml's `float_of_string` does for the forms peers send: decimal
/// and exponent forms, `nan`/`-nan`, `inf`/`infinity` (any case, optional sign), and JSON's
/// `NaN`/`Infinity`.
pub fn parse_float(text: &str) -> Option<f64> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let magnitude = match lower.as_str() {
        "nan" => f64::NAN,
        "inf" | "infinity" => f64::INFINITY,
        _ => {
            // Only digits, one dot and an exponent: Rust's parser would also take "infinity"
            // spelled oddly or "1_0" variants we do not want to be more lenient than needed.
            let valid = !body.is_empty()
                && body.bytes().all(|byte| {
                    byte.is_ascii_digit() || matches!(byte, b'.' | b'e' | b'E' | b'+' | b'-')
                });
            if !valid {
                return None;
            }
            body.parse::<f64>().ok()?
        }
    };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_g16_vectors() {
        // Expected strings are glibc's printf("%.16g") output.
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (0.25, "0.25"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (100.0, "100"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1e300, "1e+300"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (1742357784.0, "1742357784"),
            (f64::NAN, "nan"),
            (-f64::NAN, "-nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
            (-0.0, "-0"),
        ];
        for &(value, expected) in cases {
            assert_eq!(xapi_xml_double(value), expected, "{value:?}");
        }
    }

    #[test]
    fn yojson_vectors() {
        assert_eq!(yojson_float(1.0), "1.0");
        assert_eq!(yojson_float(0.25), "0.25");
        assert_eq!(yojson_float(1e20), "1e+20");
        assert_eq!(yojson_float(0.1), "0.1");
        // 0.1 + 0.2 needs 17 digits to read back.
        assert_eq!(yojson_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(yojson_float(f64::NAN), "NaN");
        assert_eq!(yojson_float(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn parse_forms() {
        assert_eq!(parse_float("1"), Some(1.0));
        assert_eq!(parse_float("1.5e-07"), Some(1.5e-7));
        assert_eq!(parse_float("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float("Infinity"), Some(f64::INFINITY));
        assert!(parse_float("-nan").is_some_and(f64::is_nan));
        assert!(parse_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_float(""), None);
        assert_eq!(parse_float("1_0"), None);
        assert_eq!(parse_float("abc"), None);
    }
}
