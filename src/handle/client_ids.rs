//! mosquitto's client-id options at CONNECT: `allow_zero_length_clientid` and
//! `clientid_prefixes` (`use_username_as_clientid` and `auto_id_prefix` apply once the
//! client is authenticated, in `connect.rs`).

use crate::config::ClientOptions;

/// Why a CONNECT is refused by these options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IdRefusal {
    /// "identifier rejected" (3.x 2, 5.0 0x85) rather than "not authorized".
    pub(super) identifier: bool,
    pub(super) reason: &'static str,
}

/// The refusal `options` make of a CONNECT with `client_id`, as mosquitto 2.0 decides it: an empty id is
/// refused when zero-length ids are not allowed ("identifier rejected"); an id (or, for an
/// empty one, the id the broker would assign) not starting with `clientid_prefixes` is "not
/// authorized".
pub(super) fn refusal(options: &ClientOptions, client_id: &str) -> Option<IdRefusal> {
    let empty = client_id.is_empty();
    if empty && !options.allow_zero_length_clientid {
        return Some(IdRefusal {
            identifier: true,
            reason: "empty client id and allow_zero_length_clientid false",
        });
    }
    let prefix = options.clientid_prefixes.as_deref()?;
    let id: &str = if empty {
        &options.auto_id_prefix
    } else {
        client_id
    };
    (!id.starts_with(prefix)).then_some(IdRefusal {
        identifier: false,
        reason: "client id does not start with clientid_prefixes",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(id: &str) -> &str {
        id
    }

    #[test]
    fn defaults_refuse_nothing() {
        let o = ClientOptions::default();
        assert_eq!(refusal(&o, connect("")), None);
        assert_eq!(refusal(&o, connect("any")), None);
    }

    #[test]
    fn zero_length_ids_can_be_disallowed() {
        let o = ClientOptions {
            allow_zero_length_clientid: false,
            ..ClientOptions::default()
        };
        assert!(refusal(&o, connect("")).unwrap().identifier);
        assert_eq!(refusal(&o, connect("x")), None);
    }

    #[test]
    fn prefixes_apply_to_given_and_assigned_ids() {
        let mut o = ClientOptions {
            clientid_prefixes: Some("dev-".into()),
            ..ClientOptions::default()
        };
        assert_eq!(refusal(&o, connect("dev-1")), None);
        let r = refusal(&o, connect("other")).unwrap();
        assert!(!r.identifier);
        // An empty id would be given "auto-...": refused too, unless the prefix fits.
        assert!(refusal(&o, connect("")).is_some());
        o.auto_id_prefix = "dev-auto-".into();
        assert_eq!(refusal(&o, connect("")), None);
    }
}
