// SPDX-License-Identifier: Apache-2.0
//! Build script of the testbench: Verilates the RTL (`rtl/*.sv`, top module `rnic_top`) into
//! `OUT_DIR/vl`, compiles the generated C++, the Verilator runtime (with the FST writer) and the
//! cxx bridge of `src/rtl.rs` + `csrc/rnic_sim.cc` into one static library.
//!
//! * The Verilated C++ is compiled at `-O2` in every profile (at `-O0` the model runs ~12x
//!   slower) and without debug info, in parallel on `NUM_JOBS` threads.
//! * `RNIC_RTL_DIR` overrides the RTL directory (default `../rtl`), e.g. to build against a
//!   stand-in while the real RTL is being written.
//! * `RNIC_VERILATOR` overrides the `verilator` executable.

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
    println!("cargo:rerun-if-changed={}", rtl_dir.display());
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=src/rtl.rs");
    println!("cargo:rerun-if-changed=build.rs");

    let vl_root = verilator_root(&verilator);
    let sources = rtl_sources(&rtl_dir);
    let mdir = out.join("vl");
    verilate(&verilator, &sources, &mdir);
    let cpp = generated_cpp(&mdir, &vl_root);

    let jobs = env::var("NUM_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or(2)
        .clamp(1, 16);
    let objects = compile_parallel(&cpp, &mdir, &vl_root, jobs);

    let mut bridge = cxx_build::bridge("src/rtl.rs");
    configure(&mut bridge, &mdir, &vl_root);
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
    let output = match Command::new(verilator).arg("--getenv").arg("VERILATOR_ROOT").output() {
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
        .filter(|p| !PACKAGES.iter().any(|pkg| p.file_name().is_some_and(|n| n == *pkg)))
        .collect();
    others.sort();
    if !rtl_dir.join(format!("{TOP}.sv")).is_file() {
        panic!(
            "{}/{TOP}.sv does not exist yet: the testbench needs the RTL top level (or set \
             RNIC_RTL_DIR to a directory with a stand-in)",
            rtl_dir.display()
        );
    }
    let mut sources = Vec::new();
    for pkg in PACKAGES {
        let p = rtl_dir.join(pkg);
        if !p.is_file() {
            panic!("{} is missing: run `make regs` / restore the package", p.display());
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

/// Runs `verilator --cc` into a fresh `mdir`.
fn verilate(verilator: &str, sources: &[PathBuf], mdir: &Path) {
    if mdir.exists() {
        fs::remove_dir_all(mdir)
            .unwrap_or_else(|e| panic!("cannot clean {}: {e}", mdir.display()));
    }
    fs::create_dir_all(mdir).unwrap_or_else(|e| panic!("cannot create {}: {e}", mdir.display()));
    let output = Command::new(verilator)
        .args(["--cc", "-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal"])
        .args(["--output-split", "20000", "--trace-fst", "--assert", "--threads", "1"])
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

/// The C++ files the generated `V<TOP>_classes.mk` lists: the model's classes in `mdir`, the
/// runtime (`verilated`, `verilated_threads`, `verilated_fst_c`, ...) in the Verilator root.
fn generated_cpp(mdir: &Path, vl_root: &Path) -> Vec<PathBuf> {
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
        files.push(path);
    }
    if files.is_empty() {
        panic!("no C++ files listed in {}", mk_path.display());
    }
    files
}

/// Flags shared by every C++ compile: `-O2` in every profile, no debug info, Verilator's flags.
fn configure(build: &mut cc::Build, mdir: &Path, vl_root: &Path) {
    build
        .cpp(true)
        .std("gnu++17")
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .include(mdir)
        .include(vl_root.join("include"))
        .include(vl_root.join("include/vltstd"))
        .define("VM_COVERAGE", "0")
        .define("VM_SC", "0")
        .define("VM_TRACE", "1")
        .define("VM_TRACE_FST", "1")
        .define("VM_TRACE_VCD", "0")
        .define("VL_USER_STOP", None)
        .define("VL_USER_FATAL", None)
        .define("VL_USER_FINISH", None);
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
}

/// Compiles `files` on `jobs` threads (largest files first, balanced by size) and returns the
/// object files. (cc's own `parallel` feature is not enabled in this workspace.)
fn compile_parallel(files: &[PathBuf], mdir: &Path, vl_root: &Path, jobs: usize) -> Vec<PathBuf> {
    let mut sized: Vec<(u64, PathBuf)> = files
        .iter()
        .map(|f| (fs::metadata(f).map(|m| m.len()).unwrap_or(0), f.clone()))
        .collect();
    sized.sort_by(|a, b| b.0.cmp(&a.0));
    let jobs = jobs.min(sized.len()).max(1);
    let mut bins: Vec<(u64, Vec<PathBuf>)> = vec![(0, Vec::new()); jobs];
    for (size, f) in sized {
        let bin = bins.iter_mut().min_by_key(|b| b.0).expect("at least one bin");
        bin.0 += size.max(1);
        bin.1.push(f);
    }
    thread::scope(|s| {
        let handles: Vec<_> = bins
            .into_iter()
            .map(|(_, part)| {
                s.spawn(move || {
                    let mut b = cc::Build::new();
                    configure(&mut b, mdir, vl_root);
                    b.files(&part);
                    b.try_compile_intermediates()
                        .unwrap_or_else(|e| panic!("compiling the Verilated C++ failed: {e}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compile thread panicked"))
            .collect()
    })
}
