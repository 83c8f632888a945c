//! Giving back to the operating system the memory that startup used only for a moment.
//!
//! Loading a large store (100,000 authorizers: every stored token, every account definition)
//! builds temporary copies that are freed once the hub serves them. glibc's allocator keeps
//! freed memory for reuse rather than returning it, so without this the resident size stays at
//! the startup peak for the life of the process.

/// Returns the heap memory freed so far to the operating system, where the allocator allows it
/// (glibc `malloc_trim`); elsewhere it does nothing.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and trims glibc's own heap bookkeeping; it takes no
    // pointers from the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}
