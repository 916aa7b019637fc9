//! A small helper to collect field errors while walking a document.

use crate::error::{FieldError, ValidationErrors};

/// Collects errors under a current field path. Push a segment with
/// [`Validator::field`] or [`Validator::index`] and the closure's errors land
/// under it.
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<String>,
    errors: Vec<FieldError>,
}

impl Validator {
    /// A validator at the document root.
    pub fn new() -> Self {
        Self::default()
    }

    fn current(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if seg.starts_with('[') || out.is_empty() {
                out.push_str(seg);
            } else {
                out.push('.');
                out.push_str(seg);
            }
        }
        out
    }

    /// Record a problem at the current path.
    pub fn error(&mut self, message: impl Into<String>) {
        let field = self.current();
        self.errors.push(FieldError {
            field,
            message: message.into(),
        });
    }

    /// Record a problem at `name` under the current path.
    pub fn error_at(&mut self, name: &str, message: impl Into<String>) {
        self.field(name, |v| v.error(message));
    }

    /// Run `f` with `name` appended to the path.
    pub fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(name.to_string());
        let r = f(self);
        self.path.pop();
        r
    }

    /// Run `f` with `[i]` appended to the path.
    pub fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(format!("[{i}]"));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Finish: `Ok` if nothing was recorded.
    pub fn finish(self) -> Result<(), ValidationErrors> {
        ValidationErrors {
            errors: self.errors,
        }
        .into_result()
    }

    /// Check a resource name: 1–63 characters of `a-z0-9-`, starting with a
    /// letter and not ending with `-` (so it can be a DNS label).
    pub fn name(&mut self, field: &str, name: &str) {
        self.field(field, |v| {
            if let Err(msg) = check_dns_label(name) {
                v.error(msg);
            }
        });
    }

    /// Check `value` lies in `range` (inclusive).
    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        field: &str,
        value: T,
        range: (T, T),
    ) {
        if value < range.0 || value > range.1 {
            self.error_at(
                field,
                format!("must be between {} and {}, got {value}", range.0, range.1),
            );
        }
    }
}

/// Why `name` is not a valid DNS label, if it is not.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > crate::limits::MAX_NAME_LEN {
        return Err(format!(
            "must be at most {} characters, got {}",
            crate::limits::MAX_NAME_LEN,
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "'{name}' may contain only lowercase letters, digits and '-'"
        ));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(format!("'{name}' must start with a lowercase letter"));
    }
    if name.ends_with('-') {
        return Err(format!("'{name}' must not end with '-'"));
    }
    Ok(())
}

/// Why `domain` is not a valid DNS name, if it is not.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("must not be empty".into());
    }
    if domain.len() > crate::limits::MAX_DOMAIN_LEN {
        return Err(format!(
            "must be at most {} characters",
            crate::limits::MAX_DOMAIN_LEN
        ));
    }
    if !domain.contains('.') {
        return Err(format!(
            "'{domain}' must have at least two labels, e.g. 'api.example.com'"
        ));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "'{domain}' is not a valid lowercase DNS name (bad label '{label}')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_dotted_with_indexes() {
        let mut v = Validator::new();
        v.field("listeners", |v| {
            v.index(0, |v| {
                v.field("rules", |v| {
                    v.index(2, |v| v.field("match", |v| v.error_at("value", "bad")))
                })
            })
        });
        let e = v.finish().unwrap_err();
        assert_eq!(e.errors[0].field, "listeners[0].rules[2].match.value");
    }

    #[test]
    fn labels_and_domains() {
        assert!(check_dns_label("shop-1").is_ok());
        assert!(check_dns_label("Shop").is_err());
        assert!(check_dns_label("1shop").is_err());
        assert!(check_dns_label("shop-").is_err());
        assert!(check_domain("api.example.com").is_ok());
        assert!(check_domain("localhost").is_err());
        assert!(check_domain("a..b").is_err());
    }
}
