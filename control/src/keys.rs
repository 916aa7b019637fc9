//! The key layout of the store. Every key the control plane writes is made
//! here, so the layout can be read in one place:
//!
//! | key | value |
//! |---|---|
//! | `/trellis/res/<collection>/<id>` | a stored resource (JSON) |
//! | `/trellis/name/<collection>/<account>/<name>` | the id holding that name |
//! | `/trellis/ref/<collection>/<account>/<name>/<referrer id>` | the referrer's field path |
//! | `/trellis/proxy/<name>` | a proxy registration (JSON) |
//! | `/trellis/share/<network id>/<account>` | the network is shared with that account (JSON [`crate::share::ShareRecord`]) |
//! | `/trellis/auth/...` | accounts and API tokens (see [`crate::accounts`]) |
//! | `/trellis/audit/<account>/<newest-first id>` | an audit record (see [`crate::audit`]) |
//!
//! The name key doubles as the guard of referential integrity: a write that
//! references a resource rewrites that resource's name key in the same
//! transaction (bumping its revision), and a delete compares the name key's
//! revision it read together with the empty set of referrers.

use trellis_config::Kind;

/// Prefix of everything Trellis stores.
pub const ROOT: &str = "/trellis/";
/// Prefix of resources.
pub const RESOURCES: &str = "/trellis/res/";
/// Prefix of proxy registrations.
pub const PROXIES: &str = "/trellis/proxy/";

/// Prefix of shares of service networks.
pub const SHARES: &str = "/trellis/share/";

/// Key recording that network `network_id` is shared with `account`.
pub fn share(network_id: &str, account: &str) -> String {
    format!("{SHARES}{network_id}/{account}")
}

/// Prefix of the shares of one network.
pub fn shares_of(network_id: &str) -> String {
    format!("{SHARES}{network_id}/")
}

/// Key of a resource.
pub fn resource(kind: Kind, id: &str) -> String {
    format!("{RESOURCES}{}/{id}", kind.collection())
}

/// Prefix of every resource of a kind.
pub fn resources_of(kind: Kind) -> String {
    format!("{RESOURCES}{}/", kind.collection())
}

/// Key of the name index entry.
pub fn name(kind: Kind, account: &str, name: &str) -> String {
    format!("/trellis/name/{}/{account}/{name}", kind.collection())
}

/// Prefix of the referrers of a resource.
pub fn refs_of(kind: Kind, account: &str, name: &str) -> String {
    format!("/trellis/ref/{}/{account}/{name}/", kind.collection())
}

/// Key recording that `referrer_id` references a resource.
pub fn reference(kind: Kind, account: &str, name: &str, referrer_id: &str) -> String {
    format!("{}{referrer_id}", refs_of(kind, account, name))
}

/// Key of a proxy registration.
pub fn proxy(name: &str) -> String {
    format!("{PROXIES}{name}")
}

/// Kind and id from a resource key, if it is one.
pub fn parse_resource(key: &str) -> Option<(Kind, &str)> {
    let rest = key.strip_prefix(RESOURCES)?;
    let (collection, id) = rest.split_once('/')?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.collection() == collection)?;
    Some((kind, id))
}

/// Prefix of join-token records (hashes only, never values).
pub const JOIN_TOKENS: &str = "/trellis/join-token/";

/// Key of the join token `id`.
pub fn join_token(id: &str) -> String {
    format!("{JOIN_TOKENS}{id}")
}
