//! A real redis-server for the tests and the bench (issue 17's remote queue and pool).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of its own: 127.0.0.1 on a free port, no persistence, in a temp dir, killed
/// (and waited for) when this drops, and by the kernel when the thread that started it ends.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Its working directory (removed on drop).
    pub dir: PathBuf,
    extra: Vec<String>,
}

/// The child gets SIGKILL when the thread that spawned it ends, so a test process killed from
/// outside (a CI timeout) leaves no redis-server or worker behind (the guards' Drop cannot run).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts one; panics if it cannot (a test that needs a server must fail loudly).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with extra arguments, e.g. `["--requirepass", "pw"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::try_start_with(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts one, or says why not (no redis-server on PATH, it exited, it did not answer):
    /// for the bench, which skips its remote workloads then.
    pub fn try_start() -> Result<Self, String> {
        Self::try_start_with(&[])
    }

    fn try_start_with(extra: &[&str]) -> Result<Self, String> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("mp-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut s = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    "redis-server is not installed: these tests need a real one \
                            (apt-get install redis-server; .ci/run installs it)"
                        .into(),
                );
            }
            Err(e) => return Err(format!("starting redis-server: {e}")),
        };
        self.child = Some(child);
        // Ready when it answers PING (or NOAUTH, with a password).
        let t0 = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf)
                    && n > 0
                {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited at start ({st}): {log}"));
            }
            if t0.elapsed() >= Duration::from_secs(20) {
                return Err("redis-server did not answer within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.launch() {
            panic!("{e}");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
