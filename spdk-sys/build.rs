//! Finds an installed SPDK, links it, and generates the bindings.
//!
//! Where: `SPDK_DIR` (an install prefix or a built source tree) when set,
//! otherwise pkg-config's own search path (`PKG_CONFIG_PATH`). What:
//! `spdk_nvme` (the driver), `spdk_env_dpdk` (its environment, which pulls
//! in the DPDK libraries) and `spdk_sock_posix` (the socket module the
//! NVMe-oF/TCP transport uses).
//!
//! How: SPDK registers transports, socket modules and its environment from
//! static constructors that nothing references by name, so its static
//! libraries are linked whole (`+whole-archive`), as SPDK's own makefiles
//! do. A shared-library install is linked as is.
//!
//! Also compiled here, against the same headers: `shim/shim.c`, small C
//! functions for what SPDK gives only as macros, inline helpers or fields
//! of anonymous unions, so that the Rust side never reaches into a
//! bindgen-named `__bindgen_anon_*` member. bindgen's layout checks stay
//! on: each generated struct's size, alignment and field offsets are
//! asserted at compile time against what clang computed from the headers.

use std::env;
use std::path::PathBuf;

const MODULES: &[&str] = &[
    "spdk_nvme",
    "spdk_env_dpdk",
    "spdk_sock_posix",
    "spdk_syslibs",
];

fn main() {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/shim.c");

    if let Ok(dir) = env::var("SPDK_DIR") {
        let dir = PathBuf::from(dir);
        let mut paths: Vec<PathBuf> = ["lib/pkgconfig", "build/lib/pkgconfig"]
            .iter()
            .map(|p| dir.join(p))
            .filter(|p| p.is_dir())
            .collect();
        if paths.is_empty() {
            panic!(
                "SPDK_DIR={}: no lib/pkgconfig or build/lib/pkgconfig in it; point it at an SPDK install prefix or a built SPDK tree",
                dir.display()
            );
        }
        if let Ok(old) = env::var("PKG_CONFIG_PATH") {
            paths.extend(env::split_paths(&old));
        }
        let joined = env::join_paths(paths).expect("PKG_CONFIG_PATH");
        // A build script runs on one thread: changing its environment is fine.
        env::set_var("PKG_CONFIG_PATH", joined);
    }

    let probe = |statik: bool| {
        pkg_config::Config::new()
            .cargo_metadata(false)
            .statik(statik)
            .probe(&MODULES.join(" "))
    };
    let static_libs = probe(false).is_ok_and(|l| {
        l.link_paths
            .iter()
            .any(|p| p.join("libspdk_nvme.a").is_file())
    });
    let lib = probe(static_libs).unwrap_or_else(|e| {
            panic!(
                "SPDK not found: the `spdk` feature needs an installed SPDK that pkg-config can find \
                 (modules {MODULES:?}; set PKG_CONFIG_PATH or SPDK_DIR). See README, \"Bare metal\".\n{e}"
            )
        });

    // `spdk_env_opts.opts_size` (SPDK >= 24.09), for the tests that check
    // the shim fills it.
    println!("cargo::rustc-check-cfg=cfg(spdk_env_opts_size)");
    if spdk_version(&lib.include_paths).is_some_and(|v| v >= (24, 9)) {
        println!("cargo:rustc-cfg=spdk_env_opts_size");
    }

    // Before SPDK's libraries, which the shim's archive calls into.
    let mut shim = cc::Build::new();
    shim.file("shim/shim.c")
        .includes(&lib.include_paths)
        .warnings(true)
        .extra_warnings(true);
    for (k, v) in &lib.defines {
        shim.define(k, v.as_deref());
    }
    shim.compile("spdk_sys_shim");

    for p in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", p.display());
    }
    for name in &lib.libs {
        let archive = lib
            .link_paths
            .iter()
            .any(|p| p.join(format!("lib{name}.a")).is_file());
        if name.starts_with("spdk_") && static_libs && archive {
            println!("cargo:rustc-link-lib=static:+whole-archive,-bundle={name}");
        } else if archive && !has_shared(&lib.link_paths, name) {
            println!("cargo:rustc-link-lib=static:-bundle={name}");
        } else {
            println!("cargo:rustc-link-lib=dylib={name}");
        }
    }
    for arg in &lib.ld_args {
        println!("cargo:rustc-link-arg=-Wl,{}", arg.join(","));
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function(
            "spdk_(env|nvme|zmalloc|dma|free|unaffinitize|malloc|strerror|vtophys).*",
        )
        .allowlist_function("spdk_sys_.*")
        .allowlist_type("spdk_nvme.*")
        .allowlist_type("spdk_env_opts")
        .allowlist_var("SPDK_(ENV|MALLOC|NVME|VERSION).*")
        // Packed structs holding aligned members cannot be expressed in
        // Rust; nvkv does not look inside these, so they stay opaque.
        .opaque_type(
            "spdk_nvme_(sgl_descriptor|ctrlr_data|health_information_page|tcp_cmd|tcp_rsp)",
        )
        // A bitfield run after a plain byte, mixing uint8_t and uint16_t
        // units, is laid out wrongly by bindgen (6 bytes where C has 4; the
        // layout checks below catch it). Opaque, it keeps C's size and
        // alignment, and so do spdk_nvme_cmd and the others holding it
        // (with its inner struct, which the allowlist above names too).
        .opaque_type("spdk_nvme_feat_async_event_configuration.*")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for inc in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", inc.display()));
    }
    for (k, v) in &lib.defines {
        builder = builder.clang_arg(match v {
            Some(v) => format!("-D{k}={v}"),
            None => format!("-D{k}"),
        });
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    builder
        .generate()
        .expect("bindgen failed on SPDK's headers (is libclang installed? apt-get install libclang-dev)")
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");
}

fn has_shared(paths: &[PathBuf], name: &str) -> bool {
    paths
        .iter()
        .any(|p| p.join(format!("lib{name}.so")).exists())
}

/// SPDK's (major, minor) version, from `spdk/version.h`.
fn spdk_version(include_paths: &[PathBuf]) -> Option<(u32, u32)> {
    let text = include_paths
        .iter()
        .find_map(|p| std::fs::read_to_string(p.join("spdk/version.h")).ok())?;
    let define = |name: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.next()?.parse::<u32>().ok())
                .flatten()
        })
    };
    Some((define("SPDK_VERSION_MAJOR")?, define("SPDK_VERSION_MINOR")?))
}
