//! Access-log subscriptions, like VPC Lattice's: a service network or a
//! service, and where the proxies write one JSON line per request to it.
//!
//! ```yaml
//! kind: AccessLogSubscription
//! name: shop-logs
//! resource:
//!   serviceNetwork: shop          # or `service: catalog`
//! destination:
//!   file:
//!     path: /var/log/trellis/shop.log
//!     maxBytes: 104857600         # rotate at 100 MiB (default)
//!     maxFiles: 5                 # keep shop.log.1 … shop.log.5 (default)
//! ```
//!
//! `destination: stdout` writes to the proxy's standard output instead.
//! A subscription on a network applies to every service associated with
//! that network, as seen by every proxy whose scope contains the network;
//! the control plane compiles each service's effective destinations into
//! its snapshot ([`crate::SnapshotService::access_logs`]). Unlike Lattice
//! (S3, CloudWatch Logs, Firehose), destinations are local to each proxy:
//! a `file` path names a file on the proxy's host.

use crate::kind::{Kind, Reference, Spec};
use crate::validate::Validator;
use serde::{Deserialize, Serialize};

/// Rotation size when a file destination says nothing (100 MiB: a day of a
/// busy proxy at ~500 B a line and ~2 requests a second, small enough to
/// open in an editor).
pub const ACCESS_LOG_MAX_BYTES_DEFAULT: u64 = 100 * 1024 * 1024;
/// Smallest rotation size: a few hundred lines, so rotation cannot spin.
pub const ACCESS_LOG_MAX_BYTES_MIN: u64 = 64 * 1024;
/// Largest rotation size (64 GiB).
pub const ACCESS_LOG_MAX_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Rotated files kept when a file destination says nothing.
pub const ACCESS_LOG_MAX_FILES_DEFAULT: u32 = 5;
/// Range of `maxFiles`: at least one rotated file, at most a hundred.
pub const ACCESS_LOG_MAX_FILES_RANGE: (u32, u32) = (1, 100);
/// Longest file path accepted (Linux `PATH_MAX` is 4096).
pub const ACCESS_LOG_MAX_PATH_LEN: usize = 1024;

/// What a subscription logs: the requests to one service network's
/// services, or to one service. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum AccessLogResource {
    /// Name of a service network: every service associated with it.
    ServiceNetwork(String),
    /// Name of a service.
    Service(String),
}

/// Where a proxy writes the lines.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum AccessLogDestination {
    /// The proxy's standard output (one writer per proxy, shared by every
    /// subscription that names it).
    Stdout,
    /// A file on the proxy's host, rotated by size.
    File(FileDestination),
}

impl AccessLogDestination {
    /// What identifies the destination at runtime: `stdout` or
    /// `file:<path>`. Two subscriptions with the same key share one writer
    /// (and one queue) in a proxy.
    pub fn key(&self) -> String {
        match self {
            AccessLogDestination::Stdout => "stdout".into(),
            AccessLogDestination::File(f) => format!("file:{}", f.path),
        }
    }

    /// Local checks (absolute path, ranges).
    pub fn check(&self, v: &mut Validator) {
        if let AccessLogDestination::File(f) = self {
            v.field("file", |v| f.check(v));
        }
    }
}

/// A file destination.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDestination {
    /// Absolute path of the file on the proxy's host. Rotated files are
    /// `<path>.1` (newest) to `<path>.<maxFiles>` (oldest).
    pub path: String,
    /// Size at which the file is rotated, in bytes (64 KiB–64 GiB,
    /// default 100 MiB).
    #[serde(default = "d_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (1–100, default 5); older ones are deleted.
    #[serde(default = "crate::defaults::u32_of::<ACCESS_LOG_MAX_FILES_DEFAULT>")]
    pub max_files: u32,
}

fn d_max_bytes() -> u64 {
    ACCESS_LOG_MAX_BYTES_DEFAULT
}

impl FileDestination {
    /// A file destination with the default rotation.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            max_bytes: ACCESS_LOG_MAX_BYTES_DEFAULT,
            max_files: ACCESS_LOG_MAX_FILES_DEFAULT,
        }
    }

    fn check(&self, v: &mut Validator) {
        v.field("path", |v| {
            if let Err(m) = check_path(&self.path) {
                v.error(m);
            }
        });
        v.range(
            "maxBytes",
            self.max_bytes,
            (ACCESS_LOG_MAX_BYTES_MIN, ACCESS_LOG_MAX_BYTES_MAX),
        );
        v.range("maxFiles", self.max_files, ACCESS_LOG_MAX_FILES_RANGE);
    }
}

/// Why `path` is not an acceptable log file path, if it is not: it must be
/// absolute, name a file (not end with `/`), and have no `.`/`..`
/// segments, empty segments or control characters, so that what the
/// operator reads in the spec is the file the proxy opens.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.len() > ACCESS_LOG_MAX_PATH_LEN {
        return Err(format!(
            "must be at most {ACCESS_LOG_MAX_PATH_LEN} bytes, got {}",
            path.len()
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "must be an absolute path (start with '/'), got '{path}'"
        ));
    }
    if path.ends_with('/') {
        return Err(format!("must name a file, not a directory: '{path}'"));
    }
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if path[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "must not contain empty, '.' or '..' segments, got '{path}'"
        ));
    }
    Ok(())
}

/// An access-log subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogSubscriptionSpec {
    /// Unique per account.
    pub name: String,
    /// The service network or service whose requests are logged.
    pub resource: AccessLogResource,
    /// Where the lines go.
    pub destination: AccessLogDestination,
}

impl Spec for AccessLogSubscriptionSpec {
    const KIND: Kind = Kind::AccessLogSubscription;

    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, v: &mut Validator) {
        v.name("name", &self.name);
        v.field("resource", |v| match &self.resource {
            AccessLogResource::ServiceNetwork(n) => v.name("serviceNetwork", n),
            AccessLogResource::Service(n) => v.name("service", n),
        });
        v.field("destination", |v| self.destination.check(v));
    }

    fn references(&self) -> Vec<Reference> {
        let (kind, name, field) = match &self.resource {
            AccessLogResource::ServiceNetwork(n) => {
                (Kind::ServiceNetwork, n, "resource.serviceNetwork")
            }
            AccessLogResource::Service(n) => (Kind::Service, n, "resource.service"),
        };
        vec![Reference {
            kind,
            name: name.clone(),
            field: field.into(),
        }]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::document::spec_from_json;
    use serde_json::json;

    fn fields(v: serde_json::Value) -> Vec<String> {
        let s: AccessLogSubscriptionSpec = spec_from_json(v).unwrap();
        match s.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn yaml_shapes_and_defaults() {
        let docs = crate::parse_documents(
            "kind: AccessLogSubscription\nname: a\nresource:\n  serviceNetwork: net\ndestination: stdout\n---\n\
             kind: als\nname: b\nresource: {service: api}\ndestination:\n  file: {path: /var/log/t.log}\n",
        )
        .unwrap();
        assert_eq!(docs[0].kind, Kind::AccessLogSubscription);
        let a: AccessLogSubscriptionSpec = spec_from_json(docs[0].body.clone()).unwrap();
        assert_eq!(a.resource, AccessLogResource::ServiceNetwork("net".into()));
        assert_eq!(a.destination, AccessLogDestination::Stdout);
        let b: AccessLogSubscriptionSpec = spec_from_json(docs[1].body.clone()).unwrap();
        assert_eq!(
            b.destination,
            AccessLogDestination::File(FileDestination::new("/var/log/t.log"))
        );
        assert_eq!(b.destination.key(), "file:/var/log/t.log");
        assert!(b.validate().is_ok());
        assert_eq!(b.references()[0].field, "resource.service");
        assert_eq!(b.references()[0].kind, Kind::Service);
        // Round trip: what is stored parses back.
        let again: AccessLogSubscriptionSpec =
            serde_json::from_value(serde_json::to_value(&b).unwrap()).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn exactly_one_resource() {
        let e = spec_from_json::<AccessLogSubscriptionSpec>(json!({
            "name": "a", "resource": {"service": "x", "serviceNetwork": "y"}, "destination": "stdout"
        }))
        .unwrap_err();
        assert_eq!(e.errors[0].field, "resource");
        let e = spec_from_json::<AccessLogSubscriptionSpec>(
            json!({"name": "a", "resource": {}, "destination": "stdout"}),
        )
        .unwrap_err();
        assert_eq!(e.errors[0].field, "resource");
        let e = spec_from_json::<AccessLogSubscriptionSpec>(
            json!({"name": "a", "resource": {"target": "x"}, "destination": "stdout"}),
        )
        .unwrap_err();
        assert!(e.errors[0].message.contains("unknown variant"), "{e}");
    }

    #[test]
    fn field_paths_of_every_problem() {
        let got = fields(json!({
            "name": "Bad", "resource": {"service": "-x"},
            "destination": {"file": {"path": "logs/a.log", "maxBytes": 10, "maxFiles": 0}}
        }));
        let expect = [
            "name: 'Bad' may contain only lowercase letters, digits and '-'",
            "resource.service: '-x' must start with a lowercase letter",
            "destination.file.path: must be an absolute path (start with '/'), got 'logs/a.log'",
            "destination.file.maxBytes: must be between 65536 and 68719476736, got 10",
            "destination.file.maxFiles: must be between 1 and 100, got 0",
        ];
        assert_eq!(got, expect);
    }

    #[test]
    fn paths() {
        assert!(check_path("/var/log/trellis/a.log").is_ok());
        for bad in [
            "",
            "a.log",
            "/var/log/",
            "/var/../etc/passwd",
            "/var/./a",
            "/var//a",
            "/a\nb",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&format!("/{}", "a".repeat(2000))).is_err());
    }
}
