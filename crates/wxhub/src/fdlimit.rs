//! The process's file-descriptor limit, and how many connections it leaves room for.
//!
//! Every connection holds a descriptor, and so do the store, the WeChat client's pool and the
//! log. A process that keeps the soft limit it was started with (often 1024) runs out after about
//! a thousand idle connections, and then cannot accept anything, nor open a connection to WeChat.
//! So the hub raises its soft limit to the hard limit at start, and serves at most
//! [`connection_budget`] connections, which keeps descriptors in reserve for everything else.

/// What [`raise`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process was started with.
    pub before: u64,
    /// The soft limit now in force.
    pub now: u64,
}

/// Descriptors kept for everything but client connections: at least this many…
const MIN_RESERVE: u64 = 32;
/// …and at most this many (an eighth of the limit in between).
const MAX_RESERVE: u64 = 1024;
/// Beyond this many connections memory, not descriptors, is what runs out first; an operator
/// who needs more sets `max_connections`.
const MAX_DERIVED_CONNECTIONS: u64 = 16_384;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. `Err` when the limit cannot be read or
/// changed; the process then keeps the limit it has.
#[cfg(unix)]
// `rlim_t` is `u64` on most targets, narrower on some 32-bit ones.
#[allow(clippy::useless_conversion)]
pub fn raise() -> std::io::Result<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    // macOS refuses a soft limit above OPEN_MAX even when the hard limit is "unlimited".
    #[cfg(target_os = "macos")]
    let target = limit.rlim_max.min(libc::OPEN_MAX as libc::rlim_t);
    #[cfg(not(target_os = "macos"))]
    let target = limit.rlim_max;
    if target > before {
        limit.rlim_cur = target;
        // SAFETY: `setrlimit` reads one `rlimit` through a valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        before: u64::from(before),
        now: u64::from(limit.rlim_cur.max(before)),
    })
}

/// Without `RLIMIT_NOFILE` there is nothing to raise.
#[cfg(not(unix))]
pub fn raise() -> std::io::Result<FdLimit> {
    Err(std::io::Error::other(
        "no file-descriptor limit on this platform",
    ))
}

/// How many connections a soft limit of `soft_limit` descriptors leaves room for, keeping an
/// eighth of them (between 32 and 1024) for the store, the WeChat client and the log.
pub fn connection_budget(soft_limit: u64) -> usize {
    let reserve = (soft_limit / 8).clamp(MIN_RESERVE, MAX_RESERVE);
    let budget = soft_limit
        .saturating_sub(reserve)
        .clamp(1, MAX_DERIVED_CONNECTIONS);
    usize::try_from(budget).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_a_reserve_and_a_ceiling() {
        assert_eq!(connection_budget(1024), 1024 - 128);
        assert_eq!(connection_budget(128), 96);
        assert_eq!(connection_budget(40), 8);
        assert_eq!(connection_budget(10), 1);
        assert_eq!(connection_budget(65_536), 16_384);
        assert_eq!(connection_budget(u64::MAX), 16_384);
    }

    #[cfg(unix)]
    #[test]
    #[allow(clippy::useless_conversion)]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let raised = raise().expect("the limit can be read and raised");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(u64::from(limit.rlim_cur), raised.now);
        assert!(raised.now >= raised.before);
        #[cfg(not(target_os = "macos"))]
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
