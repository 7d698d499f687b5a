//! Postgres types ↔ Arrow types, and the two bulk paths of the store: rows of a binary
//! `COPY ... TO STDOUT` decoded into Arrow arrays, and Arrow arrays encoded for a binary
//! `COPY ... FROM STDIN`.
//!
//! Timestamps are microseconds in both worlds; `timestamp` (without time zone) is read as
//! UTC, as every naive timestamp in Larder is.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use larder_types::{ScalarType, ValueType};
use tokio_postgres::binary_copy::BinaryCopyOutRow;
use tokio_postgres::types::{ToSql, Type};

/// The scalar Postgres types the store reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Text,
    Bytea,
    TimestampTz,
    /// Without time zone: read and written as UTC.
    Timestamp,
    Date,
}

/// A column type the store handles: a scalar or a one-dimensional array of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ColumnType {
    pub kind: Kind,
    pub array: bool,
}

impl Kind {
    fn of(ty: &Type) -> Option<(Kind, bool)> {
        let kind = |k| Some((k, false));
        let list = |k| Some((k, true));
        match *ty {
            Type::INT2 => kind(Kind::Int2),
            Type::INT4 => kind(Kind::Int4),
            Type::INT8 => kind(Kind::Int8),
            Type::FLOAT4 => kind(Kind::Float4),
            Type::FLOAT8 => kind(Kind::Float8),
            Type::BOOL => kind(Kind::Bool),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => kind(Kind::Text),
            Type::BYTEA => kind(Kind::Bytea),
            Type::TIMESTAMPTZ => kind(Kind::TimestampTz),
            Type::TIMESTAMP => kind(Kind::Timestamp),
            Type::DATE => kind(Kind::Date),
            Type::INT2_ARRAY => list(Kind::Int2),
            Type::INT4_ARRAY => list(Kind::Int4),
            Type::INT8_ARRAY => list(Kind::Int8),
            Type::FLOAT4_ARRAY => list(Kind::Float4),
            Type::FLOAT8_ARRAY => list(Kind::Float8),
            Type::BOOL_ARRAY => list(Kind::Bool),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY | Type::NAME_ARRAY => {
                list(Kind::Text)
            }
            Type::BYTEA_ARRAY => list(Kind::Bytea),
            Type::TIMESTAMPTZ_ARRAY => list(Kind::TimestampTz),
            Type::TIMESTAMP_ARRAY => list(Kind::Timestamp),
            Type::DATE_ARRAY => list(Kind::Date),
            _ => None,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Kind::Int2 => "int2",
            Kind::Int4 => "int4",
            Kind::Int8 => "int8",
            Kind::Float4 => "float4",
            Kind::Float8 => "float8",
            Kind::Bool => "bool",
            Kind::Text => "text",
            Kind::Bytea => "bytea",
            Kind::TimestampTz => "timestamptz",
            Kind::Timestamp => "timestamp",
            Kind::Date => "date",
        }
    }

    fn arrow(self) -> DataType {
        match self {
            Kind::Int2 => DataType::Int16,
            Kind::Int4 => DataType::Int32,
            Kind::Int8 => DataType::Int64,
            Kind::Float4 => DataType::Float32,
            Kind::Float8 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Text => DataType::Utf8,
            Kind::Bytea => DataType::Binary,
            Kind::TimestampTz | Kind::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            Kind::Date => DataType::Date32,
        }
    }

    /// The kind Arrow values of type `dt` are stored as.
    fn for_arrow(dt: &DataType) -> Option<Kind> {
        Some(match dt {
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => Kind::Int2,
            DataType::Int32 | DataType::UInt16 => Kind::Int4,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Kind::Int8,
            DataType::Float16 | DataType::Float32 => Kind::Float4,
            DataType::Float64 => Kind::Float8,
            DataType::Boolean => Kind::Bool,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Kind::Bytea,
            DataType::Timestamp(_, _) => Kind::TimestampTz,
            DataType::Date32 | DataType::Date64 => Kind::Date,
            DataType::Dictionary(_, value) => return Kind::for_arrow(value),
            _ => return None,
        })
    }
}

impl ColumnType {
    /// The store's reading of Postgres type `ty`; `None` for types it does not map
    /// (numeric, json, uuid, ...).
    pub fn of(ty: &Type) -> Option<ColumnType> {
        Kind::of(ty).map(|(kind, array)| ColumnType { kind, array })
    }

    /// The Postgres type Larder value type `vt` is read as.
    pub fn of_value_type(vt: ValueType) -> ColumnType {
        let kind = |s: ScalarType| match s {
            ScalarType::Bytes => Kind::Bytea,
            ScalarType::String => Kind::Text,
            ScalarType::Int32 => Kind::Int4,
            ScalarType::Int64 => Kind::Int8,
            ScalarType::Float64 => Kind::Float8,
            ScalarType::Float32 => Kind::Float4,
            ScalarType::Bool => Kind::Bool,
            ScalarType::UnixTimestamp => Kind::TimestampTz,
        };
        match vt {
            ValueType::Scalar(s) => ColumnType {
                kind: kind(s),
                array: false,
            },
            ValueType::Array(s) => ColumnType {
                kind: kind(s),
                array: true,
            },
        }
    }

    /// The Postgres type Arrow values of type `dt` are uploaded as.
    pub fn of_arrow(dt: &DataType) -> Option<ColumnType> {
        match dt {
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _) => {
                Kind::for_arrow(f.data_type()).map(|kind| ColumnType { kind, array: true })
            }
            other => Kind::for_arrow(other).map(|kind| ColumnType { kind, array: false }),
        }
    }

    /// The SQL type name (`int8`, `float4[]`).
    pub fn sql(self) -> String {
        if self.array {
            format!("{}[]", self.kind.sql())
        } else {
            self.kind.sql().to_string()
        }
    }

    pub fn arrow(self) -> DataType {
        if self.array {
            DataType::new_list(self.kind.arrow(), true)
        } else {
            self.kind.arrow()
        }
    }

    pub fn pg_type(self) -> Type {
        match (self.kind, self.array) {
            (Kind::Int2, false) => Type::INT2,
            (Kind::Int4, false) => Type::INT4,
            (Kind::Int8, false) => Type::INT8,
            (Kind::Float4, false) => Type::FLOAT4,
            (Kind::Float8, false) => Type::FLOAT8,
            (Kind::Bool, false) => Type::BOOL,
            (Kind::Text, false) => Type::TEXT,
            (Kind::Bytea, false) => Type::BYTEA,
            (Kind::TimestampTz, false) => Type::TIMESTAMPTZ,
            (Kind::Timestamp, false) => Type::TIMESTAMP,
            (Kind::Date, false) => Type::DATE,
            (Kind::Int2, true) => Type::INT2_ARRAY,
            (Kind::Int4, true) => Type::INT4_ARRAY,
            (Kind::Int8, true) => Type::INT8_ARRAY,
            (Kind::Float4, true) => Type::FLOAT4_ARRAY,
            (Kind::Float8, true) => Type::FLOAT8_ARRAY,
            (Kind::Bool, true) => Type::BOOL_ARRAY,
            (Kind::Text, true) => Type::TEXT_ARRAY,
            (Kind::Bytea, true) => Type::BYTEA_ARRAY,
            (Kind::TimestampTz, true) => Type::TIMESTAMPTZ_ARRAY,
            (Kind::Timestamp, true) => Type::TIMESTAMP_ARRAY,
            (Kind::Date, true) => Type::DATE_ARRAY,
        }
    }
}

const UNIX_EPOCH_DATE: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

fn days(date: NaiveDate) -> i32 {
    i32::try_from(date.signed_duration_since(UNIX_EPOCH_DATE).num_days()).unwrap_or(i32::MAX)
}

fn date_of(days: i32) -> Option<NaiveDate> {
    UNIX_EPOCH_DATE.checked_add_signed(chrono::Duration::days(days.into()))
}

fn micros_naive(micros: i64) -> Option<NaiveDateTime> {
    DateTime::<Utc>::from_timestamp_micros(micros).map(|t| t.naive_utc())
}

type DecodeError = Box<dyn std::error::Error + Sync + Send>;

/// Builds one Arrow column from the rows of a binary COPY.
pub(crate) enum Decoder {
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytea(BinaryBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    ListInt2(ListBuilder<Int16Builder>),
    ListInt4(ListBuilder<Int32Builder>),
    ListInt8(ListBuilder<Int64Builder>),
    ListFloat4(ListBuilder<Float32Builder>),
    ListFloat8(ListBuilder<Float64Builder>),
    ListBool(ListBuilder<BooleanBuilder>),
    ListText(ListBuilder<StringBuilder>),
    ListBytea(ListBuilder<BinaryBuilder>),
    ListTimestampTz(ListBuilder<TimestampMicrosecondBuilder>),
    ListTimestamp(ListBuilder<TimestampMicrosecondBuilder>),
    ListDate(ListBuilder<Date32Builder>),
}

fn push_list<T, B>(
    builder: &mut ListBuilder<B>,
    value: Option<Vec<Option<T>>>,
    mut push: impl FnMut(&mut B, Option<T>),
) where
    B: arrow::array::ArrayBuilder,
{
    match value {
        None => builder.append_null(),
        Some(items) => {
            for item in items {
                push(builder.values(), item);
            }
            builder.append(true);
        }
    }
}

impl Decoder {
    pub fn new(ty: ColumnType) -> Decoder {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        match (ty.kind, ty.array) {
            (Kind::Int2, false) => Decoder::Int2(Int16Builder::new()),
            (Kind::Int4, false) => Decoder::Int4(Int32Builder::new()),
            (Kind::Int8, false) => Decoder::Int8(Int64Builder::new()),
            (Kind::Float4, false) => Decoder::Float4(Float32Builder::new()),
            (Kind::Float8, false) => Decoder::Float8(Float64Builder::new()),
            (Kind::Bool, false) => Decoder::Bool(BooleanBuilder::new()),
            (Kind::Text, false) => Decoder::Text(StringBuilder::new()),
            (Kind::Bytea, false) => Decoder::Bytea(BinaryBuilder::new()),
            (Kind::TimestampTz, false) => Decoder::TimestampTz(ts()),
            (Kind::Timestamp, false) => Decoder::Timestamp(ts()),
            (Kind::Date, false) => Decoder::Date(Date32Builder::new()),
            (Kind::Int2, true) => Decoder::ListInt2(ListBuilder::new(Int16Builder::new())),
            (Kind::Int4, true) => Decoder::ListInt4(ListBuilder::new(Int32Builder::new())),
            (Kind::Int8, true) => Decoder::ListInt8(ListBuilder::new(Int64Builder::new())),
            (Kind::Float4, true) => Decoder::ListFloat4(ListBuilder::new(Float32Builder::new())),
            (Kind::Float8, true) => Decoder::ListFloat8(ListBuilder::new(Float64Builder::new())),
            (Kind::Bool, true) => Decoder::ListBool(ListBuilder::new(BooleanBuilder::new())),
            (Kind::Text, true) => Decoder::ListText(ListBuilder::new(StringBuilder::new())),
            (Kind::Bytea, true) => Decoder::ListBytea(ListBuilder::new(BinaryBuilder::new())),
            (Kind::TimestampTz, true) => Decoder::ListTimestampTz(ListBuilder::new(ts())),
            (Kind::Timestamp, true) => Decoder::ListTimestamp(ListBuilder::new(ts())),
            (Kind::Date, true) => Decoder::ListDate(ListBuilder::new(Date32Builder::new())),
        }
    }

    /// Appends field `i` of `row`.
    pub fn push(&mut self, row: &BinaryCopyOutRow, i: usize) -> Result<(), DecodeError> {
        let utc = |t: DateTime<Utc>| t.timestamp_micros();
        let naive = |t: NaiveDateTime| t.and_utc().timestamp_micros();
        match self {
            Decoder::Int2(b) => b.append_option(row.try_get::<Option<i16>>(i)?),
            Decoder::Int4(b) => b.append_option(row.try_get::<Option<i32>>(i)?),
            Decoder::Int8(b) => b.append_option(row.try_get::<Option<i64>>(i)?),
            Decoder::Float4(b) => b.append_option(row.try_get::<Option<f32>>(i)?),
            Decoder::Float8(b) => b.append_option(row.try_get::<Option<f64>>(i)?),
            Decoder::Bool(b) => b.append_option(row.try_get::<Option<bool>>(i)?),
            Decoder::Text(b) => b.append_option(row.try_get::<Option<&str>>(i)?),
            Decoder::Bytea(b) => b.append_option(row.try_get::<Option<&[u8]>>(i)?),
            Decoder::TimestampTz(b) => {
                b.append_option(row.try_get::<Option<DateTime<Utc>>>(i)?.map(utc))
            }
            Decoder::Timestamp(b) => {
                b.append_option(row.try_get::<Option<NaiveDateTime>>(i)?.map(naive))
            }
            Decoder::Date(b) => b.append_option(row.try_get::<Option<NaiveDate>>(i)?.map(days)),
            Decoder::ListInt2(b) => push_list(b, row.try_get(i)?, |b, v| b.append_option(v)),
            Decoder::ListInt4(b) => push_list(b, row.try_get(i)?, |b, v| b.append_option(v)),
            Decoder::ListInt8(b) => push_list(b, row.try_get(i)?, |b, v| b.append_option(v)),
            Decoder::ListFloat4(b) => push_list(b, row.try_get(i)?, |b, v| b.append_option(v)),
            Decoder::ListFloat8(b) => push_list(b, row.try_get(i)?, |b, v| b.append_option(v)),
            Decoder::ListBool(b) => push_list(b, row.try_get(i)?, |b, v| b.append_option(v)),
            Decoder::ListText(b) => {
                push_list::<&str, _>(b, row.try_get(i)?, |b, v| b.append_option(v))
            }
            Decoder::ListBytea(b) => {
                push_list::<&[u8], _>(b, row.try_get(i)?, |b, v| b.append_option(v))
            }
            Decoder::ListTimestampTz(b) => {
                push_list::<DateTime<Utc>, _>(b, row.try_get(i)?, |b, v| {
                    b.append_option(v.map(utc))
                })
            }
            Decoder::ListTimestamp(b) => {
                push_list::<NaiveDateTime, _>(b, row.try_get(i)?, |b, v| {
                    b.append_option(v.map(naive))
                })
            }
            Decoder::ListDate(b) => {
                push_list::<NaiveDate, _>(b, row.try_get(i)?, |b, v| b.append_option(v.map(days)))
            }
        }
        Ok(())
    }

    /// The column built so far; the builder starts over empty.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Decoder::Int2(b) => Arc::new(b.finish()),
            Decoder::Int4(b) => Arc::new(b.finish()),
            Decoder::Int8(b) => Arc::new(b.finish()),
            Decoder::Float4(b) => Arc::new(b.finish()),
            Decoder::Float8(b) => Arc::new(b.finish()),
            Decoder::Bool(b) => Arc::new(b.finish()),
            Decoder::Text(b) => Arc::new(b.finish()),
            Decoder::Bytea(b) => Arc::new(b.finish()),
            Decoder::TimestampTz(b) | Decoder::Timestamp(b) => Arc::new(b.finish()),
            Decoder::Date(b) => Arc::new(b.finish()),
            Decoder::ListInt2(b) => Arc::new(b.finish()),
            Decoder::ListInt4(b) => Arc::new(b.finish()),
            Decoder::ListInt8(b) => Arc::new(b.finish()),
            Decoder::ListFloat4(b) => Arc::new(b.finish()),
            Decoder::ListFloat8(b) => Arc::new(b.finish()),
            Decoder::ListBool(b) => Arc::new(b.finish()),
            Decoder::ListText(b) => Arc::new(b.finish()),
            Decoder::ListBytea(b) => Arc::new(b.finish()),
            Decoder::ListTimestampTz(b) | Decoder::ListTimestamp(b) => Arc::new(b.finish()),
            Decoder::ListDate(b) => Arc::new(b.finish()),
        }
    }
}

/// One Arrow column as values a binary COPY can write, for a column of type `ty`.
pub(crate) enum Encoded<'a> {
    Int2(Vec<Option<i16>>),
    Int4(Vec<Option<i32>>),
    Int8(Vec<Option<i64>>),
    Float4(Vec<Option<f32>>),
    Float8(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<&'a str>>),
    Bytea(Vec<Option<&'a [u8]>>),
    TimestampTz(Vec<Option<DateTime<Utc>>>),
    Timestamp(Vec<Option<NaiveDateTime>>),
    Date(Vec<Option<NaiveDate>>),
    ListInt2(Vec<Option<Vec<Option<i16>>>>),
    ListInt4(Vec<Option<Vec<Option<i32>>>>),
    ListInt8(Vec<Option<Vec<Option<i64>>>>),
    ListFloat4(Vec<Option<Vec<Option<f32>>>>),
    ListFloat8(Vec<Option<Vec<Option<f64>>>>),
    ListBool(Vec<Option<Vec<Option<bool>>>>),
    ListText(Vec<Option<Vec<Option<String>>>>),
    ListBytea(Vec<Option<Vec<Option<Vec<u8>>>>>),
    ListTimestampTz(Vec<Option<Vec<Option<DateTime<Utc>>>>>),
    ListTimestamp(Vec<Option<Vec<Option<NaiveDateTime>>>>),
    ListDate(Vec<Option<Vec<Option<NaiveDate>>>>),
}

/// `array` cast to the Arrow type of `ty` (strictly: an overflow is an error).
pub(crate) fn cast_for(array: &ArrayRef, ty: ColumnType) -> Result<ArrayRef, String> {
    let wanted = ty.arrow();
    if array.data_type() == &wanted {
        return Ok(array.clone());
    }
    cast_with_options(
        array,
        &wanted,
        &CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot store {} as {}: {e}", array.data_type(), ty.sql()))
}

fn list_values<T>(
    array: &ArrayRef,
    item: impl Fn(&ArrayRef) -> Vec<Option<T>>,
) -> Vec<Option<Vec<Option<T>>>> {
    let list = array.as_list::<i32>();
    (0..list.len())
        .map(|i| (!list.is_null(i)).then(|| item(&list.value(i))))
        .collect()
}

impl<'a> Encoded<'a> {
    /// `array`, already of the Arrow type of `ty` (see [`cast_for`]).
    pub fn new(array: &'a ArrayRef, ty: ColumnType) -> Encoded<'a> {
        fn ts(a: &ArrayRef) -> Vec<Option<i64>> {
            a.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect()
        }
        let utc = |v: Vec<Option<i64>>| -> Vec<Option<DateTime<Utc>>> {
            v.into_iter()
                .map(|m| m.and_then(DateTime::<Utc>::from_timestamp_micros))
                .collect()
        };
        let naive = |v: Vec<Option<i64>>| -> Vec<Option<NaiveDateTime>> {
            v.into_iter().map(|m| m.and_then(micros_naive)).collect()
        };
        let dates = |a: &ArrayRef| -> Vec<Option<NaiveDate>> {
            a.as_primitive::<Date32Type>()
                .iter()
                .map(|d| d.and_then(date_of))
                .collect()
        };
        match (ty.kind, ty.array) {
            (Kind::Int2, false) => {
                Encoded::Int2(array.as_primitive::<Int16Type>().iter().collect())
            }
            (Kind::Int4, false) => {
                Encoded::Int4(array.as_primitive::<Int32Type>().iter().collect())
            }
            (Kind::Int8, false) => {
                Encoded::Int8(array.as_primitive::<Int64Type>().iter().collect())
            }
            (Kind::Float4, false) => {
                Encoded::Float4(array.as_primitive::<Float32Type>().iter().collect())
            }
            (Kind::Float8, false) => {
                Encoded::Float8(array.as_primitive::<Float64Type>().iter().collect())
            }
            (Kind::Bool, false) => Encoded::Bool(array.as_boolean().iter().collect()),
            (Kind::Text, false) => Encoded::Text(array.as_string::<i32>().iter().collect()),
            (Kind::Bytea, false) => Encoded::Bytea(array.as_binary::<i32>().iter().collect()),
            (Kind::TimestampTz, false) => Encoded::TimestampTz(utc(ts(array))),
            (Kind::Timestamp, false) => Encoded::Timestamp(naive(ts(array))),
            (Kind::Date, false) => Encoded::Date(dates(array)),
            (Kind::Int2, true) => Encoded::ListInt2(list_values(array, |a| {
                a.as_primitive::<Int16Type>().iter().collect()
            })),
            (Kind::Int4, true) => Encoded::ListInt4(list_values(array, |a| {
                a.as_primitive::<Int32Type>().iter().collect()
            })),
            (Kind::Int8, true) => Encoded::ListInt8(list_values(array, |a| {
                a.as_primitive::<Int64Type>().iter().collect()
            })),
            (Kind::Float4, true) => Encoded::ListFloat4(list_values(array, |a| {
                a.as_primitive::<Float32Type>().iter().collect()
            })),
            (Kind::Float8, true) => Encoded::ListFloat8(list_values(array, |a| {
                a.as_primitive::<Float64Type>().iter().collect()
            })),
            (Kind::Bool, true) => {
                Encoded::ListBool(list_values(array, |a| a.as_boolean().iter().collect()))
            }
            (Kind::Text, true) => Encoded::ListText(list_values(array, |a| {
                a.as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect()
            })),
            (Kind::Bytea, true) => Encoded::ListBytea(list_values(array, |a| {
                a.as_binary::<i32>()
                    .iter()
                    .map(|s| s.map(<[u8]>::to_vec))
                    .collect()
            })),
            (Kind::TimestampTz, true) => {
                Encoded::ListTimestampTz(list_values(array, |a| utc(ts(a))))
            }
            (Kind::Timestamp, true) => Encoded::ListTimestamp(list_values(array, |a| naive(ts(a)))),
            (Kind::Date, true) => Encoded::ListDate(list_values(array, dates)),
        }
    }

    /// Value `i`, ready for `BinaryCopyInWriter::write`.
    pub fn value(&self, i: usize) -> &(dyn ToSql + Sync) {
        match self {
            Encoded::Int2(v) => &v[i],
            Encoded::Int4(v) => &v[i],
            Encoded::Int8(v) => &v[i],
            Encoded::Float4(v) => &v[i],
            Encoded::Float8(v) => &v[i],
            Encoded::Bool(v) => &v[i],
            Encoded::Text(v) => &v[i],
            Encoded::Bytea(v) => &v[i],
            Encoded::TimestampTz(v) => &v[i],
            Encoded::Timestamp(v) => &v[i],
            Encoded::Date(v) => &v[i],
            Encoded::ListInt2(v) => &v[i],
            Encoded::ListInt4(v) => &v[i],
            Encoded::ListInt8(v) => &v[i],
            Encoded::ListFloat4(v) => &v[i],
            Encoded::ListFloat8(v) => &v[i],
            Encoded::ListBool(v) => &v[i],
            Encoded::ListText(v) => &v[i],
            Encoded::ListBytea(v) => &v[i],
            Encoded::ListTimestampTz(v) => &v[i],
            Encoded::ListTimestamp(v) => &v[i],
            Encoded::ListDate(v) => &v[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_round_trips_through_its_postgres_type() {
        for scalar in ScalarType::ALL {
            for vt in [ValueType::Scalar(scalar), ValueType::Array(scalar)] {
                let ty = ColumnType::of_value_type(vt);
                assert_eq!(ty.arrow(), vt.arrow_type(), "{vt:?}");
                assert_eq!(ColumnType::of(&ty.pg_type()), Some(ty), "{vt:?}");
                assert_eq!(ColumnType::of_arrow(&ty.arrow()), Some(ty), "{vt:?}");
            }
        }
        assert_eq!(ColumnType::of(&Type::NUMERIC), None);
        assert_eq!(
            ColumnType::of(&Type::TIMESTAMP).map(ColumnType::arrow),
            Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            "naive timestamps read as UTC"
        );
    }
}
