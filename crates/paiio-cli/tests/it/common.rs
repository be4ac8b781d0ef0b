//! Running `paiio` against a temporary warehouse, and deterministic test data.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_paiio");

/// The acceptance schema.
pub const SCHEMA: &str = "id bigint, name string, price double, flag boolean, ts datetime";

/// A temporary directory holding a warehouse (`wh/`) and data files.
pub struct Env {
    pub dir: TempDir,
}

/// What a run of `paiio` gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("wh")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command with `--warehouse` and an environment that points nowhere real.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command.arg("--warehouse").arg(self.warehouse());
        isolate(&mut command, self.dir.path());
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut command = self.command();
        command.args(args);
        run(command)
    }

    /// Runs and asserts success; returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, Some(0), "paiio {args:?} failed: {run:?}");
        run.stdout
    }

    /// Runs and asserts a one-line `paiio: error: ...` failure with a non-zero status;
    /// returns the message.
    pub fn fail(&self, args: &[&str]) -> (i32, String) {
        let run = self.run(args);
        assert_one_line_error(&run, args);
        (run.code.unwrap_or(-1), run.stderr.trim_end().to_string())
    }

    /// `count` and `checksum` of a URI, to compare a table before and after something.
    pub fn state(&self, uri: &str) -> (String, String) {
        (
            self.ok(&["table", "count", uri]),
            self.ok(&["table", "checksum", uri]),
        )
    }

    pub fn create(&self, uri: &str, schema: &str, partitioned_by: Option<&str>) {
        let mut args = vec!["table", "create", uri, "--schema", schema];
        if let Some(p) = partitioned_by {
            args.extend(["--partitioned-by", p]);
        }
        let out = self.ok(&args);
        assert!(out.starts_with("created odps://"), "{out}");
    }

    /// `paiio table import URI FILE`, asserting success; returns standard output.
    pub fn import(&self, uri: &str, file: &Path) -> String {
        self.import_with(uri, file, &[])
    }

    /// `paiio table import URI FILE FLAGS...`, asserting success; returns standard output.
    pub fn import_with(&self, uri: &str, file: &Path, flags: &[&str]) -> String {
        self.ok(&transfer("import", uri, file, flags))
    }

    /// `paiio table import URI FILE`, asserting a one-line failure (see [`Env::fail`]).
    pub fn import_fail(&self, uri: &str, file: &Path) -> (i32, String) {
        self.import_fail_with(uri, file, &[])
    }

    /// `paiio table import URI FILE FLAGS...`, asserting a one-line failure.
    pub fn import_fail_with(&self, uri: &str, file: &Path, flags: &[&str]) -> (i32, String) {
        self.fail(&transfer("import", uri, file, flags))
    }

    /// `paiio table export URI FILE`, asserting success; returns standard output.
    pub fn export(&self, uri: &str, file: &Path) -> String {
        self.export_with(uri, file, &[])
    }

    /// `paiio table export URI FILE FLAGS...`, asserting success; returns standard output.
    pub fn export_with(&self, uri: &str, file: &Path, flags: &[&str]) -> String {
        self.ok(&transfer("export", uri, file, flags))
    }

    /// `paiio table export URI FILE`, asserting a one-line failure (see [`Env::fail`]).
    pub fn export_fail(&self, uri: &str, file: &Path) -> (i32, String) {
        self.fail(&transfer("export", uri, file, &[]))
    }

    pub fn checksum(&self, uri: &str) -> String {
        self.ok(&["table", "checksum", uri]).trim().to_string()
    }

    pub fn count(&self, uri: &str) -> u64 {
        self.ok(&["table", "count", uri])
            .trim()
            .parse()
            .expect("a count")
    }
}

/// Asserts that `message` contains every one of `needles`.
#[track_caller]
pub fn assert_contains_all(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message}"
        );
    }
}

/// `table VERB URI FILE FLAGS...`.
fn transfer<'a>(verb: &'a str, uri: &'a str, file: &'a Path, flags: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["table", verb, uri, file.to_str().unwrap()];
    args.extend_from_slice(flags);
    args
}

/// Keeps the configuration and default warehouse of the machine out of a test.
pub fn isolate(command: &mut Command, home: &Path) {
    for var in [
        "ODPS_CONFIG_FILE_PATH",
        "ODPS_ENDPOINT",
        "ODPS_PROJECT",
        "ODPS_TUNNEL_ENDPOINT",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "ALIBABA_CLOUD_REGION",
        "XDG_DATA_HOME",
        "PAIIO_LOG",
    ] {
        command.env_remove(var);
    }
    command
        .env("HOME", home)
        .env("PAIIO_WAREHOUSE", home.join("default-wh"));
}

pub fn run(mut command: Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run paiio");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

pub fn assert_one_line_error(run: &Run, args: &[&str]) {
    assert_ne!(run.code, Some(0), "paiio {args:?} should fail: {run:?}");
    assert!(
        run.code.is_some(),
        "paiio {args:?} died by a signal: {run:?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "paiio {args:?}: expected one line on stderr: {run:?}"
    );
    assert!(
        lines[0].starts_with("paiio: error: "),
        "paiio {args:?}: {run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "paiio {args:?}: {run:?}");
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Row `i` of the acceptance data set as CSV fields (id, name, price, flag, ts): NULLs,
/// quotes, commas, non-ASCII text, negative and fractional values, sub-second datetimes.
pub fn acceptance_row(i: u64, rng: &mut Rng, line: &mut String) {
    let r = rng.next();
    let id = if i % 1000 == 999 {
        -(i as i64)
    } else {
        i as i64
    };
    write!(line, "{id},").unwrap();
    match r % 50 {
        0 => line.push_str("\"with, comma\""),
        1 => line.push_str("\"say \"\"hi\"\"\""),
        2 => line.push_str("grüße ✓"),
        3 => {} // NULL
        _ => write!(line, "name_{}", r % 10_007).unwrap(),
    }
    line.push(',');
    let price_kind = (r >> 8) % 20;
    if price_kind != 0 {
        let cents = ((r >> 16) % 10_000_000) as i64 - 100_000;
        let price = cents as f64 / 100.0 + if price_kind == 1 { 1e-7 } else { 0.0 };
        write!(line, "{price}").unwrap();
    }
    line.push(',');
    match (r >> 40) % 7 {
        0 => {}
        1..=3 => line.push_str("true"),
        _ => line.push_str("false"),
    }
    line.push(',');
    if !(r >> 44).is_multiple_of(30) {
        let secs = 1_600_000_000 + ((r >> 20) % 200_000_000) as i64;
        let millis = (r >> 50) % 1000;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(
            line,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
        .unwrap();
    }
}

/// Writes rows `[start, end)` of the acceptance data set as CSV with a header.
pub fn write_acceptance_csv(path: &Path, start: u64, end: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    out.write_all(b"id,name,price,flag,ts\n").unwrap();
    let mut rng = Rng::new(start + 1);
    let mut line = String::with_capacity(128);
    for i in start..end {
        line.clear();
        acceptance_row(i, &mut rng, &mut line);
        line.push('\n');
        out.write_all(line.as_bytes()).unwrap();
    }
    out.flush().unwrap();
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `ROWS DIGEST` split, the digest as 256-bit little-endian limbs.
pub fn parse_checksum(text: &str) -> (u64, [u64; 4]) {
    let (rows, hex) = text.trim().split_once(' ').expect("ROWS DIGEST");
    assert_eq!(hex.len(), 64, "{text}");
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let start = (3 - i) * 16;
        *limb = u64::from_str_radix(&hex[start..start + 16], 16).unwrap();
    }
    (rows.parse().unwrap(), limbs)
}

/// The sum of two checksums (digests add modulo 2^256).
pub fn add_checksums(a: &str, b: &str) -> String {
    let (ra, la) = parse_checksum(a);
    let (rb, lb) = parse_checksum(b);
    let mut sum = [0u64; 4];
    let mut carry = 0u128;
    for i in 0..4 {
        let s = la[i] as u128 + lb[i] as u128 + carry;
        sum[i] = s as u64;
        carry = s >> 64;
    }
    let hex: String = sum.iter().rev().map(|l| format!("{l:016x}")).collect();
    format!("{} {hex}", ra + rb)
}
