//! FNV-1a (64 bits): the project's one content hash.
//!
//! It names things stably, never defends against anyone: the same bytes give the same key on
//! every platform, build and version, which is all its users need: the score log's change
//! detector, the browser session's keys, the seed of a LoRA layer's random init and the rounding
//! stream of each optimizer variable. A collision only misattributes a cache entry.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a state. [`bytes`](Self::bytes) hashes raw bytes; [`field`](Self::field) hashes a
/// string followed by a 0xff separator (a byte UTF-8 never contains), so that a sequence of
/// fields is unambiguous: ("ab", "c") and ("a", "bc") differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl Fnv1a {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
        }
        self
    }

    pub fn field(self, s: &str) -> Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a of one string, without a separator.
pub fn fnv1a(s: &str) -> u64 {
    Fnv1a::new().bytes(s.as_bytes()).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published FNV-1a 64 test vectors (the FNV reference page's test suite).
    #[test]
    fn known_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fields_are_separated() {
        let ab_c = Fnv1a::new().field("ab").field("c").finish();
        let a_bc = Fnv1a::new().field("a").field("bc").finish();
        assert_ne!(ab_c, a_bc);
        assert_eq!(
            Fnv1a::new().field("ab").finish(),
            Fnv1a::new().bytes(b"ab\xff").finish()
        );
    }
}
