//! Links the system OpenBLAS for the training GEMMs when it is installed (Debian:
//! `libopenblas-dev`), and says so in a build warning when it is not: the crate then builds
//! with the `gemm` crate alone. `DEMORECON_OPENBLAS=0` builds without it on purpose.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(openblas)");
    println!("cargo::rerun-if-env-changed=DEMORECON_OPENBLAS");
    println!("cargo::rerun-if-env-changed=LIBRARY_PATH");
    if std::env::var("DEMORECON_OPENBLAS").as_deref() == Ok("0") {
        return;
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let multiarch = match target.split('-').collect::<Vec<_>>().as_slice() {
        [arch, _, os, env, ..] => format!("{arch}-{os}-{env}"),
        _ => String::new(),
    };
    let mut dirs: Vec<String> = std::env::var("LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    for dir in [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/opt/homebrew/opt/openblas/lib",
    ] {
        if !multiarch.is_empty() {
            dirs.push(format!("{dir}/{multiarch}"));
        }
        dirs.push(dir.to_string());
    }
    let found = dirs.iter().find(|dir| {
        ["libopenblas.so", "libopenblas.dylib"]
            .iter()
            .any(|lib| Path::new(dir).join(lib).exists())
    });
    match found {
        Some(dir) => {
            println!("cargo::rustc-link-search=native={dir}");
            println!("cargo::rustc-cfg=openblas");
        }
        None => println!(
            "cargo::warning=libopenblas not found (Debian: apt-get install libopenblas-dev): \
             training runs on the gemm crate's kernels"
        ),
    }
}
