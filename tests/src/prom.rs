//! A strict parser of the OpenMetrics 1.0 text format, the exposition
//! Trellis serves at `/metrics` (prometheus-client's encoding), so that a
//! test fails on a malformed exposition and then reads values by name and
//! labels.
//!
//! Strict means: every sample belongs to a family declared by `# TYPE`
//! before it, with a suffix that type allows (`_total`/`_created` for a
//! counter; `_bucket`/`_count`/`_sum`/`_created` for a histogram; none
//! for a gauge); a family's lines are contiguous and its metadata comes
//! once, before its samples; names and label names are valid, label
//! values are quoted with only `\\`, `\"` and `\n` escapes, and no label
//! repeats; values are numbers; no series appears twice; no blank line;
//! the text ends with `# EOF` and a newline and has nothing after it;
//! counters are not negative; each histogram series has ascending `le`
//! buckets that never decrease, ends with `+Inf`, and its `_count`
//! equals that bucket and a `_sum` is present. Timestamps and exemplars
//! are not accepted (Trellis emits neither).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    StateSet,
    Info,
    Summary,
    Unknown,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "stateset" => Kind::StateSet,
            "info" => Kind::Info,
            "summary" => Kind::Summary,
            "unknown" => Kind::Unknown,
            _ => return None,
        })
    }

    /// Sample name suffixes allowed for a family of this type.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Histogram => &["_bucket", "_count", "_sum", "_created"],
            Kind::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            Kind::Summary => &["", "_count", "_sum", "_created"],
            Kind::Info => &["_info"],
            Kind::Gauge | Kind::StateSet | Kind::Unknown => &[""],
        }
    }
}

/// Label names to values.
pub type Labels = BTreeMap<String, String>;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full sample name (with its suffix).
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A family: its metadata and samples, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    pub families: Vec<Family>,
}

/// Why an exposition is malformed: the line (1-based) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let ok_rest = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(ok_rest)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => {
            // Rust's parser also takes "inf", "infinity", "nan": refuse them.
            let ok = s
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
            if ok && !s.is_empty() {
                s.parse().ok()
            } else {
                None
            }
        }
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err(format!("label {name}: raw newline")),
                Some((_, c)) => value.push(c),
            }
        };
        rest = &rest[end + 1..];
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        rest = rest
            .strip_prefix(',')
            .ok_or("expected ',' or '}' after a label")?;
    }
}

/// Parse a whole exposition; see the module docs for what is refused.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let err = |line: usize, m: String| ParseError { line, message: m };
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or_else(|| err(text.lines().count(), "does not end with '# EOF'".into()))?;
    let mut families: Vec<Family> = Vec::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut typed: HashSet<String> = HashSet::new();
    for (i, line) in body.split_terminator('\n').enumerate() {
        let n = i + 1;
        if line.is_empty() {
            return Err(err(n, "blank line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (word, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next();
            if line == "# EOF" {
                return Err(err(n, "'# EOF' before the end".into()));
            }
            if !is_name(name, true) {
                return Err(err(n, format!("invalid family name {name:?}")));
            }
            let current = families.last().map(|f| f.name.as_str());
            if current != Some(name) {
                if closed.contains(name) {
                    return Err(err(n, format!("family {name} is not contiguous")));
                }
                if let Some(prev) = current {
                    closed.insert(prev.to_string());
                }
                families.push(Family {
                    name: name.to_string(),
                    kind: Kind::Unknown,
                    help: None,
                    unit: None,
                    samples: Vec::new(),
                });
            }
            let Some(f) = families.last_mut() else {
                return Err(err(n, "no family".into()));
            };
            if !f.samples.is_empty() {
                return Err(err(n, format!("metadata of {name} after its samples")));
            }
            match (word, arg) {
                ("HELP", Some(h)) if f.help.is_none() => f.help = Some(h.to_string()),
                ("UNIT", Some(u)) if f.unit.is_none() => {
                    if !f.name.ends_with(&format!("_{u}")) {
                        return Err(err(n, format!("{name} does not end with its unit {u}")));
                    }
                    f.unit = Some(u.to_string())
                }
                ("TYPE", Some(t)) if !typed.contains(name) => {
                    let kind =
                        Kind::parse(t).ok_or_else(|| err(n, format!("unknown type {t:?}")))?;
                    if kind == Kind::Counter && f.name.ends_with("_total") {
                        return Err(err(n, format!("counter family {name} ends with _total")));
                    }
                    f.kind = kind;
                    typed.insert(name.to_string());
                }
                _ => return Err(err(n, format!("bad or repeated metadata line {line:?}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(err(n, format!("bad comment line {line:?}")));
        }
        // A sample: name, optional labels, one space, the value.
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(err(n, format!("invalid sample name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(|m| err(n, m))?
        } else {
            (Labels::new(), &line[name_end..])
        };
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| err(n, "expected one space before the value".into()))?;
        if value_text.contains(' ') || value_text.contains('#') {
            return Err(err(n, "timestamps and exemplars are not expected".into()));
        }
        let value = parse_value(value_text)
            .ok_or_else(|| err(n, format!("invalid value {value_text:?}")))?;
        let Some(f) = families.last_mut() else {
            return Err(err(n, format!("sample {name} before any TYPE")));
        };
        if !typed.contains(&f.name) {
            return Err(err(n, format!("family {} has no TYPE", f.name)));
        }
        let suffix = name
            .strip_prefix(f.name.as_str())
            .ok_or_else(|| err(n, format!("sample {name} is not of the family {}", f.name)))?;
        if !f.kind.suffixes().contains(&suffix) {
            return Err(err(
                n,
                format!("suffix {suffix:?} not allowed for a {:?}", f.kind),
            ));
        }
        if f.kind == Kind::Counter && suffix == "_total" && (value.is_nan() || value < 0.0) {
            return Err(err(n, format!("counter {name} is {value}")));
        }
        let key = (
            name.to_string(),
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        );
        if !series.insert(key) {
            return Err(err(n, format!("series {name}{labels:?} repeated")));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    let exposition = Exposition { families };
    exposition.check_histograms().map_err(|m| err(0, m))?;
    Ok(exposition)
}

impl Exposition {
    /// The family of this name.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Every sample, of every family.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }

    /// The value of the sample `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// [`Exposition::get`], with an absent series read as 0 (series are
    /// created by their first count).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every counter sample (`_total`) by name and labels.
    pub fn counters(&self) -> HashMap<(String, Labels), f64> {
        self.families
            .iter()
            .filter(|f| f.kind == Kind::Counter)
            .flat_map(|f| f.samples.iter())
            .filter(|s| s.name.ends_with("_total"))
            .map(|s| ((s.name.clone(), s.labels.clone()), s.value))
            .collect()
    }

    /// The counters that changed from `before` to `self`, and by how much.
    pub fn counter_increments(&self, before: &Exposition) -> BTreeMap<(String, Labels), f64> {
        let old = before.counters();
        self.counters()
            .into_iter()
            .filter_map(|(k, v)| {
                let d = v - old.get(&k).copied().unwrap_or(0.0);
                (d != 0.0).then_some((k, d))
            })
            .collect()
    }

    fn check_histograms(&self) -> Result<(), String> {
        for f in self.families.iter().filter(|f| f.kind == Kind::Histogram) {
            // Group by the labels other than `le`.
            let mut by_series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
            for s in &f.samples {
                let key = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                by_series.entry(key).or_default().push(s);
            }
            for (labels, samples) in by_series {
                let what = format!("{}{labels:?}", f.name);
                let mut last_le = f64::NEG_INFINITY;
                let mut last_count = 0.0;
                let mut inf = None;
                let (mut count, mut sum) = (None, None);
                for s in samples {
                    match &s.name[f.name.len()..] {
                        "_bucket" => {
                            let le = s
                                .labels
                                .get("le")
                                .and_then(|v| parse_value(v))
                                .ok_or_else(|| format!("{what}: bucket without a valid le"))?;
                            if le <= last_le || s.value < last_count {
                                return Err(format!("{what}: buckets out of order at le={le}"));
                            }
                            (last_le, last_count) = (le, s.value);
                            if le == f64::INFINITY {
                                inf = Some(s.value);
                            }
                        }
                        "_count" => count = Some(s.value),
                        "_sum" => sum = Some(s.value),
                        _ => {}
                    }
                }
                match (inf, count, sum) {
                    (Some(i), Some(c), Some(_)) if i == c && last_le == f64::INFINITY => {}
                    _ => {
                        return Err(format!(
                            "{what}: needs a last +Inf bucket equal to _count, and a _sum"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP x_requests Requests.\n\
        # TYPE x_requests counter\n\
        x_requests_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\n\
        x_requests_total{a=\"2\",b=\"\"} 0\n\
        # HELP x_up Up.\n\
        # TYPE x_up gauge\n\
        x_up 1\n\
        # HELP x_d_seconds D.\n\
        # TYPE x_d_seconds histogram\n\
        x_d_seconds_sum{s=\"a\"} 1.5\n\
        x_d_seconds_count{s=\"a\"} 2\n\
        x_d_seconds_bucket{le=\"0.5\",s=\"a\"} 1\n\
        x_d_seconds_bucket{s=\"a\",le=\"+Inf\"} 2\n\
        # EOF\n";

    #[test]
    fn a_good_exposition_parses() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.families.len(), 3);
        assert_eq!(
            e.get("x_requests_total", &[("a", "1"), ("b", "q\"\\\n")]),
            Some(3.0)
        );
        assert_eq!(e.value("x_requests_total", &[("a", "9")]), 0.0);
        assert_eq!(e.family("x_d_seconds").unwrap().kind, Kind::Histogram);
        let mut later = e.clone();
        later.families[0].samples[1].value = 5.0;
        let inc = later.counter_increments(&e);
        assert_eq!(inc.len(), 1);
        assert_eq!(inc.values().next(), Some(&5.0));
    }

    #[test]
    fn malformed_expositions_are_refused() {
        let bad = [
            ("no eof", GOOD.replace("# EOF\n", "")),
            ("after eof", format!("{GOOD}x_up 2\n")),
            ("blank line", GOOD.replace("# HELP x_up", "\n# HELP x_up")),
            ("untyped", "x_up 1\n# EOF\n".to_string()),
            ("bad value", GOOD.replace("x_up 1", "x_up one")),
            ("rust-only value", GOOD.replace("x_up 1", "x_up inf")),
            ("duplicate", GOOD.replace("x_up 1\n", "x_up 1\nx_up 2\n")),
            ("wrong suffix", GOOD.replace("x_up 1", "x_up_total 1")),
            (
                "counter suffix",
                GOOD.replace("x_requests_total{a=\"2\"", "x_requests{a=\"2\""),
            ),
            ("negative counter", GOOD.replace("b=\"\"} 0", "b=\"\"} -1")),
            ("repeated label", GOOD.replace("a=\"2\",b", "a=\"2\",a")),
            ("unquoted", GOOD.replace("a=\"2\"", "a=2")),
            ("bad escape", GOOD.replace("b=\"\"", "b=\"\\t\"")),
            ("bad label name", GOOD.replace("a=\"2\"", "2a=\"2\"")),
            ("two spaces", GOOD.replace("x_up 1", "x_up  1")),
            ("timestamp", GOOD.replace("x_up 1", "x_up 1 1700000000")),
            ("no +Inf", GOOD.replace("le=\"+Inf\"", "le=\"9\"")),
            (
                "count mismatch",
                GOOD.replace("_count{s=\"a\"} 2", "_count{s=\"a\"} 3"),
            ),
            ("no sum", GOOD.replace("x_d_seconds_sum{s=\"a\"} 1.5\n", "")),
            (
                "buckets decrease",
                GOOD.replace("le=\"0.5\",s=\"a\"} 1", "le=\"0.5\",s=\"a\"} 3"),
            ),
            (
                "not contiguous",
                GOOD.replace("# EOF\n", "# HELP x_up Up.\n# TYPE x_up gauge\n# EOF\n"),
            ),
            (
                "metadata after samples",
                GOOD.replace("x_up 1\n", "x_up 1\n# HELP x_up again\n"),
            ),
            (
                "help without type",
                "# HELP x_up Up.\nx_up 1\n# EOF\n".to_string(),
            ),
            (
                "type twice",
                GOOD.replace(
                    "# TYPE x_up gauge\n",
                    "# TYPE x_up gauge\n# TYPE x_up gauge\n",
                ),
            ),
        ];
        for (what, text) in bad {
            assert!(parse(&text).is_err(), "{what} was accepted:\n{text}");
        }
    }
}
