//! The native half of `dev.directmem.DirectMemory` (filled in by the JNI work).
