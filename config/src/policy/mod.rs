//! Auth policies: an IAM-style JSON language, validated on write, compiled
//! once, evaluated per request with VPC Lattice's semantics.
//!
//! ```text
//! text --PolicyDocument::parse--> PolicyDocument --CompiledPolicy::new--> CompiledPolicy
//!        (every problem, with        (valid by          (globs built, keys resolved,
//!         its field path)             construction)      statements split by effect)
//!
//! evaluate(network level, service level, &RequestFacts) -> Decision
//! ```
//!
//! # The document
//!
//! At most [`MAX_POLICY_BYTES`] (10 KB) of JSON. Element names and
//! operators are case-sensitive, as in IAM; unknown elements are errors.
//!
//! ```text
//! {
//!   "Version": "2012-10-17",                       optional; only this value
//!   "Id": "...",                                   optional; ignored
//!   "Statement": [ statement, ... ]                or one statement object
//! }
//! statement = {
//!   "Sid": "ReadOnly",                             optional; [A-Za-z0-9_-]{1,100}, unique
//!   "Effect": "Allow" | "Deny",
//!   "Principal": "*" | {"AWS" | "Trellis": principal | [principal, ...]},
//!   "Action": action | [action, ...],
//!   "Resource": resource | [resource, ...],
//!   "Condition": { operator: { key: value | [value, ...] } }   optional
//! }
//! principal = "*"                                  see "Anonymous callers" below
//!           | "anonymous"                          callers without a mesh identity
//!           | "111122223333"                       every workload of an account (12 digits)
//!           | "spiffe://<td>/account/<id>/workload/<name>"
//!                                                  one workload; * and ? allowed in
//!                                                  <td>, <id> and <name>, never across '/'
//! action    = "trellis:Invoke" | "trellis:*" | "*"  (case-insensitive; all mean the same)
//! resource  = "*"                                  every service, every path
//!           | "<service>[/<path>]"                 e.g. "api", "api/*", "svc-*/orders/*"
//!           | "trellis:<account>:service/<service>[/<path>]"
//!                                                  e.g. "trellis:111122223333:service/api/*",
//!                                                  "trellis:*:service/*/admin/*"
//! ```
//!
//! In a resource, `<service>` is a pattern of the service's **name**
//! (lowercase letters, digits, `-`, `*`, `?`) and never spans a `/`;
//! `<account>` is the account that owns the service (12 digits or a
//! pattern of digits and wildcards); `<path>` starts at the `/` after the
//! service and is a glob over the request path in which `*` does span `/`
//! (`api/v1/*` is every path under `/v1/`). A missing path means every
//! path; the short form means any owning account.
//!
//! Globs everywhere: `*` is any run of characters, `?` one character,
//! everything else literal and case-sensitive; there is no escape.
//!
//! # Conditions
//!
//! Every operator–key pair of a statement must hold; the values of one
//! pair are alternatives. Keys are case-insensitive, values case-sensitive
//! (except with the `IgnoreCase` operators); numbers and booleans are read
//! as the strings JSON writes for them (`8080`).
//!
//! | operator | holds when |
//! |---|---|
//! | `StringEquals` / `StringNotEquals` | some value equals one of the strings / not |
//! | `StringEqualsIgnoreCase` / `StringNotEqualsIgnoreCase` | same, ignoring ASCII case |
//! | `StringLike` / `StringNotLike` | some value matches one of the globs / not |
//! | `IpAddress` / `NotIpAddress` | `trellis:SourceIp` lies in one of the CIDR ranges / not |
//!
//! A negated operator is exactly `not` its positive twin. So a key the
//! request does not have (a missing header, an anonymous caller's account)
//! makes the positive operators false and the negated ones true, as in
//! IAM; and with several values of one key (a repeated header or query
//! parameter) `StringEquals` holds if *any* value matches while
//! `StringNotEquals` holds only if *none* does, so a second header can
//! never slip past a Deny.
//!
//! | Trellis key | value | Lattice equivalent |
//! |---|---|---|
//! | `trellis:RequestMethod` | `GET` (as sent; methods are case-sensitive) | `vpc-lattice-svcs:RequestMethod` |
//! | `trellis:RequestPath` | path without query, as routed | none (Lattice puts the path in the Resource ARN) |
//! | `trellis:RequestHeader/<name>` | each value of the header (name case-insensitive) | `vpc-lattice-svcs:RequestHeader/<name>` |
//! | `trellis:RequestQueryString/<key>` | each value of the parameter, percent-decoded (key case-sensitive) | `vpc-lattice-svcs:RequestQueryString/<key>` |
//! | `trellis:RequestPort` | listener port in decimal | `vpc-lattice-svcs:Port` |
//! | `trellis:SourceAccount` | caller's account id | `aws:PrincipalAccount` (`vpc-lattice-svcs:SourceVpcOwnerAccount`) |
//! | `trellis:SourceWorkload` | caller's SPIFFE id | `aws:PrincipalArn` |
//! | `trellis:SourceIp` | caller's IP (IpAddress operators only) | `aws:SourceIp` |
//! | `trellis:ServiceNetwork` | name of the service network used | `vpc-lattice-svcs:ServiceNetworkArn` |
//! | `trellis:Service` | name of the service called | `vpc-lattice-svcs:ServiceArn` |
//!
//! Writing a Lattice key gets an error that names the Trellis key.
//!
//! # Evaluation
//!
//! A request is checked at two levels, the service network's and the
//! service's, each with its [`crate::AuthType`] and optional policy:
//!
//! 1. Auth type `NONE` (or no network on the way): no check at that level.
//! 2. Auth type `IAM` and no policy: that level refuses everything (403,
//!    [`DenyCause::NoPolicy`]).
//! 3. A Deny statement that applies, at either level, refuses (403, the
//!    network level's first, then the service's; within a policy the first
//!    in document order). An explicit Deny always wins.
//! 4. Otherwise every `IAM` level must have an Allow statement that applies
//!    (the first in document order is reported). A level without one
//!    refuses: 403 [`DenyCause::NoMatchingAllow`], or 401
//!    ([`Decision::Unauthenticated`]) when the caller is anonymous and
//!    every refusing level has an Allow that an authenticated caller could
//!    satisfy (its principals name authenticated callers, and its resource
//!    and non-identity conditions match). "IAM with no policy" is never a
//!    401: authenticating would not help.
//!
//! # Anonymous callers
//!
//! A caller without a mesh certificate (through an HTTPS listener, say) is
//! the principal `"anonymous"`. Trellis departs from Lattice here: in
//! Lattice `"Principal": "*"` includes anonymous callers; in Trellis a
//! wildcard never *grants* anonymous access but always *refuses* it:
//!
//! - in an **Allow**, `*` means every *authenticated* caller; anonymous
//!   callers are admitted only by a statement that names `"anonymous"`
//!   (`{"AWS": ["*", "anonymous"]}` for everybody);
//! - in a **Deny**, `*` means every caller, anonymous ones included, so
//!   "Allow anonymous GET" plus "Deny * on /admin/*" keeps anonymous
//!   callers out of `/admin`.
//!
//! The mesh is reachable from outside only through HTTPS listeners, so
//! the Lattice default would open a service to the internet with a policy
//! that reads "everyone in the mesh"; this way that takes the explicit word.
//!
//! # Decisions
//!
//! A [`Decision`] names the level and the statement (index and `Sid`) that
//! decided, never policy text, so it can go to the access log, the
//! `x-trellis-error` reason and `explain`. [`CompiledPolicy::explain`] gives
//! every statement's verdict with the same matching code.

mod attached;
mod compile;
mod conditions;
mod decision;
mod document;
mod evaluate;
mod facts;
mod keys;
mod pattern;
mod validate;

#[cfg(test)]
mod tests;

pub(crate) use attached::check_attached;
pub use attached::{AUTH_POLICY_FIELD, compile_attached, parse_attached};
pub use compile::CompiledPolicy;
pub use decision::{
    Decision, DenyCause, Level, LevelAllow, StatementMatch, StatementRef, StatementTrace,
};
pub use document::{
    ACTION_INVOKE, ANONYMOUS, Condition, ConditionValues, Effect, MAX_POLICY_BYTES, MAX_SID_LEN,
    POLICY_VERSION, PolicyDocument, Principal, Resource, Statement,
};
pub use evaluate::evaluate;
pub use facts::{Caller, HeaderLookup, NoHeaders, RequestFacts};
pub use keys::{ConditionKey, KEY_NAMES, KEY_PREFIX, Operator};
pub use pattern::{Cidr, Glob};
