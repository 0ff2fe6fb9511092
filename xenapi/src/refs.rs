//! Typed object references: `Ref<Vm>` cannot be passed where `Ref<Vdi>` is expected.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use crate::error::Error;
use crate::value::{FromKey, FromValue, Value, mismatch};

/// A XenAPI class: its wire name and whether its refs are secrets.
pub trait Class: Send + Sync + 'static {
    /// The class name as the datamodel spells it (`VM`, `VDI`, `host`, ...): the prefix of
    /// wire method names and the table in `HANDLE_INVALID`.
    const NAME: &'static str;
    /// True when a ref of this class is a credential (sessions): never printed.
    const SECRET: bool = false;
}

macro_rules! classes {
    ($( $(#[$doc:meta])* $marker:ident = $name:literal, )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub enum $marker {}
            impl Class for $marker {
                const NAME: &'static str = $name;
            }
        )*
    };
}

classes! {
    /// Marker for `pool`.
    Pool = "pool",
    /// Marker for `host`.
    Host = "host",
    /// Marker for `SR`.
    Sr = "SR",
    /// Marker for `PBD`.
    Pbd = "PBD",
    /// Marker for `VDI`.
    Vdi = "VDI",
    /// Marker for `VBD`.
    Vbd = "VBD",
    /// Marker for `VM`.
    Vm = "VM",
    /// Marker for `VIF`.
    Vif = "VIF",
    /// Marker for `network`.
    Network = "network",
    /// Marker for `PIF`.
    Pif = "PIF",
    /// Marker for `task`.
    Task = "task",
    /// Marker for `VM_guest_metrics`.
    VmGuestMetrics = "VM_guest_metrics",
    /// Marker for `VM_metrics`.
    VmMetrics = "VM_metrics",
    /// Marker for `console`.
    Console = "console",
    /// Marker for `Certificate`.
    Certificate = "Certificate",
}

/// Marker for `session`: its refs authenticate, so they are redacted from `Debug`/`Display`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Session {}
impl Class for Session {
    const NAME: &'static str = "session";
    const SECRET: bool = true;
}

/// The text of the null reference.
pub const NULL_REF: &str = "OpaqueRef:NULL";

/// A reference to an object of class `C` (`OpaqueRef:<uuid>` on the wire).
///
/// Refs change when xapi restarts; uuids do not. Odd values that appear in rarely used fields
/// (`""`, `Ref:3`, `DummyRef:…`) are kept verbatim but count as null (as Xen Orchestra does).
///
/// ```
/// use xenapi::{Ref, Vm, Vdi};
/// let vm: Ref<Vm> = Ref::new("OpaqueRef:1b2c");
/// assert!(!vm.is_null());
/// assert!(Ref::<Vdi>::null().is_null());
/// ```
///
/// A ref of one class cannot stand where another is expected:
///
/// ```compile_fail
/// use xenapi::{Ref, Vm, Vdi};
/// fn wants_vdi(_: &Ref<Vdi>) {}
/// let vm: Ref<Vm> = Ref::new("OpaqueRef:1b2c");
/// wants_vdi(&vm);
/// ```
pub struct Ref<C: Class> {
    text: String,
    class: PhantomData<fn() -> C>,
}

impl<C: Class> Ref<C> {
    /// Wraps a ref string.
    pub fn new(text: impl Into<String>) -> Ref<C> {
        Ref {
            text: text.into(),
            class: PhantomData,
        }
    }

    /// `OpaqueRef:NULL`.
    pub fn null() -> Ref<C> {
        Ref::new(NULL_REF)
    }

    /// True for `OpaqueRef:NULL` and for anything that is not an `OpaqueRef:` at all.
    pub fn is_null(&self) -> bool {
        match self.text.strip_prefix("OpaqueRef:") {
            Some(rest) => rest.is_empty() || rest == "NULL",
            None => true,
        }
    }

    /// The wire text. For a session ref this is a secret: do not log it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Consumes into the wire text.
    pub fn into_string(self) -> String {
        self.text
    }

    /// Reinterprets as a ref of another class (for `event.from` snapshots and generic code).
    pub fn cast<D: Class>(self) -> Ref<D> {
        Ref::new(self.text)
    }
}

impl<C: Class> Clone for Ref<C> {
    fn clone(&self) -> Self {
        Ref::new(self.text.clone())
    }
}

impl<C: Class> PartialEq for Ref<C> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl<C: Class> Eq for Ref<C> {}
impl<C: Class> Hash for Ref<C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}
impl<C: Class> PartialOrd for Ref<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<C: Class> Ord for Ref<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl<C: Class> fmt::Debug for Ref<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref<{}>({self})", C::NAME)
    }
}

impl<C: Class> fmt::Display for Ref<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if C::SECRET {
            f.write_str("OpaqueRef:<redacted>")
        } else {
            f.write_str(&self.text)
        }
    }
}

impl<C: Class> FromValue for Ref<C> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::String(text) => Ok(Ref::new(text)),
            Value::Nil => Ok(Ref::null()),
            other => Err(mismatch("ref", &other)),
        }
    }
}

impl<C: Class> FromKey for Ref<C> {
    fn from_key(key: String) -> Result<Self, Error> {
        Ok(Ref::new(key))
    }
}

impl<C: Class> From<Ref<C>> for Value {
    fn from(reference: Ref<C>) -> Self {
        Value::String(reference.text)
    }
}

impl<C: Class> From<&Ref<C>> for Value {
    fn from(reference: &Ref<C>) -> Self {
        Value::String(reference.text.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_forms() {
        for odd in ["", "OpaqueRef:NULL", "Ref:3", "DummyRef:x", "OpaqueRef:"] {
            assert!(Ref::<Vm>::new(odd).is_null(), "{odd}");
        }
        assert!(!Ref::<Vm>::new("OpaqueRef:0b0d").is_null());
    }

    #[test]
    fn session_refs_are_redacted() {
        let session: Ref<Session> = Ref::new("OpaqueRef:secret-value");
        assert_eq!(format!("{session}"), "OpaqueRef:<redacted>");
        assert!(!format!("{session:?}").contains("secret-value"));
        let vm: Ref<Vm> = Ref::new("OpaqueRef:visible");
        assert_eq!(format!("{vm:?}"), "Ref<VM>(OpaqueRef:visible)");
    }

    #[test]
    fn value_conversions() {
        let vm: Ref<Vm> = Value::from("OpaqueRef:1").decode().unwrap();
        assert_eq!(Value::from(&vm), Value::from("OpaqueRef:1"));
        assert!(Value::Int(1).decode::<Ref<Vm>>().is_err());
    }
}
