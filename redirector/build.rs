//! Embeds the eBPF object into the daemon when `REDIRECTOR_EBPF_OBJECT` names
//! it at build time (`cargo xtask build` sets it). Without it an empty file is
//! embedded and the daemon looks for the object at run time instead.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=REDIRECTOR_EBPF_OBJECT");
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        panic!("OUT_DIR is not set: build.rs must run under cargo");
    };
    let dest = out_dir.join("redirector-ebpf.o");
    let source = env::var_os("REDIRECTOR_EBPF_OBJECT").map(PathBuf::from);
    match source {
        Some(src) if src.is_file() => {
            println!("cargo:rerun-if-changed={}", src.display());
            if let Err(e) = fs::copy(&src, &dest) {
                panic!("copying {} to {}: {e}", src.display(), dest.display());
            }
        }
        other => {
            if let Some(src) = other {
                // Rebuild once the object appears.
                println!("cargo:rerun-if-changed={}", src.display());
                println!(
                    "cargo:warning=REDIRECTOR_EBPF_OBJECT={} does not exist; no eBPF object embedded",
                    src.display()
                );
            }
            write_empty(&dest);
        }
    }
}

fn write_empty(dest: &Path) {
    if let Err(e) = fs::write(dest, []) {
        panic!("writing {}: {e}", dest.display());
    }
}
