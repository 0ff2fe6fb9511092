//! XenAPI datetimes: `YYYYMMDDTHH:MM:SS` plus a zone, as xapi prints them on both transports.

use std::fmt;

use crate::error::Error;

/// The zone part of a [`DateTime`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Zone {
    /// `Z`: UTC, what xapi writes for almost every field.
    Utc,
    /// `+HH:MM` / `-HH:MM`: a stored offset, in minutes east of UTC.
    Offset(i16),
    /// No zone at all (`host.get_server_localtime`); taken as UTC when converted.
    Unspecified,
}

/// A calendar date and time as XenAPI carries it (no leap-second or calendar arithmetic beyond
/// what conversion to and from Unix seconds needs).
///
/// xapi writes `19700101T00:00:00Z` for "no date" (for example `snapshot_time` of a VM that is
/// not a snapshot): that is [`DateTime::EPOCH`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    nanos: u32,
    zone: Zone,
}

const SECONDS_PER_DAY: i64 = 86_400;

impl DateTime {
    /// `19700101T00:00:00Z`, xapi's null date.
    pub const EPOCH: DateTime = DateTime {
        year: 1970,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        zone: Zone::Utc,
    };

    /// Builds a datetime from its parts, checking every range (year 0..=9999, a real day of
    /// that month, second up to 60 for a leap second, offset within ±23:59).
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per calendar field reads best here"
    )]
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        nanos: u32,
        zone: Zone,
    ) -> Option<DateTime> {
        let offset_ok = match zone {
            Zone::Offset(minutes) => minutes.unsigned_abs() < 24 * 60,
            Zone::Utc | Zone::Unspecified => true,
        };
        let valid = year <= 9999
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second <= 60
            && nanos < 1_000_000_000
            && offset_ok;
        valid.then_some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
            zone,
        })
    }

    /// The UTC datetime `seconds` after the Unix epoch, if it falls in years 0..=9999.
    pub fn from_unix_seconds(seconds: i64) -> Option<DateTime> {
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let in_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days)?;
        let hour = u8::try_from(in_day / 3600).ok()?;
        let minute = u8::try_from(in_day % 3600 / 60).ok()?;
        let second = u8::try_from(in_day % 60).ok()?;
        DateTime::new(year, month, day, hour, minute, second, 0, Zone::Utc)
    }

    /// Seconds since the Unix epoch (a missing zone counts as UTC, a leap second as the next).
    pub fn to_unix_seconds(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let offset = match self.zone {
            Zone::Offset(minutes) => i64::from(minutes) * 60,
            Zone::Utc | Zone::Unspecified => 0,
        };
        days * SECONDS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - offset
    }

    /// Year (0..=9999).
    pub fn year(&self) -> u16 {
        self.year
    }
    /// Month (1..=12).
    pub fn month(&self) -> u8 {
        self.month
    }
    /// Day of the month (1..=31).
    pub fn day(&self) -> u8 {
        self.day
    }
    /// Hour (0..=23).
    pub fn hour(&self) -> u8 {
        self.hour
    }
    /// Minute (0..=59).
    pub fn minute(&self) -> u8 {
        self.minute
    }
    /// Second (0..=60).
    pub fn second(&self) -> u8 {
        self.second
    }
    /// Fractional part in nanoseconds (xapi never sends one; other tools may).
    pub fn nanos(&self) -> u32 {
        self.nanos
    }
    /// Zone as written.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// Parses leniently: `20250319T04:16:24Z` (xapi), `2025-03-19T04:16:24Z` (RFC 3339),
    /// with or without colons in the time, an optional fraction, and a zone that is `Z`,
    /// `±HH:MM`, `±HHMM`, `±HH` or absent.
    pub fn parse(text: &str) -> Result<DateTime, Error> {
        let invalid = || Error::InvalidDateTime {
            text: truncate_for_error(text),
        };
        let mut cursor = Cursor {
            bytes: text.as_bytes(),
            pos: 0,
        };
        let year = cursor.digits(4).ok_or_else(invalid)?;
        cursor.eat(b'-');
        let month = cursor.digits(2).ok_or_else(invalid)?;
        cursor.eat(b'-');
        let day = cursor.digits(2).ok_or_else(invalid)?;
        if !(cursor.eat(b'T') || cursor.eat(b't') || cursor.eat(b' ')) {
            return Err(invalid());
        }
        let hour = cursor.digits(2).ok_or_else(invalid)?;
        cursor.eat(b':');
        let minute = cursor.digits(2).ok_or_else(invalid)?;
        cursor.eat(b':');
        let second = cursor.digits(2).ok_or_else(invalid)?;
        let mut nanos = 0u32;
        if cursor.eat(b'.') || cursor.eat(b',') {
            let mut scale = 100_000_000u32;
            let mut count = 0usize;
            while let Some(digit) = cursor.peek().filter(u8::is_ascii_digit) {
                cursor.pos += 1;
                count += 1;
                nanos += u32::from(digit - b'0') * scale;
                scale /= 10;
            }
            if count == 0 {
                return Err(invalid());
            }
        }
        let zone = match cursor.peek() {
            None => Zone::Unspecified,
            Some(b'Z' | b'z') => {
                cursor.pos += 1;
                Zone::Utc
            }
            Some(sign @ (b'+' | b'-')) => {
                cursor.pos += 1;
                let hours = cursor.digits(2).ok_or_else(invalid)?;
                cursor.eat(b':');
                let minutes = if cursor.peek().is_some() {
                    cursor.digits(2).ok_or_else(invalid)?
                } else {
                    0
                };
                let total = i16::try_from(hours * 60 + minutes).map_err(|_| invalid())?;
                Zone::Offset(if sign == b'-' { -total } else { total })
            }
            Some(_) => return Err(invalid()),
        };
        if cursor.peek().is_some() {
            return Err(invalid());
        }
        let narrow = |value: u32| u8::try_from(value).map_err(|_| invalid());
        DateTime::new(
            u16::try_from(year).map_err(|_| invalid())?,
            narrow(month)?,
            narrow(day)?,
            narrow(hour)?,
            narrow(minute)?,
            narrow(second)?,
            nanos,
            zone,
        )
        .ok_or_else(invalid)
    }
}

/// Prints xapi's form: `YYYYMMDDTHH:MM:SS`, a fraction only when non-zero, then the zone.
impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}{:02}{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if self.nanos != 0 {
            let fraction = format!("{:09}", self.nanos);
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        match self.zone {
            Zone::Utc => f.write_str("Z"),
            Zone::Unspecified => Ok(()),
            Zone::Offset(minutes) => {
                let sign = if minutes < 0 { '-' } else { '+' };
                let abs = minutes.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", abs / 60, abs % 60)
            }
        }
    }
}

impl std::str::FromStr for DateTime {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DateTime::parse(text)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn digits(&mut self, count: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..count {
            let digit = self.peek().filter(u8::is_ascii_digit)?;
            self.pos += 1;
            value = value * 10 + u32::from(digit - b'0');
        }
        Some(value)
    }
}

pub(crate) fn truncate_for_error(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

fn is_leap(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

// Howard Hinnant's civil-from-days and days-from-civil algorithms (proleptic Gregorian).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> Option<(u16, u8, u8)> {
    let shifted = days.checked_add(719_468)?;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era.checked_add(era.checked_mul(400)?)? + i64::from(month <= 2);
    Some((
        u16::try_from(year).ok()?,
        u8::try_from(month).ok()?,
        u8::try_from(day).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xapi_form_round_trips() {
        // The form xapi writes on both transports (spec §1.2).
        let parsed = DateTime::parse("20250319T04:16:24Z").unwrap();
        assert_eq!(parsed.to_string(), "20250319T04:16:24Z");
        assert_eq!(parsed.to_unix_seconds(), 1_742_357_784);
        assert_eq!(DateTime::from_unix_seconds(1_742_357_784).unwrap(), parsed);
    }

    #[test]
    fn lenient_forms() {
        let dashed = DateTime::parse("2025-03-19T04:16:24Z").unwrap();
        assert_eq!(dashed.to_string(), "20250319T04:16:24Z");
        let offset = DateTime::parse("20250319T06:16:24+02:00").unwrap();
        assert_eq!(offset.to_unix_seconds(), dashed.to_unix_seconds());
        assert_eq!(offset.to_string(), "20250319T06:16:24+02:00");
        let bare = DateTime::parse("20250319T04:16:24").unwrap();
        assert_eq!(bare.zone(), Zone::Unspecified);
        assert_eq!(bare.to_string(), "20250319T04:16:24");
        let fraction = DateTime::parse("2025-03-19T04:16:24.250Z").unwrap();
        assert_eq!(fraction.nanos(), 250_000_000);
        assert_eq!(fraction.to_string(), "20250319T04:16:24.25Z");
        assert_eq!(
            DateTime::parse("19700101T00:00:00Z").unwrap(),
            DateTime::EPOCH
        );
    }

    #[test]
    fn rejects_nonsense() {
        for text in [
            "",
            "2025",
            "20250230T00:00:00Z",
            "20250319T24:00:00Z",
            "20250319T04:16:24Q",
            "20250319X04:16:24Z",
        ] {
            assert!(DateTime::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn calendar_conversion_matches_known_days() {
        assert_eq!(DateTime::from_unix_seconds(0).unwrap(), DateTime::EPOCH);
        // 2000-02-29 is a leap day: 11016 days after the epoch.
        let leap = DateTime::from_unix_seconds(11_016 * 86_400).unwrap();
        assert_eq!((leap.year(), leap.month(), leap.day()), (2000, 2, 29));
        assert_eq!(
            DateTime::from_unix_seconds(-1).unwrap().to_string(),
            "19691231T23:59:59Z"
        );
    }
}
