//! MurmurHash3 x86_32, which names the feature fields of Feast's Redis hashes (feast-behaviour.md §10.2).

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// MurmurHash3, x86 32-bit variant (Austin Appleby's `MurmurHash3_x86_32`, same as Python `mmh3.hash`
/// read as unsigned).
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= mix_k(k);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0u32, |k, &byte| (k << 8) | u32::from(byte));
        h ^= mix_k(k);
    }
    // The algorithm mixes in the length modulo 2^32 by definition.
    h ^= data.len() as u32;
    fmix32(h)
}

/// The Redis hash field of feature `feature` of view `view`: `murmur3_32("{view}:{feature}", 0)`
/// as 4 little-endian bytes. Names up to 256 bytes are joined on the stack: no allocation.
pub fn redis_field_hash(view: &str, feature: &str) -> [u8; 4] {
    let len = view.len() + 1 + feature.len();
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let name: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    name[..view.len()].copy_from_slice(view.as_bytes());
    name[view.len()] = b':';
    name[view.len() + 1..].copy_from_slice(feature.as_bytes());
    murmur3_32(name, 0).to_le_bytes()
}

fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let cases: &[(&[u8], u32, u32)] = &[
            (b"", 0, 0),
            (b"", 1, 0x514e_28b7),
            (b"", 0xffff_ffff, 0x81f1_6f39),
            (b"hello", 0, 0x248b_fa47),
            (b"driver_hourly_stats:conv_rate", 0, 0xdae3_6061),
            (b"\x00\x00\x00\x00", 0, 0x2362_f9de),
            (b"\x21\x43\x65\x87", 0, 0xf55b_516b),
            (b"\x21\x43\x65", 0, 0x7e4a_8634),
            (b"\x21\x43", 0, 0xa0f7_b07a),
            (b"\x21", 0, 0x7266_1cf4),
            (
                b"The quick brown fox jumps over the lazy dog",
                0x9747_b28c,
                0x2fa8_26cd,
            ),
        ];
        for &(data, seed, expected) in cases {
            assert_eq!(murmur3_32(data, seed), expected, "{data:?} seed {seed:#x}");
        }
    }

    #[test]
    fn redis_field_bytes() {
        assert_eq!(
            redis_field_hash("driver_hourly_stats", "conv_rate"),
            [0x61, 0x60, 0xe3, 0xda]
        );
    }

    #[test]
    fn long_names_hash_like_short_ones() {
        for (view, feature) in [
            ("v".repeat(254), "f".to_owned()),
            ("v".repeat(300), "f".repeat(9)),
        ] {
            let joined = format!("{view}:{feature}");
            assert_eq!(
                redis_field_hash(&view, &feature),
                murmur3_32(joined.as_bytes(), 0).to_le_bytes(),
                "{} bytes",
                joined.len()
            );
        }
    }
}
