//! `google.protobuf.Timestamp` as a prost message: the `_ts:{view}` field of Feast's Redis hashes (feast-behaviour.md §10.2).

use chrono::{DateTime, Utc};
use prost::Message;

use super::FormatError;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const MICROS_PER_SECOND: i64 = 1_000_000;

/// Seconds and non-negative nanoseconds since the Unix epoch, wire-compatible with
/// `google.protobuf.Timestamp` (`int64 seconds = 1; int32 nanos = 2`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Message)]
pub struct ProtoTimestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl ProtoTimestamp {
    /// From microseconds since the epoch (Larder's Arrow timestamp unit); floors negatives.
    pub fn from_micros(micros: i64) -> Self {
        let seconds = micros.div_euclid(MICROS_PER_SECOND);
        // rem_euclid is in 0..1_000_000, so nanos stay below 10^9 and fit i32.
        let nanos = (micros.rem_euclid(MICROS_PER_SECOND) * 1_000) as i32;
        ProtoTimestamp { seconds, nanos }
    }

    /// Microseconds since the epoch, truncating sub-microsecond digits toward the past.
    pub fn to_micros(self) -> Result<i64, FormatError> {
        self.validate()?;
        self.seconds
            .checked_mul(MICROS_PER_SECOND)
            .and_then(|us| us.checked_add(i64::from(self.nanos) / 1_000))
            .ok_or(self.out_of_range())
    }

    pub fn to_datetime(self) -> Result<DateTime<Utc>, FormatError> {
        self.validate()?;
        // validate() guarantees 0 <= nanos < 10^9.
        DateTime::from_timestamp(self.seconds, self.nanos as u32).ok_or(self.out_of_range())
    }

    /// The serialized protobuf, as stored in `_ts:` Redis fields.
    pub fn to_bytes(self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        ProtoTimestamp::decode(bytes).map_err(|source| FormatError::Decode {
            what: "google.protobuf.Timestamp",
            source,
        })
    }

    fn validate(self) -> Result<(), FormatError> {
        if (0..NANOS_PER_SECOND).contains(&i64::from(self.nanos)) {
            Ok(())
        } else {
            Err(self.out_of_range())
        }
    }

    fn out_of_range(self) -> FormatError {
        FormatError::TimestampOutOfRange {
            seconds: self.seconds,
            nanos: i64::from(self.nanos),
        }
    }
}

impl From<DateTime<Utc>> for ProtoTimestamp {
    fn from(dt: DateTime<Utc>) -> Self {
        // chrono encodes a leap second as nanos >= 10^9; protobuf forbids that, so clamp.
        let nanos = dt.timestamp_subsec_nanos().min(999_999_999);
        ProtoTimestamp {
            seconds: dt.timestamp(),
            nanos: nanos as i32,
        }
    }
}

impl TryFrom<ProtoTimestamp> for DateTime<Utc> {
    type Error = FormatError;
    fn try_from(ts: ProtoTimestamp) -> Result<Self, Self::Error> {
        ts.to_datetime()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bytes() {
        // 2021-12-31T23:00:00.5Z: seconds 1640991600 (varint), nanos 500000000 (varint).
        let dt = DateTime::parse_from_rfc3339("2021-12-31T23:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let ts = ProtoTimestamp::from(dt);
        assert_eq!(
            ts,
            ProtoTimestamp {
                seconds: 1_640_991_600,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            ts.to_bytes(),
            [
                0x08, 0xf0, 0x96, 0xbe, 0x8e, 0x06, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01
            ]
        );
        assert_eq!(ProtoTimestamp::from_bytes(&ts.to_bytes()).unwrap(), ts);
        assert_eq!(ts.to_datetime().unwrap(), dt);
        // The epoch is all defaults: zero bytes, as Python's protobuf writes it.
        assert!(ProtoTimestamp::default().to_bytes().is_empty());
    }

    #[test]
    fn micros_round_trip_and_floor() {
        for (micros, seconds, nanos) in [
            (0, 0, 0),
            (1_500_000, 1, 500_000_000),
            (-1, -1, 999_999_000),
            (-1_000_000, -1, 0),
        ] {
            let ts = ProtoTimestamp::from_micros(micros);
            assert_eq!((ts.seconds, ts.nanos), (seconds, nanos), "{micros}");
            assert_eq!(ts.to_micros().unwrap(), micros);
            let dt = ts.to_datetime().unwrap();
            assert_eq!(dt.timestamp_micros(), micros);
        }
    }

    #[test]
    fn invalid_timestamps_are_errors() {
        let bad_nanos = ProtoTimestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(bad_nanos.to_datetime().is_err());
        assert!(bad_nanos.to_micros().is_err());
        let huge = ProtoTimestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(
            huge.to_micros().unwrap_err().to_string(),
            format!("timestamp of {} s and 0 ns is out of range", i64::MAX)
        );
        assert!(huge.to_datetime().is_err());
    }
}
