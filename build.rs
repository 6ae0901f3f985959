//! Generates include/directmem.h from src/ffi.rs with cbindgen. The header is committed; the test
//! `header_is_up_to_date` fails when a change to the C ABI was not followed by a commit of it.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi.rs"))
        .generate()
        .expect("generate include/directmem.h");
    bindings.write_to_file(crate_dir.join("include/directmem.h"));
}
