//! Shards of a distributed materialization: which entity keys one worker of `N` writes.
//!
//! A key's shard depends only on its bytes: `floor(murmur3_x86_32(key, seed 0) * N / 2^32)`
//! of the serialized entity key (Feast's format, the config's
//! `entity_key_serialization_version`), the same bytes the online store keys rows by. It is
//! the same in every process and on every machine, so `N` workers given `0/N` to
//! `N-1/N` write disjoint sets of keys whose union is what one unsharded run writes. The
//! multiply-shift reduction (instead of `hash % N`) keeps shards even for any `N`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, BooleanArray};
use larder_offline::KeepKeyFn;
use larder_types::feast::murmur3_32;

/// Shard `index` of `count` (`index < count`, `count >= 1`), written `index/count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard specification is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not a shard; write INDEX/COUNT, such as `0/4` (indexes start at 0)")]
    Syntax(String),
    #[error("shard `{0}`: the shard count must be at least 1")]
    NoShards(String),
    #[error("shard `{text}`: the index must be below the count (0 to {last})")]
    IndexTooLarge { text: String, last: u32 },
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        let text = format!("{index}/{count}");
        if count == 0 {
            return Err(ShardError::NoShards(text));
        }
        if index >= count {
            return Err(ShardError::IndexTooLarge {
                text,
                last: count - 1,
            });
        }
        Ok(Shard { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard (`0..count`) a serialized entity key belongs to.
    pub fn of_key(key: &[u8], count: u32) -> u32 {
        ((u64::from(murmur3_32(key, 0)) * u64::from(count)) >> 32) as u32
    }

    /// Whether this shard writes `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.count == 1 || Shard::of_key(key, self.count) == self.index
    }

    /// The filter the offline store applies to the derived key column (each value the
    /// serialized key after `prefix` bytes of write order), so a shard only deduplicates its
    /// own keys.
    pub(crate) fn key_filter(self, prefix: usize) -> Arc<KeepKeyFn> {
        Arc::new(move |column: &ArrayRef| {
            let keys = column
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| format!("the key column is {}, not binary", column.data_type()))?;
            Ok(keys
                .iter()
                .map(|key| {
                    Some(
                        key.and_then(|k| k.get(prefix..))
                            .is_some_and(|k| self.contains(k)),
                    )
                })
                .collect::<BooleanArray>())
        })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(text.to_owned());
        let (index, count) = text.trim().split_once('/').ok_or_else(syntax)?;
        let number = |s: &str| -> Result<u32, ShardError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            s.parse().map_err(|_| syntax())
        };
        Shard::new(number(index)?, number(count)?).map_err(|e| match e {
            ShardError::NoShards(_) => ShardError::NoShards(text.to_owned()),
            ShardError::IndexTooLarge { last, .. } => ShardError::IndexTooLarge {
                text: text.to_owned(),
                last,
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_bad_specifications() {
        assert_eq!("2/3".parse::<Shard>(), Shard::new(2, 3));
        assert_eq!(
            " 0/1 ".parse::<Shard>().map(|s| s.to_string()),
            Ok("0/1".into())
        );
        let cases = [
            ("3", "`3` is not a shard; write INDEX/COUNT"),
            ("a/3", "`a/3` is not a shard"),
            ("-1/3", "`-1/3` is not a shard"),
            ("1/", "`1/` is not a shard"),
            ("1/2/3", "`1/2/3` is not a shard"),
            ("$(JOB_COMPLETION_INDEX)/3", "is not a shard"),
            ("99999999999/3", "is not a shard"),
            ("0/0", "shard `0/0`: the shard count must be at least 1"),
            (
                "3/3",
                "shard `3/3`: the index must be below the count (0 to 2)",
            ),
        ];
        for (text, expected) in cases {
            let err = text.parse::<Shard>().expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn shards_partition_the_keys_exactly_and_evenly() {
        let keys: Vec<Vec<u8>> = (0..30_000u32)
            .map(|i| {
                let mut key = b"driver_id".to_vec();
                key.extend_from_slice(&i.to_le_bytes());
                key
            })
            .collect();
        for count in [1u32, 2, 3, 7, 10] {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
            let mut sizes = vec![0usize; count as usize];
            for key in &keys {
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.contains(key)).collect();
                assert_eq!(owners.len(), 1, "{count} shards: one owner per key");
                assert_eq!(owners[0].index(), Shard::of_key(key, count));
                sizes[owners[0].index() as usize] += 1;
            }
            let even = keys.len() / count as usize;
            for size in sizes {
                assert!(
                    size.abs_diff(even) < even / 10 + 1,
                    "{count} shards: {size} vs {even}"
                );
            }
        }
    }

    #[test]
    fn a_key_filter_keeps_the_shard_s_keys() {
        let keys: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i, 1, 2]).collect();
        let column: ArrayRef = Arc::new(BinaryArray::from_iter_values(keys.iter()));
        let mut total = 0;
        for index in 0..4 {
            let shard = Shard::new(index, 4).unwrap();
            let kept = (shard.key_filter(0))(&column).unwrap();
            for (key, keep) in keys.iter().zip(kept.iter()) {
                assert_eq!(keep, Some(shard.contains(key)));
            }
            total += kept.true_count();
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn the_shard_of_a_key_is_stable() {
        // Pinned: workers of one run may be different builds and machines.
        let key = b"\x02\x00\x00\x00\x09\x00\x00\x00driver_id\x04\x00\x00\x00\x08\x00\x00\x00\xe9\x03\x00\x00\x00\x00\x00\x00";
        assert_eq!(murmur3_32(key, 0), 944_780_611);
        assert_eq!(
            [1, 2, 4, 5, 10, 100].map(|n| Shard::of_key(key, n)),
            [0, 0, 0, 1, 2, 21]
        );
    }
}
