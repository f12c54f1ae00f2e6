//! Reading a YAML or JSON document into a JSON value within bounds: a nesting depth, and a
//! number of values proportional to the text's length, so that YAML aliases cannot expand a
//! small text into a huge value ("billion laughs"). The parser stops at the first value past a
//! bound, so the work done is bounded too.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// How deep mappings and sequences may nest in a manifest.
pub const MAX_NESTING_DEPTH: usize = 64;

/// Values a document may hold beyond one per byte of its text: room for small texts.
const BASE_VALUES: usize = 10_000;

/// The bounds one document is read under, shared by every value in it.
pub(super) struct Budget {
    remaining: Cell<usize>,
    limit: usize,
}

impl Budget {
    /// A budget for one document of a text `text_len` bytes long.
    pub(super) fn for_text(text_len: usize) -> Self {
        let limit = text_len.saturating_add(BASE_VALUES);
        Self {
            remaining: Cell::new(limit),
            limit,
        }
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.remaining.get().checked_sub(1) {
            Some(left) => {
                self.remaining.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "the document expands to more than {} values: YAML aliases repeat too much",
                self.limit
            ))),
        }
    }
}

/// Reads one value at `depth` (0 for the document) within `budget`.
pub(super) struct Bounded<'b> {
    pub(super) budget: &'b Budget,
    pub(super) depth: usize,
}

impl Bounded<'_> {
    fn nested<E: de::Error>(&self) -> Result<Bounded<'_>, E> {
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(E::custom(format_args!(
                "mappings and sequences nest deeper than {MAX_NESTING_DEPTH} levels"
            )));
        }
        Ok(Bounded {
            budget: self.budget,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.take()?;
        // JSON has no NaN or infinity: they become null, as serde_json's own Value does.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.nested()?)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let mut entries = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.budget.take()?;
            let value = map.next_value_seed(self.nested()?)?;
            entries.insert(key, value);
        }
        Ok(Value::Object(entries))
    }
}
