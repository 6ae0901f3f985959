//! The failures of the safe core. Each maps to one `dm_status` at the C boundary and to one
//! Java exception at the JNI boundary; the wording of each lives here, once.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// NULL out-pointer, alignment not a power of two (or above 1 GiB), size that overflows,
    /// unreserving more than is held.
    InvalidArgument,
    /// The limit would be exceeded, even after reclaiming.
    Limit,
    /// The system allocator refused; nothing stays reserved.
    NoMemory,
    /// Pointer or cleaner is not live: never ours, already released, or an interior pointer.
    NotLive,
    /// A panic was caught at the boundary; the library's state stays consistent.
    Internal,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Every failure, for the bindings that look them up by name.
    pub const ALL: [Error; 5] =
        [Error::InvalidArgument, Error::Limit, Error::NoMemory, Error::NotLive, Error::Internal];

    /// The number every boundary uses for this failure (`dm_status` in C, `Native` in Java); 0 is
    /// success. The C enum is checked against this in `ffi`'s tests.
    pub const fn code(self) -> i32 {
        match self {
            Error::InvalidArgument => 1,
            Error::Limit => 2,
            Error::NoMemory => 3,
            Error::NotLive => 4,
            Error::Internal => 5,
        }
    }

    /// The name a binding looks the code up by (Java: `Native.status("LIMIT")`).
    pub const fn name(self) -> &'static str {
        match self {
            Error::InvalidArgument => "INVALID_ARGUMENT",
            Error::Limit => "LIMIT",
            Error::NoMemory => "NO_MEMORY",
            Error::NotLive => "NOT_LIVE",
            Error::Internal => "INTERNAL",
        }
    }

    pub fn from_code(code: i32) -> Option<Error> {
        Error::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The text `dm_status_message` returns for this failure (NUL-terminated for C).
    pub const fn message_with_nul(self) -> &'static str {
        match self {
            Error::InvalidArgument => "invalid argument\0",
            Error::Limit => "direct memory limit exceeded, even after reclaiming\0",
            Error::NoMemory => "the system allocator refused the request\0",
            Error::NotLive => {
                "not a live block or cleaner (never allocated here, already released, or an interior pointer)\0"
            }
            Error::Internal => "internal error (a panic was caught at the library boundary)\0",
        }
    }

    pub fn message(self) -> &'static str {
        let m = self.message_with_nul();
        &m[..m.len() - 1]
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}
