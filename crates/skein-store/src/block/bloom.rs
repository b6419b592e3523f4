//! A plain bloom filter over trace ids, kept in memory for every block so trace-by-id skips
//! blocks without touching them. 16 bits per trace, 7 probes: about 0.07% false positives,
//! so a trace lookup across 100 blocks reads a block it does not need about once in 14
//! lookups (at 10 bits, 1%, it was about once per lookup). Readers take the size from the
//! file, so blocks written with 10 bits read the same way.

use skein_model::TraceId;

const PROBES: u32 = 7;
const BITS_PER_KEY: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Bloom {
    bits: Vec<u64>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: spreads 64-bit ids that are padded with zeros.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn hashes(id: &TraceId) -> (u64, u64) {
    let hi = u64::from_le_bytes(id[0..8].try_into().expect("8 bytes"));
    let lo = u64::from_le_bytes(id[8..16].try_into().expect("8 bytes"));
    let h1 = mix(hi ^ mix(lo));
    let h2 = mix(lo.wrapping_add(0x9e3779b97f4a7c15) ^ hi) | 1;
    (h1, h2)
}

impl Bloom {
    pub fn with_capacity(keys: usize) -> Bloom {
        let words = (keys.max(64) * BITS_PER_KEY).div_ceil(64);
        Bloom { bits: vec![0; words] }
    }

    fn nbits(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    pub fn insert(&mut self, id: &TraceId) {
        let (h1, h2) = hashes(id);
        let m = self.nbits();
        for i in 0..PROBES as u64 {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub fn may_contain(&self, id: &TraceId) -> bool {
        let (h1, h2) = hashes(id);
        let m = self.nbits();
        (0..PROBES as u64).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// A filter that admits every id: stands in for a damaged one, so lookups read the block's
    /// own trace-id index instead of skipping it.
    pub fn admit_all() -> Bloom {
        Bloom { bits: vec![u64::MAX] }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bits.len() * 8);
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Bloom> {
        if b.is_empty() || !b.len().is_multiple_of(8) {
            return None;
        }
        Some(Bloom {
            bits: b
                .chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let ids: Vec<TraceId> = (0..10_000u64)
            .map(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.to_be_bytes()); // 64-bit ids, left-padded
                id
            })
            .collect();
        let mut b = Bloom::with_capacity(ids.len());
        ids.iter().for_each(|id| b.insert(id));
        let b = Bloom::from_bytes(&b.to_bytes()).unwrap();
        assert!(ids.iter().all(|id| b.may_contain(id)));
        let fp = (10_000..110_000u64)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.to_be_bytes());
                b.may_contain(&id)
            })
            .count();
        // Expected ~70 in 100,000.
        assert!(fp < 300, "false positive rate too high: {fp} in 100000");
    }
}
