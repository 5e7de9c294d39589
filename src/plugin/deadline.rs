//! The deadline of one plugin call, counted in the CPU time the call uses.
//!
//! A ticker thread advances the engine's epoch every [`EpochTicker::tick`]. Every call starts
//! with a deadline of the next tick, and almost every call is over long before it (calls take
//! microseconds, ticks are milliseconds apart). A call still running at a tick is looked at: the
//! first time, the thread's CPU clock is read; from then on the call is cut off once it has burnt
//! its `timeout` of CPU (checked at ticks), or after [`MAX_EXTENSIONS`] ticks-worth of extensions
//! whatever it used. Counting CPU rather than wall-clock time means a call whose thread was
//! descheduled on a busy machine is not cut off for it. A runaway plugin is stopped between one
//! and three ticks after its timeout (the tick is no longer than the shortest timeout, so at
//! most about three times the timeout).
//!
//! Why ticks of milliseconds and not finer: every tick wakes a thread, and on a machine whose
//! cores are all busy serving requests each wake-up preempts one of them. At one tick per
//! millisecond that cost about 3 µs of CPU per request in the load comparison.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How many times a call's deadline may be pushed back before it is cut off regardless.
pub const MAX_EXTENSIONS: u32 = 8;

/// The longest tick: the ticker wakes at least this often.
pub const MAX_EPOCH_TICK: Duration = Duration::from_millis(5);

/// The shortest tick, used for plugins with deadlines shorter than it.
pub const MIN_EPOCH_TICK: Duration = Duration::from_millis(1);

/// A call that overran its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin call overran its deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The period of the epoch ticker, shared by the ticker thread and every store's deadline
/// callback. It only ever shortens: it follows the shortest plugin timeout loaded so far.
#[derive(Debug, Clone)]
pub struct EpochTicker(Arc<AtomicU64>);

impl Default for EpochTicker {
    fn default() -> Self {
        EpochTicker(Arc::new(AtomicU64::new(MAX_EPOCH_TICK.as_nanos() as u64)))
    }
}

impl EpochTicker {
    /// The current period.
    pub fn tick(&self) -> Duration {
        Duration::from_nanos(self.0.load(Relaxed))
    }

    /// Makes ticks frequent enough for a plugin whose calls are limited to `timeout`.
    pub fn allow_for(&self, timeout: Duration) {
        let wanted = timeout.clamp(MIN_EPOCH_TICK, MAX_EPOCH_TICK);
        self.0.fetch_min(wanted.as_nanos() as u64, Relaxed);
    }
}

/// How many ticks of `tick` cover `duration` (at least one).
pub fn ticks(duration: Duration, tick: Duration) -> u64 {
    (duration.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64).max(1)
}

/// The CPU time the current thread has used.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The budget of the call in progress.
#[derive(Debug, Clone, Copy)]
pub struct CallBudget {
    timeout: Duration,
    cpu_at_first_tick: Option<Duration>,
    extensions: u32,
}

impl CallBudget {
    /// A budget for calls limited to `timeout`.
    pub fn new(timeout: Duration) -> Self {
        CallBudget { timeout, cpu_at_first_tick: None, extensions: 0 }
    }

    /// Starts a new call with the given timeout; its first deadline is the next tick.
    pub fn start(&mut self, timeout: Duration) {
        *self = CallBudget::new(timeout);
    }

    /// Called when a tick finds the call still running, with the thread's CPU clock and the
    /// tick's period: `Some(ticks)` to let it run that many more ticks, `None` to cut it off.
    pub fn on_tick(&mut self, cpu_now: Duration, tick: Duration) -> Option<u64> {
        match self.cpu_at_first_tick {
            None => {
                // The call started at most one tick ago: count its CPU from here.
                self.cpu_at_first_tick = Some(cpu_now);
                Some(ticks(self.timeout, tick))
            }
            Some(first) => {
                self.extensions += 1;
                if self.extensions > MAX_EXTENSIONS {
                    return None;
                }
                let burnt = cpu_now.saturating_sub(first);
                (burnt < self.timeout).then(|| ticks(self.timeout - burnt, tick))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_busy_call_is_cut_off_after_its_cpu_budget() {
        let mut b = CallBudget::new(5 * MS);
        assert_eq!(b.on_tick(100 * MS, MS), Some(5), "the first tick starts the CPU count");
        assert_eq!(b.on_tick(102 * MS, MS), Some(3));
        assert_eq!(b.on_tick(105 * MS, MS), None);
    }

    #[test]
    fn with_ticks_as_long_as_the_timeout_a_busy_call_stops_at_the_second_look() {
        let mut b = CallBudget::new(5 * MS);
        assert_eq!(b.on_tick(Duration::ZERO, 5 * MS), Some(1));
        assert_eq!(b.on_tick(5 * MS, 5 * MS), None);
    }

    #[test]
    fn a_descheduled_call_is_extended_but_not_forever() {
        let mut b = CallBudget::new(5 * MS);
        let granted: Vec<_> = (0..20).map(|_| b.on_tick(100 * MS, MS)).collect();
        assert_eq!(granted.iter().filter(|g| g.is_some()).count(), MAX_EXTENSIONS as usize + 1);
        assert!(granted[MAX_EXTENSIONS as usize + 1].is_none());
    }

    #[test]
    fn the_tick_follows_the_shortest_timeout_within_bounds() {
        let ticker = EpochTicker::default();
        assert_eq!(ticker.tick(), MAX_EPOCH_TICK);
        ticker.allow_for(Duration::from_secs(1));
        assert_eq!(ticker.tick(), MAX_EPOCH_TICK);
        ticker.allow_for(2 * MS);
        assert_eq!(ticker.tick(), 2 * MS);
        ticker.allow_for(Duration::from_micros(100));
        assert_eq!(ticker.tick(), MIN_EPOCH_TICK);
        ticker.allow_for(3 * MS);
        assert_eq!(ticker.tick(), MIN_EPOCH_TICK, "it never lengthens");
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(5 * MS, 5 * MS), 1);
        assert_eq!(ticks(6 * MS, 5 * MS), 2);
        assert_eq!(ticks(Duration::ZERO, 5 * MS), 1);
    }

    #[test]
    fn the_thread_cpu_clock_advances_with_work() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(thread_cpu_time() > before, "{x}");
    }
}
