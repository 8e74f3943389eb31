//! For tests that must bind every address (`[::]`, `0.0.0.0`): each runs in a network namespace
//! of its own holding only a loopback interface, so nothing it binds is reachable from outside
//! the machine. The test re-runs itself there, in a child process (`unshare` from util-linux,
//! `ip` from iproute2), and asserts the child's result.

use std::process::Command;

/// Set in the child that runs inside the namespace.
const INSIDE: &str = "CLICKEDGE_TEST_IN_NETNS";

/// True in the test's run inside its own network namespace: the caller runs its body. False
/// once the test has run there in a child process and passed (a failure there fails the
/// caller): the caller returns. `test` is the test's name as the harness filters it, e.g.
/// `app::bind::tests::a_wildcard_listener` in the library, the function's name in an
/// integration test.
pub fn entered(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["--net", "--map-root-user", "sh", "-c"])
        .arg("ip link set lo up && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args([test, "--exact", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap_or_else(|e| panic!("running unshare (Debian package util-linux): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test} in a network namespace of its own (unshare from util-linux, ip from iproute2):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test} did not run in its namespace:\n{stdout}"
    );
    false
}
