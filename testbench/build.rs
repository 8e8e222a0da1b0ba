// SPDX-License-Identifier: Apache-2.0
//! Build script of the testbench: Verilates the RTL (`rtl/*.sv`, top module `rnic_top`) into
//! `OUT_DIR/vl`, compiles the generated C++, the Verilator runtime (with the FST writer) and the
//! cxx bridge of `src/rtl.rs` + `csrc/rnic_sim.cc` into one static library.
//!
//! * The Verilated C++ that runs per cycle is compiled at `-O3` in every profile (at `-O0` the
//!   model runs ~12x slower; -O3 measured 13-15 % faster than -O2 once the shim evaluates the
//!   comb logic once per cycle, docs/bench.md); the run-once `*_SLOW` files at `-O0` (Verilator's `OPT_SLOW`);
//!   no debug info; in parallel on `NUM_JOBS` threads.
//! * `RNIC_RTL_DIR` overrides the RTL directory (default `../rtl`), e.g. to build against a
//!   stand-in while the real RTL is being written.
//! * `RNIC_VERILATOR` overrides the `verilator` executable.
//! * `RNIC_TRACE=0` builds without FST support (`--trace-fst` is otherwise always compiled in;
//!   the dump is opened only on request at run time).
//! * `RNIC_VERILATOR_FLAGS` adds Verilator options and `RNIC_CXXFLAGS` options to every C++
//!   compile of the model and the shim (both whitespace separated, after the defaults), for speed
//!   experiments (`make bench-sim`, docs/bench.md), e.g. `RNIC_CXXFLAGS="-O3 -march=native"`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

/// Top module name; the generated class is `V<TOP>`.
const TOP: &str = "rnic_top";
/// Packages that must come first on the Verilator command line, in this order.
const PACKAGES: &[&str] = &["rnic_reg_pkg.sv", "rnic_pkg.sv"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let rtl_dir = env::var_os("RNIC_RTL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../rtl"));
    let verilator = env::var("RNIC_VERILATOR").unwrap_or_else(|_| "verilator".to_string());

    println!("cargo:rerun-if-env-changed=RNIC_RTL_DIR");
    println!("cargo:rerun-if-env-changed=RNIC_VERILATOR");
    println!("cargo:rerun-if-env-changed=RNIC_TRACE");
    println!("cargo:rerun-if-env-changed=RNIC_VERILATOR_FLAGS");
    println!("cargo:rerun-if-env-changed=RNIC_CXXFLAGS");
    println!("cargo:rerun-if-changed={}", rtl_dir.display());
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=src/rtl.rs");
    println!("cargo:rerun-if-changed=build.rs");

    let trace = env::var("RNIC_TRACE").map_or(true, |v| v != "0");
    let vl_root = verilator_root(&verilator);
    let have_top = rtl_dir.join(format!("{TOP}.sv")).is_file();
    let sources = if have_top {
        rtl_sources(&rtl_dir)
    } else {
        println!(
            "cargo:warning={}/{TOP}.sv does not exist yet: building the testbench against a \
             stub, RtlNic::new will fail until the RTL top level exists",
            rtl_dir.display()
        );
        vec![write_stub(&out)]
    };
    let mdir = out.join("vl");
    verilate(&verilator, &sources, &mdir, trace);
    write_fast_edge(&mdir);
    let cpp = generated_cpp(&mdir, &vl_root);

    let jobs = env::var("NUM_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or(2)
        .clamp(1, 16);
    let objects = compile_parallel(&cpp, &mdir, &vl_root, jobs, trace);

    let mut bridge = cxx_build::bridge("src/rtl.rs");
    configure(&mut bridge, &mdir, &vl_root, trace);
    if !have_top {
        bridge.define("RNIC_NO_RTL", None);
    }
    bridge
        .file("csrc/rnic_sim.cc")
        .include(&manifest)
        .objects(&objects)
        .compile("rnic_sim");

    println!("cargo:rustc-link-lib=z");
    println!("cargo:rustc-link-lib=pthread");
}

/// Returns `VERILATOR_ROOT`, failing with an install hint when Verilator is missing.
fn verilator_root(verilator: &str) -> PathBuf {
    let missing = "verilator not found: run `make deps` (apt-get install -y verilator)";
    let output = match Command::new(verilator)
        .arg("--getenv")
        .arg("VERILATOR_ROOT")
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "{missing}\n(`{verilator} --getenv VERILATOR_ROOT` failed: {})",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("{missing}\n(could not run `{verilator}`: {e})"),
    };
    let root = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !root.join("include/verilated.cpp").is_file() {
        panic!(
            "the Verilator runtime was not found under {}: reinstall Verilator (apt-get install -y \
             verilator) or set RNIC_VERILATOR to a complete installation",
            root.display()
        );
    }
    root
}

/// The SystemVerilog sources in command-line order: the packages, then every other `*.sv`
/// sorted by name, then any `lint/*.vlt` waiver files.
fn rtl_sources(rtl_dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(rtl_dir).unwrap_or_else(|e| {
        panic!(
            "cannot read the RTL directory {}: {e} (set RNIC_RTL_DIR to the directory holding \
             rnic_top.sv)",
            rtl_dir.display()
        )
    });
    let mut others: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sv"))
        .filter(|p| {
            !PACKAGES
                .iter()
                .any(|pkg| p.file_name().is_some_and(|n| n == *pkg))
        })
        .collect();
    others.sort();
    let mut sources = Vec::new();
    for pkg in PACKAGES {
        let p = rtl_dir.join(pkg);
        if !p.is_file() {
            panic!(
                "{} is missing: run `make regs` / restore the package",
                p.display()
            );
        }
        sources.push(p);
    }
    sources.extend(others);
    if let Ok(lint) = fs::read_dir(rtl_dir.join("lint")) {
        let mut vlt: Vec<PathBuf> = lint
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "vlt"))
            .collect();
        vlt.sort();
        // Configuration files go first so their waivers apply to every source.
        for (i, v) in vlt.into_iter().enumerate() {
            sources.insert(i, v);
        }
    }
    sources
}

/// Writes a port-compatible stub `rnic_top` (every output 0) for building before the RTL exists;
/// the shim is compiled with `RNIC_NO_RTL` so that creating a simulator fails with an explanation.
fn write_stub(out: &Path) -> PathBuf {
    const STUB: &str = "// Generated by testbench/build.rs: stand-in used while rtl/rnic_top.sv is missing.
/* verilator lint_off UNUSEDSIGNAL */
module rnic_top #(parameter int unsigned DataW = 512) (
  input  logic clk_i, rst_ni,
  input  logic mmio_req_valid_i, output logic mmio_req_ready_o, input logic mmio_req_write_i,
  input  logic [7:0] mmio_req_func_i, input logic [31:0] mmio_req_addr_i,
  input  logic [63:0] mmio_req_wdata_i, output logic mmio_rsp_valid_o,
  output logic [63:0] mmio_rsp_rdata_o,
  output logic dma_rd_req_valid_o, input logic dma_rd_req_ready_i,
  output logic [7:0] dma_rd_req_tag_o, dma_rd_req_func_o, output logic [63:0] dma_rd_req_addr_o,
  output logic [12:0] dma_rd_req_len_o,
  input  logic dma_rd_cpl_valid_i, input logic [7:0] dma_rd_cpl_tag_i,
  input  logic [DataW-1:0] dma_rd_cpl_data_i, input logic dma_rd_cpl_last_i,
  output logic dma_wr_valid_o, input logic dma_wr_ready_i, output logic [7:0] dma_wr_func_o,
  output logic [63:0] dma_wr_addr_o, output logic [12:0] dma_wr_len_o,
  output logic [DataW-1:0] dma_wr_data_o, output logic dma_wr_last_o,
  output logic msix_valid_o, output logic [7:0] msix_func_o, output logic [15:0] msix_vector_o,
  output logic tx_tvalid_o, input logic tx_tready_i, output logic [DataW-1:0] tx_tdata_o,
  output logic [DataW/8-1:0] tx_tkeep_o, output logic tx_tlast_o,
  input  logic rx_tvalid_i, output logic rx_tready_o, input logic [DataW-1:0] rx_tdata_i,
  input  logic [DataW/8-1:0] rx_tkeep_i, input logic rx_tlast_i,
  output logic trace_valid_o, output logic [3:0] trace_kind_o, output logic [23:0] trace_qpn_o,
  output logic [7:0] trace_func_o, output logic [63:0] cycle_o
);
  assign {mmio_req_ready_o, mmio_rsp_valid_o, mmio_rsp_rdata_o} = '0;
  assign {dma_rd_req_valid_o, dma_rd_req_tag_o, dma_rd_req_func_o, dma_rd_req_addr_o, dma_rd_req_len_o} = '0;
  assign {dma_wr_valid_o, dma_wr_func_o, dma_wr_addr_o, dma_wr_len_o, dma_wr_data_o, dma_wr_last_o} = '0;
  assign {msix_valid_o, msix_func_o, msix_vector_o} = '0;
  assign {tx_tvalid_o, tx_tdata_o, tx_tkeep_o, tx_tlast_o, rx_tready_o} = '0;
  assign {trace_valid_o, trace_kind_o, trace_qpn_o, trace_func_o, cycle_o} = '0;
endmodule
";
    let dir = out.join("stub");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(format!("{TOP}.sv"));
    fs::write(&path, STUB).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Runs `verilator --cc` into a fresh `mdir`.
fn verilate(verilator: &str, sources: &[PathBuf], mdir: &Path, trace: bool) {
    if mdir.exists() {
        fs::remove_dir_all(mdir).unwrap_or_else(|e| panic!("cannot clean {}: {e}", mdir.display()));
    }
    fs::create_dir_all(mdir).unwrap_or_else(|e| panic!("cannot create {}: {e}", mdir.display()));
    let output = Command::new(verilator)
        .args([
            "--cc",
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "-Wno-fatal",
        ])
        .args(["--output-split", "20000", "--assert", "--threads", "1"])
        // Verilator 5's DFG optimiser makes this design's model slower: without it, two NICs
        // under traffic simulate 8-10 % more cycles per second (docs/bench.md, measured with
        // `make bench-sim`: 375,000 vs 341,000 fabric cycles/s).
        .arg("-fno-dfg")
        .args(if trace { &["--trace-fst"][..] } else { &[][..] })
        .args(env_words("RNIC_VERILATOR_FLAGS"))
        .args(["--top-module", TOP, "--prefix", &format!("V{TOP}"), "-Mdir"])
        .arg(mdir)
        .args(sources)
        .output()
        .unwrap_or_else(|e| panic!("could not run `{verilator}`: {e}"));
    if !output.status.success() {
        panic!(
            "verilator failed on the RTL (fix the RTL errors below; `make lint` shows the same):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Writes `mdir/rnic_fast_edge.h`: `rnic_eval_nba_edge(root)`, the generated NBA region function
/// (`V<TOP>___024root___eval_nba`) without its calls to functions whose body is identical to a
/// function the input-combinational (ico) region runs, for `RnicSim::rise` (csrc/rnic_sim.cc).
///
/// Why that is exact: Verilator 5.006 evaluates every combinational block that reads a top-level
/// input in three copies (ico, act and nba regions, identical bodies). After a rising edge the
/// NBA copies recompute those blocks from the new register values, but `tick` reads nothing
/// before its next `eval()`, whose ico region runs all of them again on its first iteration
/// (with the new inputs), so the NBA copies' results are always overwritten unread. Nothing is
/// dropped unless its body is textually the same as an ico function's (labels renumbered); if the
/// generated code does not have the expected shape, the header calls the full `_eval_nba`.
fn write_fast_edge(mdir: &Path) {
    let root = format!("V{TOP}___024root");
    let mut sources = String::new();
    if let Ok(dir) = fs::read_dir(mdir) {
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
            .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().contains("Slow")))
            .collect();
        files.sort();
        for f in files {
            sources += &fs::read_to_string(&f).unwrap_or_default();
            sources.push('\n');
        }
    }
    let fallback = |why: &str| {
        println!("cargo:warning=rnic_fast_edge.h: {why}; the rising edge runs the full NBA region");
        format!(
            "// Generated by testbench/build.rs ({why}).\n#pragma once\n\
             void {root}___eval_nba({root}* vlSelf);\n\
             inline void rnic_eval_nba_edge({root}* vlSelf) {{ {root}___eval_nba(vlSelf); }}\n"
        )
    };
    let header = match fast_edge_source(&sources, &root) {
        Ok(h) => h,
        Err(why) => fallback(&why),
    };
    let path = mdir.join("rnic_fast_edge.h");
    fs::write(&path, header).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The body of the function `name` defined in `src` (from the line after its opening line up to
/// the closing `}` at the start of a line), or None.
fn function_body<'a>(src: &'a str, root: &str, name: &str) -> Option<&'a str> {
    let sig = format!("void {root}___{name}({root}* vlSelf) {{\n");
    let start = src.find(&sig)? + sig.len();
    let end = src[start..].find("\n}\n")? + start;
    Some(&src[start..end])
}

/// The names of the functions `{root}___NAME(vlSelf);` called in `body`, in order, with the lines.
fn called_functions<'a>(body: &'a str, root: &str) -> Vec<(&'a str, &'a str)> {
    let prefix = format!("{root}___");
    body.lines()
        .filter_map(|line| {
            let t = line.trim();
            let name = t.strip_prefix(&prefix)?.strip_suffix("(vlSelf);")?;
            Some((line, name))
        })
        .collect()
}

/// A function body with its own name and label numbers removed, for comparison.
fn normalized(body: &str, name: &str) -> String {
    let body = body.replace(name, "FN");
    let mut out = String::with_capacity(body.len());
    let mut rest = body.as_str();
    while let Some(i) = rest.find("__Vlabel") {
        out += &rest[..i + 8];
        rest = rest[i + 8..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out + rest
}

/// The header text of write_fast_edge, or why it cannot be made.
fn fast_edge_source(src: &str, root: &str) -> Result<String, String> {
    let ico = function_body(src, root, "eval_ico").ok_or("no _eval_ico in the generated code")?;
    let nba = function_body(src, root, "eval_nba").ok_or("no _eval_nba in the generated code")?;
    let mut ico_bodies = Vec::new();
    for (_, name) in called_functions(ico, root) {
        let body = function_body(src, root, name)
            .ok_or_else(|| format!("the body of ico function {name} was not found"))?;
        ico_bodies.push(normalized(body, name));
    }
    let mut kept = String::new();
    let mut decls = String::new();
    let mut dropped = Vec::new();
    for line in nba.lines() {
        let call = called_functions(line, root);
        if let Some(&(_, name)) = call.first() {
            let body = function_body(src, root, name)
                .ok_or_else(|| format!("the body of NBA function {name} was not found"))?;
            if ico_bodies.contains(&normalized(body, name)) {
                dropped.push(name.to_string());
                continue;
            }
            decls += &format!("void {root}___{name}({root}* vlSelf);\n");
        }
        kept += line;
        kept.push('\n');
    }
    if dropped.is_empty() {
        return Err("no NBA function duplicates an ico function".into());
    }
    Ok(format!(
        "// Generated by testbench/build.rs (write_fast_edge): {root}___eval_nba without the calls\n\
         // of {} (identical to functions of the ico region, which reruns them before any read).\n\
         #pragma once\n{decls}\
         inline void rnic_eval_nba_edge({root}* vlSelf) {{\n{kept}}}\n",
        dropped.join(", ")
    ))
}

/// The whitespace-separated words of environment variable `name` (none when unset).
fn env_words(name: &str) -> Vec<String> {
    env::var(name).map(|v| v.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

/// A C++ file to compile; `slow` files (Verilator's `VM_*_SLOW`: construction, initial blocks,
/// trace declarations) run once and are compiled at `-O0` like Verilator's own makefile does
/// (`OPT_SLOW`); everything that runs per cycle is compiled at `-O3`.
struct CppFile {
    path: PathBuf,
    slow: bool,
}

/// The C++ files the generated `V<TOP>_classes.mk` lists: the model's classes in `mdir`, the
/// runtime (`verilated`, `verilated_threads`, `verilated_fst_c`, ...) in the Verilator root.
fn generated_cpp(mdir: &Path, vl_root: &Path) -> Vec<CppFile> {
    let mk_path = mdir.join(format!("V{TOP}_classes.mk"));
    let mk = fs::read_to_string(&mk_path)
        .unwrap_or_else(|e| panic!("verilator did not write {}: {e}", mk_path.display()));
    let mut files = Vec::new();
    let mut var = String::new();
    for line in mk.lines() {
        let line = line.trim();
        let item = if let Some((lhs, rhs)) = line.split_once("+=") {
            var = lhs.trim().to_string();
            rhs.trim()
        } else if line.starts_with('#') || line.contains('=') {
            var.clear();
            continue;
        } else {
            line
        };
        let item = item.trim_end_matches('\\').trim();
        if item.is_empty() || var.is_empty() {
            continue;
        }
        let path = if var.starts_with("VM_GLOBAL") {
            vl_root.join("include").join(format!("{item}.cpp"))
        } else if var.starts_with("VM_CLASSES") || var.starts_with("VM_SUPPORT") {
            mdir.join(format!("{item}.cpp"))
        } else {
            continue;
        };
        files.push(CppFile {
            path,
            slow: var.ends_with("_SLOW"),
        });
    }
    if files.is_empty() {
        panic!("no C++ files listed in {}", mk_path.display());
    }
    files
}

/// The shim's directory.
fn csrc_dir() -> PathBuf {
    PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("csrc")
}

/// Flags shared by every C++ compile: `-O3` in every profile, no debug info, Verilator's flags.
fn configure(build: &mut cc::Build, mdir: &Path, vl_root: &Path, trace: bool) {
    let vm_trace = if trace { "1" } else { "0" };
    build
        .cpp(true)
        .std("gnu++17")
        .opt_level(3)
        .debug(false)
        .warnings(false)
        .include(mdir)
        .include(vl_root.join("include"))
        .include(vl_root.join("include/vltstd"))
        .define("VM_COVERAGE", "0")
        .define("VM_SC", "0")
        .define("VM_TRACE", vm_trace)
        .define("VM_TRACE_FST", vm_trace)
        .define("VM_TRACE_VCD", "0")
        .define("VL_USER_STOP", None)
        .define("VL_USER_FATAL", None)
        .define("VL_USER_FINISH", None)
        .define("VL_PRINTF", "rnic_vl_printf")
        .flag("-include")
        .flag(
            csrc_dir()
                .join("rnic_vl_printf.h")
                .to_str()
                .expect("UTF-8 path"),
        );
    for flag in [
        "-faligned-new",
        "-fcf-protection=none",
        "-Wno-bool-operation",
        "-Wno-sign-compare",
        "-Wno-uninitialized",
        "-Wno-unused-but-set-variable",
        "-Wno-unused-parameter",
        "-Wno-unused-variable",
        "-Wno-shadow",
        "-pthread",
    ] {
        build.flag(flag);
    }
    for flag in env_words("RNIC_CXXFLAGS") {
        build.flag(&flag);
    }
}

/// Compiles `files` on `jobs` threads (largest first, balanced by estimated cost) and returns the
/// object files. (cc's own `parallel` feature is not enabled in this workspace.)
fn compile_parallel(
    files: &[CppFile],
    mdir: &Path,
    vl_root: &Path,
    jobs: usize,
    trace: bool,
) -> Vec<PathBuf> {
    // Cost estimate: source size, a quarter of it for -O0 files.
    let mut sized: Vec<(u64, &CppFile)> = files
        .iter()
        .map(|f| {
            let len = fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
            (if f.slow { len / 4 } else { len }.max(1), f)
        })
        .collect();
    sized.sort_by_key(|s| std::cmp::Reverse(s.0));
    let jobs = jobs.min(sized.len()).max(1);
    let mut bins: Vec<(u64, Vec<&CppFile>)> = vec![(0, Vec::new()); jobs];
    for (cost, f) in sized {
        let bin = bins
            .iter_mut()
            .min_by_key(|b| b.0)
            .expect("at least one bin");
        bin.0 += cost;
        bin.1.push(f);
    }
    thread::scope(|s| {
        let handles: Vec<_> =
            bins.into_iter()
                .map(|(_, part)| {
                    s.spawn(move || {
                        let mut objects = Vec::new();
                        for slow in [false, true] {
                            let group: Vec<&Path> = part
                                .iter()
                                .filter(|f| f.slow == slow)
                                .map(|f| f.path.as_path())
                                .collect();
                            if group.is_empty() {
                                continue;
                            }
                            let mut b = cc::Build::new();
                            configure(&mut b, mdir, vl_root, trace);
                            if slow {
                                b.opt_level(0);
                            }
                            b.files(group);
                            objects.extend(b.try_compile_intermediates().unwrap_or_else(|e| {
                                panic!("compiling the Verilated C++ failed: {e}")
                            }));
                        }
                        objects
                    })
                })
                .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compile thread panicked"))
            .collect()
    })
}
