//! The Threefry-2x32 block function with 20 rounds (Salmon et al., "Parallel random numbers: as easy as
//! 1, 2, 3", SC'11; the Random123 library), as JAX's `threefry_2x32`.

const ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
const PARITY: u32 = 0x1BD1_1BDA;

/// Hashes the counter `ctr` under `key`: Threefry-2x32-20.
///
/// # Examples
/// ```
/// // A Random123 known-answer vector.
/// assert_eq!(purestate::random::threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
/// ```
#[inline]
pub fn threefry2x32(key: [u32; 2], ctr: [u32; 2]) -> [u32; 2] {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ PARITY];
    let mut x0 = ctr[0].wrapping_add(ks[0]);
    let mut x1 = ctr[1].wrapping_add(ks[1]);
    for group in 0..5u32 {
        for &r in &ROTATIONS[(group % 2) as usize] {
            x0 = x0.wrapping_add(x1);
            x1 = x1.rotate_left(r) ^ x0;
        }
        let g = group as usize;
        x0 = x0.wrapping_add(ks[(g + 1) % 3]);
        x1 = x1.wrapping_add(ks[(g + 2) % 3]).wrapping_add(group + 1);
    }
    [x0, x1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Threefry-2x32-20 from Random123's `kat_vectors`.
    #[test]
    fn random123_known_answers() {
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(threefry2x32([u32::MAX, u32::MAX], [u32::MAX, u32::MAX]), [0x1cb9_96fc, 0xbb00_2be7]);
        assert_eq!(threefry2x32([0x1319_8a2e, 0x0370_7344], [0x243f_6a88, 0x85a3_08d3]), [0xc492_3a9c, 0x483d_f7a0]);
    }
}
