//! `paiio serve` as a child process, so its CPU time and memory can be read from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `paiio serve`; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT/api`
    pub endpoint: String,
}

impl ServeProcess {
    /// Starts `paiio serve` on a free local port, with its log going to `log`, and waits
    /// for its `listening on` line.
    pub fn start(
        paiio: &Path,
        warehouse: &Path,
        log: &Path,
        extra_args: &[String],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(paiio)
            .arg("serve")
            .arg("--warehouse")
            .arg(warehouse)
            .args(["--listen", "127.0.0.1:0", "--allow-anonymous"])
            .args(extra_args)
            .env(
                "PAIIO_LOG",
                std::env::var("PAIIO_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", paiio.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            // Keep draining stdout so the server never blocks on a full pipe.
            while let Some(Ok(line)) = lines.next() {
                if !sent && let Some(rest) = line.strip_prefix("paiio serve: listening on ") {
                    let endpoint = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(endpoint);
                    sent = true;
                }
            }
        });
        let mut server = ServeProcess {
            child,
            endpoint: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(endpoint) => server.endpoint = endpoint,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                return Err(format!(
                    "paiio serve did not announce its address (exit status {status:?}); see {}",
                    log.display()
                )
                .into());
            }
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The Storage API V2 URL.
    pub fn v2_url(&self) -> String {
        format!("{}/storage/v2", self.endpoint)
    }

    /// Stops the server: SIGTERM, and SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill sends a signal to our own child, by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the `paiio` binary is: `--paiio`, else `$CARGO_TARGET_DIR/release/paiio`, else next
/// to this program.
pub fn find_paiio(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join("paiio"));
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        candidates.push(dir.join("paiio"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "cannot find the paiio binary: build it with `cargo build --release -p paiio-cli` or \
         give --paiio PATH"
            .to_string()
    })
}
