//! Back-off on failed admin logins, shared by admin SQL (password) and REST
//! (bearer token), per source address.
//!
//! After a failure the address must wait before its next credential is
//! checked: `auth_backoff_initial_ms`, doubled with each further failure up
//! to `auth_backoff_max_ms`. An attempt during the wait is refused without
//! checking the credential (so parallel connections gain nothing) and does
//! not lengthen the wait (so a mistyped password costs a person little).
//! A success, or a quiet period of `auth_backoff_max_ms` after the wait,
//! ends the burst; `auth_backoff_initial_ms = 0` turns the back-off off. The first failure of a burst is logged at WARN, the
//! rest at DEBUG; every refusal is counted in
//! `redirector_admin_auth_failures_total`.
//!
//! IPv6 sources are grouped by /64 (one host usually owns a whole /64),
//! and at most [`MAX_TRACKED`] addresses are remembered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AdminLimits;
use crate::metrics::{AdminAuthFailure, AdminSurface, Metrics};

/// Addresses remembered at most; past it, finished bursts are forgotten
/// first, then the ones whose wait ends soonest.
pub const MAX_TRACKED: usize = 4096;

/// A login refused because its address is backing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed admin logins from this address; retry in {} ms", .retry_in.as_millis().max(1))]
pub struct BackingOff {
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    failures: u32,
    /// No credential from the address is checked before this.
    until: Instant,
}

/// Failed-login state per source address.
#[derive(Debug)]
pub struct AuthThrottle {
    initial: Duration,
    max: Duration,
    metrics: Arc<Metrics>,
    bursts: Mutex<HashMap<IpAddr, Burst>>,
}

/// The key an address is tracked under.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthThrottle {
    pub fn new(limits: &AdminLimits, metrics: Arc<Metrics>) -> Self {
        AuthThrottle {
            initial: limits.auth_backoff_initial,
            max: limits.auth_backoff_max,
            metrics,
            bursts: Mutex::new(HashMap::new()),
        }
    }

    fn bursts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Burst>> {
        // A panic while holding the lock leaves the map consistent enough.
        self.bursts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a credential from `ip` may be checked now; a refusal is
    /// counted for `surface`.
    pub fn check(&self, ip: IpAddr, surface: AdminSurface) -> Result<(), BackingOff> {
        let now = Instant::now();
        let until = self.bursts().get(&source(ip)).map(|b| b.until);
        match until {
            Some(until) if until > now => {
                self.metrics
                    .admin_auth_failure(surface, AdminAuthFailure::Throttled);
                tracing::debug!(client = %ip, surface = surface.as_str(), "admin login refused: backing off");
                Err(BackingOff {
                    retry_in: until - now,
                })
            }
            _ => Ok(()),
        }
    }

    /// A wrong credential from `ip`: counts it and starts or lengthens the
    /// address's back-off. Returns the new wait.
    pub fn failed(&self, ip: IpAddr, surface: AdminSurface) -> Duration {
        self.metrics
            .admin_auth_failure(surface, AdminAuthFailure::Invalid);
        let now = Instant::now();
        let key = source(ip);
        let mut bursts = self.bursts();
        let failures = match bursts.get(&key) {
            Some(b) if !self.burst_over(b, now) => b.failures.saturating_add(1),
            _ => 1,
        };
        // initial × 2^(failures-1), capped (the shift is bounded so it cannot overflow).
        let delay = self
            .initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(self.max);
        if !bursts.contains_key(&key) && bursts.len() >= MAX_TRACKED {
            self.make_room(&mut bursts, now);
        }
        bursts.insert(
            key,
            Burst {
                failures,
                until: now + delay,
            },
        );
        drop(bursts);
        if failures == 1 {
            tracing::warn!(
                client = %ip,
                surface = surface.as_str(),
                backoff_max_ms = self.max.as_millis() as u64,
                "failed admin login; further attempts from this address back off and are logged at debug level"
            );
        } else {
            tracing::debug!(client = %ip, surface = surface.as_str(), failures, delay_ms = delay.as_millis() as u64, "failed admin login");
        }
        delay
    }

    /// A correct credential from `ip`: its burst, if any, is over.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Some(b) = self.bursts().remove(&source(ip)) {
            tracing::info!(client = %ip, failures = b.failures, "admin login succeeded after failed attempts");
        }
    }

    fn burst_over(&self, b: &Burst, now: Instant) -> bool {
        now > b.until + self.max
    }

    fn make_room(&self, bursts: &mut HashMap<IpAddr, Burst>, now: Instant) {
        bursts.retain(|_, b| !self.burst_over(b, now));
        if bursts.len() >= MAX_TRACKED {
            if let Some(k) = bursts.iter().min_by_key(|(_, b)| b.until).map(|(k, _)| *k) {
                bursts.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DatapathKind;

    fn throttle(initial_ms: u64, max_ms: u64) -> AuthThrottle {
        let limits = AdminLimits {
            auth_backoff_initial: Duration::from_millis(initial_ms),
            auth_backoff_max: Duration::from_millis(max_ms),
            ..AdminLimits::default()
        };
        AuthThrottle::new(
            &limits,
            Arc::new(Metrics::new(DatapathKind::Userspace, Vec::new())),
        )
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let t = throttle(100, 1000);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(t.check(ip, AdminSurface::Sql).is_ok());
        let delays: Vec<u128> = (0..6)
            .map(|_| t.failed(ip, AdminSurface::Sql).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        let e = t.check(ip, AdminSurface::Http).unwrap_err();
        assert!(e.retry_in > Duration::from_millis(900), "{e}");
        assert!(t.check(other, AdminSurface::Sql).is_ok());
        t.succeeded(ip);
        assert!(t.check(ip, AdminSurface::Sql).is_ok());
        assert_eq!(t.failed(ip, AdminSurface::Sql), Duration::from_millis(100));
        let text = t.metrics.encode().unwrap();
        assert_eq!(
            crate::metrics::sample(
                &text,
                r#"redirector_admin_auth_failures_total{surface="sql",reason="invalid"}"#
            ),
            Some(7.0)
        );
    }

    #[test]
    fn zero_initial_means_off() {
        let t = throttle(0, 1000);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(t.failed(ip, AdminSurface::Sql), Duration::ZERO);
            assert!(t.check(ip, AdminSurface::Sql).is_ok());
        }
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_v4() {
        assert_eq!(
            source("2001:db8::1".parse().unwrap()),
            source("2001:db8::ffff:2".parse().unwrap())
        );
        assert_eq!(
            source("::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bounded_memory() {
        let t = throttle(1000, 1000);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failed(IpAddr::V4(i.into()), AdminSurface::Http);
        }
        assert_eq!(t.bursts().len(), MAX_TRACKED);
    }
}
