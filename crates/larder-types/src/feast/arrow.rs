//! Converting Arrow columns to `feast.types.Value`s and back, with Feast's type mapping (feast-behaviour.md §2.3).
//!
//! Arrow → Value accepts every Arrow type [`ValueType::accepts_arrow`] accepts. Value → Arrow
//! builds exactly [`ValueType::arrow_type`], so online reads come back in Larder's types.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};

use super::FormatError;
use super::column::{Column, with_column};
use super::value::{Val, Value};
use crate::{ScalarType, ValueType};

const MICROS_PER_SECOND: i64 = 1_000_000;

/// One `Value` per row of `array`, read as `dtype`.
///
/// Narrow ints widen, Float16 widens, timestamps of any unit (and dates) become whole
/// seconds (floored), an Int64 column read as `UnixTimestamp` is taken as seconds.
/// Null rows, and NaN in scalar float columns, give [`Value::NULL`] (as Feast writes them).
/// A null item inside a list is an error.
pub fn values_from_array(array: &dyn Array, dtype: ValueType) -> Result<Vec<Value>, FormatError> {
    with_column(array, dtype, |column| {
        let mut values = Vec::with_capacity(array.len());
        for row in 0..array.len() {
            if column.is_null(row) {
                values.push(Value::NULL);
                continue;
            }
            let val = match &column {
                Column::Scalar(scalars) => {
                    let v = scalars.get(row);
                    (!v.is_nan()).then(|| v.to_val())
                }
                Column::List { ranges, items, .. } => Some(items.list_val(ranges.get(row)).ok_or(
                    FormatError::NullListElement {
                        expected: dtype,
                        row,
                    },
                )?),
            };
            values.push(Value { val });
        }
        Ok(values)
    })
}

/// An Arrow array of type `dtype.arrow_type()` from one optional `Value` per row.
///
/// `None` and null values give null rows. A value must match `dtype`, except that
/// `int32_val` is accepted in `Int64` columns and `float_val` in `Float64` columns.
///
/// Call with `values.iter().map(Some)` for `&[Value]` or `values.iter().map(Option::as_ref)`
/// for `&[Option<Value>]`.
pub fn array_from_values<'a>(
    values: impl IntoIterator<Item = Option<&'a Value>>,
    dtype: ValueType,
) -> Result<ArrayRef, FormatError> {
    let values = values.into_iter();
    let rows = values.size_hint().0;
    match dtype {
        ValueType::Scalar(ty) => {
            let mut builder = ScalarBuilder::new(ty, rows);
            for (row, value) in values.enumerate() {
                match value.and_then(|v| v.val.as_ref()) {
                    None | Some(Val::NullVal(_)) => builder.append_null(),
                    Some(val) => builder
                        .append(val)
                        .map_err(|reject| reject.into_error(dtype, val, row))?,
                }
            }
            Ok(builder.finish())
        }
        ValueType::Array(ty) => {
            let mut builder = ListBuilder::with_capacity(ScalarBuilder::new(ty, rows), rows);
            for (row, value) in values.enumerate() {
                match value.and_then(|v| v.val.as_ref()) {
                    None | Some(Val::NullVal(_)) => builder.append_null(),
                    Some(val) => {
                        builder
                            .values()
                            .append_list(val)
                            .map_err(|reject| reject.into_error(dtype, val, row))?;
                        builder.append(true);
                    }
                }
            }
            Ok(Arc::new(builder.finish()))
        }
    }
}

/// Why a value could not be appended to a builder.
enum Reject {
    WrongType,
    TimestampOutOfRange(i64),
}

impl Reject {
    fn into_error(self, expected: ValueType, val: &Val, row: usize) -> FormatError {
        match self {
            Reject::WrongType => FormatError::ValueTypeMismatch {
                expected,
                found: val.kind_name(),
                row,
            },
            Reject::TimestampOutOfRange(seconds) => {
                FormatError::TimestampOutOfRange { seconds, nanos: 0 }
            }
        }
    }
}

/// The builder for one scalar type, usable alone or as the items of a `ListBuilder`.
#[derive(Debug)]
enum ScalarBuilder {
    Bytes(BinaryBuilder),
    String(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Float32(Float32Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ScalarBuilder {
    fn new(ty: ScalarType, rows: usize) -> Self {
        match ty {
            ScalarType::Bytes => Self::Bytes(BinaryBuilder::with_capacity(rows, rows * 8)),
            ScalarType::String => Self::String(StringBuilder::with_capacity(rows, rows * 8)),
            ScalarType::Int32 => Self::Int32(Int32Builder::with_capacity(rows)),
            ScalarType::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            ScalarType::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
            ScalarType::Float32 => Self::Float32(Float32Builder::with_capacity(rows)),
            ScalarType::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
            ScalarType::UnixTimestamp => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    fn inner(&mut self) -> &mut dyn ArrayBuilder {
        match self {
            Self::Bytes(b) => b,
            Self::String(b) => b,
            Self::Int32(b) => b,
            Self::Int64(b) => b,
            Self::Float64(b) => b,
            Self::Float32(b) => b,
            Self::Bool(b) => b,
            Self::Timestamp(b) => b,
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bytes(b) => b.append_null(),
            Self::String(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
        }
    }

    /// Appends a non-null scalar.
    fn append(&mut self, val: &Val) -> Result<(), Reject> {
        match (self, val) {
            (Self::Bytes(b), Val::BytesVal(v)) => b.append_value(v),
            (Self::String(b), Val::StringVal(v)) => b.append_value(v),
            (Self::Int32(b), Val::Int32Val(v)) => b.append_value(*v),
            (Self::Int64(b), Val::Int64Val(v)) => b.append_value(*v),
            (Self::Int64(b), Val::Int32Val(v)) => b.append_value(i64::from(*v)),
            (Self::Float64(b), Val::DoubleVal(v)) => b.append_value(*v),
            (Self::Float64(b), Val::FloatVal(v)) => b.append_value(f64::from(*v)),
            (Self::Float32(b), Val::FloatVal(v)) => b.append_value(*v),
            (Self::Bool(b), Val::BoolVal(v)) => b.append_value(*v),
            (Self::Timestamp(b), Val::UnixTimestampVal(v)) => {
                b.append_value(seconds_to_micros(*v)?);
            }
            _ => return Err(Reject::WrongType),
        }
        Ok(())
    }

    /// Appends the items of a list value as this builder's items.
    fn append_list(&mut self, val: &Val) -> Result<(), Reject> {
        match (self, val) {
            (Self::Bytes(b), Val::BytesListVal(l)) => l.val.iter().for_each(|v| b.append_value(v)),
            (Self::String(b), Val::StringListVal(l)) => {
                l.val.iter().for_each(|v| b.append_value(v));
            }
            (Self::Int32(b), Val::Int32ListVal(l)) => b.append_slice(&l.val),
            (Self::Int64(b), Val::Int64ListVal(l)) => b.append_slice(&l.val),
            (Self::Float64(b), Val::DoubleListVal(l)) => b.append_slice(&l.val),
            (Self::Float32(b), Val::FloatListVal(l)) => b.append_slice(&l.val),
            (Self::Bool(b), Val::BoolListVal(l)) => b.append_slice(&l.val),
            (Self::Timestamp(b), Val::UnixTimestampListVal(l)) => {
                for &seconds in &l.val {
                    b.append_value(seconds_to_micros(seconds)?);
                }
            }
            _ => return Err(Reject::WrongType),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        self.inner().finish()
    }
}

// Lets `ListBuilder<ScalarBuilder>` build lists of any scalar type with one code path.
impl ArrayBuilder for ScalarBuilder {
    fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::String(b) => b.len(),
            Self::Int32(b) => b.len(),
            Self::Int64(b) => b.len(),
            Self::Float64(b) => b.len(),
            Self::Float32(b) => b.len(),
            Self::Bool(b) => b.len(),
            Self::Timestamp(b) => b.len(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        self.inner().finish()
    }
    fn finish_cloned(&self) -> ArrayRef {
        match self {
            Self::Bytes(b) => Arc::new(b.finish_cloned()),
            Self::String(b) => Arc::new(b.finish_cloned()),
            Self::Int32(b) => Arc::new(b.finish_cloned()),
            Self::Int64(b) => Arc::new(b.finish_cloned()),
            Self::Float64(b) => Arc::new(b.finish_cloned()),
            Self::Float32(b) => Arc::new(b.finish_cloned()),
            Self::Bool(b) => Arc::new(b.finish_cloned()),
            Self::Timestamp(b) => Arc::new(b.finish_cloned()),
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_box_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

fn seconds_to_micros(seconds: i64) -> Result<i64, Reject> {
    seconds
        .checked_mul(MICROS_PER_SECOND)
        .ok_or(Reject::TimestampOutOfRange(seconds))
}

#[cfg(test)]
#[path = "arrow_tests.rs"]
mod tests;
