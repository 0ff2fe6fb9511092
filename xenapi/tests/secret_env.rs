//! `Secret::from_env` with the variable set. Edition 2024 makes `std::env::set_var` unsafe and
//! the workspace forbids unsafe code, so the test re-runs itself as a child process whose
//! environment carries the variable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::process::Command;

use xenapi::Secret;

const CHILD_MARKER: &str = "XENAPI_TEST_SECRET_ENV_CHILD";
const VARIABLE: &str = "XENAPI_TEST_SECRET_ENV";

#[test]
fn from_env_reads_a_set_variable_and_hides_it() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        let secret = Secret::from_env(VARIABLE).unwrap();
        assert_eq!(secret.expose(), "p@ss from env");
        assert!(!format!("{secret:?}").contains("p@ss"));
        println!("child checked the secret");
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "from_env_reads_a_set_variable_and_hides_it",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARKER, "1")
        .env(VARIABLE, "p@ss from env")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed:\n{stdout}");
    // The child really ran the check (not zero tests after filtering).
    assert!(stdout.contains("child checked the secret"), "{stdout}");
}
