//! Aligned text tables and short relative times, as `kubectl get` prints
//! them.

use std::time::{Duration, SystemTime};

/// Spaces between columns.
const GAP: usize = 3;

/// A table with a header row; cells are left-aligned and columns are as
/// wide as their widest cell. Lines carry no trailing spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row; missing cells print empty, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut r: Vec<String> = cells.into_iter().map(Into::into).collect();
        r.resize(self.headers.len(), String::new());
        self.rows.push(r);
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending with '\n'.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    line.extend(std::iter::repeat_n(' ', w - width(c) + GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// A duration in the largest fitting unit, kubectl style: `45s`, `12m`,
/// `3h`, `5d`; two units below ten of the larger one (`2m30s`, `3h5m`).
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=599 if !s.is_multiple_of(60) => format!("{}m{}s", s / 60, s % 60),
        120..=3599 => format!("{}m", s / 60),
        3600..=35999 if !(s / 60).is_multiple_of(60) => format!("{}h{}m", s / 3600, (s / 60) % 60),
        3600..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Parse an RFC 3339 time (`Z` or `+00:00`, with or without fractions).
pub fn parse_time(t: &str) -> Option<SystemTime> {
    // humantime reads only the `Z` form of UTC.
    let z = t.strip_suffix("+00:00").map(|b| format!("{b}Z"));
    humantime::parse_rfc3339_weak(z.as_deref().unwrap_or(t)).ok()
}

/// How long ago an RFC 3339 time was, e.g. `3m`; the text itself when it
/// does not parse, `-` when absent.
pub fn age(rfc3339: Option<&str>, now: SystemTime) -> String {
    since(rfc3339, now, "")
}

/// Like [`age`], with " ago" after a parsed time (`3m ago`).
pub fn ago(rfc3339: Option<&str>, now: SystemTime) -> String {
    since(rfc3339, now, " ago")
}

/// `in 23h`, `expired 3s ago`, or `-` (a certificate's end of validity).
pub fn expires(rfc3339: Option<&str>, now: SystemTime) -> String {
    let Some(t) = rfc3339.filter(|t| !t.is_empty()) else {
        return "-".into();
    };
    match parse_time(t) {
        Some(at) => match at.duration_since(now) {
            Ok(left) => format!("in {}", short_duration(left)),
            Err(e) => format!("expired {} ago", short_duration(e.duration())),
        },
        None => t.to_string(),
    }
}

fn since(rfc3339: Option<&str>, now: SystemTime, suffix: &str) -> String {
    let Some(t) = rfc3339.filter(|t| !t.is_empty()) else {
        return "-".into();
    };
    match parse_time(t) {
        Some(then) => format!(
            "{}{suffix}",
            short_duration(now.duration_since(then).unwrap_or_default())
        ),
        None => t.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn columns_align_without_trailing_spaces() {
        let mut t = Table::new(["NAME", "ID", "VERSION"]);
        t.row(["catalog", "svc-1", "3"]);
        t.row(["a-much-longer-name", "svc-22", ""]);
        assert_eq!(
            t.render(),
            "NAME                 ID       VERSION\n\
             catalog              svc-1    3\n\
             a-much-longer-name   svc-22\n"
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn rows_are_padded_to_the_header() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["x"]);
        assert_eq!(t.render(), "A   B   C\nx\n");
    }

    #[test]
    fn wide_characters_count_once() {
        let mut t = Table::new(["N", "M"]);
        t.row(["é", "1"]);
        assert_eq!(t.render(), "N   M\né   1\n");
    }

    #[test]
    fn durations_read_like_kubectl() {
        let d = Duration::from_secs;
        assert_eq!(short_duration(d(0)), "0s");
        assert_eq!(short_duration(d(45)), "45s");
        assert_eq!(short_duration(d(150)), "2m30s");
        assert_eq!(short_duration(d(720)), "12m");
        assert_eq!(short_duration(d(3600 + 300)), "1h5m");
        assert_eq!(short_duration(d(5 * 3600)), "5h");
        assert_eq!(short_duration(d(20 * 3600 + 60)), "20h");
        assert_eq!(short_duration(d(3 * 86_400 + 5)), "3d");
    }

    #[test]
    fn ages_from_rfc3339() {
        let now = humantime::parse_rfc3339("2025-01-01T00:10:00Z").unwrap();
        assert_eq!(age(Some("2025-01-01T00:00:00Z"), now), "10m");
        assert_eq!(age(Some("2025-01-01T00:09:59.123Z"), now), "0s");
        // A clock ahead of ours is not negative.
        assert_eq!(age(Some("2025-01-01T00:11:00Z"), now), "0s");
        assert_eq!(age(Some("2025-01-01T00:07:00+00:00"), now), "3m");
        assert_eq!(age(Some("yesterday"), now), "yesterday");
        assert_eq!(age(None, now), "-");
        assert_eq!(ago(Some("2025-01-01T00:08:00Z"), now), "2m ago");
        assert_eq!(ago(Some("soon"), now), "soon");
    }
}
