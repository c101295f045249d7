//! The state one connection keeps for MQTT 5 enhanced authentication (§4.12): the method it
//! authenticated with (re-authentication must use the same [MQTT-4.12.1-1]) and, while an
//! exchange of AUTH packets runs, how far it got. The flow itself is `handle::auth`; this is
//! the part the connection owns (`Conn::enhanced_auth`, boxed: most connections have none),
//! with the bounds every client-controlled exchange gets.

use std::time::{Duration, Instant};

use crate::protocol::Connect;

/// The most Authentication Data one packet may carry (a SCRAM message is a few hundred bytes;
/// the packet itself is bounded by `max_packet_size` too).
pub const MAX_AUTH_DATA: usize = 8 * 1024;
/// The most steps (CONNECT or AUTH from the client) one exchange may take: SCRAM takes two.
pub const MAX_STEPS: u8 = 10;
/// The longest one exchange may run, from its first packet to its last (each wait for the
/// client before CONNACK is also bounded by `connect_timeout`).
pub const TIME_LIMIT: Duration = Duration::from_secs(30);

/// A connection's enhanced authentication.
#[derive(Debug)]
pub struct EnhancedAuth {
    /// The Authentication Method of CONNECT.
    pub method: Box<str>,
    /// The exchange running, if any.
    pub exchange: Option<Exchange>,
}

/// One exchange of AUTH packets (CONNECT's, or a re-authentication).
#[derive(Debug)]
pub struct Exchange {
    /// Steps taken (packets from the client handed to the plugins).
    pub steps: u8,
    pub started: Instant,
    /// Before CONNACK: the CONNECT, waiting here while the client prepares its next AUTH.
    pub connect: Option<Box<Connect>>,
}

/// Why an exchange cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    TooManySteps,
    TooSlow,
    TooMuchData,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::TooManySteps => write!(f, "more than {MAX_STEPS} authentication steps"),
            Bound::TooSlow => write!(
                f,
                "authentication took longer than {} s",
                TIME_LIMIT.as_secs()
            ),
            Bound::TooMuchData => {
                write!(f, "authentication data longer than {MAX_AUTH_DATA} bytes")
            }
        }
    }
}

impl EnhancedAuth {
    /// A connection authenticating with `method`, its exchange starting now.
    pub fn starting(method: &str, now: Instant) -> EnhancedAuth {
        EnhancedAuth {
            method: method.into(),
            exchange: Some(Exchange::new(now)),
        }
    }

    /// A connection that authenticated with `method` (none running: re-authentication may
    /// start one).
    pub fn connected(method: &str) -> EnhancedAuth {
        EnhancedAuth {
            method: method.into(),
            exchange: None,
        }
    }

    /// Counts one more step of the running exchange (started now if none runs) carrying
    /// `data_len` bytes of Authentication Data, or says which bound it breaks.
    pub fn step(&mut self, now: Instant, data_len: usize) -> Result<(), Bound> {
        if data_len > MAX_AUTH_DATA {
            return Err(Bound::TooMuchData);
        }
        let exchange = self.exchange.get_or_insert_with(|| Exchange::new(now));
        if exchange.steps >= MAX_STEPS {
            return Err(Bound::TooManySteps);
        }
        if now.saturating_duration_since(exchange.started) > TIME_LIMIT {
            return Err(Bound::TooSlow);
        }
        exchange.steps += 1;
        Ok(())
    }

    /// Whether the running exchange has gone past [`TIME_LIMIT`] (checked by the shard's
    /// tick for a CONNECT parked on a plugin's deferred answer, where no packet comes to
    /// check it).
    pub fn overdue(&self, now: Instant) -> bool {
        self.exchange
            .as_ref()
            .is_some_and(|e| now.saturating_duration_since(e.started) > TIME_LIMIT)
    }

    /// Whether `method` is this connection's.
    pub fn same_method(&self, method: Option<&str>) -> bool {
        method == Some(&*self.method)
    }
}

impl Exchange {
    fn new(now: Instant) -> Exchange {
        Exchange {
            steps: 0,
            started: now,
            connect: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_time_and_data_are_bounded() {
        let t0 = Instant::now();
        let mut a = EnhancedAuth::starting("SCRAM-SHA-256", t0);
        assert!(a.same_method(Some("SCRAM-SHA-256")));
        assert!(!a.same_method(Some("SCRAM-SHA-512")) && !a.same_method(None));
        for _ in 0..MAX_STEPS {
            a.step(t0, 10).unwrap();
        }
        assert_eq!(a.step(t0, 10), Err(Bound::TooManySteps));
        a.exchange = None;
        a.step(t0, 0).unwrap();
        assert_eq!(
            a.step(t0 + TIME_LIMIT + Duration::from_millis(1), 0),
            Err(Bound::TooSlow)
        );
        assert_eq!(a.step(t0, MAX_AUTH_DATA + 1), Err(Bound::TooMuchData));
        assert!(!a.overdue(t0) && a.overdue(t0 + TIME_LIMIT + Duration::from_millis(1)));
        assert!(!EnhancedAuth::connected("M").overdue(t0 + TIME_LIMIT * 2));
        assert_eq!(
            Bound::TooManySteps.to_string(),
            "more than 10 authentication steps"
        );
    }
}
