//! Small helpers: durations and sizes for people, UTC dates, MIME types, password input,
//! progress bars and the test hook that simulates a crash.

use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Environment variable naming a number of parts after which an upload or a download aborts
/// the process, as a crash would. For tests of resuming only.
const ABORT_HOOK: &str = "BITSTRATUS_TEST_ABORT_AFTER_PARTS";

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parses `90`, `90s`, `10m`, `24h`, `7d` into seconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 3600, 90m, 24h or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `1.5 MiB`-style sizes.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86400);
    let secs = unix.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The MIME type the browser would likely report for `name`, or empty when unknown.
pub(crate) fn guess_mime(name: &str) -> String {
    mime_guess::from_path(name)
        .first()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_default()
}

/// Where a password comes from: the flag or `$BITSTRATUS_PASSWORD`, else a prompt when
/// stdin is a terminal.
#[derive(Debug, Clone, Default)]
pub(crate) struct PasswordSource {
    /// `--password` or `$BITSTRATUS_PASSWORD`.
    pub(crate) given: Option<String>,
    /// `--ask-password`: prompt even though none was given.
    pub(crate) ask: bool,
}

impl PasswordSource {
    /// The password for an upload, if one was asked for: given, or typed twice.
    pub(crate) fn for_upload(&self) -> Result<Option<Zeroizing<String>>> {
        if let Some(given) = &self.given {
            return Ok(Some(Zeroizing::new(given.clone())));
        }
        if !self.ask {
            return Ok(None);
        }
        let first = prompt("Password for the upload: ")?;
        let second = prompt("Same password again: ")?;
        if first != second {
            return Err(Error::Usage("the two passwords differ".into()));
        }
        Ok(Some(first))
    }

    /// The password a file needs: given, or typed when stdin is a terminal.
    pub(crate) fn required(&self) -> Result<Zeroizing<String>> {
        if let Some(given) = &self.given {
            return Ok(Zeroizing::new(given.clone()));
        }
        if std::io::stdin().is_terminal() {
            return prompt("This file is protected by a password. Password: ");
        }
        Err(Error::BadKey(
            "this file needs a password: pass --password or set BITSTRATUS_PASSWORD".into(),
        ))
    }
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Error::Usage(format!("could not read the password: {e}")))
}

/// A byte progress bar on stderr with speed and ETA, or a hidden one.
pub(crate) fn progress_bar(show: bool, total: u64, label: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg:16!} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Test hook of debug builds (the tests' binary): aborts the process, as a crash would, once
/// `done` parts are finished and `$BITSTRATUS_TEST_ABORT_AFTER_PARTS` equals `done`. Release
/// builds have no such hook.
pub(crate) fn crash_hook(done: u64) {
    if !cfg!(debug_assertions) {
        return;
    }
    let wanted = std::env::var(ABORT_HOOK)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if wanted == Some(done) {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_time(1_796_502_091), "2026-12-05 20:21 UTC");
    }

    #[test]
    fn sizes_and_types() {
        assert_eq!(format_bytes(10), "10 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(guess_mime("a/b.PDF"), "application/pdf");
        assert_eq!(guess_mime("noext"), "");
    }
}
