//! Link arguments shared by every guest binary (used as `build = "../build.rs"`).
//! They turn rustc's default PIE link into a static, non-PIE ELF at the ABI's image base.
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
        "-Wl,-z,norelro",
        "-Wl,--no-dynamic-linker",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}
