//! A stored resource: server metadata plus the user's spec.

use crate::kind::Spec;
use serde::{Deserialize, Serialize};

/// Metadata the server assigns. Clients may send these fields back (a GET,
/// edited, then PUT); they are ignored on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Server-assigned id such as `svc-0a1b2c3d4e5f6a7b`; stable for the resource's life.
    pub id: String,
    /// The owning account.
    pub account: String,
    /// Starts at 1 and grows by one with every change; the value to send in `If-Match`.
    pub version: u64,
    /// RFC 3339 time of creation.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

/// Field names of [`Meta`] as they appear in JSON, and the other server
/// fields of an API object (`shared`: a network another account shared
/// with the caller); stripped from input.
pub const META_FIELDS: [&str; 8] = [
    "id",
    "account",
    "version",
    "createdAt",
    "updatedAt",
    "kind",
    "status",
    "shared",
];

/// A resource as stored and as returned by the API (metadata and spec
/// flattened into one JSON object, plus an optional server-computed
/// `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "S: Spec")]
pub struct Resource<S: Spec> {
    /// Server metadata.
    pub meta: Meta,
    /// What the user asked for.
    pub spec: S,
    /// Server-computed facts (for example an association's DNS name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S: Spec> Resource<S> {
    /// The flat JSON shape the API returns: `kind`, metadata, spec fields,
    /// and `status` when present.
    pub fn to_api_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("kind".into(), S::KIND.as_str().into());
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&self.meta) {
            out.extend(m);
        }
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&self.spec) {
            out.extend(m);
        }
        if let Some(s) = &self.status {
            out.insert("status".into(), s.clone());
        }
        serde_json::Value::Object(out)
    }
}
