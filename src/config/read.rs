//! First pass over host.toml: TOML syntax, known sections and keys, and value types, each value kept with
//! its line and source text, against the keys of `schema`. Defaults, ranges and cross-field rules are
//! `validate`'s.
//!
//! The walk uses toml_edit's document (not serde) because serde stops at the first error and drops
//! positions, while an admin should see every mistake in one run, each with its line.

use super::check::closest;
use super::error::ConfigIssue;
use super::schema::{self, Key};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use toml_edit::{ImDocument, Item, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Int,
    Str,
    StrList,
    IntList,
}

/// A value as written: where it is and what the file said.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Val<T> {
    pub value: T,
    pub line: Option<usize>,
    /// TOML source of the value, shortened to one line; shown as `field = src` in messages.
    pub src: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Bool(bool),
    Int(i64),
    Str(String),
    /// Well-typed entries with their index in the written array (wrong-typed ones are reported and dropped).
    StrList(Vec<(usize, Val<String>)>),
    IntList(Vec<(usize, Val<i64>)>),
}

/// host.toml after the first pass: the values that were present and well-typed, by dotted path.
#[derive(Debug, Default)]
pub(super) struct Raw {
    values: HashMap<String, Val<Scalar>>,
    /// Every known key that was written, well-typed or not (a mistyped key is not also "missing").
    present: HashSet<String>,
    /// Line of each section's header (or first dotted key), to point at when a key in it is missing.
    section_lines: HashMap<&'static str, usize>,
}

impl Raw {
    fn get(&self, path: &str) -> Option<&Val<Scalar>> {
        debug_assert!(kind_of(path).is_some(), "{path} is not in schema::KEYS");
        self.values.get(path)
    }

    fn map<T>(&self, path: &str, f: impl Fn(&Scalar) -> Option<T>) -> Option<Val<T>> {
        let v = self.get(path)?;
        Some(Val {
            value: f(&v.value)?,
            line: v.line,
            src: v.src.clone(),
        })
    }

    pub fn bool(&self, path: &str) -> Option<Val<bool>> {
        self.map(path, |s| match s {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub fn int(&self, path: &str) -> Option<Val<i64>> {
        self.map(path, |s| match s {
            Scalar::Int(i) => Some(*i),
            _ => None,
        })
    }

    pub fn str(&self, path: &str) -> Option<Val<String>> {
        self.map(path, |s| match s {
            Scalar::Str(v) => Some(v.clone()),
            _ => None,
        })
    }

    /// The entries only (with their written index); the list's own position is not needed.
    pub fn str_list(&self, path: &str) -> Option<Vec<(usize, Val<String>)>> {
        self.map(path, |s| match s {
            Scalar::StrList(v) => Some(v.clone()),
            _ => None,
        })
        .map(|v| v.value)
    }

    pub fn int_list(&self, path: &str) -> Option<Vec<(usize, Val<i64>)>> {
        self.map(path, |s| match s {
            Scalar::IntList(v) => Some(v.clone()),
            _ => None,
        })
        .map(|v| v.value)
    }

    pub fn present(&self, path: &str) -> bool {
        self.present.contains(path)
    }

    pub fn section_line(&self, section: &str) -> Option<usize> {
        self.section_lines.get(section).copied()
    }
}

pub(super) fn kind_of(path: &str) -> Option<Kind> {
    schema::get(path).map(|k| k.kind)
}

/// Collects issues with line numbers computed from byte offsets into the source.
pub(super) struct Issues<'s> {
    src: &'s str,
    pub list: Vec<ConfigIssue>,
}

impl<'s> Issues<'s> {
    pub fn new(src: &'s str) -> Self {
        Issues {
            src,
            list: Vec::new(),
        }
    }

    pub fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.src.len());
        Some(self.src[..start].bytes().filter(|b| *b == b'\n').count() + 1)
    }

    /// The source text of a span, on one line and at most ~60 characters, for `field = value` display.
    fn snippet(&self, span: Option<Range<usize>>) -> Option<String> {
        let text = self.src.get(span?)?.trim();
        let first = text.lines().next().unwrap_or("");
        let mut short: String = first.chars().take(60).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        Some(short)
    }

    pub fn push(
        &mut self,
        line: Option<usize>,
        field: &str,
        value: Option<&str>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.list.push(ConfigIssue {
            line,
            field: field.to_string(),
            value: value.map(str::to_string),
            message: message.into(),
            hint,
        });
    }
}

/// Parse the TOML and walk it against [`schema::KEYS`]. A syntax error ends the walk and returns None (there is
/// no tree to validate); every other problem is recorded and the walk goes on.
pub(super) fn read(src: &str, issues: &mut Issues<'_>) -> Option<Raw> {
    let mut raw = Raw::default();
    let doc = match ImDocument::parse(src) {
        Ok(doc) => doc,
        Err(e) => {
            syntax_error(src, &e, issues);
            return None;
        }
    };
    let root = doc.as_table();
    for (key, item) in root.iter() {
        let key_span = root.key(key).and_then(|k| k.span());
        if let Some(field) = schema::keys_of("").find(|k| k.name() == key) {
            read_value(&mut raw, issues, field, item, key_span);
        } else if let Some(section) = schema::sections().into_iter().find(|s| *s == key) {
            read_section(&mut raw, issues, section, item, key_span);
        } else {
            unknown_key(issues, "", key, item, key_span);
        }
    }
    Some(raw)
}

fn read_section(
    raw: &mut Raw,
    issues: &mut Issues<'_>,
    section: &'static str,
    item: &Item,
    key_span: Option<Range<usize>>,
) {
    // A `[section]` table's span starts at its header; a dotted `section.key = …` has none, so use the key.
    let line = issues.line(item.span().or(key_span.clone()));
    let Some(table) = item.as_table_like() else {
        // A scalar shows its value; a misplaced table header does not (its "value" is the whole block).
        let value = item.as_value().and_then(|_| issues.snippet(item.span()));
        issues.push(
            line,
            section,
            value.as_deref(),
            format!("expected a table, found {}", type_name(item)),
            Some(format!(
                "write a [{section}] section with its keys below it"
            )),
        );
        return;
    };
    if let Some(line) = line {
        raw.section_lines.entry(section).or_insert(line);
    }
    for (key, value) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        // A nested table (`[synapse.workers]`) is a section of its own in the schema.
        let nested = schema::sections()
            .into_iter()
            .find(|s| s.split_once('.') == Some((section, key)));
        match (schema::keys_of(section).find(|k| k.name() == key), nested) {
            (Some(field), _) => read_value(raw, issues, field, value, key_span),
            (None, Some(sub)) => read_section(raw, issues, sub, value, key_span),
            (None, None) => unknown_key(issues, section, key, value, key_span),
        }
    }
}

fn read_value(
    raw: &mut Raw,
    issues: &mut Issues<'_>,
    field: &Key,
    item: &Item,
    key_span: Option<Range<usize>>,
) {
    let (path, key, kind, example) = (
        field.path.to_string(),
        field.name(),
        field.kind,
        field.example,
    );
    raw.present.insert(path.clone());
    let span = item.span().or(key_span);
    let line = issues.line(span.clone());
    let src = issues.snippet(span).unwrap_or_default();
    let scalar = match (kind, item.as_value()) {
        (Kind::Bool, Some(Value::Boolean(b))) => Some(Scalar::Bool(*b.value())),
        (Kind::Int, Some(Value::Integer(i))) => Some(Scalar::Int(*i.value())),
        (Kind::Str, Some(Value::String(s))) => Some(Scalar::Str(s.value().clone())),
        (Kind::StrList, Some(Value::Array(a))) => {
            let mut items = Vec::new();
            for (i, v) in a.iter().enumerate() {
                let elem_line = issues.line(v.span()).or(line);
                let elem_src = issues.snippet(v.span()).unwrap_or_default();
                match v.as_str() {
                    Some(s) => items.push((
                        i,
                        Val {
                            value: s.to_string(),
                            line: elem_line,
                            src: elem_src,
                        },
                    )),
                    None => {
                        let fix = format!("\"{}\"", elem_src.trim_matches('"'));
                        issues.push(
                            elem_line,
                            &format!("{path}[{i}]"),
                            Some(&elem_src),
                            format!("expected a string, found {}", value_type_name(v)),
                            Some(format!("quote it: {fix}")),
                        );
                    }
                }
            }
            Some(Scalar::StrList(items))
        }
        (Kind::IntList, Some(Value::Array(a))) => {
            let mut items = Vec::new();
            for (i, v) in a.iter().enumerate() {
                let elem_line = issues.line(v.span()).or(line);
                let elem_src = issues.snippet(v.span()).unwrap_or_default();
                match v.as_integer() {
                    Some(n) => items.push((
                        i,
                        Val {
                            value: n,
                            line: elem_line,
                            src: elem_src,
                        },
                    )),
                    None => {
                        // A quoted number is plain intent; anything else gets the example.
                        let hint = match v.as_str().map(|s| s.trim().parse::<u16>()) {
                            Some(Ok(n)) => format!("write it without quotes: {n}"),
                            _ => "write a port number, e.g. 22".to_string(),
                        };
                        issues.push(
                            elem_line,
                            &format!("{path}[{i}]"),
                            Some(&elem_src),
                            format!("expected a whole number, found {}", value_type_name(v)),
                            Some(hint),
                        );
                    }
                }
            }
            Some(Scalar::IntList(items))
        }
        _ => None,
    };
    match scalar {
        Some(value) => {
            raw.values.insert(path, Val { value, line, src });
        }
        None => {
            let hint = type_hint(key, kind, example, item);
            issues.push(
                line,
                &path,
                Some(&src),
                format!("expected {}, found {}", kind_name(kind), type_name(item)),
                Some(hint),
            );
        }
    }
}

/// "write presence = true": reuse what was written when the intent is plain (`"true"`, `"50"`, a lone string
/// where a list belongs), else the schema example. (A number where a string belongs gets the example: quoting
/// it would rarely make a valid host, version or name.)
fn type_hint(key: &str, kind: Kind, example: &str, item: &Item) -> String {
    let written = item.as_value();
    let fixed = match (kind, written) {
        (Kind::Bool, Some(Value::String(s))) => match s.value().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some("true".to_string()),
            "false" | "no" | "off" => Some("false".to_string()),
            _ => None,
        },
        (Kind::Int, Some(Value::String(s))) => {
            s.value().trim().parse::<i64>().ok().map(|n| n.to_string())
        }
        (Kind::Int, Some(Value::Float(f))) if f.value().fract() == 0.0 => {
            Some(format!("{}", *f.value() as i64))
        }
        // Reusing a written string only when quoting it again gives valid TOML of the same value.
        (Kind::StrList, Some(Value::String(s)))
            if !s
                .value()
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control()) =>
        {
            Some(format!("[\"{}\"]", s.value()))
        }
        // A number says nothing about which of the two is meant (1 = on? 0 = off? a port?).
        (Kind::Bool, Some(_)) => return format!("write {key} = true or {key} = false"),
        (Kind::IntList, Some(Value::Integer(n))) => Some(format!("[{}]", n.value())),
        _ => None,
    };
    format!("write {key} = {}", fixed.as_deref().unwrap_or(example))
}

fn unknown_key(
    issues: &mut Issues<'_>,
    section: &str,
    key: &str,
    item: &Item,
    span: Option<Range<usize>>,
) {
    let line = issues.line(span);
    let field = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    let is_table = item.is_table() || item.is_inline_table();
    let what = if section.is_empty() && is_table {
        "unknown section"
    } else {
        "unknown key"
    };
    let known: Vec<&str> = schema::keys_of(section).map(Key::name).collect();
    let mut candidates = known.clone();
    if section.is_empty() {
        candidates.extend(schema::sections());
    }
    let top_level =
        schema::keys_of("").any(|f| f.name() == key) || schema::sections().contains(&key);
    let hint = if !section.is_empty() && top_level {
        // TOML puts every key after a [section] header into that section: a classic slip.
        format!(
            "`{key}` is read as part of [{section}] because it comes after that header; move it above the first [section]"
        )
    } else if let Some(near) = closest(key, candidates.iter().copied()) {
        if section.is_empty() && kind_of(near).is_none() {
            format!("did you mean [{near}]?")
        } else {
            format!("did you mean `{near}`?")
        }
    } else if let Some(home) = home_section(key, section) {
        format!("`{key}` belongs in {home}; move it there")
    } else if section.is_empty() {
        let sections = schema::sections();
        format!(
            "known: {} and the sections [{}]",
            known.join(", "),
            sections.join("], [")
        )
    } else {
        format!("known keys in [{section}]: {}", known.join(", "))
    };
    issues.push(line, &field, None, what, Some(hint));
}

/// The one other section that has this key, when exactly one does (`email` → `[acme]`).
fn home_section(key: &str, except: &str) -> Option<String> {
    let mut homes = schema::KEYS
        .iter()
        .filter(|k| k.name() == key && k.section() != except)
        .map(Key::section);
    match (homes.next(), homes.next()) {
        (Some(""), None) => Some("the top level (before any [section])".to_string()),
        (Some(home), None) => Some(format!("[{home}]")),
        _ => None,
    }
}

fn syntax_error(src: &str, e: &toml_edit::TomlError, issues: &mut Issues<'_>) {
    let line = issues.line(e.span());
    let message = e.message().trim().replace('\n', ": ");
    // The common case: a bare word where a string belongs (`server_name = example.com`).
    let hint = line
        .and_then(|n| src.lines().nth(n - 1))
        .and_then(|text| {
            let (key, value) = text.split_once('=')?;
            // What follows `#` is a comment to TOML, never part of the value.
            let value = value.split('#').next().unwrap_or("");
            let (key, value) = (key.trim(), value.trim());
            let bare = !value.is_empty()
                && !value.starts_with(['"', '\'', '[', '{'])
                && value.parse::<f64>().is_err()
                && value != "true"
                && value != "false";
            // Quote it for the admin only when quoting alone makes it valid TOML of the same text.
            let plain = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:/@+".contains(c));
            let key_plain = key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            (bare && key_plain).then(|| {
                if plain {
                    format!("strings need quotes: write {key} = \"{value}\"")
                } else {
                    format!("strings need quotes: put the value of {key} in double quotes, writing \\\" for a quote inside it")
                }
            })
        })
        .or_else(|| {
            Some(if message.contains("duplicate key") {
                "each key and each [section] may appear only once (a dotted `section.key` also opens the section); merge them".to_string()
            } else {
                "see https://toml.io for the syntax".to_string()
            })
        });
    issues.push(
        line,
        "",
        None,
        format!("TOML syntax error: {message}"),
        hint,
    );
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "true or false",
        Kind::Int => "a whole number",
        Kind::Str => "a string in quotes",
        Kind::StrList => "a list of strings",
        Kind::IntList => "a list of whole numbers",
    }
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_type_name(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn value_type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}
