//! From the offline store's latest rows to an online write batch: entity keys serialized in
//! Feast's format, feature values as serialized `feast.types.Value`s.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use larder_offline::{DerivedKey, LATEST_CREATED_TS, LATEST_EVENT_TS};
use larder_online::{WriteOrderFn, timestamp_type, write_schema};
use larder_spec::FeatureView;
use larder_types::ScalarType;
use larder_types::feast::{
    ByteRows, DUMMY_JOIN_KEY, EntityKey, KeyVersion, Value, encode_column, serialize_entity_key,
    serialize_key_columns_into,
};

use crate::error::MaterializeError;

/// Name of the serialized entity key column materialization asks the offline store for.
pub const ENTITY_KEY_COLUMN: &str = "__larder_entity_key";

/// The serialized entity key of each of `rows` rows: `constant` for a view without join
/// keys, else the key columns serialized.
fn serialize_keys(
    names: &[&str],
    columns: &[ArrayRef],
    types: &[ScalarType],
    version: KeyVersion,
    constant: &Option<Vec<u8>>,
    rows: usize,
) -> Result<ByteRows, larder_types::feast::FormatError> {
    match constant {
        Some(key) => {
            let mut out = ByteRows::with_capacity(rows, rows * key.len());
            for _ in 0..rows {
                out.push_with(|buf| buf.extend_from_slice(key));
            }
            Ok(out)
        }
        None => {
            let mut out = ByteRows::with_capacity(rows, rows * 32);
            serialize_key_columns_into(names, columns, types, version, &mut out)?;
            Ok(out)
        }
    }
}

/// Turns batches of one view's latest rows into online write batches; built once per view.
#[derive(Debug)]
pub struct WriteBatchEncoder {
    view: String,
    join_keys: Vec<String>,
    key_types: Vec<ScalarType>,
    /// The key of every row when the view has no entities.
    constant_key: Option<Vec<u8>>,
    features: Vec<(String, larder_types::ValueType)>,
    version: KeyVersion,
    /// The online store's write order, prefixed to the derived key (see
    /// [`derived_key`](Self::derived_key)).
    order: Option<WriteOrderFn>,
}

/// Bytes of the write-order prefix of a derived key.
pub const ORDER_PREFIX: usize = 8;

impl WriteBatchEncoder {
    pub fn new(view: &FeatureView, version: KeyVersion) -> Result<Self, MaterializeError> {
        let name = view.name.to_string();
        let mut key_types = Vec::with_capacity(view.entity_columns.len());
        for column in &view.entity_columns {
            let ty = column
                .dtype
                .scalar()
                .ok_or_else(|| MaterializeError::Invalid {
                    view: name.clone(),
                    message: format!(
                        "join key `{}` has type {}, which cannot be an entity key",
                        column.name, column.dtype
                    ),
                })?;
            key_types.push(ty);
        }
        let constant_key = if view.entity_columns.is_empty() {
            let key = EntityKey::new([(DUMMY_JOIN_KEY, Value::string(""))]);
            Some(serialize_entity_key(&key, version).map_err(|source| {
                MaterializeError::Encode {
                    view: name.clone(),
                    what: "the entity key".into(),
                    source,
                }
            })?)
        } else {
            None
        };
        Ok(WriteBatchEncoder {
            view: name,
            join_keys: view.join_keys().map(ToString::to_string).collect(),
            key_types,
            constant_key,
            features: view
                .features
                .iter()
                .map(|f| (f.name.to_string(), f.dtype))
                .collect(),
            version,
            order: None,
        })
    }

    /// Orders the derived key by the online store's [`write_order`](
    /// larder_online::OnlineStore::write_order) when it has one.
    pub fn with_write_order(mut self, order: Option<WriteOrderFn>) -> Self {
        self.order = order;
        self
    }

    /// Bytes before the serialized key in each derived key value.
    pub fn key_prefix(&self) -> usize {
        if self.order.is_some() {
            ORDER_PREFIX
        } else {
            0
        }
    }

    /// Feature names in view order: the feature columns of every batch this encoder makes.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|(name, _)| name.as_str())
    }

    fn column<'b>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> Result<&'b ArrayRef, MaterializeError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| MaterializeError::Invalid {
                view: self.view.clone(),
                message: format!("the offline store returned no column `{name}`"),
            })
    }

    fn encode_error(
        &self,
        what: String,
    ) -> impl FnOnce(larder_types::feast::FormatError) -> MaterializeError {
        let view = self.view.clone();
        move |source| MaterializeError::Encode { view, what, source }
    }

    /// The serialized entity key as a [`DerivedKey`] of the join keys, named
    /// [`ENTITY_KEY_COLUMN`]: materialization asks the offline store to key and order its
    /// rows by it, so the online store receives its writes in its own key order, and
    /// [`encode`](Self::encode) takes the keys from it instead of serializing them again.
    /// With a write order, each value is the key's [`ORDER_PREFIX`]-byte order prefix
    /// followed by the key (still injective, and sorting in the store's order).
    pub fn derived_key(&self) -> DerivedKey {
        let join_keys = self.join_keys.clone();
        let key_types = self.key_types.clone();
        let constant_key = self.constant_key.clone();
        let version = self.version;
        let order = self.order;
        DerivedKey {
            name: ENTITY_KEY_COLUMN.to_owned(),
            data_type: DataType::Binary,
            derive: Arc::new(move |columns: &[ArrayRef]| {
                let rows = columns.first().map_or(1, |c| c.len());
                let names: Vec<&str> = join_keys.iter().map(String::as_str).collect();
                let mut keys =
                    serialize_keys(&names, columns, &key_types, version, &constant_key, rows)
                        .map_err(|e| e.to_string())?;
                if let Some(order) = order {
                    let mut ordered = ByteRows::with_capacity(rows, rows * (ORDER_PREFIX + 40));
                    for key in keys.iter() {
                        ordered.push_with(|buf| {
                            buf.extend_from_slice(&order(key));
                            buf.extend_from_slice(key);
                        });
                    }
                    keys = ordered;
                }
                keys.into_binary_array()
                    .map(|a| Arc::new(a) as ArrayRef)
                    .ok_or_else(|| "more than 2 GiB of entity keys in one batch".to_owned())
            }),
            keep: None,
        }
    }

    /// The write batch (see `OnlineStore::write_batch`) for `latest`, a batch of
    /// `LatestRows`.
    pub fn encode(&self, latest: &RecordBatch) -> Result<RecordBatch, MaterializeError> {
        let rows = latest.num_rows();
        if let Some(derived) = latest.column_by_name(ENTITY_KEY_COLUMN)
            && let Some(derived) = derived.as_binary_opt::<i32>()
        {
            if self.order.is_none() {
                return self.encode_with_keys(latest, Arc::new(derived.clone()));
            }
            let mut keys = Vec::with_capacity(derived.len());
            for value in derived.iter() {
                match value.and_then(|v| v.get(ORDER_PREFIX..)) {
                    Some(key) => keys.push(key),
                    None => {
                        return Err(MaterializeError::Invalid {
                            view: self.view.clone(),
                            message: "a derived key value is shorter than its order prefix".into(),
                        });
                    }
                }
            }
            let keys = arrow::array::BinaryArray::from_iter_values(keys);
            return self.encode_with_keys(latest, Arc::new(keys));
        }
        let names: Vec<&str> = self.join_keys.iter().map(String::as_str).collect();
        let columns = match self.constant_key {
            Some(_) => Vec::new(),
            None => names
                .iter()
                .map(|name| self.column(latest, name).cloned())
                .collect::<Result<Vec<_>, _>>()?,
        };
        let keys = serialize_keys(
            &names,
            &columns,
            &self.key_types,
            self.version,
            &self.constant_key,
            rows,
        )
        .map_err(self.encode_error("the entity keys".into()))?;
        let keys: ArrayRef = Arc::new(self.binary(keys)?);
        self.encode_with_keys(latest, keys)
    }

    /// The write batch for `latest` with `keys` (serialized, one per row).
    fn encode_with_keys(
        &self,
        latest: &RecordBatch,
        keys: ArrayRef,
    ) -> Result<RecordBatch, MaterializeError> {
        let rows = latest.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.features.len() + 3);
        columns.push(keys);
        columns.push(self.timestamp(latest, LATEST_EVENT_TS)?);
        columns.push(self.timestamp(latest, LATEST_CREATED_TS)?);
        for (name, dtype) in &self.features {
            let array = self.column(latest, name)?;
            let mut out = ByteRows::with_capacity(rows, rows * 12);
            encode_column(array.as_ref(), *dtype, &mut out)
                .map_err(self.encode_error(format!("feature `{name}`")))?;
            columns.push(Arc::new(self.binary(out)?));
        }
        let names: Vec<&str> = self.feature_names().collect();
        RecordBatch::try_new_with_options(
            write_schema(&names),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| MaterializeError::Invalid {
            view: self.view.clone(),
            message: format!("cannot build the online write batch: {e}"),
        })
    }

    fn binary(&self, rows: ByteRows) -> Result<arrow::array::BinaryArray, MaterializeError> {
        rows.into_binary_array()
            .ok_or_else(|| MaterializeError::Invalid {
                view: self.view.clone(),
                message: "one write batch holds more than 2 GiB of values; lower the batch size"
                    .into(),
            })
    }

    /// A timestamp column as `Timestamp(Microsecond, "UTC")`.
    fn timestamp(&self, batch: &RecordBatch, name: &str) -> Result<ArrayRef, MaterializeError> {
        let column = self.column(batch, name)?;
        match column.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
                Ok(column.clone())
            }
            DataType::Timestamp(_, _) | DataType::Null => {
                cast(column, &timestamp_type()).map_err(|e| MaterializeError::Invalid {
                    view: self.view.clone(),
                    message: format!("cannot read column `{name}` as a timestamp: {e}"),
                })
            }
            other => Err(MaterializeError::Invalid {
                view: self.view.clone(),
                message: format!("column `{name}` is {other}, not a timestamp"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Float32Array, Int64Array, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{Field, Schema};
    use larder_spec::{Field as SpecField, Ttl};
    use larder_types::ValueType;
    use larder_types::feast::deserialize_entity_key;
    use prost::Message;

    use arrow::array::{Array, AsArray};

    use super::*;

    fn view(entities: bool) -> FeatureView {
        let field = |name: &str, dtype: ValueType| SpecField {
            name: name.parse().unwrap(),
            dtype,
            description: String::new(),
            tags: Default::default(),
        };
        FeatureView {
            name: "v".parse().unwrap(),
            entities: if entities {
                vec!["driver".parse().unwrap()]
            } else {
                vec![]
            },
            ttl: Ttl(std::time::Duration::ZERO),
            source: "s".parse().unwrap(),
            batch_source: "s".parse().unwrap(),
            online: true,
            offline: false,
            entity_columns: if entities {
                vec![field("driver_id", ValueType::Scalar(ScalarType::Int64))]
            } else {
                vec![]
            },
            features: vec![
                field("rate", ValueType::Scalar(ScalarType::Float32)),
                field("city", ValueType::Scalar(ScalarType::String)),
            ],
            description: String::new(),
            tags: Default::default(),
            owner: String::new(),
        }
    }

    fn latest(with_key: bool) -> RecordBatch {
        let mut fields = vec![];
        let mut columns: Vec<ArrayRef> = vec![];
        if with_key {
            fields.push(Field::new("driver_id", DataType::Int64, false));
            columns.push(Arc::new(Int64Array::from(vec![1001, 1002])));
        }
        fields.push(Field::new(
            LATEST_EVENT_TS,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ));
        columns.push(Arc::new(
            TimestampNanosecondArray::from(vec![5_000, 7_000]).with_timezone("UTC"),
        ));
        fields.push(Field::new(LATEST_CREATED_TS, timestamp_type(), true));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![None, Some(9)]).with_timezone("UTC"),
        ));
        fields.push(Field::new("rate", DataType::Float32, true));
        columns.push(Arc::new(Float32Array::from(vec![Some(0.5), None])));
        fields.push(Field::new("city", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(vec![
            Some("Oslo"),
            Some("Rome"),
        ])));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn encodes_keys_values_and_microsecond_times() {
        let encoder = WriteBatchEncoder::new(&view(true), KeyVersion::V3).unwrap();
        let batch = encoder.encode(&latest(true)).unwrap();
        assert_eq!(batch.schema(), write_schema(&["rate", "city"]));
        let keys = batch.column(0).as_binary::<i32>();
        let key = deserialize_entity_key(keys.value(1), KeyVersion::V3).unwrap();
        assert_eq!(key.join_keys, vec!["driver_id"]);
        assert_eq!(key.entity_values, vec![Value::int64(1002)]);
        let ts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.values().to_vec(), vec![5, 7]);
        let rate = batch.column(3).as_binary::<i32>();
        assert_eq!(Value::decode(rate.value(0)).unwrap(), Value::float(0.5));
        // A null source value is written as the null Value (empty bytes), not left missing.
        assert!(rate.is_valid(1));
        assert!(rate.value(1).is_empty());
        let city = batch.column(4).as_binary::<i32>();
        assert_eq!(Value::decode(city.value(1)).unwrap(), Value::string("Rome"));
    }

    /// With a store's write order, the derived key is the order prefix then the key, and
    /// the write batch carries the bare key again.
    #[test]
    fn a_write_order_prefixes_the_derived_key_and_is_stripped_on_encode() {
        fn reversed(key: &[u8]) -> [u8; 8] {
            let mut prefix = [0u8; 8];
            for (p, k) in prefix.iter_mut().zip(key.iter().rev()) {
                *p = *k;
            }
            prefix
        }
        let plain = WriteBatchEncoder::new(&view(true), KeyVersion::V3).unwrap();
        let ordered = WriteBatchEncoder::new(&view(true), KeyVersion::V3)
            .unwrap()
            .with_write_order(Some(reversed));
        assert_eq!(
            (plain.key_prefix(), ordered.key_prefix()),
            (0, ORDER_PREFIX)
        );
        let latest = latest(true);
        let driver_ids = latest.column_by_name("driver_id").unwrap().clone();
        let bare = (plain.derived_key().derive)(std::slice::from_ref(&driver_ids)).unwrap();
        let prefixed = (ordered.derived_key().derive)(&[driver_ids]).unwrap();
        let (bare, prefixed) = (bare.as_binary::<i32>(), prefixed.as_binary::<i32>());
        for row in 0..2 {
            let key = bare.value(row);
            assert_eq!(&prefixed.value(row)[..ORDER_PREFIX], &reversed(key));
            assert_eq!(&prefixed.value(row)[ORDER_PREFIX..], key);
        }

        let mut columns = latest.columns().to_vec();
        columns.push(Arc::new(prefixed.clone()));
        let mut fields: Vec<_> = latest.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            ENTITY_KEY_COLUMN,
            DataType::Binary,
            false,
        )));
        let with_key = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let batch = ordered.encode(&with_key).unwrap();
        let keys = batch.column(0).as_binary::<i32>();
        assert_eq!(
            (keys.value(0), keys.value(1)),
            (bare.value(0), bare.value(1))
        );
        assert_eq!(batch, plain.encode(&latest).unwrap());
    }

    #[test]
    fn a_view_without_entities_uses_feast_dummy_key() {
        let encoder = WriteBatchEncoder::new(&view(false), KeyVersion::V3).unwrap();
        let batch = encoder.encode(&latest(false)).unwrap();
        let keys = batch.column(0).as_binary::<i32>();
        let key = deserialize_entity_key(keys.value(0), KeyVersion::V3).unwrap();
        assert_eq!(key.join_keys, vec![DUMMY_JOIN_KEY]);
        assert_eq!(keys.value(0), keys.value(1));
    }

    #[test]
    fn a_missing_column_names_the_view_and_column() {
        let encoder = WriteBatchEncoder::new(&view(true), KeyVersion::V3).unwrap();
        let err = encoder.encode(&latest(false)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`v`") && text.contains("`driver_id`"),
            "{text}"
        );
    }
}
