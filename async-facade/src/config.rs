//! [`Builder`]: every setting of a [`ConnectionManager`], validated.

use std::fmt;
use std::time::Duration;

use connmgr_pool::PoolConfig;

use crate::dialer::{Dialer, NoTransport};
use crate::limits::Limits;
use crate::{ConnectionManager, Error};

/// Settings of a manager, as validated by [`Builder::build`]. The limits
/// here are those of the build; [`set_limits`](ConnectionManager::set_limits)
/// changes the limits in force, which
/// [`limits`](ConnectionManager::limits) reads.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Most connections connecting or connected at once, either direction.
    pub max_connections: usize,
    /// Most established inbound connections (made live by `adopt`).
    pub max_inbound: usize,
    /// Most outbound connections, connecting or connected (made live by
    /// `connect`).
    pub max_outbound: usize,
    /// Most dials in flight.
    pub max_pending_dials: usize,
    /// Most connections the manager holds open at once: live, leased,
    /// idle and being dialed (at least `max_connections`). A new
    /// connection that finds it full closes the oldest idle one; idle
    /// connections never cause a refusal.
    pub max_sockets: usize,
    /// `(low, high)`: when more than `high` unprotected peers are
    /// Connected, trimming closes connections down to `low`. `None` (the
    /// default): no trimming.
    pub watermarks: Option<(usize, usize)>,
    /// How long a new live connection is exempt from trimming.
    pub grace_period: Duration,
    /// How long a disconnected peer's connection stays idle in the pool.
    pub pool_timeout: Duration,
    /// How long a dial may take.
    pub dial_timeout: Duration,
    /// How long `connect` waits, in a FIFO queue, for a free slot when
    /// `max_connections` or `max_outbound` is full. Zero (the default):
    /// it fails at once.
    pub wait_for_slot: Duration,
    /// The longest a connection is kept from when it was made (dialed or
    /// adopted): an older one is closed instead of pooled, or of being
    /// reused from the pool. `None` (the default): no limit.
    pub max_lifetime: Option<Duration>,
    /// `(initial, max)` of the per-peer dial backoff: after a peer's dials
    /// failed `n` times in a row, `connect` refuses to dial it again
    /// ([`Error::BackingOff`]) for a delay drawn from `[d / 2, d]`, where
    /// `d = min(initial * 2^(n - 1), max)`. `None`: off. Default 1 s ..
    /// 5 min.
    pub dial_backoff: Option<(Duration, Duration)>,
    /// Most idle connections kept per peer (1 to 2^30).
    pub max_idle_per_peer: usize,
    /// Most idle connections kept in all (`max_idle_per_peer` to 2^30).
    pub max_idle_total: usize,
    /// Window of `messages_per_second` and `avg_latency`. The window is
    /// cut at the metrics snapshots (each `get_metrics` or `snapshot` call
    /// takes one), so when they are further apart than this, the figures
    /// cover the time since the previous one instead; `Snapshot::window`
    /// has the exact span.
    pub metrics_window: Duration,
    /// Capacity of the status event broadcast (slow subscribers lag); 1 to
    /// [`MAX_EVENT_CAPACITY`](Self::MAX_EVENT_CAPACITY). Its ring is
    /// allocated up front, rounded up to a power of two.
    pub event_capacity: usize,
    /// Disconnected or failed peers with nothing pooled are forgotten
    /// (removed from the status table) this long after their last change;
    /// at least [`MIN_FORGET_AFTER`](Self::MIN_FORGET_AFTER). The sweep
    /// that finds them walks every tracked peer, at most once per
    /// `forget_after` (60 s at most), and waits at least 20 times its own
    /// cost before the next, so it never takes more than 1/20 of a core.
    /// It runs whole on the reaper's task: while it walks, that worker
    /// thread runs nothing else (on a current-thread runtime, no other
    /// task), for a time proportional to the tracked peers.
    /// Measured on real (monotonic) time, the clock of the status table's
    /// change stamps, not on tokio's: under tokio's paused test time it
    /// does not advance, unlike the pool's TTL.
    pub forget_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 100,
            max_inbound: 100,
            max_outbound: 100,
            max_pending_dials: 100,
            max_sockets: 200,
            watermarks: None,
            grace_period: Duration::from_secs(30),
            pool_timeout: Duration::from_secs(300),
            dial_timeout: Duration::from_secs(10),
            wait_for_slot: Duration::ZERO,
            max_lifetime: None,
            dial_backoff: Some((Duration::from_secs(1), Duration::from_secs(300))),
            max_idle_per_peer: 1,
            max_idle_total: 65_536,
            metrics_window: Duration::from_secs(10),
            event_capacity: 1024,
            forget_after: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// Largest accepted `event_capacity` (2^20 events, about 100 MB of
    /// ring): the broadcast allocates its whole ring when the manager is
    /// built.
    pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

    /// Shortest accepted `forget_after` (1 s). The forget sweep walks
    /// every tracked peer, and runs at most once per `forget_after` (and
    /// waits 20 times its own cost between runs), so a shorter setting
    /// would only spend CPU on sweeps that find what the next would.
    pub const MIN_FORGET_AFTER: Duration = Duration::from_secs(1);

    fn validate(&self) -> Result<(), Error> {
        Limits::of(self).validate()?;
        let max_idle = PoolConfig::MAX_CAP;
        let (backoff_initial, backoff_max) = self.dial_backoff.unwrap_or_default();
        let checks: [(bool, &'static str, &'static str); 11] = [
            (
                backoff_initial <= backoff_max,
                "dial_backoff",
                "initial at most max",
            ),
            (
                !self.pool_timeout.is_zero(),
                "pool_timeout",
                "longer than zero",
            ),
            (
                self.max_lifetime.is_none_or(|d| !d.is_zero()),
                "max_lifetime",
                "longer than zero",
            ),
            (
                !self.dial_timeout.is_zero(),
                "dial_timeout",
                "longer than zero",
            ),
            (
                self.max_idle_per_peer > 0,
                "max_idle_per_peer",
                "at least 1",
            ),
            (
                self.max_idle_per_peer <= max_idle,
                "max_idle_per_peer",
                "at most 2^30",
            ),
            (
                self.max_idle_total >= self.max_idle_per_peer,
                "max_idle_total",
                "at least max_idle_per_peer",
            ),
            (
                self.max_idle_total <= max_idle,
                "max_idle_total",
                "at most 2^30",
            ),
            (
                !self.metrics_window.is_zero(),
                "metrics_window",
                "longer than zero",
            ),
            (
                (1..=Self::MAX_EVENT_CAPACITY).contains(&self.event_capacity),
                "event_capacity",
                "from 1 to 2^20",
            ),
            (
                self.forget_after >= Self::MIN_FORGET_AFTER,
                "forget_after",
                "at least 1 s",
            ),
        ];
        match checks.iter().find(|(ok, _, _)| !ok) {
            Some(&(_, setting, expected)) => Err(Error::InvalidConfig { setting, expected }),
            None => Ok(()),
        }
    }
}

/// Builds a [`ConnectionManager`]: `ConnectionManager::builder()`.
///
/// ```
/// use connmgr::ConnectionManager;
/// use std::time::Duration;
///
/// let manager = ConnectionManager::builder()
///     .max_connections(500)
///     .pool_timeout(Duration::from_secs(60))
///     .dial_timeout(Duration::from_secs(3))
///     .build()
///     .unwrap();
/// # drop(manager);
/// let err = ConnectionManager::builder().max_connections(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `max_connections`: it must be at least 1");
/// ```
pub struct Builder<D = NoTransport> {
    config: Config,
    /// The limits by kind set so far; unset ones follow `max_connections`
    /// (`max_sockets`: twice it).
    kinds: Kinds,
    dialer: D,
}

/// The limits by kind a [`Builder`] was given.
#[derive(Clone, Copy, Debug, Default)]
struct Kinds {
    inbound: Option<usize>,
    outbound: Option<usize>,
    pending_dials: Option<usize>,
    sockets: Option<usize>,
}

impl Builder<NoTransport> {
    pub(crate) fn new() -> Self {
        Self {
            config: Config::default(),
            kinds: Kinds::default(),
            dialer: NoTransport,
        }
    }
}

impl<D: Dialer> Builder<D> {
    /// Most connections connecting or connected at once, inbound and
    /// outbound together (default 100).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Most established inbound connections, made live by
    /// [`adopt`](ConnectionManager::adopt) (default `max_connections`).
    pub fn max_inbound(mut self, n: usize) -> Self {
        self.kinds.inbound = Some(n);
        self
    }

    /// Most outbound connections, connecting or connected, made live by
    /// [`connect`](ConnectionManager::connect) (default `max_connections`).
    pub fn max_outbound(mut self, n: usize) -> Self {
        self.kinds.outbound = Some(n);
        self
    }

    /// Most dials in flight (default `max_connections`).
    pub fn max_pending_dials(mut self, n: usize) -> Self {
        self.kinds.pending_dials = Some(n);
        self
    }

    /// Most connections held open at once, live, leased, idle or being
    /// dialed: a bound on the manager's sockets (default twice
    /// `max_connections`; at least `max_connections`). With a dialer that
    /// gives abort handles ([`Dialer::abort_handle`](crate::Dialer::abort_handle);
    /// [`TcpDialer`](crate::TcpDialer) does) each lease out holds one more
    /// descriptor, so the manager's descriptors are at most this plus the
    /// leases out. A new connection
    /// that finds it full closes the oldest idle connection to make room;
    /// only when none is idle is it refused ([`Limit::Sockets`](crate::Limit::Sockets)).
    pub fn max_sockets(mut self, n: usize) -> Self {
        self.kinds.sockets = Some(n);
        self
    }

    /// Turns trimming on: when more than `high` unprotected peers are
    /// Connected, the manager closes connections, lowest score first,
    /// down to `low` (at most once a second, in the background; see
    /// [`trim_now`](ConnectionManager::trim_now)). `low < high <=
    /// max_connections`. Off by default.
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.config.watermarks = Some((low, high));
        self
    }

    /// How long a new live connection is exempt from trimming (default
    /// 30 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace_period = grace;
        self
    }

    /// Time-to-live of idle pooled connections (default 300 s).
    pub fn pool_timeout(mut self, ttl: Duration) -> Self {
        self.config.pool_timeout = ttl;
        self
    }

    /// Longest a dial may take before `connect` fails with
    /// [`Error::Timeout`] (default 10 s).
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.config.dial_timeout = timeout;
        self
    }

    /// How long [`connect`](ConnectionManager::connect) waits for a free
    /// slot when `max_connections` or `max_outbound` is full, as
    /// deadpool's `wait_timeout` and bb8's `connection_timeout`: waiters
    /// are served first come, first served (a `connect` that finds others
    /// waiting queues behind them, even if a slot is free that moment),
    /// and one still waiting at the deadline fails with the
    /// [`Error::LimitReached`](crate::Error::LimitReached) it met. A slot
    /// is freed by a disconnect, a failed or cancelled dial, a trim, a
    /// raised limit ([`set_limits`](ConnectionManager::set_limits)).
    /// Only the slot is waited for: a full `max_pending_dials` or
    /// `max_sockets` still refuses at once, and `adopt` never waits (nor
    /// queues: an inbound connection is admitted or closed at once). The
    /// time waited counts apart from the dial timeout. Zero (the default):
    /// fail at once.
    pub fn wait_for_slot(mut self, wait: Duration) -> Self {
        self.config.wait_for_slot = wait;
        self
    }

    /// The longest a connection is kept, from when it was dialed or
    /// adopted (as deadpool's and bb8's `max_lifetime`): once older, it is
    /// closed when it would go to the idle pool (a `disconnect`, a lease
    /// returned after one), and an idle one is closed instead of reused.
    /// A live connection is not closed for its age while it stays live:
    /// the manager never takes a connection from under its user (trimming
    /// sheds live connections). Off by default; longer than zero.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.config.max_lifetime = Some(max);
        self
    }

    /// The per-peer dial backoff: after a peer's dials failed `n` times in
    /// a row, [`connect`](ConnectionManager::connect) refuses to dial it
    /// again with [`Error::BackingOff`](crate::Error::BackingOff) until a
    /// delay has passed, drawn uniformly from `[d / 2, d]` with `d =
    /// min(initial * 2^(n - 1), max)` (doubling, jittered so that peers
    /// that failed together are not redialed together). A successful dial
    /// resets it; nothing else does (not `update_status`, not an `adopt`).
    /// On by default, 1 s to 5 min, as go-libp2p's dial backoff; an
    /// `initial` of zero turns it off. `initial <= max`.
    pub fn dial_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.dial_backoff = (!initial.is_zero()).then_some((initial, max));
        self
    }

    /// Most idle connections kept per peer (default 1, at most 2^30).
    pub fn max_idle_per_peer(mut self, n: usize) -> Self {
        self.config.max_idle_per_peer = n;
        self
    }

    /// Most idle connections kept in all (default 65,536, at most 2^30).
    pub fn max_idle_total(mut self, n: usize) -> Self {
        self.config.max_idle_total = n;
        self
    }

    /// Window over which `messages_per_second` and `avg_latency` are
    /// computed (default 10 s; see [`Config::metrics_window`] for how
    /// snapshots further apart stretch it).
    pub fn metrics_window(mut self, window: Duration) -> Self {
        self.config.metrics_window = window;
        self
    }

    /// Capacity of the status event broadcast (default 1024, at most
    /// [`Config::MAX_EVENT_CAPACITY`]).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.config.event_capacity = n;
        self
    }

    /// How long a disconnected or failed peer with nothing pooled is
    /// remembered before the reaper removes it from the table (default 1 h,
    /// at least 1 s; real time, see [`Config::forget_after`]).
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.config.forget_after = after;
        self
    }

    /// Uses `dialer` to open connections.
    pub fn dialer<D2: Dialer>(self, dialer: D2) -> Builder<D2> {
        Builder {
            config: self.config,
            kinds: self.kinds,
            dialer,
        }
    }

    /// Validates the settings and builds the manager. Needs no runtime:
    /// the reaper task starts on the first call made inside one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first setting out of range.
    pub fn build(mut self) -> Result<ConnectionManager<D>, Error> {
        let (c, k) = (&mut self.config, self.kinds);
        c.max_inbound = k.inbound.unwrap_or(c.max_connections);
        c.max_outbound = k.outbound.unwrap_or(c.max_connections);
        c.max_pending_dials = k.pending_dials.unwrap_or(c.max_connections);
        c.max_sockets = k
            .sockets
            .unwrap_or_else(|| c.max_connections.saturating_mul(2));
        self.config.validate()?;
        Ok(ConnectionManager::from_parts(self.config, self.dialer))
    }
}

impl<D> fmt::Debug for Builder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}
