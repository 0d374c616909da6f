//! Part layout arithmetic: how a body of `size` bytes splits into part 0 and equal later parts.
//!
//! The server knows nothing about records or encryption; it only checks the contract's
//! generic layout so every part has one exact, known length.

use std::ops::Range;

/// The layout of one file's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Total body bytes.
    pub size: u64,
    /// Bytes in part 0.
    pub first_part_size: u64,
    /// Bytes in every later part (the last may be shorter).
    pub part_size: u64,
}

impl Layout {
    /// Number of parts: 1 if everything fits in part 0, else 1 + ceil(rest / part_size).
    pub fn part_count(&self) -> u64 {
        if self.size <= self.first_part_size {
            1
        } else {
            1 + (self.size - self.first_part_size).div_ceil(self.part_size)
        }
    }

    /// Byte range of part `n` within the body; `None` past the last part.
    pub fn part_range(&self, n: u64) -> Option<Range<u64>> {
        if n >= self.part_count() {
            return None;
        }
        if n == 0 {
            return Some(0..self.size.min(self.first_part_size));
        }
        let start = self.first_part_size + (n - 1) * self.part_size;
        let end = self.size.min(start + self.part_size);
        Some(start..end)
    }

    /// Exact byte length of part `n`.
    pub fn part_len(&self, n: u64) -> Option<u64> {
        self.part_range(n).map(|r| r.end - r.start)
    }

    /// The part holding body byte `offset` (which must be below `size`).
    pub fn part_of(&self, offset: u64) -> u64 {
        if offset < self.first_part_size {
            0
        } else {
            1 + (offset - self.first_part_size) / self.part_size
        }
    }

    /// Splits the body range `range` into `(part, range within that part)` pieces, in order.
    pub fn segments(&self, range: Range<u64>) -> Vec<(u64, Range<u64>)> {
        let mut out = Vec::new();
        if range.start >= range.end {
            return out;
        }
        let mut pos = range.start;
        while pos < range.end {
            let n = self.part_of(pos);
            let Some(part) = self.part_range(n) else {
                break;
            };
            let end = range.end.min(part.end);
            out.push((n, (pos - part.start)..(end - part.start)));
            pos = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Layout = Layout {
        size: 250,
        first_part_size: 100,
        part_size: 64,
    };

    #[test]
    fn counts_and_ranges() {
        assert_eq!(L.part_count(), 4);
        assert_eq!(L.part_range(0), Some(0..100));
        assert_eq!(L.part_range(1), Some(100..164));
        assert_eq!(L.part_range(2), Some(164..228));
        assert_eq!(L.part_range(3), Some(228..250));
        assert_eq!(L.part_range(4), None);
        let small = Layout { size: 38, ..L };
        assert_eq!(small.part_count(), 1);
        assert_eq!(small.part_len(0), Some(38));
        let exact = Layout { size: 164, ..L };
        assert_eq!(exact.part_count(), 2);
        assert_eq!(exact.part_len(1), Some(64));
    }

    #[test]
    fn segments_span_parts() {
        assert_eq!(
            L.segments(90..170),
            vec![(0, 90..100), (1, 0..64), (2, 0..6)]
        );
        assert_eq!(L.segments(249..250), vec![(3, 21..22)]);
        assert!(L.segments(5..5).is_empty());
        let all: u64 = L
            .segments(0..250)
            .iter()
            .map(|(_, r)| r.end - r.start)
            .sum();
        assert_eq!(all, 250);
    }
}
