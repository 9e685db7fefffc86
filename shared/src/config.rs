//! Reading configuration files: the one idiom behind `leased.toml` (its `[azure]` table
//! included) and `orchestrator --config`.
//!
//! A file's shape is declared as `#[derive(Deserialize, Default)]` structs, one per section,
//! whose settings are [`Field`]s and whose tables are [`Section`]s. Reading such a struct
//! never fails and never stops early: a setting of the wrong type becomes
//! [`Field::Wrong`], a table's keys that its struct does not declare are kept aside, and
//! the next setting is read as if nothing happened. A validation pass, written once per
//! file, then takes every setting through a [`Report`]: it reports what reading found
//! (wrong types, unknown keys with a suggestion when a known name is close), what is
//! missing, and whatever the file's own rules refuse (a value out of range, two settings
//! that do not go together). Every problem carries its setting's dotted key
//! (`lease.duration_secs: 10 is outside 15–60`, `client.command[1]: must be a string, not
//! an integer`), and they come out in the order the validation pass asks for them: a
//! section that is not a table when it is opened, then each setting in turn with its own
//! checks, then the section's unknown keys.
//!
//! ```
//! use serde::Deserialize;
//! use shared::config::{parse, Field, Report, Section};
//!
//! #[derive(Deserialize, Default)]
//! struct File {
//!     name: Field<String>,
//!     http: Section<Http>,
//! }
//! #[derive(Deserialize, Default)]
//! struct Http {
//!     port: Field<u16>,
//! }
//!
//! let text = "nmae = \"x\"\n[http]\nport = \"80\"\n";
//! let mut report = Report::default();
//! let (file, unknown) = report.open("", Section::<File>::read(parse(text).unwrap()));
//! let name = report.required("name", file.name);
//! report.finish(unknown);
//! let (http, unknown) = report.open("http", file.http);
//! let port = report.or("http.port", http.port, 8080);
//! report.finish(unknown);
//! assert_eq!((name, port), (None, None));
//! let lines: Vec<String> = report.into_problems().iter().map(|p| p.to_string()).collect();
//! assert_eq!(
//!     lines,
//!     [
//!         "name: is required",
//!         "nmae: unknown setting (did you mean name?)",
//!         "http.port: must be a whole number, not a string",
//!     ]
//! );
//! ```
//!
//! Why this shape rather than serde alone: `#[serde(deny_unknown_fields)]` and a typed
//! field stop the whole file at its first problem, and serde's messages name Rust types
//! (`expected u64`). Here each setting is deserialized on its own from the file's
//! [`toml::Value`], so one bad value cannot hide the next, and the messages speak of what
//! the file holds.
//!
//! Two things are asked of serde's derive rather than written out by hand, so that a
//! struct stays the only list of a section's names and types. What a setting's type
//! accepts, and the names a section's struct declares, are read from its `Deserialize`
//! impl by a probe: a deserializer that records the first request the impl makes
//! (`deserialize_u64`, `deserialize_seq` and its element, `deserialize_struct` with its
//! field names, `deserialize_enum` with its variants) and answers nothing. The field names
//! find the unknown keys and their suggestions, without a `#[serde(flatten)]` catch-all
//! field or a second list of known names to keep in step; the expectation describes a
//! wrong value in the file's terms (`must be an array of strings, not a string`) and
//! finds each wrong element of an array or table, with its index or name in the key.
//! A section's struct therefore must not use `flatten` (the derive then asks for a map and
//! names no fields) or `deny_unknown_fields` (unknown keys are this module's to report).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde::Deserialize;
use toml::{Table, Value};

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting's dotted name (`lease.duration_secs`); `None` for the file as a whole.
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    /// A problem with the setting at `key`.
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// A problem with the file as a whole.
    pub fn file(message: impl Into<String>) -> Self {
        Self {
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn as_slice(&self) -> &[Problem] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    /// The dotted names of the settings with problems, in report order.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().filter_map(|p| p.key.as_deref()).collect()
    }
}

impl From<Vec<Problem>> for Problems {
    fn from(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty(), "no problems to report");
        Self(problems)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Parses TOML text. A syntax error ends reading there: it is one problem for the whole
/// file (`not valid TOML: line 2, column 1: …`).
pub fn parse(text: &str) -> Result<Table, Problem> {
    text.parse::<Table>().map_err(|e| {
        let message = one_line(e.message());
        Problem::file(match e.span() {
            Some(span) => {
                let (line, column) = line_and_column(text, span.start);
                format!("not valid TOML: line {line}, column {column}: {message}")
            }
            None => format!("not valid TOML: {message}"),
        })
    })
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn one_line(message: &str) -> String {
    message.trim().replace(['\n', '\r'], " ")
}

/// A setting as read from the file.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Present(T),
    /// Present, but not a `T`; what is wrong, and where inside the value.
    Wrong(Vec<Fault>),
}

/// What is wrong with a setting's value, or with one part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Where in the value, appended to the setting's key: empty for the value itself,
    /// `[1]` for an array's second element, `.NAME` for a table's entry.
    pub at: String,
    pub message: String,
}

impl<T: DeserializeOwned> Field<T> {
    /// `value` as a `T`, or what keeps it from being one.
    pub fn from_value(value: Value) -> Self {
        match T::deserialize(value.clone()) {
            Ok(v) => Self::Present(v),
            Err(e) => {
                let mut faults = Vec::new();
                find_faults(&value, &shape_of::<T>(), "", &mut faults);
                if faults.is_empty() {
                    // Something the type's own rules refuse, beyond its shape.
                    faults.push(Fault {
                        at: String::new(),
                        message: one_line(e.message()),
                    });
                }
                Self::Wrong(faults)
            }
        }
    }
}

// A missing setting is "none": serde's derive offers it to `deserialize_option`, as it
// does for an `Option` field, so a struct of fields needs no `#[serde(default)]`.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Value::deserialize(d).map(Field::from_value)
    }
}

/// A table of settings as read from the file: its struct `T` (all defaults when the table
/// is absent or not a table), and the keys `T` does not declare.
#[derive(Debug, Clone)]
pub struct Section<T> {
    settings: T,
    /// What was found instead of a table ("an integer").
    not_a_table: Option<&'static str>,
    unknown: Vec<String>,
    known: &'static [&'static str],
}

impl<T: Default> Default for Section<T> {
    fn default() -> Self {
        Self {
            settings: T::default(),
            not_a_table: None,
            unknown: Vec::new(),
            known: &[],
        }
    }
}

impl<T: DeserializeOwned + Default> Section<T> {
    /// A whole file (see [`parse`]) read as its top-level section.
    pub fn read(table: Table) -> Self {
        Self::from_value(Value::Table(table))
    }

    fn from_value(value: Value) -> Self {
        let Value::Table(table) = value else {
            return Self {
                not_a_table: Some(a(&value)),
                ..Self::default()
            };
        };
        let Shape::Struct(known) = shape_of::<T>() else {
            panic!("a section is a struct of settings, without #[serde(flatten)]")
        };
        let unknown = table
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        // Only the unknown keys could make a struct of fields and sections fail, and serde
        // skips those unless told to deny them.
        let settings = T::deserialize(Value::Table(table)).unwrap_or_else(|e| {
            panic!(
                "a section's settings must all be Field or Section: {}",
                e.message()
            )
        });
        Self {
            settings,
            not_a_table: None,
            unknown,
            known,
        }
    }
}

impl<'de, T: DeserializeOwned + Default> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(SectionVisitor(PhantomData))
    }
}

struct SectionVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned + Default> Visitor<'de> for SectionVisitor<T> {
    type Value = Section<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Section::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Section::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Value::deserialize(d).map(Section::from_value)
    }
}

/// The keys a section's struct does not declare, held until [`Report::finish`] so that they
/// are listed after the section's own settings.
#[derive(Debug)]
#[must_use = "give it to Report::finish"]
pub struct Unknown {
    key: String,
    names: Vec<String>,
    known: &'static [&'static str],
}

/// Collects the problems of one file, in the order the validation pass finds them.
#[derive(Debug, Default)]
pub struct Report {
    problems: Vec<Problem>,
}

impl Report {
    pub fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::at(key, message));
    }

    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// The setting at `key` (dotted): `Some(Some(v))` when set, `Some(None)` when absent,
    /// `None` when wrong (reported, one problem per fault).
    pub fn optional<T>(&mut self, key: &str, field: Field<T>) -> Option<Option<T>> {
        match field {
            Field::Absent => Some(None),
            Field::Present(v) => Some(Some(v)),
            Field::Wrong(faults) => {
                for f in faults {
                    self.problem(format!("{key}{}", f.at), f.message);
                }
                None
            }
        }
    }

    /// The setting at `key`, or `default` when absent; `None` when wrong (reported).
    pub fn or<T>(&mut self, key: &str, field: Field<T>, default: T) -> Option<T> {
        self.optional(key, field).map(|v| v.unwrap_or(default))
    }

    /// The setting at `key`; `None` when absent or wrong (reported either way).
    pub fn required<T>(&mut self, key: &str, field: Field<T>) -> Option<T> {
        match self.optional(key, field) {
            Some(None) => {
                self.problem(key, "is required");
                None
            }
            v => v.flatten(),
        }
    }

    /// The settings of the section at `key` (`""` for the top level), reporting now if it
    /// is not a table; its unknown keys wait for [`Report::finish`].
    pub fn open<T>(&mut self, key: &str, section: Section<T>) -> (T, Unknown) {
        if let Some(found) = section.not_a_table {
            self.problem(key, format!("must be a section ([{key}]), not {found}"));
        }
        let unknown = Unknown {
            key: key.to_string(),
            names: section.unknown,
            known: section.known,
        };
        (section.settings, unknown)
    }

    /// Reports a section's unknown keys, each with the closest known name or the list.
    pub fn finish(&mut self, unknown: Unknown) {
        for name in unknown.names {
            let message = match closest(&name, unknown.known) {
                Some(near) => format!("unknown setting (did you mean {near}?)"),
                None if unknown.known.is_empty() => "unknown setting".to_string(),
                None => format!("unknown setting; known here: {}", unknown.known.join(", ")),
            };
            let key = match unknown.key.as_str() {
                "" => name,
                section => format!("{section}.{name}"),
            };
            self.problem(key, message);
        }
    }
}

/// A known name within edit distance 2 of `name`, if any (the closest, then the first).
fn closest(name: &str, known: &'static [&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The value's TOML type with its article: "a string", "an integer".
pub fn a(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

// ---- what a type accepts, asked of its Deserialize impl ----

/// What a type's `Deserialize` impl asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Any,
    Bool,
    /// Bounds clipped to TOML's 64-bit integers.
    Integer {
        min: i64,
        max: i64,
    },
    Float,
    String,
    /// A unit-variant enum, written as one of its names.
    OneOf(&'static [&'static str]),
    Array(Box<Shape>),
    /// A map: its keys' shape and its values'.
    Table(Box<Shape>, Box<Shape>),
    Struct(&'static [&'static str]),
}

impl Shape {
    fn phrase(&self) -> String {
        match self {
            Self::Any => "a value".into(),
            Self::Bool => "true or false".into(),
            Self::Integer { .. } => "a whole number".into(),
            Self::Float => "a number".into(),
            Self::String => "a string".into(),
            Self::OneOf(names) => format!("one of {}", names.join(", ")),
            Self::Array(e) => format!("an array of {}", e.plural()),
            Self::Table(_, v) if **v == Self::Any => "a table".into(),
            Self::Table(_, v) => format!("a table of {}", v.plural()),
            Self::Struct(_) => "a table".into(),
        }
    }

    fn plural(&self) -> String {
        match self {
            Self::Any => "values".into(),
            Self::Bool => "booleans".into(),
            Self::Integer { .. } => "whole numbers".into(),
            Self::Float => "numbers".into(),
            Self::String => "strings".into(),
            Self::OneOf(names) => format!("names ({})", names.join(", ")),
            Self::Array(_) => "arrays".into(),
            Self::Table(..) | Self::Struct(_) => "tables".into(),
        }
    }
}

/// Lists what is wrong in `value` for `shape`, each at its place below `at`. Finds nothing
/// when the value has the right shape and the type refuses it for another reason.
fn find_faults(value: &Value, shape: &Shape, at: &str, out: &mut Vec<Fault>) {
    let mut fault = |message: String| {
        out.push(Fault {
            at: at.to_string(),
            message,
        })
    };
    match (shape, value) {
        (Shape::Any, _)
        | (Shape::Bool, Value::Boolean(_))
        | (Shape::Float, Value::Float(_) | Value::Integer(_))
        | (Shape::String, Value::String(_))
        | (Shape::Struct(_), Value::Table(_)) => {}
        (Shape::Integer { min, max }, Value::Integer(n)) => {
            if n < min && *min == 0 {
                fault(format!("{n} is negative"));
            } else if n < min {
                fault(format!("{n} is too small (at least {min})"));
            } else if n > max {
                fault(format!("{n} is too large (at most {max})"));
            }
        }
        (Shape::OneOf(names), Value::String(s)) => {
            if !names.contains(&s.as_str()) {
                fault(format!("{s:?} is not one of {}", names.join(", ")));
            }
        }
        (Shape::Array(element), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                find_faults(item, element, &format!("{at}[{i}]"), out);
            }
        }
        (Shape::Table(key, entry), Value::Table(table)) => {
            for (name, item) in table {
                let at = format!("{at}.{name}");
                match &**key {
                    Shape::OneOf(names) if !names.contains(&name.as_str()) => out.push(Fault {
                        at,
                        message: format!("is not one of {}", names.join(", ")),
                    }),
                    _ => find_faults(item, entry, &at, out),
                }
            }
        }
        (shape, found) => fault(format!("must be {}, not {}", shape.phrase(), a(found))),
    }
}

fn shape_of<T: DeserializeOwned>() -> Shape {
    let mut shape = None;
    let _ = T::deserialize(Probe { shape: &mut shape });
    shape.unwrap_or(Shape::Any)
}

/// A deserializer that records what it is first asked for, then answers with an error
/// (or, for strings and enums, a stand-in, so that a map's value is asked for after its
/// key).
struct Probe<'a> {
    shape: &'a mut Option<Shape>,
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl Probe<'_> {
    fn record<V>(self, shape: Shape) -> Result<V, Stop> {
        *self.shape = Some(shape);
        Err(Stop)
    }
}

fn clip(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

macro_rules! probe_integers {
    ($($method:ident: $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            self.record(Shape::Integer {
                min: clip(i128::try_from(<$t>::MIN).unwrap_or(i128::MIN)),
                max: clip(i128::try_from(<$t>::MAX).unwrap_or(i128::MAX)),
            })
        }
    )*};
}

macro_rules! probe_as {
    ($($method:ident => $shape:expr),*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            self.record($shape)
        }
    )*};
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    probe_integers!(
        deserialize_i8: i8, deserialize_i16: i16, deserialize_i32: i32, deserialize_i64: i64,
        deserialize_i128: i128, deserialize_u8: u8, deserialize_u16: u16,
        deserialize_u32: u32, deserialize_u64: u64, deserialize_u128: u128
    );
    probe_as!(
        deserialize_any => Shape::Any,
        deserialize_bool => Shape::Bool,
        deserialize_f32 => Shape::Float,
        deserialize_f64 => Shape::Float,
        deserialize_char => Shape::String,
        deserialize_bytes => Shape::Any,
        deserialize_byte_buf => Shape::Any,
        deserialize_unit => Shape::Any,
        deserialize_ignored_any => Shape::Any
    );

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        *self.shape = Some(Shape::String);
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Any)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let mut element = None;
        let _ = visitor.visit_seq(ProbeSeq {
            element: &mut element,
            asked: false,
        });
        self.record(Shape::Array(Box::new(element.unwrap_or(Shape::Any))))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let (mut key, mut value) = (None, None);
        let _ = visitor.visit_map(ProbeMap {
            key: &mut key,
            value: &mut value,
            asked: false,
        });
        self.record(Shape::Table(
            Box::new(key.unwrap_or(Shape::Any)),
            Box::new(value.unwrap_or(Shape::Any)),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Struct(fields))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.shape = Some(Shape::OneOf(variants));
        match variants.first() {
            Some(first) => visitor.visit_enum(IntoDeserializer::<Stop>::into_deserializer(*first)),
            None => Err(Stop),
        }
    }
}

/// One element, then the end.
struct ProbeSeq<'a> {
    element: &'a mut Option<Shape>,
    asked: bool,
}

impl<'de> de::SeqAccess<'de> for ProbeSeq<'_> {
    type Error = Stop;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Stop> {
        if std::mem::replace(&mut self.asked, true) {
            return Ok(None);
        }
        seed.deserialize(Probe {
            shape: &mut *self.element,
        })
        .map(Some)
    }
}

/// One entry, then the end.
struct ProbeMap<'a> {
    key: &'a mut Option<Shape>,
    value: &'a mut Option<Shape>,
    asked: bool,
}

impl<'de> de::MapAccess<'de> for ProbeMap<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if std::mem::replace(&mut self.asked, true) {
            return Ok(None);
        }
        seed.deserialize(Probe {
            shape: &mut *self.key,
        })
        .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Stop> {
        seed.deserialize(Probe {
            shape: &mut *self.value,
        })
    }
}

#[cfg(test)]
mod tests;
