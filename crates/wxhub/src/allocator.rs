//! The process's memory: what startup used only for a moment is given back, and no page is a
//! transparent huge page.
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

/// Turns transparent huge pages off for this process (Linux `PR_SET_THP_DISABLE`), for every
/// mapping made from now on; elsewhere it does nothing.
///
/// The hub's memory is hundreds of thousands of small objects spread over the heap: a 2 MiB page
/// holds freed and live ones side by side, so it is never given back, and each one is zeroed
/// whole when first touched. Measured at 100,000 authorizers (bench/RESULTS.md), huge pages
/// added about 20 MiB of resident memory and most of a second to a warm start, and saved no
/// measurable time on the read path.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes a flag of the
    // calling process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
