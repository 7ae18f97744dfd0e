//! Typed access to the columns of an arrow batch, tolerant of the encodings writers choose
//! (`string`, `large_string`, `string_view`, or text stored as binary) and strict about the
//! rest: a column of the wrong kind is a schema error naming the file and column.

use std::str::Utf8Error;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BooleanArray, GenericListArray, RecordBatch, StructArray};

use crate::error::DataError;

/// The columns of one batch (or the children of one struct column).
pub(crate) struct Columns<'a> {
    file: &'a str,
    prefix: String,
    lookup: Lookup<'a>,
}

enum Lookup<'a> {
    Batch(&'a RecordBatch),
    Struct(&'a StructArray),
}

impl<'a> Columns<'a> {
    pub(crate) fn of_batch(batch: &'a RecordBatch, file: &'a str) -> Self {
        Self {
            file,
            prefix: String::new(),
            lookup: Lookup::Batch(batch),
        }
    }

    /// The children of struct column `name`; `None` when the column is absent.
    pub(crate) fn opt_struct(
        &self,
        name: &str,
    ) -> Result<Option<(Columns<'a>, &'a StructArray)>, DataError> {
        let Some(array) = self.get(name) else {
            return Ok(None);
        };
        let s = array
            .as_struct_opt()
            .ok_or_else(|| self.wrong(name, array, "a struct"))?;
        Ok(Some((
            Columns {
                file: self.file,
                prefix: self.path(name) + ".",
                lookup: Lookup::Struct(s),
            },
            s,
        )))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a ArrayRef> {
        match self.lookup {
            Lookup::Batch(b) => b.column_by_name(name),
            Lookup::Struct(s) => s.column_by_name(name),
        }
    }

    pub(crate) fn required(&self, name: &str) -> Result<&'a ArrayRef, DataError> {
        self.get(name)
            .ok_or_else(|| self.schema(name, "is missing".to_owned()))
    }

    pub(crate) fn text(&self, name: &str) -> Result<Text<'a>, DataError> {
        let array = self.required(name)?;
        Text::of(array.as_ref()).ok_or_else(|| self.wrong(name, array, "text"))
    }

    pub(crate) fn opt_text(&self, name: &str) -> Result<Option<Text<'a>>, DataError> {
        self.get(name)
            .map(|a| Text::of(a.as_ref()).ok_or_else(|| self.wrong(name, a, "text")))
            .transpose()
    }

    pub(crate) fn opt_bytes(&self, name: &str) -> Result<Option<Binary<'a>>, DataError> {
        self.get(name)
            .map(|a| Binary::of(a.as_ref()).ok_or_else(|| self.wrong(name, a, "binary")))
            .transpose()
    }

    pub(crate) fn opt_int(&self, name: &str) -> Result<Option<&'a dyn Array>, DataError> {
        self.opt_kind(name, "an integer", |t| t.is_integer())
    }

    pub(crate) fn opt_float(&self, name: &str) -> Result<Option<&'a dyn Array>, DataError> {
        self.opt_kind(name, "a float", |t| t.is_floating())
    }

    pub(crate) fn opt_bool(&self, name: &str) -> Result<Option<&'a BooleanArray>, DataError> {
        self.get(name)
            .map(|a| {
                a.as_boolean_opt()
                    .ok_or_else(|| self.wrong(name, a, "a boolean"))
            })
            .transpose()
    }

    pub(crate) fn opt_list(
        &self,
        name: &str,
    ) -> Result<Option<&'a GenericListArray<i32>>, DataError> {
        self.get(name)
            .map(|a| {
                a.as_list_opt::<i32>()
                    .ok_or_else(|| self.wrong(name, a, "a list"))
            })
            .transpose()
    }

    fn opt_kind(
        &self,
        name: &str,
        kind: &str,
        ok: impl Fn(&arrow_schema::DataType) -> bool,
    ) -> Result<Option<&'a dyn Array>, DataError> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if ok(a.data_type()) => Ok(Some(a.as_ref())),
            Some(a) => Err(self.wrong(name, a, kind)),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) fn schema(&self, name: &str, why: String) -> DataError {
        DataError::Schema {
            file: self.file.to_owned(),
            column: self.path(name),
            why,
        }
    }

    fn wrong(&self, name: &str, array: &ArrayRef, expected: &str) -> DataError {
        self.schema(
            name,
            format!("expected {expected}, found {}", array.data_type()),
        )
    }
}

/// A text column; `get` is `None` for null and `Some(Err)` for binary that is not UTF-8.
pub(crate) enum Text<'a> {
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    Bytes(Binary<'a>),
}

impl<'a> Text<'a> {
    pub(crate) fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(a) = array.as_string_opt::<i32>() {
            Some(Text::Utf8(a))
        } else if let Some(a) = array.as_string_opt::<i64>() {
            Some(Text::LargeUtf8(a))
        } else if let Some(a) = array.as_string_view_opt() {
            Some(Text::View(a))
        } else {
            Binary::of(array).map(Text::Bytes)
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<Result<&'a str, Utf8Error>> {
        let valid = |a: &dyn Array| a.is_valid(i);
        match self {
            Text::Utf8(a) => valid(*a).then(|| Ok(a.value(i))),
            Text::LargeUtf8(a) => valid(*a).then(|| Ok(a.value(i))),
            Text::View(a) => valid(*a).then(|| Ok(a.value(i))),
            Text::Bytes(b) => b.get(i).map(std::str::from_utf8),
        }
    }
}

pub(crate) enum Binary<'a> {
    Small(&'a arrow_array::BinaryArray),
    Large(&'a arrow_array::LargeBinaryArray),
    View(&'a arrow_array::BinaryViewArray),
}

impl<'a> Binary<'a> {
    pub(crate) fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(a) = array.as_binary_opt::<i32>() {
            Some(Binary::Small(a))
        } else if let Some(a) = array.as_binary_opt::<i64>() {
            Some(Binary::Large(a))
        } else {
            array.as_binary_view_opt().map(Binary::View)
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            Binary::Small(a) => a.is_valid(i).then(|| a.value(i)),
            Binary::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Binary::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// Row `i` of an integer column of any width, or `None` when null (or beyond i64).
pub(crate) fn int_at(array: &dyn Array, i: usize) -> Option<i64> {
    if array.is_null(i) {
        return None;
    }
    macro_rules! try_int {
        ($($t:ty),*) => {$(
            if let Some(a) = array.as_primitive_opt::<$t>() {
                return i64::try_from(a.value(i)).ok();
            }
        )*};
    }
    try_int!(
        Int64Type, Int32Type, Int16Type, Int8Type, UInt64Type, UInt32Type, UInt16Type, UInt8Type
    );
    None
}

pub(crate) fn float_at(array: &dyn Array, i: usize) -> Option<f64> {
    if array.is_null(i) {
        return None;
    }
    if let Some(a) = array.as_primitive_opt::<Float64Type>() {
        return Some(a.value(i));
    }
    array
        .as_primitive_opt::<Float32Type>()
        .map(|a| f64::from(a.value(i)))
}
