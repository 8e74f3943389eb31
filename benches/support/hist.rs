//! A log-linear latency histogram in the manner of HdrHistogram: exact below 256 ns, then 128
//! sub-buckets per power of two (under 0.4% relative error at the bucket middle), fixed memory
//! (about 60 KiB), mergeable. Values are nanoseconds.
//!
//! It exists so the load generator needs no extra dependency; it does not do HdrHistogram's
//! coordinated-omission correction: the load generator avoids the omission instead, by measuring
//! from each request's intended send time.

use std::time::Duration;

/// Sub-bucket bits: 2^7 = 128 sub-buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Buckets needed to cover every `u64`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Counts of nanosecond values.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    min: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            min: u64::MAX,
            sum: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 * 2 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    ((shift as usize + 1) << SUB_BITS) + (v >> shift) as usize - SUB
}

/// The middle of the values that land in bucket `i`.
fn middle(i: usize) -> u64 {
    if i < SUB * 2 {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let low = ((i & (SUB - 1)) as u64 + SUB as u64) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.min = self.min.min(other.min);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1); zero when empty. The maximum is exact.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        if q >= 1.0 {
            return Duration::from_nanos(self.max);
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(middle(i).clamp(self.min, self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// The mean; zero when empty.
    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum / u128::from(self.total)) as u64)
    }
}
