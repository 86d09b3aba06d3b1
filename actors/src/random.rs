//! Injected randomness: the OS generator in production, a seeded one in tests and simulation.
//!
//! Library code never reaches for a thread RNG (clippy denies it): whatever needs random bytes
//! (entry ids, certificate serial numbers, JWT key ids) takes a [`RandomSource`], so the
//! simulator can replay a run byte for byte with [`SeededRandom`].
//!
//! Private-key generation is the exception, by design: ring only generates keys from the
//! operating system's generator (its `SecureRandom` trait is sealed), so keys are never
//! reproducible, even in simulation. That is the property a CA key must have anyway.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use ring::rand::SecureRandom as _;
use sha2::{Digest, Sha256};

/// A source of random bytes.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// `N` random bytes from `source`.
pub fn random_array<const N: usize>(source: &(impl RandomSource + ?Sized)) -> [u8; N] {
    let mut out = [0u8; N];
    source.fill(&mut out);
    out
}

/// A random `u64` from `source`.
pub fn random_u64(source: &(impl RandomSource + ?Sized)) -> u64 {
    u64::from_be_bytes(random_array(source))
}

/// The operating system's generator failed (see [`OsRandom::try_fill`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the operating system's random generator failed (getrandom); \
     check that the kernel provides getrandom(2) and that /dev/urandom is readable"
)]
pub struct RandomUnavailable;

/// The operating system's generator (ring's `SystemRandom`: `getrandom(2)` on Linux).
#[derive(Debug, Clone)]
pub struct OsRandom(ring::rand::SystemRandom);

impl Default for OsRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl OsRandom {
    /// The OS generator.
    pub fn new() -> Self {
        Self(ring::rand::SystemRandom::new())
    }

    /// Fills `buf`, or says that the OS generator failed.
    ///
    /// # Errors
    /// [`RandomUnavailable`] if `getrandom(2)` fails.
    pub fn try_fill(&self, buf: &mut [u8]) -> Result<(), RandomUnavailable> {
        self.0.fill(buf).map_err(|_| RandomUnavailable)
    }
}

impl RandomSource for OsRandom {
    /// # Panics
    /// If the OS generator fails. On Linux `getrandom(2)` only fails on kernels older than
    /// 3.17 or before the entropy pool is first seeded at boot (ring then blocks rather than
    /// fail). A CA that cannot get randomness must not carry on with predictable serial numbers
    /// or ids, and there is no caller who could do better than stop, so this is the one place
    /// that panics on an environmental fault; the actor's supervisor sees it. Callers that want
    /// to handle it use [`OsRandom::try_fill`].
    fn fill(&self, buf: &mut [u8]) {
        if let Err(e) = self.try_fill(buf) {
            panic!("{e}");
        }
    }
}

/// Deterministic bytes from a `u64` seed, for tests and simulation: the stream is SHA-256 in
/// counter mode (`SHA-256(seed || counter)`, 32 bytes per block), and does not depend on how
/// the caller slices its requests: two `fill`s of 16 bytes give the same bytes as one of 32.
///
/// Not for production: anyone who knows the seed knows every byte.
pub struct SeededRandom {
    seed: u64,
    stream: Mutex<Stream>,
}

struct Stream {
    counter: u64,
    block: [u8; 32],
    /// Bytes of `block` already handed out (32: the block is spent).
    used: usize,
}

impl SeededRandom {
    /// A generator replaying the same bytes for the same seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            stream: Mutex::new(Stream {
                counter: 0,
                block: [0; 32],
                used: 32,
            }),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededRandom")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        let mut s = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let mut at = 0;
        while at < buf.len() {
            if s.used == s.block.len() {
                s.block = Sha256::new()
                    .chain_update(self.seed.to_be_bytes())
                    .chain_update(s.counter.to_be_bytes())
                    .finalize()
                    .into();
                s.counter = s.counter.wrapping_add(1);
                s.used = 0;
            }
            let n = (s.block.len() - s.used).min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&s.block[s.used..s.used + n]);
            s.used += n;
            at += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_for_the_same_seed_and_differ_across_seeds() {
        let a: [u8; 100] = random_array(&SeededRandom::new(7));
        let b: [u8; 100] = random_array(&SeededRandom::new(7));
        let c: [u8; 100] = random_array(&SeededRandom::new(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn seeded_stream_does_not_depend_on_how_requests_are_sliced() {
        let whole: [u8; 70] = random_array(&SeededRandom::new(1));
        let sliced = SeededRandom::new(1);
        let mut parts = [0u8; 70];
        for range in [0..1, 1..17, 17..50, 50..50, 50..70] {
            sliced.fill(&mut parts[range]);
        }
        assert_eq!(whole, parts);
    }

    #[test]
    fn seeded_stream_is_sha256_in_counter_mode() {
        let first: [u8; 32] = random_array(&SeededRandom::new(3));
        let expected: [u8; 32] = Sha256::new()
            .chain_update(3u64.to_be_bytes())
            .chain_update(0u64.to_be_bytes())
            .finalize()
            .into();
        assert_eq!(first, expected);
    }

    #[test]
    fn os_random_gives_fresh_bytes() {
        let os = OsRandom::new();
        let a: [u8; 32] = random_array(&os);
        let b: [u8; 32] = random_array(&os);
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
        assert!(os.try_fill(&mut [0u8; 8]).is_ok());
    }

    #[test]
    fn works_through_a_trait_object() {
        let source: std::sync::Arc<dyn RandomSource> = std::sync::Arc::new(SeededRandom::new(9));
        assert_eq!(
            random_u64(source.as_ref()),
            random_u64(&SeededRandom::new(9))
        );
    }
}
