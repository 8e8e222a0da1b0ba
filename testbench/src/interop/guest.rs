// SPDX-License-Identifier: Apache-2.0
//! The Debian guest running the Linux kernel's rxe and the unmodified rdma-core / perftest tools,
//! under QEMU (TCG unless a hardware KVM module is loaded).
//!
//! * NIC 1 of the guest (`eth0`, rxe0 on it) is a `-netdev dgram` whose other end is our
//!   [`Bridge`](super::bridge::Bridge).
//! * NIC 2 (`eth1`) is QEMU user-mode networking, only for the out-of-band TCP exchanges: the
//!   guest reaches the host's loopback at 10.0.2.2, and `hostfwd` rules give the host the guest's
//!   server ports.
//! * The guest's PID 1 (`interop/guest/rnic-init`) brings up rxe and connects a few *agents* to
//!   a TCP listener of ours; each agent runs one shell command per line it reads and answers with
//!   the output and a line `<token> EXIT <status>`.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where the guest image and the QEMU state live.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    /// `target/interop/guest` (built by `interop/build-image.sh`).
    pub image_dir: PathBuf,
    /// Console log, and other run files.
    pub run_dir: PathBuf,
    /// MAC of the guest's bridged NIC.
    pub mac: [u8; 6],
    /// IPv4 address (with prefix length) of the guest's bridged NIC.
    pub ip: Ipv4Addr,
    /// Prefix length of `ip`.
    pub prefix: u8,
    /// Our bridge's UDP address (QEMU's `remote`).
    pub bridge_addr: SocketAddr,
    /// The loopback UDP port QEMU's dgram netdev binds (the bridge sends there; see
    /// [`free_udp_port`]).
    pub qemu_port: u16,
    /// `-netdev stream` (TCP, QEMU connects to `bridge_addr`) instead of `-netdev dgram`.
    pub stream: bool,
    /// Guest TCP ports to forward from the host loopback (host port chosen here).
    pub forward: Vec<u16>,
    /// Guest memory in MiB.
    pub mem_mb: u32,
    /// How long the boot may take.
    pub boot_timeout: Duration,
}

/// Why the guest cannot run here (the caller prints it as a SKIP).
pub fn unavailable(image_dir: &Path) -> Option<String> {
    if Command::new("qemu-system-x86_64").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    for f in ["initrd.cpio", "stamp"] {
        if !image_dir.join(f).exists() {
            return Some(format!(
                "no guest image in {} (build it with `make interop` or interop/build-image.sh)",
                image_dir.display()
            ));
        }
    }
    None
}

/// A free UDP port on the loopback (bound and released: QEMU binds it next).
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a hardware KVM module is loaded (otherwise QEMU runs with TCG).
fn hardware_kvm() -> bool {
    std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.starts_with("kvm_intel ") || l.starts_with("kvm_amd ")))
        .unwrap_or(false)
        && Path::new("/dev/kvm").exists()
}

struct Pool {
    agents: Mutex<Vec<TcpStream>>,
    ready: Condvar,
}

/// A running guest.
pub struct Guest {
    child: Child,
    pool: Arc<Pool>,
    /// Host ports forwarded to the guest's ports, as (guest port, host port).
    pub forwarded: Vec<(u16, u16)>,
    /// The UDP address QEMU's dgram netdev listens on (our bridge sends there).
    pub qemu_addr: SocketAddr,
    /// Guest's bridged IPv4 address.
    pub ip: Ipv4Addr,
    /// Wall time from starting QEMU to rxe being up in the guest.
    pub boot_time: Duration,
    /// Index of the RoCE v2 IPv4-mapped GID of rxe0 (for `-g`/`-x`).
    pub gid_index: u32,
    console: PathBuf,
    seq: Mutex<u64>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").field("ip", &self.ip).field("qemu", &self.qemu_addr).finish()
    }
}

impl Guest {
    /// Boot the guest and wait until rxe is up and an agent is connected.
    ///
    /// # Errors
    /// QEMU cannot start, or the guest does not come up in time (the console log is named).
    pub fn boot(cfg: &GuestConfig) -> Result<Guest, String> {
        std::fs::create_dir_all(&cfg.run_dir).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("agent listener: {e}"))?;
        let agent_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let qemu_port = cfg.qemu_port;
        let qemu_addr: SocketAddr = format!("127.0.0.1:{qemu_port}").parse().expect("address");
        let mut forwarded = Vec::new();
        let mut user = "user,id=oob,net=10.0.2.0/24,host=10.0.2.2".to_string();
        for &gp in &cfg.forward {
            let hp = free_tcp_port().map_err(|e| e.to_string())?;
            user.push_str(&format!(",hostfwd=tcp:127.0.0.1:{hp}-10.0.2.15:{gp}"));
            forwarded.push((gp, hp));
        }
        let image = &cfg.image_dir;
        let kernel = if image.join("vmlinux").exists() { image.join("vmlinux") } else { image.join("vmlinuz") };
        let console = cfg.run_dir.join("console.log");
        let _ = std::fs::remove_file(&console);
        let m = cfg.mac;
        let mac = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
        let accel = if hardware_kvm() { "kvm" } else { "tcg" };
        let append = format!(
            "console=ttyS0 rdinit=/sbin/rnic-init quiet panic=-1 rnic.ip={}/{} rnic.agent={agent_port} rnic.agents=3",
            cfg.ip, cfg.prefix
        );
        let dgram = if cfg.stream {
            format!(
                "stream,id=roce,server=off,addr.type=inet,addr.host={},addr.port={}",
                cfg.bridge_addr.ip(),
                cfg.bridge_addr.port()
            )
        } else {
            format!(
                "dgram,id=roce,local.type=inet,local.host=127.0.0.1,local.port={qemu_port},remote.type=inet,remote.host={},remote.port={}",
                cfg.bridge_addr.ip(),
                cfg.bridge_addr.port()
            )
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", accel, "-machine", "q35", "-cpu", "max", "-smp", "1"])
            .args(["-m", &cfg.mem_mb.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(image.join("initrd.cpio"))
            .args(["-append", &append])
            .args(["-netdev", &dgram, "-device", &format!("virtio-net-pci,netdev=roce,mac={mac},romfile=")])
            .args(["-netdev", &user, "-device", "virtio-net-pci,netdev=oob,romfile="])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(cfg.run_dir.join("qemu.stderr")).map_err(|e| e.to_string())?);
        std::fs::write(cfg.run_dir.join("qemu.cmdline"), format!("{cmd:?}\n")).map_err(|e| e.to_string())?;
        // QEMU dies with us, however we end (a killed test must not leave a guest running).
        {
            use std::os::unix::process::CommandExt;
            extern "C" {
                fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
            }
            const PR_SET_PDEATHSIG: i32 = 1;
            const SIGKILL: u64 = 9;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
                    Ok(())
                });
            }
        }
        let t0 = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        let pool = Arc::new(Pool { agents: Mutex::new(Vec::new()), ready: Condvar::new() });
        let p2 = pool.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let _ = s.set_nodelay(true);
                p2.agents.lock().expect("pool").push(s);
                p2.ready.notify_all();
            }
        });
        let mut guest = Guest {
            child,
            pool,
            forwarded,
            qemu_addr,
            ip: cfg.ip,
            boot_time: Duration::ZERO,
            gid_index: 0,
            console: console.clone(),
            seq: Mutex::new(0),
        };
        // READY line on the console, then an agent connection.
        loop {
            if let Ok(Some(st)) = guest.child.try_wait() {
                return Err(format!("qemu exited ({st}) during boot: see {} and {}", console.display(), cfg.run_dir.join("qemu.stderr").display()));
            }
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if text.contains("RNIC-GUEST-READY") {
                break;
            }
            if t0.elapsed() > cfg.boot_timeout {
                return Err(format!("the guest did not bring rxe up within {:?}: see {}", cfg.boot_timeout, console.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        guest.boot_time = t0.elapsed();
        let (rc, out) = guest.run("cat /run/rnic-gid-index", Duration::from_secs(30))?;
        guest.gid_index = out.trim().parse().map_err(|_| format!("no RoCE v2 IPv4 GID on rxe0 ({rc}: {out})"))?;
        Ok(guest)
    }

    /// Host port forwarded to guest TCP port `guest_port`.
    pub fn host_port(&self, guest_port: u16) -> Option<u16> {
        self.forwarded.iter().find(|(g, _)| *g == guest_port).map(|&(_, h)| h)
    }

    /// The console log so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Run `cmd` with bash in the guest; returns (exit status, output). The command is killed in
    /// the guest after `timeout` (coreutils `timeout`).
    ///
    /// # Errors
    /// No agent answered, or the connection broke.
    pub fn run(&self, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        assert!(!cmd.contains('\n'), "one line per command");
        let tok = {
            let mut s = self.seq.lock().expect("seq");
            *s += 1;
            format!("T{:08x}{}", std::process::id(), *s)
        };
        let deadline = Instant::now() + timeout + Duration::from_secs(10);
        let mut stream = {
            let mut agents = self.pool.agents.lock().expect("pool");
            loop {
                if let Some(s) = agents.pop() {
                    break s;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("no guest agent free to run `{cmd}`"));
                }
                agents = self.pool.ready.wait_timeout(agents, left).expect("pool").0;
            }
        };
        let wrapped = format!("{tok} timeout -k 2 {} bash -c {}\n", timeout.as_secs().max(1), shell_quote(cmd));
        stream.write_all(wrapped.as_bytes()).map_err(|e| format!("agent write: {e}"))?;
        stream.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))).ok();
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut out = String::new();
        let marker = format!("{tok} EXIT ");
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(format!("agent closed while running `{cmd}`; output so far:\n{out}")),
                Ok(_) => {}
                Err(e) => return Err(format!("agent: running `{cmd}`: {e}; output so far:\n{out}")),
            }
            if let Some(pos) = line.find(&marker) {
                out.push_str(&line[..pos]);
                let rc = line[pos + marker.len()..].trim().parse().unwrap_or(-1);
                stream.set_read_timeout(None).ok();
                self.pool.agents.lock().expect("pool").push(stream);
                self.pool.ready.notify_all();
                return Ok((rc, out));
            }
            out.push_str(&line);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quote for bash (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
