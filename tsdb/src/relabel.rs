//! Relabeling exactly as Prometheus's `model/relabel`: `relabel_configs` rewrite a scrape
//! target's labels before scraping, `metric_relabel_configs` rewrite (or drop) each scraped
//! series before it is stored.
//!
//! Regexes are fully anchored (`^(?s:…)$`); the `replacement` and (for `replace`) the
//! `target_label` are templates expanded like Go's `regexp.Expand` (`$1`, `${1}`, `$name`,
//! `$$`), which the `regex` crate's [`regex::Captures::expand`] implements with the same rules.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::labels::Labels;

/// What a relabel step does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sets `target_label` to the expanded `replacement` when `regex` matches the joined source
    /// values (removes it when the expansion is empty).
    #[default]
    Replace,
    /// Drops the series/target unless `regex` matches the joined source values.
    Keep,
    /// Drops the series/target when `regex` matches the joined source values.
    Drop,
    /// Drops unless the joined source values equal the value of `target_label`.
    KeepEqual,
    /// Drops when the joined source values equal the value of `target_label`.
    DropEqual,
    /// Sets `target_label` to md5(joined source values) mod `modulus`.
    HashMod,
    /// Copies every label whose name matches `regex` to the name given by `replacement`.
    LabelMap,
    /// Removes every label whose name matches `regex`.
    LabelDrop,
    /// Removes every label whose name does not match `regex`.
    LabelKeep,
    /// Sets `target_label` to the lowercased joined source values.
    Lowercase,
    /// Sets `target_label` to the uppercased joined source values.
    Uppercase,
}

impl Action {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    /// Parses an action case-insensitively, as Prometheus does.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
        let s = String::deserialize(d)?;
        Action::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown relabel action {s:?}")))
    }
}

/// A regex as written in the configuration, compiled fully anchored.
#[derive(Clone, Debug)]
pub struct RelabelRegex {
    source: String,
    re: Regex,
}

impl RelabelRegex {
    /// Compiles `source` as `^(?s:source)$`.
    pub fn new(source: &str) -> Result<RelabelRegex, regex::Error> {
        Ok(RelabelRegex {
            source: source.to_string(),
            re: Regex::new(&format!("^(?s:{source})$"))?,
        })
    }

    /// The expression as configured (unanchored).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    fn captures<'h>(&self, s: &'h str) -> Option<regex::Captures<'h>> {
        self.re.captures(s)
    }
}

impl Default for RelabelRegex {
    fn default() -> RelabelRegex {
        DEFAULT_REGEX.clone()
    }
}

static DEFAULT_REGEX: LazyLock<RelabelRegex> = LazyLock::new(|| RelabelRegex {
    source: "(.*)".to_string(),
    re: Regex::new("^(?s:(.*))$").unwrap_or_else(|e| panic!("default relabel regex: {e}")),
});

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &RelabelRegex) -> bool {
        self.source == other.source
    }
}

impl Serialize for RelabelRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RelabelRegex, D::Error> {
        let s = String::deserialize(d)?;
        RelabelRegex::new(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// Label names as written in `source_labels`, each checked to be a valid label name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LabelNames(pub Vec<String>);

impl<'de> Deserialize<'de> for LabelNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LabelNames, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        for n in &v {
            if !is_valid_label_name(n) {
                return Err(serde::de::Error::custom(format!(
                    "{n:?} is not a valid label name"
                )));
            }
        }
        Ok(LabelNames(v))
    }
}

/// One relabel step, with Prometheus's YAML field names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched against `regex`.
    pub source_labels: LabelNames,
    pub separator: String,
    pub regex: RelabelRegex,
    /// For `hashmod`.
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

impl Default for RelabelConfig {
    /// Prometheus's `DefaultRelabelConfig`.
    fn default() -> RelabelConfig {
        RelabelConfig {
            source_labels: LabelNames::default(),
            separator: ";".to_string(),
            regex: RelabelRegex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: "$1".to_string(),
            action: Action::Replace,
        }
    }
}

/// `^[a-zA-Z_][a-zA-Z0-9_]*$`: Prometheus 2's label name rule.
pub fn is_valid_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `target_label`/`replacement` template that expands to a label name
/// (Prometheus's `relabelTarget`).
static RELABEL_TARGET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$")
        .unwrap_or_else(|e| panic!("relabel target regex: {e}"))
});

fn has_template_var(s: &str) -> bool {
    s.contains('$')
}

impl RelabelConfig {
    /// Prometheus's `Config.Validate`: the message names the problem, the caller prefixes the
    /// dotted key.
    pub fn validate(&self) -> Result<(), String> {
        use Action::*;
        let a = self.action;
        let def = RelabelConfig::default();
        if a == HashMod && self.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            a,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {a} action requires 'target_label' value"
            ));
        }
        let invalid_target = || {
            format!(
                "{:?} is invalid 'target_label' for {a} action",
                self.target_label
            )
        };
        if a == Replace {
            let ok = if has_template_var(&self.target_label) {
                RELABEL_TARGET.is_match(&self.target_label)
            } else {
                is_valid_label_name(&self.target_label)
            };
            if !ok {
                return Err(invalid_target());
            }
        }
        if matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual | HashMod)
            && !is_valid_label_name(&self.target_label)
        {
            return Err(invalid_target());
        }
        if matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual)
            && self.replacement != def.replacement
        {
            return Err(format!("'replacement' can not be set for {a} action"));
        }
        if a == LabelMap && !RELABEL_TARGET.is_match(&self.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {a} action",
                self.replacement
            ));
        }
        if matches!(a, KeepEqual | DropEqual)
            && (self.regex != def.regex
                || self.modulus != def.modulus
                || self.separator != def.separator
                || self.replacement != def.replacement)
        {
            return Err(format!(
                "{a} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(a, LabelDrop | LabelKeep)
            && (!self.source_labels.0.is_empty()
                || self.target_label != def.target_label
                || self.modulus != def.modulus
                || self.separator != def.separator
                || self.replacement != def.replacement)
        {
            return Err(format!(
                "{a} action requires only 'regex', and no other fields"
            ));
        }
        Ok(())
    }
}

/// Validates a list of relabel steps; messages start with `prefix[i]`.
pub fn validate_all(configs: &[RelabelConfig], prefix: &str) -> Result<(), String> {
    for (i, c) in configs.iter().enumerate() {
        c.validate().map_err(|e| format!("{prefix}[{i}]: {e}"))?;
    }
    Ok(())
}

/// A mutable label set for relabeling: a missing label reads as the empty string and setting
/// the empty string removes it, as in Prometheus's `labels.Builder`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelsBuilder {
    map: BTreeMap<String, String>,
}

impl LabelsBuilder {
    pub fn new(labels: &Labels) -> LabelsBuilder {
        LabelsBuilder {
            map: labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> &str {
        self.map.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.map.remove(name);
        } else {
            self.map.insert(name.to_string(), value.to_string());
        }
    }

    pub fn del(&mut self, name: &str) {
        self.map.remove(name);
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Removes every label whose name `drop` accepts.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.map.retain(|n, _| keep(n));
    }

    pub fn labels(&self) -> Labels {
        Labels::from_pairs(self.map.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }
}

/// Applies the steps in order; `None` when a step drops the label set. An empty result is
/// also `None` (as Prometheus's `Process` reports it).
pub fn process(labels: &Labels, configs: &[RelabelConfig]) -> Option<Labels> {
    let mut b = LabelsBuilder::new(labels);
    if !process_builder(&mut b, configs) {
        return None;
    }
    let out = b.labels();
    (!out.is_empty()).then_some(out)
}

/// Applies the steps to a builder; `false` when a step drops it.
pub fn process_builder(b: &mut LabelsBuilder, configs: &[RelabelConfig]) -> bool {
    configs.iter().all(|c| relabel(c, b))
}

fn relabel(cfg: &RelabelConfig, b: &mut LabelsBuilder) -> bool {
    let val = cfg
        .source_labels
        .0
        .iter()
        .map(|n| b.get(n))
        .collect::<Vec<_>>()
        .join(&cfg.separator);
    match cfg.action {
        Action::Drop => {
            if cfg.regex.is_match(&val) {
                return false;
            }
        }
        Action::Keep => {
            if !cfg.regex.is_match(&val) {
                return false;
            }
        }
        Action::DropEqual => {
            if b.get(&cfg.target_label) == val {
                return false;
            }
        }
        Action::KeepEqual => {
            if b.get(&cfg.target_label) != val {
                return false;
            }
        }
        Action::Replace => {
            // Prometheus's fast path: set (or delete) a constant label.
            if val.is_empty()
                && cfg.regex == *DEFAULT_REGEX
                && !has_template_var(&cfg.target_label)
                && !has_template_var(&cfg.replacement)
            {
                b.set(&cfg.target_label, &cfg.replacement);
                return true;
            }
            let Some(caps) = cfg.regex.captures(&val) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&cfg.target_label, &mut target);
            if !is_valid_label_name(&target) {
                return true;
            }
            let mut res = String::new();
            caps.expand(&cfg.replacement, &mut res);
            if res.is_empty() {
                b.del(&target);
            } else {
                b.set(&target, &res);
            }
        }
        Action::Lowercase => b.set(&cfg.target_label, &val.to_lowercase()),
        Action::Uppercase => b.set(&cfg.target_label, &val.to_uppercase()),
        Action::HashMod => {
            let hash = Md5::digest(val.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&hash[8..16]);
            // Only the last 8 bytes, big-endian, as Prometheus does.
            let m = u64::from_be_bytes(tail) % cfg.modulus.max(1);
            b.set(&cfg.target_label, &m.to_string());
        }
        Action::LabelMap => {
            let snapshot: Vec<(String, String)> = b
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            for (name, value) in snapshot {
                if let Some(caps) = cfg.regex.captures(&name) {
                    let mut res = String::new();
                    caps.expand(&cfg.replacement, &mut res);
                    b.set(&res, &value);
                }
            }
        }
        Action::LabelDrop => b.retain(|n| !cfg.regex.is_match(n)),
        Action::LabelKeep => b.retain(|n| cfg.regex.is_match(n)),
    }
    true
}

#[cfg(test)]
mod tests;
