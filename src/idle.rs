//! What a polling loop does with a poll that found nothing to do
//! ([`Idle`]).

use std::io;
use std::time::Duration;

use crate::wait::Wait;

/// How a polling loop spends the polls that find nothing to do: spin
/// (the lowest latency, a whole core), yield the core to other threads,
/// back off (spin a while, then yield a while, then sleep for periods
/// that double from a minimum to a maximum, like Agrona's
/// `BackoffIdleStrategy`), or block: spin a while, then sleep until the
/// part has work ([`Wait`]). Any work starts the spinning again. Cheap to
/// clone; each loop keeps its own.
///
/// Every `poll` of the library returns whether it did work for the
/// application; `idle` takes that value (and [`idle_on`](Idle::idle_on)
/// the part too, which blocking needs):
///
/// ```no_run
/// # use tcpshm::*;
/// # struct Echo; impl GroupHandler for Echo { fn on_client_msg(&mut self, _: ConnId, m: Received<'_>, _: &mut ConnTx) { m.pop() } }
/// # fn now() -> i64 { 0 }
/// # let mut server: Server = Server::new("s", "/tmp/s", Config::default()).unwrap();
/// # let ServerParts { shm, .. } = server.parts();
/// # let group = &mut shm[0];
/// let mut idle = Idle::backoff();
/// loop {
///     let worked = group.poll(now(), &mut Echo);
///     idle.idle(worked);
/// }
/// ```
///
/// | strategy | idle CPU | latency after a quiet spell |
/// |---|---|---|
/// | [`busy`](Idle::busy) | a whole core | a poll |
/// | [`yielding`](Idle::yielding) | a whole core when the core is free, else what others leave | a poll, or a time slice |
/// | [`backoff`](Idle::backoff) | a few % once parked (measured: `docs/benchmarks.md`) | up to the longest park (1 ms by default) |
/// | [`block`](Idle::block) | nothing while asleep | a wake-up (tens of µs) |
///
/// A sleep asks the kernel for at least its period: Linux adds its timer
/// slack (50 µs by default) to short ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idle {
    kind: Kind,
    /// Idle polls in a row since the last work.
    idle_polls: u64,
    /// The next park's period (backoff).
    park: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Busy,
    Yield,
    Backoff {
        spins: u64,
        yields: u64,
        min_park: Duration,
        max_park: Duration,
    },
    Block {
        spins: u64,
        max_wait: Duration,
    },
}

/// What one idle poll does (for the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Spin,
    Yield,
    Park(Duration),
    /// Sleep until the part has work, at most this long.
    Wait(Duration),
}

impl Idle {
    /// Polls again at once: no pause, no yield, as the C++ library's
    /// loops. The lowest latency; the loop's core is never free (and an
    /// SMT sibling gets no `pause` hint: add `std::hint::spin_loop` in
    /// your loop if one shares the core).
    pub const fn busy() -> Idle {
        Idle::of(Kind::Busy)
    }

    /// Yields the core to any other runnable thread at every idle poll.
    pub const fn yielding() -> Idle {
        Idle::of(Kind::Yield)
    }

    /// Spins for 10,000 idle polls, yields for 100, then sleeps for 1 µs,
    /// 2 µs, ... up to 1 ms per idle poll until work comes. In a
    /// ping-pong (a reply within microseconds) it stays in the spins and
    /// costs what `busy` does; idle, it parks about a thousand times a
    /// second.
    pub const fn backoff() -> Idle {
        Idle::backoff_with(
            10_000,
            100,
            Duration::from_micros(1),
            Duration::from_millis(1),
        )
    }

    /// [`backoff`](Idle::backoff) with its counts and periods: `spins`
    /// idle polls spinning, then `yields` yielding, then sleeps from
    /// `min_park`, doubling, to `max_park` (a `min_park` above `max_park`
    /// is taken as `max_park`; a zero `min_park` as 1 ns).
    pub const fn backoff_with(
        spins: u64,
        yields: u64,
        min_park: Duration,
        max_park: Duration,
    ) -> Idle {
        let min_park = if min_park.is_zero() {
            Duration::from_nanos(1)
        } else {
            min_park
        };
        let min_park = if min_park.as_nanos() > max_park.as_nanos() {
            max_park
        } else {
            min_park
        };
        Idle::of(Kind::Backoff {
            spins,
            yields,
            min_park,
            max_park,
        })
    }

    /// Spins for 10,000 idle polls, then sleeps until the part has work
    /// or its next timer, at most 100 ms at a time (the loop sees its own
    /// flags that often): use [`idle_on`](Idle::idle_on), which has the
    /// part. In a ping-pong it stays in the spins; idle, the thread costs
    /// nothing.
    pub const fn block() -> Idle {
        Idle::block_with(10_000, Duration::from_millis(100))
    }

    /// [`block`](Idle::block) with its counts: `spins` idle polls
    /// spinning, then waits of at most `max_wait`.
    pub const fn block_with(spins: u64, max_wait: Duration) -> Idle {
        Idle::of(Kind::Block { spins, max_wait })
    }

    const fn of(kind: Kind) -> Idle {
        let park = match kind {
            Kind::Backoff { min_park, .. } => min_park,
            _ => Duration::ZERO,
        };
        Idle {
            kind,
            idle_polls: 0,
            park,
        }
    }

    /// After a poll: `worked` is what the poll returned. Work starts the
    /// spinning again; no work spins, yields or sleeps, as the strategy
    /// says. Returns whether it gave the CPU up (yielded or slept): a loop
    /// that reads its clock only now and then should read it again.
    #[inline]
    pub fn idle(&mut self, worked: bool) -> bool {
        if worked {
            self.reset();
            return false;
        }
        match self.step() {
            Step::Spin => return false,
            Step::Yield => std::thread::yield_now(),
            Step::Park(d) => std::thread::sleep(d),
            // Without the part, a blocking strategy parks as backoff's
            // longest: use `idle_on`.
            Step::Wait(d) => std::thread::sleep(d.min(Duration::from_millis(1))),
        }
        true
    }

    /// After a poll of `part` at `now`: as [`idle`](Idle::idle), and a
    /// blocking strategy sleeps in [`Wait::wait`] when its spins are
    /// over. Returns whether it gave the CPU up.
    ///
    /// # Errors
    /// The wait's (the system's).
    #[inline]
    pub fn idle_on<W: Wait + ?Sized>(
        &mut self,
        part: &mut W,
        now: i64,
        worked: bool,
    ) -> io::Result<bool> {
        self.idle_within(part, now, worked, Duration::MAX)
    }

    /// [`idle_on`](Idle::idle_on) for a loop with a timer of its own:
    /// no sleep or park lasts longer than `within`. Returns whether it
    /// gave the CPU up.
    ///
    /// # Errors
    /// The wait's (the system's).
    #[inline]
    pub fn idle_within<W: Wait + ?Sized>(
        &mut self,
        part: &mut W,
        now: i64,
        worked: bool,
        within: Duration,
    ) -> io::Result<bool> {
        if worked {
            self.reset();
            return Ok(false);
        }
        match self.step() {
            Step::Spin => return Ok(false),
            Step::Yield => std::thread::yield_now(),
            Step::Park(d) => std::thread::sleep(d.min(within)),
            Step::Wait(d) => part.wait(now, d.min(within))?,
        }
        Ok(true)
    }

    /// Starts over, as after work (for a loop that learns of work some
    /// other way).
    #[inline]
    pub fn reset(&mut self) {
        self.idle_polls = 0;
        if let Kind::Backoff { min_park, .. } = self.kind {
            self.park = min_park;
        }
    }

    /// What this idle poll does, and the state moved on.
    #[inline]
    fn step(&mut self) -> Step {
        let n = self.idle_polls;
        self.idle_polls = n.saturating_add(1);
        match self.kind {
            Kind::Busy => Step::Spin,
            Kind::Yield => Step::Yield,
            Kind::Backoff {
                spins,
                yields,
                max_park,
                ..
            } => {
                if n < spins {
                    Step::Spin
                } else if n - spins < yields {
                    Step::Yield
                } else {
                    let d = self.park;
                    self.park = d.saturating_mul(2).min(max_park);
                    Step::Park(d)
                }
            }
            Kind::Block { spins, max_wait } => {
                if n < spins {
                    Step::Spin
                } else {
                    Step::Wait(max_wait)
                }
            }
        }
    }
}

impl Default for Idle {
    /// [`Idle::busy`]: what a polling loop did before it had a choice.
    fn default() -> Idle {
        Idle::busy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(i: &mut Idle, n: usize) -> Vec<Step> {
        (0..n).map(|_| i.step()).collect()
    }

    #[test]
    fn backoff_spins_then_yields_then_parks_doubling_to_the_maximum() {
        let us = Duration::from_micros;
        let mut i = Idle::backoff_with(2, 1, us(1), us(5));
        assert_eq!(
            steps(&mut i, 7),
            [
                Step::Spin,
                Step::Spin,
                Step::Yield,
                Step::Park(us(1)),
                Step::Park(us(2)),
                Step::Park(us(4)),
                Step::Park(us(5)),
            ]
        );
        assert_eq!(i.step(), Step::Park(us(5)), "stays at the maximum");
    }

    #[test]
    fn work_starts_the_spinning_again() {
        let us = Duration::from_micros;
        let mut i = Idle::backoff_with(1, 1, us(3), us(100));
        steps(&mut i, 5);
        i.idle(true);
        assert_eq!(
            steps(&mut i, 3),
            [Step::Spin, Step::Yield, Step::Park(us(3))]
        );
    }

    #[test]
    fn periods_out_of_order_are_taken_sensibly() {
        let i = Idle::backoff_with(0, 0, Duration::from_secs(9), Duration::from_millis(2));
        assert_eq!(i.clone().step(), Step::Park(Duration::from_millis(2)));
        let mut z = Idle::backoff_with(0, 0, Duration::ZERO, Duration::from_nanos(4));
        assert_eq!(
            steps(&mut z, 4),
            [1, 2, 4, 4].map(|n| Step::Park(Duration::from_nanos(n)))
        );
    }

    #[test]
    fn busy_and_yield_never_sleep() {
        assert!(steps(&mut Idle::busy(), 100_000)
            .iter()
            .all(|s| *s == Step::Spin));
        assert!(steps(&mut Idle::yielding(), 1000)
            .iter()
            .all(|s| *s == Step::Yield));
        assert_eq!(Idle::default(), Idle::busy());
    }

    #[test]
    fn block_spins_then_waits() {
        let mut i = Idle::block_with(2, Duration::from_millis(7));
        let w = Step::Wait(Duration::from_millis(7));
        assert_eq!(steps(&mut i, 4), [Step::Spin, Step::Spin, w, w]);
        i.reset();
        assert_eq!(i.step(), Step::Spin);
    }

    #[test]
    fn backoff_parks_for_real() {
        let mut i = Idle::backoff_with(0, 0, Duration::from_millis(2), Duration::from_millis(2));
        let t = std::time::Instant::now();
        i.idle(false);
        assert!(t.elapsed() >= Duration::from_millis(2));
    }
}
