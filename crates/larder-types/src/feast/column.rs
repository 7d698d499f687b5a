//! Reading an Arrow column row by row as Feast scalars or lists, shared by the `Value` builder, the byte encoder and the entity key writer.
//!
//! Each accepted Arrow type is first brought to one physical layout per scalar type
//! (narrow ints widened, dictionaries unpacked, timestamps floored to seconds), once per
//! column, so the per-row code has a single small `match`.

use std::ops::Range;

use arrow::array::{
    Array, ArrayAccessor, ArrayRef, AsArray, BinaryArray, BinaryViewArray, BooleanArray,
    FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array,
    LargeBinaryArray, LargeStringArray, StringArray, StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};

use super::FormatError;
use super::value::{
    BoolList, BytesList, DoubleList, FloatList, Int32List, Int64List, StringList, Val,
};
use crate::{ScalarType, ValueType};

/// One non-null cell of a scalar column, borrowed from the Arrow buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Bytes(&'a [u8]),
    Str(&'a str),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Bool(bool),
    /// A timestamp in whole seconds since the epoch.
    Seconds(i64),
}

impl Scalar<'_> {
    pub(crate) fn to_val(self) -> Val {
        match self {
            Scalar::Bytes(v) => Val::BytesVal(v.to_vec()),
            Scalar::Str(v) => Val::StringVal(v.to_owned()),
            Scalar::Int32(v) => Val::Int32Val(v),
            Scalar::Int64(v) => Val::Int64Val(v),
            Scalar::Float32(v) => Val::FloatVal(v),
            Scalar::Float64(v) => Val::DoubleVal(v),
            Scalar::Bool(v) => Val::BoolVal(v),
            Scalar::Seconds(v) => Val::UnixTimestampVal(v),
        }
    }

    /// NaN is written as null, like Feast's `pd.isnull` check.
    pub(crate) fn is_nan(self) -> bool {
        match self {
            Scalar::Float32(v) => v.is_nan(),
            Scalar::Float64(v) => v.is_nan(),
            _ => false,
        }
    }
}

enum Data<'a> {
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    BinaryView(&'a BinaryViewArray),
    FixedBinary(&'a FixedSizeBinaryArray),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Bool(&'a BooleanArray),
    Seconds(&'a Int64Array),
}

/// A normalized scalar column (see [`normalize`]).
pub(crate) struct Scalars<'a> {
    data: Data<'a>,
    nulls: Option<&'a NullBuffer>,
}

impl<'a> Scalars<'a> {
    /// Wraps an array already passed through [`normalize`] for `ty`.
    pub(crate) fn new(array: &'a dyn Array, ty: ScalarType) -> Result<Self, FormatError> {
        use DataType as D;
        use ScalarType as S;
        let data = match (ty, array.data_type()) {
            (S::Bytes, D::Binary) => Data::Binary(array.as_binary()),
            (S::Bytes, D::LargeBinary) => Data::LargeBinary(array.as_binary()),
            (S::Bytes, D::BinaryView) => Data::BinaryView(array.as_binary_view()),
            (S::Bytes, D::FixedSizeBinary(_)) => Data::FixedBinary(array.as_fixed_size_binary()),
            (S::String, D::Utf8) => Data::Utf8(array.as_string()),
            (S::String, D::LargeUtf8) => Data::LargeUtf8(array.as_string()),
            (S::String, D::Utf8View) => Data::Utf8View(array.as_string_view()),
            (S::Int32, D::Int32) => Data::Int32(array.as_primitive::<Int32Type>()),
            (S::Int64, D::Int64) => Data::Int64(array.as_primitive::<Int64Type>()),
            (S::Float32, D::Float32) => Data::Float32(array.as_primitive::<Float32Type>()),
            (S::Float64, D::Float64) => Data::Float64(array.as_primitive::<Float64Type>()),
            (S::Bool, D::Boolean) => Data::Bool(array.as_boolean()),
            (S::UnixTimestamp, D::Int64) => Data::Seconds(array.as_primitive::<Int64Type>()),
            (_, other) => {
                return Err(FormatError::UnsupportedArrowType {
                    expected: ValueType::Scalar(ty),
                    actual: other.clone(),
                });
            }
        };
        Ok(Scalars {
            data,
            nulls: array.nulls(),
        })
    }

    pub(crate) fn is_null(&self, i: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(i))
    }

    fn any_null(&self, range: Range<usize>) -> bool {
        self.nulls
            .is_some_and(|n| range.into_iter().any(|i| n.is_null(i)))
    }

    /// The value at `i`, ignoring the validity bitmap.
    pub(crate) fn get(&self, i: usize) -> Scalar<'a> {
        match &self.data {
            Data::Binary(a) => Scalar::Bytes(a.value(i)),
            Data::LargeBinary(a) => Scalar::Bytes(a.value(i)),
            Data::BinaryView(a) => Scalar::Bytes(a.value(i)),
            Data::FixedBinary(a) => Scalar::Bytes(a.value(i)),
            Data::Utf8(a) => Scalar::Str(a.value(i)),
            Data::LargeUtf8(a) => Scalar::Str(a.value(i)),
            Data::Utf8View(a) => Scalar::Str(a.value(i)),
            Data::Int32(a) => Scalar::Int32(a.value(i)),
            Data::Int64(a) => Scalar::Int64(a.value(i)),
            Data::Float32(a) => Scalar::Float32(a.value(i)),
            Data::Float64(a) => Scalar::Float64(a.value(i)),
            Data::Bool(a) => Scalar::Bool(a.value(i)),
            Data::Seconds(a) => Scalar::Seconds(a.value(i)),
        }
    }

    /// The list message holding the items in `range`; `None` if one of them is null.
    pub(crate) fn list_val(&self, range: Range<usize>) -> Option<Val> {
        if self.any_null(range.clone()) {
            return None;
        }
        Some(match &self.data {
            Data::Binary(a) => Val::BytesListVal(BytesList {
                val: owned_bytes(range, |i| a.value(i)),
            }),
            Data::LargeBinary(a) => Val::BytesListVal(BytesList {
                val: owned_bytes(range, |i| a.value(i)),
            }),
            Data::BinaryView(a) => Val::BytesListVal(BytesList {
                val: owned_bytes(range, |i| a.value(i)),
            }),
            Data::FixedBinary(a) => Val::BytesListVal(BytesList {
                val: owned_bytes(range, |i| a.value(i)),
            }),
            Data::Utf8(a) => Val::StringListVal(StringList {
                val: owned_strings(range, |i| a.value(i)),
            }),
            Data::LargeUtf8(a) => Val::StringListVal(StringList {
                val: owned_strings(range, |i| a.value(i)),
            }),
            Data::Utf8View(a) => Val::StringListVal(StringList {
                val: owned_strings(range, |i| a.value(i)),
            }),
            Data::Int32(a) => Val::Int32ListVal(Int32List {
                val: a.values()[range].to_vec(),
            }),
            Data::Int64(a) => Val::Int64ListVal(Int64List {
                val: a.values()[range].to_vec(),
            }),
            Data::Float32(a) => Val::FloatListVal(FloatList {
                val: a.values()[range].to_vec(),
            }),
            Data::Float64(a) => Val::DoubleListVal(DoubleList {
                val: a.values()[range].to_vec(),
            }),
            Data::Bool(a) => Val::BoolListVal(BoolList {
                val: range.map(|i| a.value(i)).collect(),
            }),
            Data::Seconds(a) => Val::UnixTimestampListVal(Int64List {
                val: a.values()[range].to_vec(),
            }),
        })
    }

    /// Visits the list items in `range` with typed slices where the layout allows it, so
    /// the encoder can size and write packed fields without a per-item `match`.
    /// Returns `None` (visiting nothing) if one of the items is null.
    pub(crate) fn visit_list<V: ListVisitor<'a>>(
        &self,
        range: Range<usize>,
        v: V,
    ) -> Option<V::Output> {
        if self.any_null(range.clone()) {
            return None;
        }
        Some(match &self.data {
            Data::Binary(a) => v.bytes(range.map(|i| a.value(i))),
            Data::LargeBinary(a) => v.bytes(range.map(|i| a.value(i))),
            Data::BinaryView(a) => v.bytes(range.map(|i| a.value(i))),
            Data::FixedBinary(a) => v.bytes(range.map(|i| a.value(i))),
            Data::Utf8(a) => v.bytes(range.map(|i| a.value(i).as_bytes())),
            Data::LargeUtf8(a) => v.bytes(range.map(|i| a.value(i).as_bytes())),
            Data::Utf8View(a) => v.bytes(range.map(|i| a.value(i).as_bytes())),
            Data::Int32(a) => v.varints(a.values()[range].iter().map(|&x| i64::from(x) as u64)),
            Data::Int64(a) | Data::Seconds(a) => {
                v.varints(a.values()[range].iter().map(|&x| x as u64))
            }
            Data::Bool(a) => v.varints(range.map(|i| u64::from(a.value(i)))),
            Data::Float32(a) => v.fixed32(&a.values()[range]),
            Data::Float64(a) => v.fixed64(&a.values()[range]),
        })
    }
}

fn owned_bytes<'a>(range: Range<usize>, value: impl Fn(usize) -> &'a [u8]) -> Vec<Vec<u8>> {
    range.map(|i| value(i).to_vec()).collect()
}

fn owned_strings<'a>(range: Range<usize>, value: impl Fn(usize) -> &'a str) -> Vec<String> {
    range.map(|i| value(i).to_owned()).collect()
}

/// Receives the items of one list in the shape of their protobuf wire encoding.
pub(crate) trait ListVisitor<'a> {
    type Output;
    fn bytes(self, items: impl Iterator<Item = &'a [u8]> + Clone) -> Self::Output;
    fn varints(self, items: impl Iterator<Item = u64> + Clone) -> Self::Output;
    fn fixed32(self, items: &[f32]) -> Self::Output;
    fn fixed64(self, items: &[f64]) -> Self::Output;
}

/// Where each row's items sit in the child array of a list column.
pub(crate) enum Ranges<'a> {
    List(&'a [i32]),
    LargeList(&'a [i64]),
    Fixed(&'a FixedSizeListArray),
    View(&'a [i32], &'a [i32]),
    LargeView(&'a [i64], &'a [i64]),
}

impl Ranges<'_> {
    // Offsets and sizes of a valid Arrow list array are non-negative.
    pub(crate) fn get(&self, i: usize) -> Range<usize> {
        match self {
            Ranges::List(o) => o[i] as usize..o[i + 1] as usize,
            Ranges::LargeList(o) => o[i] as usize..o[i + 1] as usize,
            Ranges::Fixed(a) => {
                let start = a.value_offset(i) as usize;
                start..start + a.value_length() as usize
            }
            Ranges::View(o, s) => o[i] as usize..(o[i] + s[i]) as usize,
            Ranges::LargeView(o, s) => o[i] as usize..(o[i] + s[i]) as usize,
        }
    }
}

/// A column ready for row-by-row reading.
pub(crate) enum Column<'a> {
    Scalar(Scalars<'a>),
    List {
        nulls: Option<&'a NullBuffer>,
        ranges: Ranges<'a>,
        items: Scalars<'a>,
    },
}

impl Column<'_> {
    pub(crate) fn is_null(&self, i: usize) -> bool {
        match self {
            Column::Scalar(s) => s.is_null(i),
            Column::List { nulls, .. } => nulls.is_some_and(|n| n.is_null(i)),
        }
    }
}

/// Calls `f` with `array` prepared for reading as `dtype`.
pub(crate) fn with_column<R>(
    array: &dyn Array,
    dtype: ValueType,
    f: impl FnOnce(Column<'_>) -> Result<R, FormatError>,
) -> Result<R, FormatError> {
    let unsupported = || FormatError::UnsupportedArrowType {
        expected: dtype,
        actual: array.data_type().clone(),
    };
    if !dtype.accepts_arrow(array.data_type()) {
        return Err(unsupported());
    }
    match dtype {
        ValueType::Scalar(ty) => {
            let owned = normalize(array, ty)?;
            let array = owned.as_deref().unwrap_or(array);
            f(Column::Scalar(Scalars::new(array, ty)?))
        }
        ValueType::Array(ty) => {
            let (ranges, child) = list_parts(array).ok_or_else(unsupported)?;
            let owned = normalize(child.as_ref(), ty)?;
            let child = owned.as_deref().unwrap_or(child.as_ref());
            f(Column::List {
                nulls: array.nulls(),
                ranges,
                items: Scalars::new(child, ty)?,
            })
        }
    }
}

fn list_parts(array: &dyn Array) -> Option<(Ranges<'_>, &ArrayRef)> {
    use DataType as D;
    Some(match array.data_type() {
        D::List(_) => {
            let a = array.as_list::<i32>();
            (Ranges::List(a.value_offsets()), a.values())
        }
        D::LargeList(_) => {
            let a = array.as_list::<i64>();
            (Ranges::LargeList(a.value_offsets()), a.values())
        }
        D::FixedSizeList(_, _) => {
            let a = array.as_fixed_size_list();
            (Ranges::Fixed(a), a.values())
        }
        D::ListView(_) => {
            let a = array.as_list_view::<i32>();
            (Ranges::View(a.value_offsets(), a.value_sizes()), a.values())
        }
        D::LargeListView(_) => {
            let a = array.as_list_view::<i64>();
            (
                Ranges::LargeView(a.value_offsets(), a.value_sizes()),
                a.values(),
            )
        }
        _ => return None,
    })
}

/// Brings an accepted array to the layout [`Scalars::new`] reads, or `None` if it already is.
pub(crate) fn normalize(
    array: &dyn Array,
    ty: ScalarType,
) -> Result<Option<ArrayRef>, FormatError> {
    use DataType as D;
    use ScalarType as S;
    let dt = array.data_type();
    if let D::Dictionary(_, value_type) = dt {
        let plain = cast(array, value_type)?;
        return Ok(Some(normalize(plain.as_ref(), ty)?.unwrap_or(plain)));
    }
    let target = match (ty, dt) {
        (S::Int32, D::Int32)
        | (S::Int64 | S::UnixTimestamp, D::Int64)
        | (S::Float32, D::Float32)
        | (S::Float64, D::Float64) => return Ok(None),
        (S::Int32, _) => D::Int32,
        (S::Int64, _) => D::Int64,
        (S::Float32, _) => D::Float32,
        (S::Float64, _) => D::Float64,
        (S::UnixTimestamp, _) => return Ok(Some(seconds(array)?)),
        (S::Bytes | S::String | S::Bool, _) => return Ok(None),
    };
    Ok(Some(cast(array, &target)?))
}

/// Whole seconds since the epoch, floored: a time before the epoch maps to the second that
/// contains it (-1 µs is second -1), never rounded toward zero.
fn seconds(array: &dyn Array) -> Result<ArrayRef, FormatError> {
    use DataType as D;
    let out: Int64Array = match array.data_type() {
        D::Timestamp(TimeUnit::Second, _) => array
            .as_primitive::<TimestampSecondType>()
            .reinterpret_cast::<Int64Type>(),
        D::Timestamp(TimeUnit::Millisecond, _) => array
            .as_primitive::<TimestampMillisecondType>()
            .unary(|v| v.div_euclid(1_000)),
        D::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .unary(|v| v.div_euclid(1_000_000)),
        D::Timestamp(TimeUnit::Nanosecond, _) => array
            .as_primitive::<TimestampNanosecondType>()
            .unary(|v| v.div_euclid(1_000_000_000)),
        D::Date32 => array
            .as_primitive::<Date32Type>()
            .unary(|days| i64::from(days) * 86_400),
        D::Date64 => array
            .as_primitive::<Date64Type>()
            .unary(|ms| ms.div_euclid(1_000)),
        other => {
            return Err(FormatError::UnsupportedArrowType {
                expected: ValueType::Scalar(ScalarType::UnixTimestamp),
                actual: other.clone(),
            });
        }
    };
    Ok(std::sync::Arc::new(out))
}
