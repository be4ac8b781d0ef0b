//! Embeds libtorch's library directory (found by torch-sys, e.g. from the PyPI torch wheel
//! with `LIBTORCH_USE_PYTORCH=1`) as an rpath of this package's binaries and tests, so they
//! run without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        if os == "linux" || os == "macos" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
