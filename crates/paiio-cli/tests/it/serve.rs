//! `paiio serve`: the connection flags, over a real process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, assert_one_line_error};

/// Kills the server when the test ends, however it ends.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_durations_are_one_line_errors_naming_the_value() {
    let env = Env::new();
    for (flag, value, why) in [
        ("--header-timeout", "30", "no unit"),
        ("--body-idle-timeout", "0s", "not above zero"),
        ("--keep-alive-timeout", "soon", "no number"),
        ("--keep-alive-timeout", "5 fortnights", "unknown unit"),
        ("--body-min-rate", "fast", "no number"),
    ] {
        let args = [
            "serve",
            "--allow-anonymous",
            "--listen",
            "127.0.0.1:0",
            flag,
            value,
        ];
        let run = env.run(&args);
        assert_one_line_error(&run, &args);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(
            run.stderr.contains(flag) && run.stderr.contains(&format!("`{value}`")),
            "{run:?}"
        );
        assert!(run.stderr.contains(why), "{run:?}");
    }
    let run = env.run(&["serve", "--allow-anonymous", "--max-connections", "0"]);
    assert_one_line_error(&run, &["--max-connections", "0"]);
}

#[test]
fn serve_closes_idle_keep_alive_connections_after_the_flag() {
    let env = Env::new();
    let mut command = env.command();
    command
        .args([
            "serve",
            "--allow-anonymous",
            "--listen",
            "127.0.0.1:0",
            "--keep-alive-timeout",
            "300ms",
            "--body-min-rate",
            "1KB",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut served = Served(command.spawn().expect("start paiio serve"));
    let mut line = String::new();
    BufReader::new(served.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // `paiio serve: listening on http://ADDR/api (warehouse DIR)`
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/api").next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let mut socket = TcpStream::connect(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .write_all(b"GET /api/tenants HTTP/1.1\r\nHost: paiio\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the (chunked) response, then wait for the server to close the idle connection.
    while !got.ends_with(b"0\r\n\r\n") {
        let n = socket.read(&mut chunk).expect("a response");
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let idle = Instant::now();
    let n = socket
        .read(&mut chunk)
        .expect("the idle connection closed within 5 s");
    assert_eq!(n, 0);
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}
