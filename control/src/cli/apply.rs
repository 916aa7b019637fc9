//! `trellis apply -f FILE`: upsert every document of a file, in an order
//! where references resolve, and say what changed.
//!
//! The file is parsed and every document validated locally first; when any
//! is invalid, every problem of every document is printed and nothing is
//! sent. Then each document is `PUT` by name (networks and target groups
//! before the services that use them, associations last; file order within
//! a kind). The server may still reject a document (a reference to a
//! missing resource, a conflict): apply stops there, says which document
//! and how many were applied before it. Applying the same file again
//! changes nothing and says so.

use super::error::{CliError, Exit, exit_for};
use super::kinds::qualified;
use crate::client::{Client, PutOutcome};
use std::collections::HashMap;
use std::io::Write;
use trellis_config::{
    AccessLogSubscriptionSpec, Document, Kind, ProxyAssociationSpec, ServiceAssociationSpec,
    ServiceNetworkSpec, ServiceSpec, Spec, TargetGroupSpec, ValidationErrors, parse_documents,
    spec_from_json,
};

/// A document with its 1-based number in the file.
#[derive(Debug, Clone)]
pub struct Numbered {
    /// Position in the file (1-based).
    pub number: usize,
    /// The document.
    pub doc: Document,
}

/// The documents in apply order: by the position of their kind in
/// [`Kind::ALL`], and in file order within a kind.
pub fn apply_order(docs: Vec<Document>) -> Vec<Numbered> {
    let rank = |k: Kind| Kind::ALL.iter().position(|x| *x == k).unwrap_or(usize::MAX);
    let mut out: Vec<Numbered> = docs
        .into_iter()
        .enumerate()
        .map(|(i, doc)| Numbered { number: i + 1, doc })
        .collect();
    // `sort_by_key` is stable: file order survives within a kind.
    out.sort_by_key(|n| rank(n.doc.kind));
    out
}

/// Problems found before anything is sent, each naming its document.
pub fn check_documents(docs: &[Numbered]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: HashMap<(Kind, &str), usize> = HashMap::new();
    let mut sorted: Vec<&Numbered> = docs.iter().collect();
    sorted.sort_by_key(|n| n.number);
    for n in sorted {
        let what = format!(
            "document {} ({})",
            n.number,
            qualified(n.doc.kind, &n.doc.name)
        );
        if let Some(first) = seen.insert((n.doc.kind, n.doc.name.as_str()), n.number) {
            problems.push(format!(
                "{what}:\n  name: '{}' is already defined by document {first}",
                n.doc.name
            ));
            continue;
        }
        if let Err(e) = validate_document(&n.doc) {
            let mut s = format!("{what}:");
            for fe in &e.errors {
                s.push_str("\n  ");
                s.push_str(&fe.to_string());
            }
            problems.push(s);
        }
    }
    problems
}

/// Validate one document as the server would before storing it (shape,
/// ranges, formats); references are checked by the server.
pub fn validate_document(doc: &Document) -> Result<(), ValidationErrors> {
    fn check<S: Spec>(body: &serde_json::Value) -> Result<(), ValidationErrors> {
        let mut s: S = spec_from_json(body.clone())?;
        s.normalize();
        s.validate()
    }
    match doc.kind {
        Kind::ServiceNetwork => check::<ServiceNetworkSpec>(&doc.body),
        Kind::TargetGroup => check::<TargetGroupSpec>(&doc.body),
        Kind::Service => check::<ServiceSpec>(&doc.body),
        Kind::ServiceAssociation => check::<ServiceAssociationSpec>(&doc.body),
        Kind::ProxyAssociation => check::<ProxyAssociationSpec>(&doc.body),
        Kind::AccessLogSubscription => check::<AccessLogSubscriptionSpec>(&doc.body),
    }
}

/// Counts of what an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Resources that did not exist.
    pub created: usize,
    /// Resources whose spec changed.
    pub configured: usize,
    /// Resources already as written.
    pub unchanged: usize,
}

impl Summary {
    /// Count one outcome.
    pub fn add(&mut self, o: PutOutcome) {
        match o {
            PutOutcome::Created => self.created += 1,
            PutOutcome::Configured => self.configured += 1,
            PutOutcome::Unchanged => self.unchanged += 1,
        }
    }

    /// Resources applied.
    pub fn total(&self) -> usize {
        self.created + self.configured + self.unchanged
    }

    /// Whether anything was written.
    pub fn changed(&self) -> bool {
        self.created + self.configured > 0
    }

    /// The closing line: `no changes: 5 resources unchanged`, or
    /// `applied 5 resources: 2 created, 1 configured, 2 unchanged`.
    pub fn line(&self) -> String {
        if !self.changed() {
            return format!("no changes: {} unchanged", resources(self.unchanged));
        }
        let parts: Vec<String> = [
            (self.created, "created"),
            (self.configured, "configured"),
            (self.unchanged, "unchanged"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect();
        format!("applied {}: {}", resources(self.total()), parts.join(", "))
    }
}

fn resources(n: usize) -> String {
    if n == 1 {
        "1 resource".into()
    } else {
        format!("{n} resources")
    }
}

/// How the file was named on the command line, for messages.
pub fn source_label(file: &str) -> String {
    if file == "-" {
        "stdin".into()
    } else {
        file.to_string()
    }
}

/// Read a file, or stdin for `-`.
pub fn read_source(file: &str) -> Result<String, CliError> {
    if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::new(Exit::Usage, format!("reading stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::new(Exit::Usage, format!("reading {file}: {e}")))
    }
}

/// Parse, check and apply `text`; print one line per document and the
/// summary to `out`.
pub async fn apply_text(
    client: &Client,
    source: &str,
    text: &str,
    out: &mut impl Write,
) -> Result<Summary, CliError> {
    let docs = parse_documents(text)
        .map_err(|e| CliError::new(Exit::Invalid, format!("{source}: {e}")))?;
    apply_documents(client, source, docs, out).await
}

/// Check and apply parsed documents; print one line per document and the
/// summary to `out`.
pub async fn apply_documents(
    client: &Client,
    source: &str,
    docs: Vec<Document>,
    out: &mut impl Write,
) -> Result<Summary, CliError> {
    if docs.is_empty() {
        return Err(CliError::new(
            Exit::Invalid,
            format!("{source}: no documents to apply"),
        ));
    }
    let docs = apply_order(docs);
    let problems = check_documents(&docs);
    if !problems.is_empty() {
        let n = problems.len();
        return Err(CliError::new(
            Exit::Invalid,
            format!(
                "{source}: {} invalid; nothing was applied\n{}",
                if n == 1 {
                    "1 document is".to_string()
                } else {
                    format!("{n} documents are")
                },
                problems.join("\n")
            ),
        ));
    }

    let mut summary = Summary::default();
    for n in &docs {
        let what = qualified(n.doc.kind, &n.doc.name);
        match client.put(n.doc.kind, &n.doc.name, &n.doc.body).await {
            Ok((outcome, _)) => {
                summary.add(outcome);
                writeln!(out, "{what} {}", outcome.as_str())?;
                out.flush()?;
            }
            Err(e) => {
                let before = if summary.total() == 0 {
                    "nothing was applied".to_string()
                } else {
                    format!(
                        "{} of {} documents were applied before it ({})",
                        summary.total(),
                        docs.len(),
                        summary.line()
                    )
                };
                return Err(CliError::new(
                    exit_for(&e),
                    format!(
                        "{what} (document {} of {source}) was not applied: {e}\n{before}",
                        n.number
                    ),
                ));
            }
        }
    }
    writeln!(out, "{}", summary.line())?;
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Numbered> {
        apply_order(parse_documents(yaml).unwrap())
    }

    #[test]
    fn order_follows_kind_all_and_is_stable_within_a_kind() {
        let d = docs(
            "kind: ProxyAssociation\nname: pa\n---\n\
             kind: Service\nname: s1\n---\n\
             kind: ServiceAssociation\nname: sa\n---\n\
             kind: TargetGroup\nname: tg-b\n---\n\
             kind: Service\nname: s0\n---\n\
             kind: ServiceNetwork\nname: net\n---\n\
             kind: TargetGroup\nname: tg-a\n",
        );
        let names: Vec<_> = d.iter().map(|n| n.doc.name.as_str()).collect();
        assert_eq!(names, ["net", "tg-b", "tg-a", "s1", "s0", "sa", "pa"]);
        let numbers: Vec<_> = d.iter().map(|n| n.number).collect();
        assert_eq!(numbers, [6, 4, 7, 2, 5, 3, 1]);
    }

    #[test]
    fn every_problem_of_every_document_is_named() {
        let d = docs(
            "kind: ServiceNetwork\nname: ok\n---\n\
             kind: TargetGroup\nname: Bad\nport: 0\n---\n\
             kind: ServiceNetwork\nname: ok\n---\n\
             kind: Service\nname: s\nlisteners:\n- name: l\n  defaultAction: {forward: {targetGroups: []}}\n",
        );
        let p = check_documents(&d);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].starts_with("document 2 (target-group/Bad):"),
            "{}",
            p[0]
        );
        assert!(p[0].contains("\n  name: ") && p[0].contains("\n  port: must be"));
        assert_eq!(
            p[1],
            "document 3 (service-network/ok):\n  name: 'ok' is already defined by document 1"
        );
        assert!(
            p[2].contains("listeners[0].defaultAction.forward.targetGroups: must list 1 to 10"),
            "{}",
            p[2]
        );
    }

    #[test]
    fn type_errors_are_caught_before_sending() {
        let d = docs("kind: TargetGroup\nname: tg\nport: eighty\n");
        let p = check_documents(&d);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("\n  port: "), "{}", p[0]);
    }

    #[test]
    fn the_demo_file_is_valid() {
        let d = docs(super::super::demo::DEMO_YAML);
        assert!(check_documents(&d).is_empty(), "{:#?}", check_documents(&d));
        assert_eq!(d.first().map(|n| n.doc.kind), Some(Kind::ServiceNetwork));
    }

    #[test]
    fn summary_wording() {
        let mut s = Summary::default();
        for _ in 0..5 {
            s.add(PutOutcome::Unchanged);
        }
        assert_eq!(s.line(), "no changes: 5 resources unchanged");
        let mut one = Summary::default();
        one.add(PutOutcome::Unchanged);
        assert_eq!(one.line(), "no changes: 1 resource unchanged");
        s.add(PutOutcome::Created);
        s.add(PutOutcome::Configured);
        assert_eq!(
            s.line(),
            "applied 7 resources: 1 created, 1 configured, 5 unchanged"
        );
        let mut c = Summary::default();
        c.add(PutOutcome::Created);
        assert_eq!(c.line(), "applied 1 resource: 1 created");
        assert!(c.changed());
    }

    #[test]
    fn stdin_is_named_in_messages() {
        assert_eq!(source_label("-"), "stdin");
        assert_eq!(source_label("a.yaml"), "a.yaml");
    }
}
