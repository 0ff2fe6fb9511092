//! Peer tools for interop tests, under one policy.
//!
//! An interop test checks our code against a tool written by someone else (`qemu-img`, `nbdkit`,
//! `nbdcopy`, `vhdiinfo`, `xva-img`, the Python `XenAPI` SDK, ...). Such a test asks this crate
//! for the tool first:
//!
//! - found: the test runs against it;
//! - missing and `CI=true`: the test **fails**, because CI installs every peer and a silent skip
//!   there would hide a lost check;
//! - missing otherwise: the test prints why it skips and returns early, so a newcomer without
//!   the tools still gets a green run of everything else.
//!
//! ```
//! // In a test: skip (or fail under CI=true) when qemu-img is not installed.
//! let Some(qemu_img) = test_peers::require("qemu-img") else { return };
//! let status = std::process::Command::new(qemu_img).arg("--version").output().unwrap();
//! assert!(status.status.success());
//! ```
#![forbid(unsafe_code)]

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// True when the environment variable `CI` is `true` or `1`: missing peers are then failures.
pub fn is_ci() -> bool {
    matches!(env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Looks `tool` up on `PATH` (and in `/usr/sbin`, where Debian puts `nbd-server`).
///
/// A name containing a `/` is taken as a path and only checked for existence.
pub fn find(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let path = PathBuf::from(tool);
        return is_executable(&path).then_some(path);
    }
    let path_var = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path_var)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

/// Returns the path of `tool`, or applies the skip-or-fail policy when it is missing.
///
/// Under `CI=true` a missing tool panics, which fails the calling test; otherwise this prints
/// the reason to stderr and returns `None`, and the test returns early.
pub fn require(tool: &str) -> Option<PathBuf> {
    match find(tool) {
        Some(path) => Some(path),
        None => missing(&format!("peer tool `{tool}` is not installed")),
    }
}

/// Returns a Python interpreter that can `import module`, or applies the skip-or-fail policy.
///
/// Tries `python3` on `PATH` first, then Debian's `/usr/bin/python3`: pip-installed packages
/// (`XenAPI`, `xxhash`) land in the former and Debian's bindings (`pyvhdi` from
/// `python3-libvhdi`) in the latter, and they are not always the same interpreter.
pub fn require_python_module(module: &str) -> Option<PathBuf> {
    let candidates = [find("python3"), Some(PathBuf::from("/usr/bin/python3"))];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|python| python_can_import(python, module));
    match found {
        Some(python) => Some(python),
        None => missing(&format!("no python3 here can `import {module}`")),
    }
}

fn python_can_import(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[allow(
    clippy::panic,
    reason = "under CI=true a missing peer must fail the calling test"
)]
#[allow(
    clippy::print_stderr,
    reason = "the skip reason is for the person running the tests"
)]
fn missing(reason: &str) -> Option<PathBuf> {
    assert!(
        !is_ci(),
        "{reason}, and CI=true forbids skipping: install it (see .ci/run)"
    );
    eprintln!("skipping interop check: {reason} (set CI=true to make this a failure)");
    None
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs `program` with `args` and returns its stdout, with a readable panic message on failure.
///
/// For test code only: a failing peer command is a failed test, and the message carries the
/// command line and the peer's stderr so the failure explains itself.
#[allow(
    clippy::panic,
    reason = "a failing peer command fails the calling test"
)]
pub fn run_ok<I, S>(program: &Path, args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()));
    if !output.status.success() {
        panic!(
            "{} {:?} failed with {}:\n{}",
            program.display(),
            args,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_every_machine_has() {
        let sh = find("sh").expect("sh is on every Unix PATH");
        assert!(sh.is_absolute());
        assert_eq!(run_ok(&sh, ["-c", "printf peer"]), b"peer");
    }

    #[test]
    fn a_missing_tool_is_not_found() {
        assert_eq!(find("surely-no-such-peer-tool-xyz"), None);
        assert_eq!(find("/nonexistent/dir/tool"), None);
    }

    #[test]
    fn a_missing_tool_skips_or_fails_by_policy() {
        let outcome = std::panic::catch_unwind(|| require("surely-no-such-peer-tool-xyz"));
        if is_ci() {
            assert!(
                outcome.is_err(),
                "CI=true must turn a missing peer into a failure"
            );
        } else {
            assert_eq!(outcome.ok().flatten(), None);
        }
    }

    #[test]
    fn python_module_lookup_uses_an_interpreter_that_imports_it() {
        // `sys` is built in: any python3 imports it, so this checks the lookup, not the install.
        if let Some(python) = find("python3") {
            assert!(python_can_import(&python, "sys"));
            assert!(!python_can_import(&python, "surely_no_such_module_xyz"));
        }
    }
}
