// SPDX-License-Identifier: Apache-2.0
//! The interop suite: boot the guest, bridge it to one simulated NIC, run the unmodified tools
//! against our peers, check the captures and both sides' counters.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fabric::Backend;

use super::guest::{self, Guest, GuestConfig};
use super::perftest::{self, PtParams, PtVerb};
use super::pingpong::{self, PpParams, PpRole};
use super::{Station, GUEST_IP, GUEST_MAC};
use rnic_driver::Mtu;

/// What to run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Backend of the simulated NIC.
    pub backend: Backend,
    /// Guest image directory (`target/interop/guest`).
    pub image_dir: PathBuf,
    /// Where run files go (captures, console log).
    pub out_dir: PathBuf,
    /// Pingpong message size.
    pub pp_size: u32,
    /// Pingpong round trips.
    pub pp_iters: u32,
    /// perftest message sizes (empty: skip perftest).
    pub pt_sizes: Vec<u32>,
    /// perftest iterations per size.
    pub pt_iters: u32,
    /// perftest verbs.
    pub pt_verbs: Vec<PtVerb>,
    /// Also run each perftest with the tool as the server and our NIC as the requester.
    pub pt_reverse: bool,
    /// Bridge in `-netdev stream` framing instead of `dgram`.
    pub stream: bool,
}

impl SuiteOptions {
    /// Defaults for `backend`, with the image under `root/target/interop`.
    pub fn new(backend: Backend, root: &Path) -> SuiteOptions {
        let base = root.join("target/interop");
        let name = format!("{backend:?}").to_lowercase();
        SuiteOptions {
            backend,
            image_dir: base.join("guest"),
            out_dir: base.join(format!("run-{name}")),
            pp_size: 4096,
            pp_iters: 50,
            pt_sizes: vec![2, 1024, 4096, 65536],
            pt_iters: 20,
            pt_verbs: vec![PtVerb::Write, PtVerb::Read, PtVerb::Send],
            pt_reverse: true,
            stream: false,
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Name.
    pub name: String,
    /// Ok(detail) or Err(why).
    pub result: Result<String, String>,
}

/// Everything a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks in order.
    pub outcomes: Vec<Outcome>,
    /// Boot time to rxe up.
    pub boot: Duration,
    /// Whole run.
    pub wall: Duration,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.outcomes.is_empty() && self.outcomes.iter().all(|o| o.result.is_ok())
    }

    fn add_counted(&mut self, st: &Station, before: &[(&'static str, u64)], name: impl Into<String>, result: Result<String, String>) {
        let after = st.counters();
        let delta: Vec<String> = after
            .iter()
            .zip(before)
            .filter(|((_, a), (_, b))| a != b)
            .map(|((n, a), (_, b))| format!("{n}+{}", a - b))
            .collect();
        let result = result.map(|d| format!("{d} [NIC: {}]", delta.join(" ")));
        let result = result.map_err(|d| format!("{d} [NIC: {}]", delta.join(" ")));
        self.add(name, result);
    }

    fn add(&mut self, name: impl Into<String>, result: Result<String, String>) {
        let name = name.into();
        match &result {
            Ok(d) => println!("  ok    {name}: {d}"),
            Err(e) => println!("  FAIL  {name}: {e}"),
        }
        self.outcomes.push(Outcome { name, result });
    }
}

/// Why the suite cannot run here, if it cannot (printed as `SKIP: ...`).
pub fn skip_reason(opts: &SuiteOptions) -> Option<String> {
    guest::unavailable(&opts.image_dir)
}

/// Run the suite. Failures of single checks are in the report; `Err` means the setup failed.
///
/// # Errors
/// The simulator, the bridge or the guest could not be set up.
pub fn run(opts: &SuiteOptions) -> Result<Report, String> {
    let t_all = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
    let bridge_pcap = opts.out_dir.join("bridge.pcap");
    let nic_pcap = opts.out_dir.join("nic.pcap");
    let qemu_port = guest::free_udp_port().map_err(|e| e.to_string())?;
    let st = Station::with_netdev(opts.backend, qemu_port, opts.stream, Some(&bridge_pcap), Some(&nic_pcap))?;
    let gcfg = GuestConfig {
        image_dir: opts.image_dir.clone(),
        run_dir: opts.out_dir.clone(),
        mac: GUEST_MAC,
        ip: GUEST_IP,
        prefix: 24,
        bridge_addr: st.bridge_addr(),
        qemu_port,
        stream: opts.stream,
        forward: vec![18515],
        mem_mb: 1024,
        boot_timeout: Duration::from_secs(120),
    };
    println!(
        "interop: backend {:?}, bridge -netdev {}, booting the guest (QEMU, {})",
        opts.backend,
        if opts.stream { "stream" } else { "dgram" },
        opts.image_dir.display()
    );
    let g = Guest::boot(&gcfg)?;
    let mut rep = Report { boot: g.boot_time, ..Report::default() };
    println!("interop: guest up in {:.1} s (rxe0 RoCE v2 IPv4 GID index {})", g.boot_time.as_secs_f64(), g.gid_index);
    let (_, ver) = g.run("uname -r; dpkg-query -W -f '${Package} ${Version}\\n' ibverbs-utils perftest ibverbs-providers", Duration::from_secs(20))?;
    for l in ver.lines() {
        println!("  guest: {l}");
    }

    let pp = PpParams { size: opts.pp_size, iters: opts.pp_iters, mtu: Mtu::Mtu1024, psn: 0x2a_4e11, timeout: Duration::from_secs(std::env::var("RNIC_INTEROP_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(600)) };
    // 1. The tool is the server in the guest, we connect.
    let c0 = st.counters();
    let r = pingpong_guest_server(&st, &g, &pp);
    rep.add_counted(&st, &c0, format!("ibv_rc_pingpong, guest server, our NIC client ({} B x {})", pp.size, pp.iters), r);
    // 2. We are the server, the tool connects from the guest.
    let c0 = st.counters();
    let r = pingpong_guest_client(&st, &g, &PpParams { psn: 0xff_fff0, ..pp });
    rep.add_counted(&st, &c0, format!("ibv_rc_pingpong, our NIC server, guest client ({} B x {})", pp.size, pp.iters), r);

    for &verb in &opts.pt_verbs {
        for &size in &opts.pt_sizes {
            let p = PtParams { verb, size, iters: opts.pt_iters, timeout: Duration::from_secs(600) };
            let c0 = st.counters();
            let r = perftest_guest_client(&st, &g, &p);
            rep.add_counted(&st, &c0, format!("{} -s {size} -n {}, guest client, our NIC server", verb.tool(), p.iters), r);
        }
    }
    if opts.pt_reverse {
        for &verb in &opts.pt_verbs {
            for &size in &opts.pt_sizes {
                let p = PtParams { verb, size, iters: opts.pt_iters, timeout: Duration::from_secs(600) };
                let c0 = st.counters();
                let r = perftest_guest_server(&st, &g, &p);
                rep.add_counted(&st, &c0, format!("{} -s {size} -n {}, guest server, our NIC client", verb.tool(), p.iters), r);
            }
        }
    }

    // Both sides' counters.
    rep.add("rxe counters (guest)", rxe_counters(&g));
    let errs = st.counter_errors();
    let all: Vec<String> = st.counters().iter().filter(|(_, v)| *v != 0).map(|(n, v)| format!("{n}={v}")).collect();
    rep.add(
        "simulated NIC counters",
        if errs.is_empty() { Ok(all.join(" ")) } else { Err(format!("error counters not zero: {errs:?} (all: {})", all.join(" "))) },
    );
    if opts.backend == Backend::Lockstep {
        rep.add("lockstep: drained, host memories equal", st.check_lockstep().map(|_| {
            let s = st.fabric.borrow().check_stats();
            format!("{s:?}")
        }));
    }
    let b = st.bridge.borrow().stats;
    println!(
        "interop: bridge: {} frames NIC->guest, {} guest->NIC, {} ARP replies, {} ARP requests, dropped {} IPv6 and {} other",
        b.nic_to_peer, b.peer_to_nic, b.arp_replies, b.arp_requests, b.dropped_ipv6, b.dropped_other
    );
    st.fabric.borrow_mut().flush_capture();
    rep.add("captures decoded (tshark) and ICRCs checked", check_captures(&bridge_pcap));
    rep.wall = t_all.elapsed();
    println!("interop: captures {} and {}; console {}", bridge_pcap.display(), nic_pcap.display(), opts.out_dir.join("console.log").display());
    Ok(rep)
}

/// Wait (through an agent) until something listens on guest TCP `port`.
fn wait_listening(g: &Guest, port: u16) -> Result<(), String> {
    let (rc, out) = g.run(
        &format!("for i in $(seq 300); do ss -Hltn \"sport = :{port}\" | grep -q . && exit 0; sleep 0.1; done; exit 1"),
        Duration::from_secs(40),
    )?;
    if rc == 0 { Ok(()) } else { Err(format!("nothing listens on guest port {port}: {out}")) }
}

fn pingpong_guest_server(st: &Station, g: &Guest, p: &PpParams) -> Result<String, String> {
    let hp = g.host_port(18515).ok_or("no forwarded port")?;
    let cmd = format!("ibv_rc_pingpong -d rxe0 -g {} -s {} -n {}", g.gid_index, p.size, p.iters);
    std::thread::scope(|s| {
        let tool = s.spawn(|| g.run(&cmd, p.timeout));
        let ours = wait_listening(g, 18515)
            .and_then(|_| pingpong::run(st, PpRole::Client(format!("127.0.0.1:{hp}").parse().expect("addr")), p));
        let tool = tool.join().map_err(|_| "guest thread panicked".to_string())?;
        finish_pingpong(ours, tool, &cmd)
    })
}

fn pingpong_guest_client(st: &Station, g: &Guest, p: &PpParams) -> Result<String, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    let cmd = format!("ibv_rc_pingpong -d rxe0 -g {} -s {} -n {} -p {port} 10.0.2.2", g.gid_index, p.size, p.iters);
    std::thread::scope(|s| {
        let tool = s.spawn(|| g.run(&cmd, p.timeout));
        let ours = pingpong::run(st, PpRole::Server(l), p);
        let tool = tool.join().map_err(|_| "guest thread panicked".to_string())?;
        finish_pingpong(ours, tool, &cmd)
    })
}

fn finish_pingpong(ours: Result<pingpong::PpResult, String>, tool: Result<(i32, String), String>, cmd: &str) -> Result<String, String> {
    let (rc, out) = tool?;
    let r = ours.map_err(|e| format!("{e}; guest `{cmd}` -> {rc}: {}", out.trim()))?;
    if rc != 0 {
        return Err(format!("guest `{cmd}` exited {rc}: {}", out.trim()));
    }
    let summary: Vec<&str> = out.lines().filter(|l| l.contains("bytes in") || l.contains("iters in")).collect();
    Ok(format!(
        "{} sent/{} received in {:.2} s wall here; guest: {}",
        r.sent,
        r.received,
        r.wall.as_secs_f64(),
        summary.join("; ")
    ))
}

fn perftest_guest_client(st: &Station, g: &Guest, p: &PtParams) -> Result<String, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    let cmd = format!(
        "{} -d rxe0 -x {} -F -s {} -n {} -p {port} --report_gbits 10.0.2.2",
        p.verb.tool(),
        g.gid_index,
        p.size,
        p.iters
    );
    std::thread::scope(|s| {
        let tool = s.spawn(|| g.run(&cmd, p.timeout));
        let ours = perftest::serve(st, l, p);
        let (rc, out) = tool.join().map_err(|_| "guest thread panicked".to_string())??;
        let r = ours.map_err(|e| format!("{e}; guest `{cmd}` -> {rc}: {}", out.trim()))?;
        if rc != 0 {
            return Err(format!("guest `{cmd}` exited {rc}: {}", out.trim()));
        }
        let line = out.lines().rev().find(|l| l.trim_start().starts_with(&p.size.to_string())).unwrap_or("").trim().to_string();
        Ok(format!("{r}; guest: `{line}`"))
    })
}

fn perftest_guest_server(st: &Station, g: &Guest, p: &PtParams) -> Result<String, String> {
    let hp = g.host_port(18515).ok_or("no forwarded port")?;
    let cmd = format!("{} -d rxe0 -x {} -F -s {} -n {} --report_gbits", p.verb.tool(), g.gid_index, p.size, p.iters);
    std::thread::scope(|s| {
        let tool = s.spawn(|| g.run(&cmd, p.timeout));
        let ours = wait_listening(g, 18515)
            .and_then(|_| perftest::client(st, format!("127.0.0.1:{hp}").parse().expect("addr"), p));
        let (rc, out) = tool.join().map_err(|_| "guest thread panicked".to_string())??;
        let r = ours.map_err(|e| format!("{e}; guest `{cmd}` -> {rc}: {}", out.trim()))?;
        if rc != 0 {
            return Err(format!("guest `{cmd}` exited {rc}: {}", out.trim()));
        }
        let line = out.lines().rev().find(|l| l.trim_start().starts_with(&p.size.to_string())).unwrap_or("").trim().to_string();
        Ok(format!("{r}; guest: `{line}`"))
    })
}

/// The guest's rxe counters; an error if any error counter is not zero.
fn rxe_counters(g: &Guest) -> Result<String, String> {
    let (rc, out) = g.run("cd /sys/class/infiniband/rxe0/ports/1/hw_counters && grep . *", Duration::from_secs(20))?;
    if rc != 0 {
        return Err(format!("cannot read rxe counters: {out}"));
    }
    let mut nonzero = Vec::new();
    let mut bad = Vec::new();
    let mut retries = Vec::new();
    for l in out.lines() {
        let Some((name, v)) = l.split_once(':') else { continue };
        let v: u64 = v.trim().parse().unwrap_or(0);
        if v == 0 {
            continue;
        }
        nonzero.push(format!("{name}={v}"));
        // Packet and completion counts are fine; everything else counts a problem.
        // Traffic counts and the attribute `lifespan` are no errors; retransmissions are
        // reported apart (see docs/interop.md: rxe's retransmit timer runs on wall-clock time).
        if matches!(name, "sent_pkts" | "rcvd_pkts" | "rdma_sends" | "rdma_recvs" | "lifespan" | "ack_deferred") {
            continue;
        }
        // RC recovery, not errors: retransmissions, and an RNR NAK (rxe had no receive posted yet;
        // perftest sets rnr_retry 7 for exactly this) with the out-of-sequence packets the
        // requester's go-back then sends. Reported apart, like ours (Station::counter_errors).
        if matches!(name, "completer_retry_err" | "duplicate_request" | "send_rnr_err" | "out_of_seq_request") {
            retries.push(format!("{name}={v}"));
            continue;
        }
        bad.push(format!("{name}={v}"));
    }
    if bad.is_empty() {
        let r = if retries.is_empty() { String::new() } else { format!(" (RC recovery: {})", retries.join(" ")) };
        Ok(format!("no error counters{r}; {}", nonzero.join(" ")))
    } else {
        Err(format!("rxe error counters: {} (all non-zero: {})", bad.join(" "), nonzero.join(" ")))
    }
}

/// Decode the bridge capture with tshark and check every RoCEv2 frame's ICRC.
fn check_captures(bridge_pcap: &Path) -> Result<String, String> {
    let frames = read_pcap(bridge_pcap)?;
    let mut roce = 0;
    for (i, f) in frames.iter().enumerate() {
        if f.len() > 14 + 20 + 8 && f[12..14] == [8, 0] && f[23] == 17 && f[36..38] == [0x12, 0xb7] {
            roce += 1;
            if let Some((want, got)) = crate::oracle::icrc_check(f) {
                if want != got {
                    return Err(format!("frame {} of {}: ICRC {got:#010x}, expected {want:#010x}", i + 1, bridge_pcap.display()));
                }
            }
        }
    }
    let decoded = match crate::oracle::tshark_decode(&nic_pcap_of(bridge_pcap)) {
        Ok(d) => format!("tshark decoded {} RoCEv2 frames", d.len()),
        Err(e) => format!("tshark not run: {e}"),
    };
    Ok(format!("{} frames on the bridge, {roce} RoCEv2 with good ICRC; {decoded}", frames.len()))
}

/// The NIC capture beside a bridge capture (RoCEv2 frames only, which the oracle decodes).
fn nic_pcap_of(bridge_pcap: &Path) -> PathBuf {
    bridge_pcap.with_file_name("nic.pcap")
}

fn read_pcap(p: &Path) -> Result<Vec<Vec<u8>>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut r = pcap_file::pcap::PcapReader::new(f).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        out.push(pkt.map_err(|e| format!("{}: {e}", p.display()))?.data.into_owned());
    }
    Ok(out)
}
