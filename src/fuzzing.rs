//! Tests only: how long every fuzz property (proptest) runs, shared by the
//! node's, the gateway's and the registry's, so that one variable
//! (`PROPTEST_CASES`) sets them all.

use proptest::test_runner::Config;

/// Cases a property runs by default: enough to catch a missing check on every
/// run, few enough that every fuzz property together stays within seconds in
/// a debug build.
const CASES: u32 = 256;

/// The configuration of every fuzz property: [`CASES`] cases, or
/// `PROPTEST_CASES` when it is set.
pub(crate) fn config() -> Config {
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => Config::default().cases,
        None => CASES,
    };
    Config {
        cases,
        ..Config::default()
    }
}
