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
    let mut hasher = Hasher::default();
    for part in parts {
        hasher.bytes(part);
    }
    hasher.finish()
}

/// SHA-256 fed piece by piece (numbers as little-endian bytes, without copying a whole
/// array), finished as lower-case hex.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Adds numbers as little-endian bytes, `N` bytes each.
    pub fn numbers<const N: usize, T: Copy>(&mut self, values: &[T], to_le: impl Fn(T) -> [u8; N]) {
        let mut buffer = [0u8; 4096];
        for chunk in values.chunks(buffer.len() / N) {
            for (slot, value) in buffer.chunks_exact_mut(N).zip(chunk) {
                slot.copy_from_slice(&to_le(*value));
            }
            self.0.update(&buffer[..chunk.len() * N]);
        }
    }

    /// The digest as lower-case hex.
    pub fn finish(self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0.finalize() {
            out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        out
    }
}

/// Lower-case hex SHA-256 of `values` as little-endian bytes.
pub fn digest_numbers<const N: usize, T: Copy>(values: &[T], to_le: impl Fn(T) -> [u8; N]) -> String {
    let mut hasher = Hasher::default();
    hasher.numbers(values, to_le);
    hasher.finish()
}

/// The seed a parameter request gets when it names none.
pub fn default_seed() -> u64 {
    1
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

/// A double in `[0, 1)` (53 random mantissa bits, exact).
pub fn unit_f64(rng: &mut Rng) -> f64 {
    use rand_core::Rng as _;
    (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// SplitMix64's finaliser: a well-mixed 64-bit value for `x`.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
