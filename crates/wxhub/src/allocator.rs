//! The process's memory: what startup used only for a moment is given back, and no page is a
//! transparent huge page.
//!
//! Loading a large store (100,000 authorizers: every stored token, every account definition)
//! builds temporary copies that are freed once the hub serves them. The `wxhub` binary allocates
//! with mimalloc (docs/architecture.md#memory), which returns freed pages to the system by itself
//! a second after they are freed, or at once when asked. What still allocates through glibc
//! (SQLite's page cache, other C code; the whole process where the library runs without mimalloc,
//! as in tests) is kept for reuse by glibc unless it is trimmed.

/// Returns the freed heap memory to the operating system: mimalloc's at once (it would return
/// it by itself after its purge delay, but the start's peak would then still be resident when
/// it is first serving), and glibc's (`malloc_trim`, Linux).
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointers; it frees and purges mimalloc's own empty pages, and
    // does nothing harmful where mimalloc is linked but not the global allocator (tests).
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and trims glibc's own heap bookkeeping; it takes no
    // pointers from the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Turns transparent huge pages off for this process (Linux `PR_SET_THP_DISABLE`: for its whole
/// address space, mappings made before included); elsewhere it does nothing.
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_for_the_process_afterwards() {
        without_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes no pointer and only reads the calling process's flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
