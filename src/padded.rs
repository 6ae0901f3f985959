//! A value alone in its cache lines, so that what one thread writes often never shares a line with
//! what other threads read on every allocation and free (false sharing: each write takes the line
//! away from every other core).

/// Cache lines are fetched in pairs on x86-64 (the adjacent-line prefetcher): values written
/// apart must be this far apart.
pub const LINES: usize = 128;

/// `T`, aligned and padded to [`LINES`] bytes.
#[derive(Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_values_never_share_a_line() {
        let pair = [Padded(1u8), Padded(2u8)];
        let (a, b) = (&pair[0] as *const _ as usize, &pair[1] as *const _ as usize);
        assert_eq!(a % LINES, 0);
        assert_eq!(b - a, LINES);
        assert_eq!(*pair[1], 2);
    }
}
