//! Size arithmetic: record and part sizes, body length for a plaintext length, and the part
//! layout shared with the server.

use std::ops::Range;

use crate::Error;

/// Record size `rs` written into every BitStratus header: 64 KiB. Frozen.
pub const RECORD_SIZE: u32 = 65_536;

/// Records per part (the unit of upload and download): 64, so a part is 4 MiB. Frozen.
pub const RECORDS_PER_PART: u32 = 64;

/// Length of the RFC 8188 header as BitStratus writes it (empty keyid): 21 bytes. Frozen.
pub const HEADER_SIZE: usize = 21;

/// Bytes a record adds to its plaintext: one delimiter byte and a 16-byte tag.
pub const RECORD_OVERHEAD: u32 = 17;

/// Smallest record size a decryptor accepts: one plaintext byte per record.
pub const MIN_RECORD_SIZE: u32 = RECORD_OVERHEAD + 1;

/// Largest record size a decryptor accepts (16 MiB), bounding its buffer.
pub const MAX_RECORD_SIZE: u32 = 16 * 1024 * 1024;

/// Plaintext bytes in a full record of size `rs`.
pub(crate) const fn record_plaintext(rs: u32) -> u64 {
    (rs - RECORD_OVERHEAD) as u64
}

/// Plaintext bytes in a full part with record size `rs`.
pub(crate) const fn plaintext_per_part_for(rs: u32) -> u64 {
    RECORDS_PER_PART as u64 * record_plaintext(rs)
}

/// Body length for `plaintext_len` bytes with record size `rs`, saturating at `u64::MAX`.
pub(crate) const fn body_size_for(plaintext_len: u64, rs: u32) -> u64 {
    let records = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(record_plaintext(rs))
    };
    (HEADER_SIZE as u64)
        .saturating_add(plaintext_len)
        .saturating_add(records.saturating_mul(RECORD_OVERHEAD as u64))
}

/// Size of part 0 in body bytes: the header plus 64 full records, `21 + 64 * 65536`.
pub const fn first_part_size() -> u64 {
    HEADER_SIZE as u64 + part_size()
}

/// Size of every other full part in body bytes: `64 * 65536` = 4 MiB.
pub const fn part_size() -> u64 {
    RECORDS_PER_PART as u64 * RECORD_SIZE as u64
}

/// Plaintext bytes in a full part: `64 * (65536 - 17)` = 4,193,216.
pub const fn plaintext_per_part() -> u64 {
    plaintext_per_part_for(RECORD_SIZE)
}

/// Length of the ciphertext body for `plaintext_len` bytes of plaintext with [`RECORD_SIZE`]:
/// `21 + plaintext_len + 17 * max(1, ceil(plaintext_len / 65519))`, saturating at `u64::MAX`.
pub const fn body_size(plaintext_len: u64) -> u64 {
    body_size_for(plaintext_len, RECORD_SIZE)
}

/// The plaintext bytes `[start, end)` that go into part `n` of a `plaintext_len`-byte file
/// with the default sizes, or `None` if the file has no part `n`. An empty file has one empty
/// part 0.
pub fn part_plaintext_range(plaintext_len: u64, n: u64) -> Option<Range<u64>> {
    let per_part = plaintext_per_part();
    let count = plaintext_len.div_ceil(per_part).max(1);
    if n >= count {
        return None;
    }
    let start = n * per_part;
    Some(start..plaintext_len.min(start.saturating_add(per_part)))
}

/// How a body of `size` bytes splits into parts, with exactly the server's arithmetic:
/// part 0 covers `[0, min(size, first_part_size))` and part `k >= 1` covers
/// `[first + (k-1) * part_size, min(size, first + k * part_size))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    size: u64,
    first_part_size: u64,
    part_size: u64,
}

impl Layout {
    /// A layout with explicit sizes, as the server reports them. Both part sizes must be
    /// non-zero.
    pub fn new(size: u64, first_part_size: u64, part_size: u64) -> Result<Self, Error> {
        if first_part_size == 0 || part_size == 0 {
            return Err(Error::InvalidLayout);
        }
        Ok(Self {
            size,
            first_part_size,
            part_size,
        })
    }

    /// The layout of a `size`-byte body with the default sizes.
    pub const fn for_body_size(size: u64) -> Self {
        Self {
            size,
            first_part_size: first_part_size(),
            part_size: part_size(),
        }
    }

    /// The layout of the body that encrypts `plaintext_len` bytes with the default sizes.
    pub const fn for_plaintext_len(plaintext_len: u64) -> Self {
        Self::for_body_size(body_size(plaintext_len))
    }

    /// Total body size in bytes.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Size of a full part 0 (header included).
    pub const fn first_part_size(&self) -> u64 {
        self.first_part_size
    }

    /// Size of every other full part.
    pub const fn part_size(&self) -> u64 {
        self.part_size
    }

    /// `1` if `size <= first_part_size`, else `1 + ceil((size - first_part_size) / part_size)`.
    pub const fn part_count(&self) -> u64 {
        if self.size <= self.first_part_size {
            1
        } else {
            1 + (self.size - self.first_part_size).div_ceil(self.part_size)
        }
    }

    /// The body bytes `[start, end)` of part `n`, or `None` if `n >= part_count()`.
    pub fn part_range(&self, n: u64) -> Option<Range<u64>> {
        if n >= self.part_count() {
            return None;
        }
        if n == 0 {
            return Some(0..self.size.min(self.first_part_size));
        }
        // n < part_count, so these products stay below size + part_size.
        let start = self.first_part_size + (n - 1) * self.part_size;
        Some(start..self.size.min(start.saturating_add(self.part_size)))
    }

    /// The length of part `n`, or `None` if `n >= part_count()`.
    pub fn part_len(&self, n: u64) -> Option<u64> {
        self.part_range(n).map(|range| range.end - range.start)
    }
}
