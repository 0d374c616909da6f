//! Server configuration: one typed struct, parsed once by clap from flags or `BITSTRATUS_*`
//! environment variables, or built directly by tests with [`Config::with_data_dir`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// Default listen address; loopback so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (database and local objects).
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default cap on a file's total body size.
pub const DEFAULT_MAX_FILE_SIZE: &str = "100GiB";
/// Default cap on one part; each part is buffered in memory once, so this bounds RAM per upload.
pub const DEFAULT_MAX_PART_SIZE: &str = "64MiB";
/// Default number of part bodies read at once. Each one buffers up to `--max-part-size`, so
/// with the defaults part buffers never take more than 64 × 64 MiB = 4 GiB.
pub const DEFAULT_MAX_CONCURRENT_PARTS: &str = "64";
/// Default time a part body may go without delivering a byte before its upload is abandoned.
pub const DEFAULT_PART_IDLE_TIMEOUT: &str = "60s";
/// Default lifetime of an upload that never completes.
pub const DEFAULT_UPLOAD_TTL: &str = "24h";
/// Default period of the garbage collector.
pub const DEFAULT_GC_INTERVAL: &str = "10m";
/// Default S3 region (most S3-compatible stores ignore it but the signer needs one).
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Where ciphertext objects live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// A directory on local disk (`<data-dir>/objects`).
    Local,
    /// An S3-compatible bucket.
    S3,
}

/// A string that never shows up in `Debug` output, so logging the config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl FromStr for Redacted {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Everything the server needs to start. Every flag also reads `BITSTRATUS_<FLAG>`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bitstratus-server",
    version,
    about = "BitStratus zero-knowledge file host"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BITSTRATUS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory for the SQLite database and local objects; created if missing.
    #[arg(long, env = "BITSTRATUS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Database URL; defaults to `sqlite://<data-dir>/bitstratus.db?mode=rwc`.
    #[arg(long, env = "BITSTRATUS_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Object storage backend.
    #[arg(long, env = "BITSTRATUS_STORAGE", value_enum, default_value_t = StorageKind::Local)]
    pub storage: StorageKind,

    /// S3 endpoint URL (omit for AWS itself).
    #[arg(long, env = "BITSTRATUS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 bucket name (required with `--storage s3`).
    #[arg(long, env = "BITSTRATUS_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 region.
    #[arg(long, env = "BITSTRATUS_S3_REGION", default_value = DEFAULT_S3_REGION)]
    pub s3_region: String,

    /// S3 access key id.
    #[arg(long, env = "BITSTRATUS_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,

    /// S3 secret access key (prefer the environment variable over the flag).
    #[arg(long, env = "BITSTRATUS_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<Redacted>,

    /// Allow plain-HTTP S3 endpoints (e.g. a MinIO on localhost).
    #[arg(long, env = "BITSTRATUS_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,

    /// Path-style S3 requests (`endpoint/bucket/key`), which most S3-compatible stores need.
    #[arg(long, env = "BITSTRATUS_S3_PATH_STYLE", default_value_t = true, action = ArgAction::Set)]
    pub s3_path_style: bool,

    /// Directory of the built web app (e.g. app/dist); without it only the API is served.
    #[arg(long, env = "BITSTRATUS_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Largest accepted file (total ciphertext bytes), e.g. `100GiB`.
    #[arg(long, env = "BITSTRATUS_MAX_FILE_SIZE", default_value = DEFAULT_MAX_FILE_SIZE, value_parser = parse_size)]
    pub max_file_size: u64,

    /// Largest accepted part, e.g. `64MiB`.
    #[arg(long, env = "BITSTRATUS_MAX_PART_SIZE", default_value = DEFAULT_MAX_PART_SIZE, value_parser = parse_size)]
    pub max_part_size: u64,

    /// How many part bodies may be read at once; more answer 503 `server_busy`. Part buffers
    /// use at most this many times `--max-part-size` of memory.
    #[arg(long, env = "BITSTRATUS_MAX_CONCURRENT_PARTS", default_value = DEFAULT_MAX_CONCURRENT_PARTS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrent_parts: usize,

    /// A part body that delivers no byte for this long is abandoned with 408 `timeout`, e.g. `60s`.
    #[arg(long, env = "BITSTRATUS_PART_IDLE_TIMEOUT", default_value = DEFAULT_PART_IDLE_TIMEOUT, value_parser = parse_positive_duration)]
    pub part_idle_timeout: Duration,

    /// Incomplete uploads older than this are garbage-collected, e.g. `24h`.
    #[arg(long, env = "BITSTRATUS_UPLOAD_TTL", default_value = DEFAULT_UPLOAD_TTL, value_parser = parse_duration)]
    pub upload_ttl: Duration,

    /// How often the garbage collector runs, e.g. `10m`.
    #[arg(long, env = "BITSTRATUS_GC_INTERVAL", default_value = DEFAULT_GC_INTERVAL, value_parser = parse_duration)]
    pub gc_interval: Duration,
}

impl Config {
    /// The defaults with a given data directory and no static dir; what tests start from.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            database_url: None,
            storage: StorageKind::Local,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: DEFAULT_S3_REGION.to_owned(),
            s3_access_key: None,
            s3_secret_key: None,
            s3_allow_http: false,
            s3_path_style: true,
            static_dir: None,
            max_file_size: parse_size(DEFAULT_MAX_FILE_SIZE).expect("valid default"),
            max_part_size: parse_size(DEFAULT_MAX_PART_SIZE).expect("valid default"),
            max_concurrent_parts: DEFAULT_MAX_CONCURRENT_PARTS.parse().expect("valid default"),
            part_idle_timeout: parse_duration(DEFAULT_PART_IDLE_TIMEOUT).expect("valid default"),
            upload_ttl: parse_duration(DEFAULT_UPLOAD_TTL).expect("valid default"),
            gc_interval: parse_duration(DEFAULT_GC_INTERVAL).expect("valid default"),
        }
    }

    /// The database URL in force: the explicit one, or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.default_database_path().display()
            ),
        }
    }

    /// Where the default SQLite database lives.
    pub fn default_database_path(&self) -> PathBuf {
        self.data_dir.join("bitstratus.db")
    }

    /// Where local objects live.
    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }

    /// The SPA entry point, when a static dir is configured.
    pub fn index_html(&self) -> Option<PathBuf> {
        self.static_dir
            .as_deref()
            .map(|d| Path::new(d).join("index.html"))
    }
}

/// Parses a byte size: a plain number of bytes or one with a `K`/`M`/`G`/`T` suffix, binary
/// (`KiB`, `MiB`, ...) or decimal (`KB`, `MB`, ...); a bare letter (`64M`) is binary.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4096, 64MiB or 100GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: seconds as a plain number, or a number with `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90, 90s, 10m, 24h or 7d"))?;
    let mult: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown duration unit {other:?}")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Parses a duration like [`parse_duration`] but refuses zero, for timeouts where zero would
/// abort everything at once.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        Err("the duration must be positive".to_owned())
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("100GiB"), Ok(100 << 30));
        assert_eq!(parse_size("2kb"), Ok(2000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1y").is_err());
        assert!(parse_positive_duration("0").is_err());
        assert_eq!(parse_positive_duration("1m"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn concurrency_and_idle_timeout_flags() {
        let parsed = Config::try_parse_from([
            "bitstratus-server",
            "--max-concurrent-parts",
            "8",
            "--part-idle-timeout",
            "2m",
        ])
        .unwrap();
        assert_eq!(parsed.max_concurrent_parts, 8);
        assert_eq!(parsed.part_idle_timeout, Duration::from_secs(120));
        for bad in [
            ["--max-concurrent-parts", "0"],
            ["--part-idle-timeout", "0"],
        ] {
            assert!(Config::try_parse_from(["bitstratus-server", bad[0], bad[1]]).is_err());
        }
    }

    #[test]
    fn cli_defaults_match_with_data_dir() {
        // clap reads BITSTRATUS_* too; with any set the defaults are not what is compared.
        if std::env::vars().any(|(k, _)| k.starts_with("BITSTRATUS_")) {
            return;
        }
        let parsed = Config::try_parse_from(["bitstratus-server", "--data-dir", "/x"]).unwrap();
        let built = Config::with_data_dir("/x");
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!(built.database_url(), "sqlite:///x/bitstratus.db?mode=rwc");
    }

    #[test]
    fn secret_is_redacted() {
        let mut c = Config::with_data_dir("/x");
        c.s3_secret_key = Some(Redacted("hunter2".into()));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
