//! Parameter unmarshalling with xapi's leniency (ocaml-rpc in non-strict mode): ints from
//! `<i4>`/`<int>`/`<i8>` or decimal strings, floats from ints or strings, datetimes from
//! strings, enums case-insensitively; but a bool must be a bool and a string a string.
//! Failures surface as `INTERNAL_ERROR`, before the session is checked (spec §1.4).

use xenapi::codec::Failure;
use xenapi::{DateTime, Value};

use crate::db::schema::Ctor;
use crate::db::{ClassId, Ty, default_of, internal};

fn mismatch(expected: &str, found: &Value) -> Failure {
    internal(format!(
        "Rpc.Runtime_error(\"{expected}\", {})",
        found.kind()
    ))
}

fn enum_value(values: &[&str], open: bool, value: Value) -> Result<Value, Failure> {
    let Value::String(text) = value else {
        return Err(mismatch("enum", &value));
    };
    match values
        .iter()
        .find(|known| known.eq_ignore_ascii_case(&text))
    {
        Some(known) => Ok(Value::String((*known).to_owned())),
        None if open => Ok(Value::String(text)),
        None => Err(internal(format!("Rpc.Runtime_error(\"enum\", \"{text}\")"))),
    }
}

/// Converts a received value to the canonical form of `ty`.
///
/// # Errors
/// `INTERNAL_ERROR` when the value cannot be read as `ty`.
pub(crate) fn unmarshal(ty: &Ty, value: Value) -> Result<Value, Failure> {
    match (ty, value) {
        (Ty::Str | Ty::Ref(_) | Ty::OtherRef(_), Value::String(text)) => Ok(Value::String(text)),
        (Ty::Int, Value::Int(number)) => Ok(Value::Int(number)),
        (Ty::Int, Value::Int32(number)) => Ok(Value::Int(i64::from(number))),
        (Ty::Int, Value::String(text)) => text
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| internal(format!("Rpc.Runtime_error(\"int64\", \"{text}\")"))),
        (Ty::Float, Value::Double(number)) => Ok(Value::Double(number)),
        (Ty::Float, Value::Int(number)) => Ok(Value::Double(int_to_float(number))),
        (Ty::Float, Value::Int32(number)) => Ok(Value::Double(f64::from(number))),
        (Ty::Float, Value::String(text)) => xenapi::codec::float::parse_float(text.trim())
            .map(Value::Double)
            .ok_or_else(|| internal(format!("Rpc.Runtime_error(\"float\", \"{text}\")"))),
        (Ty::Bool, Value::Bool(flag)) => Ok(Value::Bool(flag)),
        (Ty::Date, Value::DateTime(date)) => Ok(Value::DateTime(date)),
        (Ty::Date, Value::String(text)) => DateTime::parse(&text)
            .map(Value::DateTime)
            .map_err(|_| internal(format!("Rpc.Runtime_error(\"datetime\", \"{text}\")"))),
        (Ty::Enum(values), value) => enum_value(values, false, value),
        (Ty::OpenEnum(values), value) => enum_value(values, true, value),
        (Ty::Set(inner), Value::Array(items)) => items
            .into_iter()
            .map(|item| unmarshal(inner, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Ty::Map(key_ty, value_ty), Value::Struct(members)) => members
            .into_iter()
            .map(|(key, item)| {
                let key = match unmarshal(key_ty, Value::String(key))? {
                    Value::String(text) => text,
                    Value::Int(number) => number.to_string(),
                    other => return Err(mismatch("map key", &other)),
                };
                Ok((key, unmarshal(value_ty, item)?))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Struct),
        (ty, value) => Err(mismatch(ty_name(ty), &value)),
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "xapi converts int params to floats the same lossy way"
)]
fn int_to_float(number: i64) -> f64 {
    number as f64
}

fn ty_name(ty: &Ty) -> &'static str {
    match ty {
        Ty::Str | Ty::Ref(_) | Ty::OtherRef(_) | Ty::Enum(_) | Ty::OpenEnum(_) => "string",
        Ty::Int => "int64",
        Ty::Float => "float",
        Ty::Bool => "bool",
        Ty::Date => "datetime",
        Ty::Set(_) => "set",
        Ty::Map(_, _) => "map",
    }
}

/// Reads a constructor struct: every required field (else `INTERNAL_ERROR` with xapi's
/// `Dispatcher_FieldNotFound`), optional ones or their defaults; unknown members are ignored.
///
/// # Errors
/// `INTERNAL_ERROR` for a missing required field or a value of the wrong type.
pub(crate) fn constructor_fields(
    class: ClassId,
    record: Value,
) -> Result<Vec<(&'static str, Value)>, Failure> {
    let Value::Struct(members) = record else {
        return Err(mismatch("struct", &record));
    };
    let mut fields = Vec::new();
    for field in class
        .fields()
        .iter()
        .filter(|field| field.ctor != Ctor::Absent)
    {
        let given = members
            .iter()
            .find(|(name, _)| name == field.name)
            .map(|(_, value)| value.clone());
        let value = match (given, field.ctor) {
            (Some(value), _) => unmarshal(&field.ty, value)?,
            (None, Ctor::Required) => {
                return Err(internal(format!(
                    "Server_helpers.Dispatcher_FieldNotFound(\"{}\")",
                    field.name
                )));
            }
            (None, _) => default_of(field),
        };
        fields.push((field.name, value));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_come_from_strings_and_bools_only_from_bools() {
        assert_eq!(unmarshal(&Ty::Int, Value::from("42")), Ok(Value::Int(42)));
        assert_eq!(unmarshal(&Ty::Float, Value::Int(2)), Ok(Value::Double(2.0)));
        assert_eq!(
            unmarshal(&Ty::Bool, Value::from("true")).unwrap_err().code,
            "INTERNAL_ERROR"
        );
        assert_eq!(
            unmarshal(&Ty::Str, Value::Int(1)).unwrap_err().code,
            "INTERNAL_ERROR"
        );
        assert_eq!(
            unmarshal(&Ty::Int, Value::from("x")).unwrap_err().code,
            "INTERNAL_ERROR"
        );
    }

    #[test]
    fn enums_match_case_insensitively_and_open_enums_keep_unknown_values() {
        let power = Ty::Enum(crate::db::schema::POWER_STATES);
        assert_eq!(
            unmarshal(&power, Value::from("running")),
            Ok(Value::from("Running"))
        );
        assert!(unmarshal(&power, Value::from("flying")).is_err());
        let open = Ty::OpenEnum(&["start"]);
        assert_eq!(
            unmarshal(&open, Value::from("START")),
            Ok(Value::from("start"))
        );
        assert_eq!(
            unmarshal(&open, Value::from("future_op")),
            Ok(Value::from("future_op"))
        );
    }

    #[test]
    fn constructors_need_required_fields_and_fill_defaults() {
        let record =
            Value::structure([("name_label", Value::from("n")), ("unknown", Value::Int(1))]);
        let error = constructor_fields(ClassId::Network, record).unwrap_err();
        assert!(
            error.params[0].contains("other_config"),
            "{:?}",
            error.params
        );
        let record = Value::structure([("other_config", Value::Struct(Vec::new()))]);
        let fields = constructor_fields(ClassId::Network, record).unwrap();
        assert!(fields.contains(&("MTU", Value::Int(1500))));
    }
}
