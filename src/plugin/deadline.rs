//! The deadline of one plugin call, counted in the CPU time the call uses.
//!
//! The epoch ticker measures wall-clock time, which also runs while the calling thread is
//! descheduled: on a busy machine that would cut off well-behaved plugins. So when the wall-clock
//! deadline passes, the call gets one more timeout's worth of ticks and the thread's CPU clock is
//! read; from then on the call is cut off once it has burnt `timeout` of CPU, or after
//! [`MAX_EXTENSIONS`] extensions whatever it used. A runaway plugin is stopped after about twice
//! its timeout; a preempted one is not stopped for being preempted.

use std::time::Duration;

use super::engine::EPOCH_TICK;

/// How many times a call's deadline may be pushed back before it is cut off regardless.
pub const MAX_EXTENSIONS: u32 = 8;

/// A call that overran its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin call overran its deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Epoch ticks covering `timeout`, plus one for the tick in progress.
pub fn ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
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
    cpu_at_first_deadline: Option<Duration>,
    extensions: u32,
}

impl CallBudget {
    /// A budget for calls limited to `timeout`.
    pub fn new(timeout: Duration) -> Self {
        CallBudget { timeout, cpu_at_first_deadline: None, extensions: 0 }
    }

    /// Starts a new call with the given timeout.
    pub fn start(&mut self, timeout: Duration) {
        *self = CallBudget::new(timeout);
    }

    /// Called when the wall-clock deadline passes, with the thread's CPU clock: `Some(ticks)` to
    /// extend the deadline, `None` to cut the call off.
    pub fn on_deadline(&mut self, cpu_now: Duration) -> Option<u64> {
        self.extensions += 1;
        if self.extensions > MAX_EXTENSIONS {
            return None;
        }
        match self.cpu_at_first_deadline {
            None => {
                self.cpu_at_first_deadline = Some(cpu_now);
                Some(ticks(self.timeout))
            }
            Some(first) => {
                let burnt = cpu_now.saturating_sub(first);
                (burnt < self.timeout).then(|| ticks(self.timeout - burnt))
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
        assert_eq!(b.on_deadline(100 * MS), Some(6));
        assert_eq!(b.on_deadline(102 * MS), Some(4));
        assert_eq!(b.on_deadline(105 * MS), None);
    }

    #[test]
    fn a_descheduled_call_is_extended_but_not_forever() {
        let mut b = CallBudget::new(5 * MS);
        let granted: Vec<_> = (0..20).map(|_| b.on_deadline(100 * MS)).collect();
        assert_eq!(granted.iter().filter(|g| g.is_some()).count(), MAX_EXTENSIONS as usize);
        assert!(granted[MAX_EXTENSIONS as usize].is_none());
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
