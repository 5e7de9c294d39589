//! The deadline of one plugin call, counted in the CPU time the call uses.
//!
//! A ticker thread advances the engine's epoch every [`EpochTicker::tick`]. Every call starts
//! with a deadline of the next tick, and almost every call is over long before it (calls take
//! microseconds, ticks are milliseconds apart). A call still running at a tick is looked at, and
//! again at every later tick: the first time, the thread's CPU clock is read; from then on the
//! call is cut off once it has burnt its `timeout` of CPU, or once it has been running for
//! [`WALL_CLOCK_ALLOWANCE`] times its timeout whatever it used. Counting CPU rather than
//! wall-clock time means a call whose thread was descheduled on a busy machine is not cut off
//! for it. A runaway plugin is stopped between one and two ticks after its timeout (the tick is
//! no longer than the shortest timeout).
//!
//! Why ticks of milliseconds and not finer, and why the ticker sleeps when no plugin runs: every
//! tick wakes a thread, and on a machine whose cores are all busy serving requests each wake-up
//! preempts one of them. At one tick per millisecond that cost about 3 µs of CPU per request in
//! the load comparison. So the ticker parks after [`PARK_AFTER`] without a call (traffic whose
//! decisions all come from memos makes none), and the next call wakes it. The handshake is a
//! pair of flags: a call raises `busy` and then looks at `parked`; the ticker raises `parked`
//! and then looks at `busy`; with sequentially consistent accesses at least one of the two sees
//! the other, so a call never runs without ticks coming.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// A call is cut off after running this many times its timeout (in wall-clock ticks), however
/// little CPU it used.
pub const WALL_CLOCK_ALLOWANCE: u64 = 9;

/// How long the ticker goes on ticking after the last call before it parks.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

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

/// The epoch ticker's shared state: its period, shared by the ticker thread and every store's
/// deadline callback, and the flags by which calls keep it awake. The period only ever shortens:
/// it follows the shortest plugin timeout loaded so far.
#[derive(Debug, Clone)]
pub struct EpochTicker(Arc<TickerState>);

#[derive(Debug)]
struct TickerState {
    period_nanos: AtomicU64,
    /// A call started, or a running call was looked at, since the ticker last checked.
    busy: AtomicBool,
    /// The ticker is parked (or about to park) until a call wakes it.
    parked: AtomicBool,
    /// The ticker thread, once started.
    thread: OnceLock<Thread>,
}

impl Default for EpochTicker {
    fn default() -> Self {
        EpochTicker(Arc::new(TickerState {
            period_nanos: AtomicU64::new(MAX_EPOCH_TICK.as_nanos() as u64),
            busy: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        }))
    }
}

impl EpochTicker {
    /// The current period.
    pub fn tick(&self) -> Duration {
        Duration::from_nanos(self.0.period_nanos.load(Relaxed))
    }

    /// Makes ticks frequent enough for a plugin whose calls are limited to `timeout`.
    pub fn allow_for(&self, timeout: Duration) {
        let wanted = timeout.clamp(MIN_EPOCH_TICK, MAX_EPOCH_TICK);
        self.0.period_nanos.fetch_min(wanted.as_nanos() as u64, Relaxed);
    }

    /// Keeps ticks coming: called as a call starts and whenever a tick finds one running. Costs
    /// one relaxed load when the ticker already knows.
    pub fn keep_ticking(&self) {
        let state = &self.0;
        if state.busy.load(Relaxed) {
            return;
        }
        state.busy.store(true, SeqCst);
        if state.parked.load(SeqCst)
            && state.parked.swap(false, SeqCst)
            && let Some(thread) = state.thread.get()
        {
            thread.unpark();
        }
    }

    /// The ticker thread's loop: sleeps a tick, calls `advance`, and parks after [`PARK_AFTER`]
    /// without a call, until `stop` is raised (and the thread unparked).
    pub fn run(&self, stop: &AtomicBool, mut advance: impl FnMut()) {
        let state = &self.0;
        let _ = state.thread.set(std::thread::current());
        let mut idle = Duration::ZERO;
        while !stop.load(Relaxed) {
            let tick = self.tick();
            std::thread::sleep(tick);
            advance();
            if state.busy.swap(false, SeqCst) {
                idle = Duration::ZERO;
                continue;
            }
            idle += tick;
            if idle < PARK_AFTER {
                continue;
            }
            state.parked.store(true, SeqCst);
            if state.busy.load(SeqCst) {
                // A call started in between and may not have seen `parked`.
                state.parked.store(false, SeqCst);
            }
            while state.parked.load(SeqCst) && !stop.load(Relaxed) {
                std::thread::park();
            }
            idle = Duration::ZERO;
        }
    }

    /// Whether the ticker is parked.
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.0.parked.load(SeqCst)
    }

    /// Wakes the ticker so that it sees `stop` (raised by the caller).
    pub fn wake_to_stop(&self) {
        self.0.parked.store(false, SeqCst);
        if let Some(thread) = self.0.thread.get() {
            thread.unpark();
        }
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
    ticks_seen: u64,
}

impl CallBudget {
    /// A budget for calls limited to `timeout`.
    pub fn new(timeout: Duration) -> Self {
        CallBudget { timeout, cpu_at_first_tick: None, ticks_seen: 0 }
    }

    /// Starts a new call with the given timeout; its first deadline is the next tick.
    pub fn start(&mut self, timeout: Duration) {
        *self = CallBudget::new(timeout);
    }

    /// Called at every tick that finds the call still running, with the thread's CPU clock and
    /// the tick's period: `true` to let it run to the next tick, `false` to cut it off.
    pub fn on_tick(&mut self, cpu_now: Duration, tick: Duration) -> bool {
        self.ticks_seen += 1;
        match self.cpu_at_first_tick {
            None => {
                // The call started at most one tick ago: count its CPU from here.
                self.cpu_at_first_tick = Some(cpu_now);
                true
            }
            Some(first) => {
                cpu_now.saturating_sub(first) < self.timeout
                    && self.ticks_seen <= ticks(self.timeout, tick) * WALL_CLOCK_ALLOWANCE
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
        assert!(b.on_tick(100 * MS, MS), "the first tick starts the CPU count");
        assert!(b.on_tick(102 * MS, MS));
        assert!(b.on_tick(104 * MS, MS));
        assert!(!b.on_tick(105 * MS, MS));
    }

    #[test]
    fn with_ticks_as_long_as_the_timeout_a_busy_call_stops_at_the_second_look() {
        let mut b = CallBudget::new(5 * MS);
        assert!(b.on_tick(Duration::ZERO, 5 * MS));
        assert!(!b.on_tick(5 * MS, 5 * MS));
    }

    #[test]
    fn a_descheduled_call_is_let_run_but_not_forever() {
        let mut b = CallBudget::new(5 * MS);
        let granted = (0..100).take_while(|_| b.on_tick(100 * MS, MS)).count() as u64;
        assert_eq!(granted, 5 * WALL_CLOCK_ALLOWANCE, "{WALL_CLOCK_ALLOWANCE} timeouts of 1 ms ticks");
    }

    #[test]
    fn the_ticker_parks_without_calls_and_a_call_wakes_it() {
        let ticker = EpochTicker::default();
        ticker.allow_for(MS);
        let stop = Arc::new(AtomicBool::new(false));
        let advanced = Arc::new(AtomicU64::new(0));
        let thread = {
            let (ticker, stop, advanced) = (ticker.clone(), stop.clone(), advanced.clone());
            std::thread::spawn(move || {
                ticker.run(&stop, || {
                    advanced.fetch_add(1, SeqCst);
                })
            })
        };
        let wait_until = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
                std::thread::sleep(MS);
            }
        };
        wait_until("the idle ticker parks", &|| ticker.is_parked());
        let parked_at = advanced.load(SeqCst);
        std::thread::sleep(20 * MS);
        assert_eq!(advanced.load(SeqCst), parked_at, "a parked ticker does not tick");

        ticker.keep_ticking();
        assert!(!ticker.is_parked());
        wait_until("the woken ticker ticks", &|| advanced.load(SeqCst) >= parked_at + 3);
        wait_until("it parks again", &|| ticker.is_parked());

        stop.store(true, SeqCst);
        ticker.wake_to_stop();
        thread.join().unwrap_or_else(|_| panic!("the ticker thread panicked"));
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
