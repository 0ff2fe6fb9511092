//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/xapi_sim_*.rs`) and the corpus
//! replay tests, so both run exactly the same code.

/// Feeds untrusted bytes to every parser of the transfer handlers and the NBD server: URL query,
/// `Cookie` and `Authorization` parsing, NBD export names and request headers, and the
/// `format=tar` chunk reader. Returns how many of them accepted the input (for tests).
pub fn transfer_inputs(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let mut accepted = 0;
    accepted += usize::from(crate::http::parse_query(&text).is_ok());
    accepted += usize::from(crate::http::parse_cookies(&text).is_ok());
    accepted += usize::from(matches!(
        crate::http::parse_authorization(data),
        crate::http::Authorization::Basic { .. }
    ));
    accepted += usize::from(crate::nbd::policy::parse_export_name(data).is_some());
    if let Some(header) = data.first_chunk::<28>() {
        accepted += usize::from(crate::nbd::policy::request_action(header).is_some());
    }
    accepted += usize::from(crate::http::tar_chunks::read_all(data).is_ok());
    accepted
}
