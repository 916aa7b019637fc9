//! An auth policy as it is attached to a service network or a service:
//! the `authPolicy` field of their specs, and what the snapshot carries.
//!
//! The field holds the policy document as a JSON object; a string of JSON
//! text is accepted too (Lattice's API takes the policy as a string), and
//! is kept as written. Either way it is validated on write, with every
//! problem under `authPolicy.` (`authPolicy.Statement[0].Effect: ...`).

use super::compile::CompiledPolicy;
use super::document::PolicyDocument;
use crate::error::ValidationErrors;
use crate::validate::Validator;
use serde_json::Value;

/// The spec field that holds an attached policy, as error paths name it.
pub const AUTH_POLICY_FIELD: &str = "authPolicy";

/// Validate an attached policy: a JSON object, or a string of JSON text.
pub fn parse_attached(value: &Value) -> Result<PolicyDocument, ValidationErrors> {
    match value {
        Value::String(text) => PolicyDocument::parse(text),
        other => PolicyDocument::from_value(other),
    }
}

/// Validate and compile an attached policy in one step (the proxy does
/// this once per snapshot).
pub fn compile_attached(value: &Value) -> Result<CompiledPolicy, ValidationErrors> {
    parse_attached(value).map(|d| CompiledPolicy::new(&d))
}

/// Record the problems of `policy`, if any, under [`AUTH_POLICY_FIELD`].
pub(crate) fn check_attached(v: &mut Validator, policy: Option<&Value>) {
    let Some(value) = policy else {
        return;
    };
    if let Err(e) = parse_attached(value) {
        v.field(AUTH_POLICY_FIELD, |v| {
            for fe in e.errors {
                if fe.field.is_empty() {
                    v.error(fe.message);
                } else {
                    v.error_at(&fe.field, fe.message);
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(policy: Value) -> Vec<String> {
        let mut v = Validator::new();
        check_attached(&mut v, Some(&policy));
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn problems_are_prefixed_with_the_field() {
        let e = errors(json!({"Statement": [{"Effect": "Permit", "Principal": "*",
            "Action": "trellis:Invoke", "Resource": "*"}]}));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("authPolicy.Statement[0].Effect: "),
            "{e:?}"
        );
        let e = errors(json!([1]));
        assert!(e[0].starts_with("authPolicy: "), "{e:?}");
    }

    #[test]
    fn text_and_objects_are_both_accepted() {
        let doc = json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "trellis:Invoke", "Resource": "*"}});
        assert!(errors(doc.clone()).is_empty());
        assert!(errors(Value::String(doc.to_string())).is_empty());
        assert!(errors(json!("{not json"))[0].starts_with("authPolicy: not valid JSON"));
        assert_eq!(compile_attached(&doc).unwrap().len(), 1);
    }

    #[test]
    fn the_readme_example_is_valid_yaml_policy() {
        let yaml = r#"
kind: Service
name: api
authType: IAM
authPolicy:
  Statement:
    - Sid: ReadAnyone
      Effect: Allow
      Principal: {AWS: ["*", "anonymous"]}
      Action: trellis:Invoke
      Resource: "api/*"
      Condition: {StringEquals: {"trellis:RequestMethod": [GET, HEAD]}}
    - Sid: DenyAdmin
      Effect: Deny
      Principal: "*"
      Action: trellis:Invoke
      Resource: "*"
      Condition: {StringLike: {"trellis:RequestPath": "/admin/*"}}
"#;
        let docs = crate::parse_documents(yaml).unwrap();
        assert_eq!(docs.len(), 1);
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let policy = compile_attached(&v["authPolicy"]).unwrap();
        assert_eq!(policy.len(), 2);
        assert_eq!(policy.sid(1), Some("DenyAdmin"));
    }
}
