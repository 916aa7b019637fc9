//! Tests of the policy language through its public interface: text in,
//! decisions and field errors out.

mod evaluation;
mod operators;
mod validation;

use super::*;
use crate::network::AuthType;
use serde_json::{Value, json};

pub(super) const ACCT_A: &str = "111122223333";
pub(super) const ACCT_B: &str = "444455556666";
pub(super) const WEB_A: &str = "spiffe://trellis.local/account/111122223333/workload/web";
pub(super) const BATCH_B: &str = "spiffe://trellis.local/account/444455556666/workload/batch-7";

/// An authenticated GET from A's `web` to A's service `api` on port 80,
/// through network `shop`, from 10.1.2.3, with no headers or query.
pub(super) fn req() -> RequestFacts<'static> {
    RequestFacts {
        caller: Some(Caller {
            account: ACCT_A,
            workload: WEB_A,
        }),
        method: "GET",
        path: "/orders/42",
        query: "",
        headers: &NoHeaders,
        port: 80,
        source_ip: Some("10.1.2.3".parse().unwrap()),
        service_network: Some("shop"),
        service: "api",
        service_account: ACCT_A,
    }
}

/// [`req`] from B's `batch-7`.
pub(super) fn req_b() -> RequestFacts<'static> {
    RequestFacts {
        caller: Some(Caller {
            account: ACCT_B,
            workload: BATCH_B,
        }),
        ..req()
    }
}

/// [`req`] without a mesh identity.
pub(super) fn anon() -> RequestFacts<'static> {
    RequestFacts {
        caller: None,
        ..req()
    }
}

/// Compile a policy written as JSON, or fail the test with its errors.
pub(super) fn policy(doc: Value) -> CompiledPolicy {
    CompiledPolicy::parse(&doc.to_string()).unwrap_or_else(|e| panic!("{e}\n{doc:#}"))
}

/// A policy of the given statements.
pub(super) fn statements(list: Value) -> CompiledPolicy {
    policy(json!({"Version": "2012-10-17", "Statement": list}))
}

/// One Allow for every authenticated caller, on every resource, when
/// `condition` holds.
pub(super) fn allow_if(condition: Value) -> CompiledPolicy {
    statements(json!([{
        "Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke",
        "Resource": "*", "Condition": condition
    }]))
}

/// Evaluate with only a service-level IAM policy.
pub(super) fn at_service<'p>(p: &'p CompiledPolicy, r: &RequestFacts<'_>) -> Decision<'p> {
    evaluate(None, Some((&AuthType::Iam, Some(p))), r)
}

/// Whether the service-level policy allows the request.
pub(super) fn allows(p: &CompiledPolicy, r: &RequestFacts<'_>) -> bool {
    at_service(p, r).is_allowed()
}

/// The statement reference of a decision that names one.
pub(super) fn sref(index: usize, sid: Option<&str>) -> StatementRef<'_> {
    StatementRef { index, sid }
}
