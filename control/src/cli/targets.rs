//! `trellis get targets TG`: a target group's targets with their health,
//! as the control plane aggregates it over the proxies that check them.
//! `describe target-group` prints the same table.

use super::output::{Format, render};
use super::table::{Table, short_duration};
use crate::client::Client;
use crate::target_health::{TargetList, TargetStatus};
use std::time::SystemTime;

/// Fetch and print the targets of `target_group`.
pub async fn get(
    client: &Client,
    target_group: &str,
    format: Format,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let list = client.targets(target_group).await?;
    let text = match format {
        Format::Table if list.items.is_empty() => {
            format!("Target group {} has no targets.\n", list.name)
        }
        Format::Table => table(&list, SystemTime::now()).render(),
        f => {
            let items = list
                .items
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            render(&items, true, f)?
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// ADDRESS, PORT, PROXY, STATE, REASON: one row per target.
pub fn table(list: &TargetList, now: SystemTime) -> Table {
    let mut t = Table::new(["ADDRESS", "PORT", "PROXY", "STATE", "REASON"]);
    for target in &list.items {
        t.row([
            target.address.clone(),
            target.port.to_string(),
            target.proxy.clone().unwrap_or_else(|| "-".into()),
            super::get::wire(&target.state),
            reason(target, now),
        ]);
    }
    t
}

/// The reason, shortened for a table cell: a draining target says how long
/// it has left instead of the full server text.
fn reason(t: &TargetStatus, now: SystemTime) -> String {
    if let Some(until) = t
        .draining_until
        .as_deref()
        .and_then(super::table::parse_time)
    {
        let left = until.duration_since(now).unwrap_or_default();
        return format!("deregistered, draining ({} left)", short_duration(left));
    }
    t.reason.clone().unwrap_or_else(|| "-".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_row_per_target_with_state_and_reason() {
        let list: TargetList = serde_json::from_value(json!({
            "targetGroup": "tg-1", "name": "g", "healthChecks": true, "items": [
                {"address": "10.0.0.1", "port": 80, "state": "HEALTHY", "reports": []},
                {"address": "10.0.0.2", "port": 81, "proxy": "front", "state": "UNHEALTHY",
                 "reason": "p1: HealthCheckFailed: status 500", "reports": []},
                {"address": "10.0.0.3", "port": 80, "state": "DRAINING",
                 "reason": "DeregistrationInProgress: ...",
                 "drainingUntil": "2025-01-01T01:02:30.000Z", "reports": []}
            ]
        }))
        .unwrap();
        let now = humantime::parse_rfc3339("2025-01-01T01:00:00Z").unwrap();
        assert_eq!(
            table(&list, now).render(),
            "ADDRESS    PORT   PROXY   STATE       REASON\n\
             10.0.0.1   80     -       HEALTHY     -\n\
             10.0.0.2   81     front   UNHEALTHY   p1: HealthCheckFailed: status 500\n\
             10.0.0.3   80     -       DRAINING    deregistered, draining (2m30s left)\n"
        );
    }
}
