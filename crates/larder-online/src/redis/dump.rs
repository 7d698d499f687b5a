//! Hashes as `RESTORE` payloads: how a materialization creates a key that does not exist
//! yet without paying for `HSET`.
//!
//! A `RESTORE` payload is what `DUMP` returns: the value in RDB form, the RDB version
//! (2 bytes, little-endian) and a CRC-64 of both (8 bytes, little-endian). For a hash this
//! small (Redis's default `hash-max-listpack-entries` 128 and `hash-max-listpack-value`
//! 64 bytes) the value is RDB type 16, a listpack: Redis keeps it as sent, one allocation
//! and a copy, where `HSET` parses, searches and appends field by field. On Redis 7.0 here
//! a new 11-field hash costs Redis about 1.3-1.7 µs as `RESTORE` against 4.6 µs as `HSET`
//! and 4.9 µs through the newest-wins script.
//!
//! The listpack is byte for byte the one Redis builds for the same `HSET` (a canonical
//! decimal string is stored as an integer, as `lpAppend` does), so a restored hash is the
//! same hash: tested against `DUMP` of a hash Redis built, and under
//! `sanitize-dump-payload yes`, which validates every entry. Type 16 needs RDB version 10
//! (Redis 7.0); an older server refuses the payload and the writer goes back to the script.

/// Redis's defaults for a hash kept as a listpack; a bigger hash is left to `HSET`.
const MAX_LISTPACK_PAIRS: usize = 128;
const MAX_LISTPACK_VALUE: usize = 64;
/// `RDB_TYPE_HASH_LISTPACK`.
const RDB_TYPE_HASH_LISTPACK: u8 = 16;
/// The RDB version that brought listpack hashes (Redis 7.0); newer servers accept it.
const RDB_VERSION: u16 = 10;
/// A listpack's header: total bytes (u32) and number of elements (u16), little-endian.
const LISTPACK_HEADER: usize = 6;
const LISTPACK_END: u8 = 0xFF;

/// Writes the `RESTORE` payload of a hash holding the `count` `pairs` (field, value) in
/// that order into `out` (cleared first). Returns false, with `out` unspecified, when the
/// hash is too big for a listpack by Redis's defaults or has no fields.
pub fn hash_payload<'a>(
    count: usize,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut Vec<u8>,
) -> bool {
    if count == 0 || count > MAX_LISTPACK_PAIRS {
        return false;
    }
    out.clear();
    // Type, then the listpack as an RDB string, whose length is only known at the end:
    // room for the longest length form is kept and the unused part dropped.
    out.push(RDB_TYPE_HASH_LISTPACK);
    let len_at = out.len();
    out.extend_from_slice(&[0; 5]);
    let lp_start = out.len();
    out.extend_from_slice(&[0; LISTPACK_HEADER]);
    let mut seen = 0;
    for (field, value) in pairs {
        seen += 1;
        if field.len() > MAX_LISTPACK_VALUE || value.len() > MAX_LISTPACK_VALUE {
            return false;
        }
        push_entry(out, field);
        push_entry(out, value);
    }
    if seen != count {
        return false;
    }
    out.push(LISTPACK_END);
    let lp_len = out.len() - lp_start;
    out[lp_start..lp_start + 4].copy_from_slice(&(lp_len as u32).to_le_bytes());
    // At most 256 elements: always below the u16 "unknown" marker.
    out[lp_start + 4..lp_start + 6].copy_from_slice(&((2 * count) as u16).to_le_bytes());
    let mut len = [0u8; 5];
    let len = rdb_length(lp_len, &mut len);
    out[len_at..len_at + len.len()].copy_from_slice(len);
    out.drain(len_at + len.len()..len_at + 5);
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(0, out);
    out.extend_from_slice(&crc.to_le_bytes());
    true
}

/// `rdbSaveLen` for a length below 2^32: 6 bits, 14 bits (big-endian), or a marker and a
/// big-endian u32.
fn rdb_length(len: usize, buf: &mut [u8; 5]) -> &[u8] {
    if len < 1 << 6 {
        buf[0] = len as u8;
        &buf[..1]
    } else if len < 1 << 14 {
        buf[0] = 0x40 | (len >> 8) as u8;
        buf[1] = len as u8;
        &buf[..2]
    } else {
        buf[0] = 0x80;
        buf[1..].copy_from_slice(&(len as u32).to_be_bytes());
        &buf[..]
    }
}

/// One listpack entry: encoding and data, then the entry's length written backwards.
fn push_entry(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    match canonical_integer(bytes) {
        Some(v) => push_integer(out, v),
        None => {
            let n = bytes.len();
            if n < 64 {
                out.push(0x80 | n as u8);
            } else if n < 4096 {
                out.push(0xE0 | (n >> 8) as u8);
                out.push(n as u8);
            } else {
                out.push(0xF0);
                out.extend_from_slice(&(n as u32).to_le_bytes());
            }
            out.extend_from_slice(bytes);
        }
    }
    push_backlen(out, (out.len() - start) as u64);
}

/// Listpack's integer encodings, smallest first (`lpEncodeIntegerGetType`).
fn push_integer(out: &mut Vec<u8>, v: i64) {
    if (0..=127).contains(&v) {
        out.push(v as u8);
    } else if (-4096..=4095).contains(&v) {
        let u = if v < 0 { (1 << 13) + v } else { v } as u16;
        out.push((u >> 8) as u8 | 0xC0);
        out.push(u as u8);
    } else if (-32768..=32767).contains(&v) {
        out.push(0xF1);
        out.extend_from_slice(&(v as i16).to_le_bytes());
    } else if (-8_388_608..=8_388_607).contains(&v) {
        out.push(0xF2);
        out.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
    } else if i32::try_from(v).is_ok() {
        out.push(0xF3);
        out.extend_from_slice(&(v as i32).to_le_bytes());
    } else {
        out.push(0xF4);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// `lpEncodeBacklen`: 7 bits per byte, the first byte holding the highest bits and every
/// byte after it flagged with its top bit.
fn push_backlen(out: &mut Vec<u8>, l: u64) {
    if l <= 127 {
        out.push(l as u8);
    } else if l < 16383 {
        out.extend_from_slice(&[(l >> 7) as u8, (l & 127) as u8 | 128]);
    } else if l < 2_097_151 {
        out.extend_from_slice(&[
            (l >> 14) as u8,
            ((l >> 7) & 127) as u8 | 128,
            (l & 127) as u8 | 128,
        ]);
    } else if l < 268_435_455 {
        out.extend_from_slice(&[
            (l >> 21) as u8,
            ((l >> 14) & 127) as u8 | 128,
            ((l >> 7) & 127) as u8 | 128,
            (l & 127) as u8 | 128,
        ]);
    } else {
        out.extend_from_slice(&[
            (l >> 28) as u8,
            ((l >> 21) & 127) as u8 | 128,
            ((l >> 14) & 127) as u8 | 128,
            ((l >> 7) & 127) as u8 | 128,
            (l & 127) as u8 | 128,
        ]);
    }
}

/// The integer a string is the canonical decimal form of, as `lpStringToInt64` decides:
/// an optional `-`, no leading zero (but `0` itself), at most 20 characters, in range.
fn canonical_integer(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // -(2^63) is the one magnitude without a positive i64.
        if v == 1 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(v).ok().map(|v| -v)
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// CRC-64/Jones as Redis computes it (reflected, polynomial 0xad93d23594c935a9, no final
/// xor), eight bytes per step.
pub fn crc64(mut crc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = crc ^ u64::from_le_bytes(word);
        crc = CRC_TABLES[7][(x & 0xff) as usize]
            ^ CRC_TABLES[6][((x >> 8) & 0xff) as usize]
            ^ CRC_TABLES[5][((x >> 16) & 0xff) as usize]
            ^ CRC_TABLES[4][((x >> 24) & 0xff) as usize]
            ^ CRC_TABLES[3][((x >> 32) & 0xff) as usize]
            ^ CRC_TABLES[2][((x >> 40) & 0xff) as usize]
            ^ CRC_TABLES[1][((x >> 48) & 0xff) as usize]
            ^ CRC_TABLES[0][(x >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = CRC_TABLES[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// `CRC_TABLES[0]` is the byte-at-a-time table; `CRC_TABLES[k][b]` the CRC of byte `b`
/// followed by `k` zero bytes, for eight bytes per step.
static CRC_TABLES: [[u64; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u64; 256]; 8] {
    // 0xad93d23594c935a9, bit-reflected.
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut tables = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = tables[0][(prev & 0xff) as usize] ^ (prev >> 8);
            i += 1;
        }
        k += 1;
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise_crc(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0, |crc, &b| {
            CRC_TABLES[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8)
        })
    }

    #[test]
    fn crc64_matches_redis() {
        // The check value of CRC-64/Jones as Redis computes it (src/crc64.c); that Redis
        // accepts the payloads is tested against a server (tests/it/redis.rs).
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        // Eight at a time agrees with one at a time at every length and offset.
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                assert_eq!(crc64(0, &data[start..end]), bytewise_crc(&data[start..end]));
            }
        }
    }

    #[test]
    fn integers_are_recognised_as_listpack_does() {
        for (s, v) in [
            (&b"0"[..], Some(0)),
            (b"7", Some(7)),
            (b"-1", Some(-1)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-0", None),
            (b"007", None),
            (b"", None),
            (b"-", None),
            (b"12a", None),
            (b" 1", None),
            (b"+1", None),
            (b"184467440737095516150", None),
        ] {
            assert_eq!(canonical_integer(s), v, "{:?}", String::from_utf8_lossy(s));
        }
    }

    /// Decodes one listpack entry at `at`; returns its bytes (integers as decimal text)
    /// and where the next entry starts, checking the backlen on the way.
    fn read_entry(lp: &[u8], at: usize) -> (Vec<u8>, usize) {
        let b = lp[at];
        let (value, len) = if b & 0x80 == 0 {
            ((b as i64).to_string().into_bytes(), 1)
        } else if b & 0xC0 == 0x80 {
            let n = (b & 0x3F) as usize;
            (lp[at + 1..at + 1 + n].to_vec(), 1 + n)
        } else if b & 0xE0 == 0xC0 {
            let u = (((b & 0x1F) as i64) << 8) | lp[at + 1] as i64;
            let v = if u >= 1 << 12 { u - (1 << 13) } else { u };
            (v.to_string().into_bytes(), 2)
        } else if b & 0xF0 == 0xE0 {
            let n = (((b & 0x0F) as usize) << 8) | lp[at + 1] as usize;
            (lp[at + 2..at + 2 + n].to_vec(), 2 + n)
        } else {
            let width = match b {
                0xF1 => 2,
                0xF2 => 3,
                0xF3 => 4,
                0xF4 => 8,
                0xF0 => {
                    let n = u32::from_le_bytes(lp[at + 1..at + 5].try_into().unwrap()) as usize;
                    return finish(lp, at, lp[at + 5..at + 5 + n].to_vec(), 5 + n);
                }
                other => panic!("unexpected encoding {other:#x}"),
            };
            let mut raw = [0u8; 8];
            raw[..width].copy_from_slice(&lp[at + 1..at + 1 + width]);
            let shift = 64 - 8 * width as u32;
            let v = (i64::from_le_bytes(raw) << shift) >> shift;
            (v.to_string().into_bytes(), 1 + width)
        };
        finish(lp, at, value, len)
    }

    fn finish(lp: &[u8], at: usize, value: Vec<u8>, len: usize) -> (Vec<u8>, usize) {
        // The backlen, read from its last byte backwards as lpDecodeBacklen does.
        let mut end = at + len;
        let mut back = Vec::new();
        push_backlen(&mut back, len as u64);
        assert_eq!(&lp[end..end + back.len()], &back[..]);
        end += back.len();
        let mut decoded = 0u64;
        let mut shift = 0;
        let mut p = end - 1;
        loop {
            decoded |= u64::from(lp[p] & 127) << shift;
            if lp[p] & 128 == 0 {
                break;
            }
            shift += 7;
            p -= 1;
        }
        assert_eq!(decoded, len as u64);
        (value, end)
    }

    fn decode(payload: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (body, footer) = payload.split_at(payload.len() - 8);
        assert_eq!(
            crc64(0, body),
            u64::from_le_bytes(footer.try_into().unwrap())
        );
        assert_eq!(&body[body.len() - 2..], &RDB_VERSION.to_le_bytes());
        assert_eq!(body[0], RDB_TYPE_HASH_LISTPACK);
        let (lp_len, lp_at) = match body[1] & 0xC0 {
            0 => (body[1] as usize, 2),
            0x40 => ((((body[1] & 0x3F) as usize) << 8) | body[2] as usize, 3),
            _ => {
                assert_eq!(body[1], 0x80);
                (
                    u32::from_be_bytes(body[2..6].try_into().unwrap()) as usize,
                    6,
                )
            }
        };
        let lp = &body[lp_at..body.len() - 2];
        assert_eq!(lp.len(), lp_len);
        assert_eq!(
            u32::from_le_bytes(lp[..4].try_into().unwrap()) as usize,
            lp_len
        );
        let count = u16::from_le_bytes(lp[4..6].try_into().unwrap()) as usize;
        let mut at = LISTPACK_HEADER;
        let mut items = Vec::new();
        while lp[at] != LISTPACK_END {
            let (item, next) = read_entry(lp, at);
            items.push(item);
            at = next;
        }
        assert_eq!(at, lp.len() - 1);
        assert_eq!(items.len(), count);
        items
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect()
    }

    #[test]
    fn payloads_decode_to_their_pairs() {
        let long = vec![b'x'; 64];
        let cases: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![
            vec![(b"_ts:v".to_vec(), vec![8, 1, 16, 2])],
            vec![
                (b"a".to_vec(), b"".to_vec()),
                (b"0".to_vec(), b"127".to_vec()),
                (b"-4096".to_vec(), b"4095".to_vec()),
                (b"-32768".to_vec(), b"32767".to_vec()),
                (b"-8388608".to_vec(), b"8388607".to_vec()),
                (b"-2147483648".to_vec(), b"2147483647".to_vec()),
                (
                    b"-9223372036854775808".to_vec(),
                    b"9223372036854775807".to_vec(),
                ),
                (long.clone(), long[..63].to_vec()),
                (vec![0, 1, 2, 255], b"0123".to_vec()),
            ],
            (0..128u32)
                .map(|i| (i.to_le_bytes().to_vec(), vec![b'v'; (i % 65) as usize]))
                .collect(),
            // The longest listpack: its length needs the RDB 32-bit form.
            (0..128u32)
                .map(|i| {
                    (
                        vec![b'f'; 60].into_iter().chain(i.to_le_bytes()).collect(),
                        long.clone(),
                    )
                })
                .collect(),
        ];
        for pairs in cases {
            let mut out = Vec::new();
            assert!(hash_payload(
                pairs.len(),
                pairs.iter().map(|(f, v)| (&f[..], &v[..])),
                &mut out
            ));
            assert_eq!(decode(&out), pairs);
        }
    }

    /// Redis itself reads the integer entries back (with `LARDER_TEST_REDIS_URL`; the
    /// store's own tests in tests/it/redis.rs compare whole payloads with `DUMP`).
    #[test]
    fn redis_reads_every_entry_encoding() {
        let Ok(url) = std::env::var("LARDER_TEST_REDIS_URL") else {
            eprintln!("not run: set LARDER_TEST_REDIS_URL");
            return;
        };
        let mut conn = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| {
                panic!("LARDER_TEST_REDIS_URL is set but Redis does not answer: {e}")
            });
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = [
            ("0", "127"),
            ("-4096", "4095"),
            ("-32768", "32767"),
            ("-8388608", "8388607"),
            ("-2147483648", "2147483647"),
            ("-9223372036854775808", "9223372036854775807"),
            ("007", "-0"),
            ("", "x"),
        ]
        .iter()
        .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .chain([(vec![b'k'; 64], vec![b'v'; 64])])
        .collect();
        let mut payload = Vec::new();
        assert!(hash_payload(
            pairs.len(),
            pairs.iter().map(|(f, v)| (&f[..], &v[..])),
            &mut payload
        ));
        let key = format!("larder-dump-test-{}", std::process::id());
        let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).expect("DEL");
        let _: () = redis::cmd("RESTORE")
            .arg(&key)
            .arg(0)
            .arg(&payload)
            .query(&mut conn)
            .expect("RESTORE accepts the payload");
        let got: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query(&mut conn)
            .expect("HGETALL");
        assert_eq!(got, pairs);
        // Lookups and updates walk the entries as Redis does.
        let v: Vec<u8> = redis::cmd("HGET")
            .arg(&key)
            .arg("-8388608")
            .query(&mut conn)
            .expect("HGET");
        assert_eq!(v, b"8388607");
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("-32768")
            .arg("1")
            .query(&mut conn)
            .expect("HSET");
        let len: usize = redis::cmd("HLEN").arg(&key).query(&mut conn).expect("HLEN");
        assert_eq!(len, pairs.len());
        let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).expect("DEL");
    }

    #[test]
    fn hashes_beyond_a_listpack_are_refused() {
        let mut out = Vec::new();
        let long = [b'x'; 65];
        assert!(!hash_payload(1, [(&b"f"[..], &long[..])], &mut out));
        assert!(!hash_payload(1, [(&long[..], &b"v"[..])], &mut out));
        let many: Vec<[u8; 4]> = (0..129u32).map(u32::to_le_bytes).collect();
        assert!(!hash_payload(
            many.len(),
            many.iter().map(|f| (&f[..], &b"v"[..])),
            &mut out
        ));
        assert!(!hash_payload(0, std::iter::empty(), &mut out));
        // A count that is not the pairs' is refused rather than written wrong.
        assert!(!hash_payload(2, [(&b"f"[..], &b"v"[..])], &mut out));
    }
}
