//! Telling valgrind's memcheck what it cannot see for itself, through its client requests (the
//! instruction sequence `valgrind.h` documents; natively it changes nothing and costs a few
//! cycles). One use: valgrind 3.19 sometimes marks the part of a mapping that `mremap` grew while
//! moving it (`MREMAP_FIXED` to a longer length) unaddressable, though the kernel mapped it, and
//! then reports every use of a block there; see `allocators::system::move_pages`. The part grown
//! in place is told too (`Memory::resize_in_place`), where the same mistake is possible.

/// memcheck's first request number (`VG_USERREQ_TOOL_BASE('M', 'C')` in `memcheck.h`).
#[cfg(target_arch = "x86_64")]
const MEMCHECK_BASE: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;

/// `VG_USERREQ__MAKE_MEM_DEFINED`: the bytes are addressable and hold defined values.
#[cfg(target_arch = "x86_64")]
const MAKE_MEM_DEFINED: usize = MEMCHECK_BASE + 2;

/// Marks `len` bytes at `start` addressable and defined, as a fresh mapping is. Under valgrind
/// only; elsewhere, and on other architectures, nothing happens.
pub(crate) fn mark_defined(start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let request: [usize; 6] = [MAKE_MEM_DEFINED, start, len, 0, 0, 0];
        // Safety: the four rotations of rdi add up to 128 bits (rdi comes back as it was) and the
        // exchange of rbx with itself does nothing: natively the sequence has no effect. Valgrind
        // recognises it and reads the request from `request` (rax), answering in rdx.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") request.as_ptr(),
                inout("rdx") 0usize => _,
                inout("rdi") 0usize => _,
                options(nostack),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}
