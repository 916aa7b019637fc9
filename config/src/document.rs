//! Parsing user input: one spec from JSON, or many `kind`-tagged documents
//! from a multi-document YAML or JSON file.

use crate::error::ValidationErrors;
use crate::kind::{Kind, Spec};
use crate::resource::META_FIELDS;

/// Parse one spec from a JSON value, ignoring server metadata fields, with
/// type errors reported at their field path.
pub fn spec_from_json<S: Spec>(value: serde_json::Value) -> Result<S, ValidationErrors> {
    let value = match value {
        serde_json::Value::Object(mut m) => {
            if let Some(k) = m.get("kind").and_then(|k| k.as_str()) {
                match k.parse::<Kind>() {
                    Ok(kind) if kind == S::KIND => {}
                    _ => {
                        return Err(ValidationErrors::one(
                            "kind",
                            format!("is '{k}' but this endpoint takes {}", S::KIND),
                        ));
                    }
                }
            }
            for f in META_FIELDS {
                m.remove(f);
            }
            serde_json::Value::Object(m)
        }
        other => {
            return Err(ValidationErrors::one(
                "",
                format!("expected a JSON object, got {}", json_type(&other)),
            ));
        }
    };
    serde_path_to_error::deserialize::<_, S>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ValidationErrors::one(path, e.into_inner().to_string())
    })
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// One document of a file: its kind, its name and its body (as JSON, the
/// form the REST API takes).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// From the document's `kind` field.
    pub kind: Kind,
    /// From the document's `name` field.
    pub name: String,
    /// The whole document, `kind` included.
    pub body: serde_json::Value,
}

/// Error parsing a file of documents; says which document and why.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The text is not YAML/JSON.
    #[error("document {index}: {message}")]
    Syntax {
        /// 1-based document number in the file.
        index: usize,
        /// Parser message, with line and column.
        message: String,
    },
    /// A document lacks `kind` or `name`, or has an unknown kind.
    #[error("document {index}: {message}")]
    Shape {
        /// 1-based document number in the file.
        index: usize,
        /// What is missing or wrong.
        message: String,
    },
}

/// Parse a file of `---`-separated YAML documents (JSON is YAML, so a JSON
/// object or an array of objects works too). Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, DocumentError> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value: serde_json::Value =
            serde::Deserialize::deserialize(de).map_err(|e| DocumentError::Syntax {
                index,
                message: e.to_string(),
            })?;
        let items = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        for body in items {
            let obj = body.as_object().ok_or_else(|| DocumentError::Shape {
                index,
                message: "expected a mapping with 'kind' and 'name'".into(),
            })?;
            let kind_str =
                obj.get("kind")
                    .and_then(|k| k.as_str())
                    .ok_or_else(|| DocumentError::Shape {
                        index,
                        message: "missing 'kind'".into(),
                    })?;
            let kind = kind_str.parse::<Kind>().map_err(|e| DocumentError::Shape {
                index,
                message: e.to_string(),
            })?;
            let name = obj
                .get("name")
                .and_then(|k| k.as_str())
                .ok_or_else(|| DocumentError::Shape {
                    index,
                    message: "missing 'name'".into(),
                })?
                .to_string();
            out.push(Document { kind, name, body });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceNetworkSpec;

    #[test]
    fn multi_document_yaml() {
        let docs = parse_documents(
            "kind: ServiceNetwork\nname: a\n---\nkind: tg\nname: b\nport: 80\n---\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].kind, Kind::TargetGroup);
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = spec_from_json::<ServiceNetworkSpec>(
            serde_json::json!({"name": "a", "authType": "MAYBE"}),
        )
        .unwrap_err();
        assert_eq!(e.errors[0].field, "authType");
        let e = spec_from_json::<ServiceNetworkSpec>(serde_json::json!({"name": "a", "prot": 1}))
            .unwrap_err();
        assert!(e.errors[0].message.contains("unknown field `prot`"), "{e}");
    }

    #[test]
    fn meta_fields_are_ignored_but_kind_must_match() {
        let ok = spec_from_json::<ServiceNetworkSpec>(
            serde_json::json!({"kind": "ServiceNetwork", "id": "sn-1", "version": 3, "name": "a"}),
        );
        assert!(ok.is_ok());
        let e = spec_from_json::<ServiceNetworkSpec>(
            serde_json::json!({"kind": "Service", "name": "a"}),
        )
        .unwrap_err();
        assert_eq!(e.errors[0].field, "kind");
    }
}
