//! Generates include/directmem.h from src/ffi.rs with cbindgen. The header is committed; the test
//! `header_is_up_to_date` fails when a change to the C ABI was not followed by a commit of it.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    // The version is Cargo.toml's, stated once: in the header (for the compiler), in dm_version()
    // (for the running program) and in the soname (for the dynamic linker).
    let version = |part: &str| std::env::var(format!("CARGO_PKG_VERSION_{part}")).unwrap().parse::<u32>().unwrap();
    let (major, minor, patch) = (version("MAJOR"), version("MINOR"), version("PATCH"));
    config.after_includes = Some(format!(
        "\n/* The version this header belongs to; dm_version() returns DM_VERSION_NUMBER of the library\n * \
         actually loaded. */\n#define DM_VERSION_MAJOR {major}\n#define DM_VERSION_MINOR {minor}\n\
         #define DM_VERSION_PATCH {patch}\n\
         #define DM_VERSION_NUMBER (DM_VERSION_MAJOR * 10000 + DM_VERSION_MINOR * 100 + DM_VERSION_PATCH)\n"
    ));
    // Binaries record libdirectmem.so.MAJOR: a later minor or patch release is a drop-in upgrade.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdirectmem.so.{major}");
    // Never unloaded by dlclose: threads that end call back into it (src/allocators/small/thread_heaps.rs),
    // and blocks it handed out may outlive any handle to it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi.rs"))
        .generate()
        .expect("generate include/directmem.h");
    bindings.write_to_file(crate_dir.join("include/directmem.h"));
}
