//! Mappings whose values may be written as strings, numbers or booleans (`METRIC_PORT: 30001`),
//! kept as strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl From<Scalar> for String {
    fn from(s: Scalar) -> String {
        match s {
            Scalar::Text(t) => t,
            Scalar::Integer(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// Deserializes a mapping of string keys to scalar values, each value kept as its text.
pub fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, Scalar> = BTreeMap::deserialize(d).map_err(|e| {
        serde::de::Error::custom(format!("{e}; values must be strings, numbers or booleans"))
    })?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.into())).collect())
}
