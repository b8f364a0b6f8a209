//! Helpers shared by the functions: seeded randomness and output digests.

use alloc::string::String;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use sha2::{Digest, Sha256};

/// The deterministic generator every function draws its data from.
pub type Rng = Xoshiro256PlusPlus;

/// A generator for `seed` mixed with a per-purpose `stream` number.
pub fn rng(seed: u64, stream: u64) -> Rng {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Lower-case hex SHA-256 of `parts`, hashed in order.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let mut out = String::with_capacity(64);
    for byte in hasher.finalize() {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// A uniformly distributed value in `0..n` (n > 0).
pub fn below(rng: &mut Rng, n: u64) -> u64 {
    use rand_core::Rng as _;
    // Lemire's multiply-shift; the tiny bias is irrelevant for data generation.
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// A float in `[-1, 1)`.
pub fn signed_unit(rng: &mut Rng) -> f32 {
    use rand_core::Rng as _;
    // 24 random mantissa bits → exact in f32.
    ((rng.next_u32() >> 8) as f32) * (2.0 / 16_777_216.0) - 1.0
}
