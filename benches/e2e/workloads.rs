//! The load runs: each workload's load generator arguments, and the run near saturation.

/// One kind of load run.
pub(super) struct Workload {
    pub(super) key: &'static str,
    /// Load generator arguments, split at spaces.
    pub(super) args: &'static str,
    /// A fixed rate (the `--rate` option) instead of flat out.
    pub(super) fixed_rate: bool,
    /// Verify certificates (only where the client's CPU does not matter).
    pub(super) verify: bool,
}

pub(super) const WORKLOADS: &[Workload] = &[
    Workload {
        key: "new-x25519",
        args: "--mode new-conn --http 1.1 --kx x25519 -c 128 --reuse-key-shares",
        fixed_rate: false,
        verify: false,
    },
    Workload {
        key: "new-pq",
        args: "--mode new-conn --http 1.1 --kx x25519mlkem768 -c 128 --reuse-key-shares",
        fixed_rate: false,
        verify: false,
    },
    Workload {
        key: "new-rate",
        args: "--mode new-conn --http 1.1 --kx x25519 -c 64",
        fixed_rate: true,
        verify: true,
    },
    Workload {
        key: "ka-h1",
        args: "--mode keep-alive --http 1.1 --kx x25519 -c 256",
        fixed_rate: false,
        verify: false,
    },
    Workload {
        key: "ka-h2",
        args: "--mode keep-alive --http 2 --kx x25519 -c 256 --connections 8",
        fixed_rate: false,
        verify: false,
    },
];

/// The latency run near saturation (`--near-saturation`): its rate is set per server after the
/// rounds, so it is not in [`WORKLOADS`].
pub(super) const NEAR_SATURATION: Workload = Workload {
    key: "new-near-sat",
    args: "--mode new-conn --http 1.1 --kx x25519 -c 128 --reuse-key-shares",
    fixed_rate: true,
    verify: false,
};
