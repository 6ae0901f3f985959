//! The default limit and the one parser of size strings (`DM_MAX_MEMORY`, and from Java the
//! `directmem.maxDirectMemorySize` property): bytes, or a k/K, m/M, g/G, t/T suffix in powers of
//! 1024, the syntax of the JVM's `-XX:MaxDirectMemorySize`.

/// Parses `"1048576"`, `"64k"`, `"100m"`, `"2G"`, `"1t"`. `None` for anything else, including
/// values that do not fit in 64 bits.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        b't' | b'T' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    value.checked_mul(1u64 << shift)
}

/// The machine's total physical memory: the default limit when `DM_MAX_MEMORY` is not set.
pub fn physical_memory() -> u64 {
    // Safety: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    if pages <= 0 {
        return u64::MAX;
    }
    (pages as u64).saturating_mul(crate::os::page_size() as u64)
}

/// The limit a new process starts with: `DM_MAX_MEMORY` if it parses, else physical memory.
/// An unparsable value is reported once on stderr and ignored (a typo must not go unnoticed,
/// nor kill the process).
pub fn default_limit() -> u64 {
    with_env(c"DM_MAX_MEMORY", |text| {
        parse_size(text).unwrap_or_else(|| {
            eprintln!("directmem: ignoring DM_MAX_MEMORY={text:?}: expected bytes or a number with a k/m/g/t suffix");
            physical_memory()
        })
    })
    .unwrap_or_else(physical_memory)
}

/// `read(text)` of the environment variable `name`, if it is set; text that is not UTF-8 reads
/// as "" (which no reader accepts). Read in place, with no memory taken (`std::env::var` makes
/// a `String`, whose refusal aborts: this runs at the library's first use).
pub(crate) fn with_env<R>(name: &std::ffi::CStr, read: impl FnOnce(&str) -> R) -> Option<R> {
    // Safety: `name` is NUL-terminated; the value, if any, is a NUL-terminated string that
    // stays valid while it is read here (glibc never frees a replaced value).
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    let text = unsafe { std::ffi::CStr::from_ptr(value) };
    Some(read(text.to_str().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_binary_suffixes_like_max_direct_memory_size() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("100m"), Some(100 << 20));
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size(" 3G "), Some(3 << 30));
        // -XX:MaxDirectMemorySize=1t is a terabyte to the JVM, so it is here.
        assert_eq!(parse_size("1t"), Some(1 << 40));
        assert_eq!(parse_size("16777215T"), Some(16777215 << 40));
    }

    #[test]
    fn rejects_garbage_signs_fractions_and_overflow() {
        for bad in
            ["", "m", "-1", "1.5g", "10x", "1 g", "0x10", "18446744073709551616", "17179869184g", "16777216t", "t"]
        {
            assert_eq!(parse_size(bad), None, "{bad:?} must not parse");
        }
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn physical_memory_is_plausible() {
        let bytes = physical_memory();
        assert!(bytes >= 64 << 20, "{bytes}");
    }
}
