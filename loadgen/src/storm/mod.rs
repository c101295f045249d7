//! The connect-storm scenario: N clients connect (over TLS or not), subscribe and disconnect,
//! started on an open-loop schedule at a target rate, as a fleet does when it reconnects after
//! an outage.
//!
//! Each connection `i` has an *intended* start, `t0 + i / rate`. It starts then, or later when
//! `concurrency` connections are already in their handshake; either way its CONNACK latency is
//! measured from the intended start (no coordinated omission: a broker that falls behind sees
//! its backlog in the latency, not a slower schedule). Rate 0 means as fast as the
//! concurrency bound lets the broker go (then from the actual start).
//!
//! With TLS, a pass is made of full handshakes or of resumed ones: the client keeps every
//! session ticket in a [`crate::tls::sessions::TicketPool`], so a first pass of full
//! handshakes fills it and a second pass resumes each connection from one ticket.
//!
//! Layout: `pass` (one pass: the mio loop and each connection's steps), `bystander` (a QoS 1
//! client whose round trips are measured quiet and during a storm), `command` (`loadgen
//! storm`: brokers, repeats, broker CPU, medians, the JSON and Markdown results).

pub mod bystander;
pub mod command;
pub mod pass;

pub use pass::{run_pass, PassResult, StormConfig};
