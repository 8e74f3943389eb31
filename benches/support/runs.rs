//! What the in-process benches (`sink`, `ship`) share: their command line, their own CPU time,
//! and the spread of their runs.

/// The arguments after the program name, and whether `--bench` is among them (timings are
/// reported only then; under `cargo test` a bench runs a quick functional pass).
pub fn args() -> (Vec<String>, bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    (args, bench)
}

/// The number after `name` in `args`, or `default`.
pub fn value(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU seconds of this process so far (`/proc/self/stat`, in the kernel's
/// USER_HZ ticks, 100 a second on Linux).
pub fn own_cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        / 100.0
}

/// The lowest, median and highest of `runs` by `key`.
pub fn spread<T>(runs: &mut [T], key: impl Fn(&T) -> f64) -> (&T, &T, &T) {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    (&runs[0], &runs[runs.len() / 2], &runs[runs.len() - 1])
}
