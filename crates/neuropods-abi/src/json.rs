//! The package's JSON files (`config.json`, `manifest.json`, each backend's
//! `0/config.json`) read into serde-derived types by [`parse`], strictly, with
//! errors naming the file and the path of the bad field.
//!
//! The text is parsed as JSON first (a syntax error names the document), then
//! the typed value is read from it through a deserializer whose error keeps
//! what went wrong as data (a missing or unknown field, a wrong type), so a
//! message reads `input_spec[0].shape: expected a list, got a string`, in
//! JSON's words rather than serde's.
//!
//! Strict is not stricter than the original Neuropod: its reader (jsoncpp)
//! iterated `null` and `{}` as empty lists, and its TensorFlow packager
//! wrapped a single init op name in a list, so list fields read through
//! [`List`] and [`Strings`] take those forms too (`docs/backends.md`, "What
//! a package's JSON files may hold", lists them field by field).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, value::MapDeserializer, value::SeqDeserializer, DeserializeOwned, Expected,
    IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{Error, Result};

/// The field named by errors about a file as a whole (not JSON, not an object).
pub const DOCUMENT: &str = "<document>";

/// Parses `text`, the contents of the package file `file`, into `T`. Every
/// error is an [`Error::InvalidConfig`] naming `file` and the field's path
/// (`input_spec[1].dtype`), or [`DOCUMENT`].
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::config(file, DOCUMENT, format!("not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(JsonValue(value)).map_err(|e| {
        let at = field_path(e.path());
        let (field, reason) = match e.into_inner() {
            FieldError::Missing(name) => (join(&at, name), "missing".to_string()),
            // The path already ends with the unknown key.
            FieldError::Unknown { field, known } => (
                at.unwrap_or(field),
                format!("unknown field (known: {})", known.join(", ")),
            ),
            FieldError::Invalid(reason) => (at.unwrap_or_else(|| DOCUMENT.to_string()), reason),
        };
        Error::config(file, field, reason)
    })
}

/// A list field as the original Neuropod read it: a JSON list, or `null`
/// or `{}`, which its reader iterated as an empty list (its own test
/// packages hold `"init_op_names": {}`). A non-empty object, a string or a
/// number is refused. A field of this type that may be absent is marked
/// `#[serde(default)]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct List<T>(pub Vec<T>);

/// A list of strings that may also be written as one string, a list of one:
/// the original's TensorFlow packager took `init_op_names="init"` and
/// wrapped it. Otherwise as [`List`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Strings(pub Vec<String>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor::<T>::new(false)).map(List)
    }
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor::<String>::new(true))
            .map(Strings)
    }
}

struct ListVisitor<T> {
    /// Whether one string is a list of it.
    one_string: bool,
    item: PhantomData<T>,
}

impl<T> ListVisitor<T> {
    fn new(one_string: bool) -> Self {
        ListVisitor {
            one_string,
            item: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.one_string {
            f.write_str("a list or a string")
        } else {
            f.write_str("a list")
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
        match map.next_key::<de::IgnoredAny>()? {
            None => Ok(Vec::new()),
            Some(_) => Err(de::Error::invalid_type(Unexpected::Map, &self)),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<T>, E> {
        if !self.one_string {
            return Err(E::invalid_type(Unexpected::Str(s), &self));
        }
        T::deserialize(s.into_deserializer()).map(|item| vec![item])
    }
}

/// `input_spec[0].shape`, or `None` at the top of the document.
fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    let text = path.to_string();
    // The path of the document itself displays as ".".
    (text != ".").then_some(text)
}

fn join(at: &Option<String>, field: &str) -> String {
    match at {
        Some(at) => format!("{at}.{field}"),
        None => field.to_string(),
    }
}

/// What went wrong at one place in a document.
#[derive(Debug)]
enum FieldError {
    /// A required field is absent.
    Missing(&'static str),
    /// A field the type does not have.
    Unknown {
        field: String,
        known: &'static [&'static str],
    },
    /// The value is of the wrong type, or refused by a check.
    Invalid(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Missing(name) => write!(f, "{name}: missing"),
            FieldError::Unknown { field, .. } => write!(f, "{field}: unknown field"),
            FieldError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FieldError::Invalid(msg.to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        FieldError::Invalid(format!(
            "expected {}, got {}",
            expected_in_json_words(expected),
            unexpected_in_json_words(&unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        FieldError::Invalid(format!(
            "expected {}, got {unexpected}",
            expected_in_json_words(expected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let names: Vec<String> = expected.iter().map(|v| format!("\"{v}\"")).collect();
        FieldError::Invalid(format!(
            "expected {}, got \"{variant}\"",
            names.join(" or ")
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        FieldError::Unknown {
            field: field.to_string(),
            known: expected,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        FieldError::Missing(field)
    }
}

/// serde's names for what a visitor expects, in JSON's words.
fn expected_in_json_words(expected: &dyn Expected) -> String {
    let text = expected.to_string();
    match text.as_str() {
        "a sequence" => "a list".to_string(),
        "a map" => "an object".to_string(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_string(),
        _ => text,
    }
}

/// The JSON type of a value serde did not expect.
fn unexpected_in_json_words(unexpected: &Unexpected<'_>) -> String {
    match unexpected {
        Unexpected::Bool(_) => "a bool".into(),
        Unexpected::Unsigned(_) | Unexpected::Signed(_) | Unexpected::Float(_) => "a number".into(),
        Unexpected::Str(_) => "a string".into(),
        Unexpected::Unit => "null".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "an object".into(),
        other => other.to_string(),
    }
}

/// A parsed JSON value as a deserializer with [`FieldError`]s.
struct JsonValue(Value);

impl JsonValue {
    fn unexpected(&self) -> Unexpected<'_> {
        match &self.0 {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Unexpected::Unsigned(u),
                (None, Some(i)) => Unexpected::Signed(i),
                (None, None) => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }
}

impl<'de> IntoDeserializer<'de, FieldError> for JsonValue {
    type Deserializer = JsonValue;

    fn into_deserializer(self) -> JsonValue {
        self
    }
}

impl<'de> de::Deserializer<'de> for JsonValue {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(FieldError::Invalid(format!("unreadable number {n}"))),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(JsonValue));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(map) => {
                let mut map = MapDeserializer::new(map.into_iter().map(|(k, v)| (k, JsonValue(v))));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        // A struct is an object; serde would also take a list of its fields
        // in order, which no file of ours means.
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        // Only unit variants, written as their name.
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
        b: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, expecting = "an object with items")]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
        map: Option<BTreeMap<String, bool>>,
    }

    fn error(text: &str) -> (String, String, String) {
        match parse::<Outer>("f.json", text) {
            Err(Error::InvalidConfig {
                file,
                field,
                reason,
            }) => (file, field, reason),
            other => panic!("{other:?}"),
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lists {
        #[serde(default)]
        numbers: List<u32>,
        #[serde(default)]
        names: Strings,
    }

    fn lists(text: &str) -> Result<(Vec<u32>, Vec<String>)> {
        parse::<Lists>("f.json", text).map(|l| (l.numbers.0, l.names.0))
    }

    #[test]
    fn lists_take_the_originals_empty_forms_and_one_string() {
        let empty = (vec![], vec![]);
        for text in [
            "{}",
            r#"{"numbers": null, "names": null}"#,
            r#"{"numbers": {}, "names": {}}"#,
            r#"{"numbers": [], "names": []}"#,
        ] {
            assert_eq!(lists(text).unwrap(), empty, "{text}");
        }
        assert_eq!(
            lists(r#"{"numbers": [1, 2], "names": "init"}"#).unwrap(),
            (vec![1, 2], vec!["init".to_string()])
        );
        let refused = [
            (
                r#"{"numbers": {"a": 1}}"#,
                "numbers",
                "expected a list, got an object",
            ),
            (
                r#"{"numbers": "1"}"#,
                "numbers",
                "expected a list, got a string",
            ),
            (
                r#"{"numbers": [1, "x"]}"#,
                "numbers[1]",
                "expected a non-negative integer, got a string",
            ),
            (
                r#"{"names": 3}"#,
                "names",
                "expected a list or a string, got a number",
            ),
            (
                r#"{"names": [null]}"#,
                "names[0]",
                "expected a string, got null",
            ),
            (
                r#"{"names": {"a": "b"}}"#,
                "names",
                "expected a list or a string, got an object",
            ),
        ];
        for (text, field, reason) in refused {
            match lists(text) {
                Err(Error::InvalidConfig {
                    field: got_field,
                    reason: got_reason,
                    ..
                }) => {
                    assert_eq!(got_field, field, "{text}");
                    assert_eq!(got_reason, reason, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_file_and_path() {
        assert!(parse::<Outer>("f.json", r#"{"items": [{"a": 1, "b": null}]}"#).is_ok());
        let cases = [
            ("{", DOCUMENT, "not valid JSON"),
            ("[]", DOCUMENT, "expected an object with items, got a list"),
            (r#"{}"#, "items", "missing"),
            (r#"{"items": [{}]}"#, "items[0].a", "missing"),
            (r#"{"items": 3}"#, "items", "expected a list, got a number"),
            (
                r#"{"items": [{"a": 1, "c": 2}]}"#,
                "items[0].c",
                "unknown field (known: a, b)",
            ),
            (
                r#"{"items": [{"a": 1, "b": 2}]}"#,
                "items[0].b",
                "expected a string, got a number",
            ),
            (
                r#"{"items": [{"a": -1}]}"#,
                "items[0].a",
                "expected a non-negative integer",
            ),
            (
                r#"{"items": [], "map": {"k": "yes"}}"#,
                "map.k",
                "expected a boolean, got a string",
            ),
            (
                r#"{"items": [], "extra": 1}"#,
                "extra",
                "unknown field (known: items, map)",
            ),
        ];
        for (text, field, reason) in cases {
            let (file, got_field, got_reason) = error(text);
            assert_eq!(file, "f.json");
            assert_eq!(got_field, field, "{text}");
            assert!(got_reason.starts_with(reason), "{text}: {got_reason}");
        }
    }
}
