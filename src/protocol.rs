//! The MQTT codec, from the `midge-codec` crate (`codec/`), re-exported so that broker code
//! names it `crate::protocol::...` and users of the library `midge::protocol::...`.
//!
//! The codec knows nothing of the broker (ARCHITECTURE.md §2); what ties it to the
//! configuration (e.g. [`crate::config::Config::topic_limits`]) lives on the broker's side.

pub use midge_codec::*;
