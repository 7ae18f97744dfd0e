//! Typed access to the fields of one JSON record, with errors that name the record and field.

use serde_json::{Map, Value};

use crate::error::{DataError, Location, Problem};

pub(crate) struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    pub at: &'a Location,
    pub id: Option<String>,
}

impl<'a> Fields<'a> {
    /// Parses one record; anything but a JSON object is a malformed record.
    pub(crate) fn parse(bytes: &[u8], at: &Location) -> Result<Map<String, Value>, DataError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            DataError::record(
                at.clone(),
                None,
                None,
                Problem::NotUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            )
        })?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(DataError::record(
                at.clone(),
                None,
                None,
                Problem::WrongType {
                    expected: "a JSON object",
                    found: type_name(&other),
                },
            )),
            Err(e) => Err(DataError::record(at.clone(), None, None, Problem::Json(e))),
        }
    }

    pub(crate) fn err(&self, field: &'static str, problem: Problem) -> DataError {
        DataError::record(self.at.clone(), self.id.clone(), Some(field), problem)
    }

    /// A required string; `null` is reported as such (RLAIF-V has null questions).
    pub(crate) fn text(&self, field: &'static str) -> Result<String, DataError> {
        match self.map.get(field) {
            None => Err(self.err(field, Problem::Missing)),
            Some(Value::Null) => Err(self.err(field, Problem::Null)),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.wrong(field, "a string", other)),
        }
    }

    pub(crate) fn opt_text(&self, field: &'static str) -> Result<Option<String>, DataError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(field, "a string", other)),
        }
    }

    /// An integer, also written as a string of digits.
    pub(crate) fn opt_i64(&self, field: &'static str) -> Result<Option<i64>, DataError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
            Some(other) => Err(self.wrong(field, "an integer", other)),
        }
    }

    pub(crate) fn opt_f64(&self, field: &'static str) -> Result<Option<f64>, DataError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong(field, "a number", other)),
        }
    }

    fn wrong(&self, field: &'static str, expected: &'static str, found: &Value) -> DataError {
        self.err(
            field,
            Problem::WrongType {
                expected,
                found: type_name(found),
            },
        )
    }
}

/// A record's own id: a string or an integer.
pub(crate) fn id_of(map: &Map<String, Value>, field: &str) -> Option<String> {
    match map.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
    .to_owned()
}
