//! Wall-clock helpers: the Unix time in request ids, and the calendar periods (day, month, hour)
//! that quotas are counted in. WeChat's servers count days in China time (UTC+8).

use std::time::{SystemTime, UNIX_EPOCH};

const CHINA_OFFSET_SECS: u64 = 8 * 3600;

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The quota periods a request falls into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Periods {
    /// Calendar day in UTC+8, as days since 1970-01-01.
    pub day: u64,
    /// Calendar month in UTC+8, as `year * 12 + month - 1`.
    pub month: u64,
    /// Clock hour, as hours since the epoch (Work WeChat's ticket limits are hourly).
    pub hour: u64,
}

impl Periods {
    pub(crate) fn now() -> Periods {
        Periods::at(unix_now())
    }

    pub(crate) fn at(unix: u64) -> Periods {
        let day = (unix + CHINA_OFFSET_SECS) / 86_400;
        let (year, month) = year_month(day);
        Periods {
            day,
            month: year * 12 + (month - 1),
            hour: unix / 3600,
        }
    }
}

/// Year and month (1..=12) of a day counted from 1970-01-01 (Howard Hinnant's civil_from_days).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_follow_china_time() {
        // 2023-08-30 15:59:59 UTC is 23:59:59 in Beijing; one second later is the next day there.
        let before = Periods::at(1_693_411_199);
        let after = Periods::at(1_693_411_200);
        assert_eq!(after.day, before.day + 1);
        assert_eq!(before.month, 2023 * 12 + 7);
        // 2024-02-29 16:00:00 UTC is already March 1st in Beijing.
        assert_eq!(Periods::at(1_709_222_399).month, 2024 * 12 + 1);
        assert_eq!(Periods::at(1_709_222_400).month, 2024 * 12 + 2);
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(59), (1970, 3));
    }
}
