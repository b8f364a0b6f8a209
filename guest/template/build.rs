//! The link setup every snapvisor guest needs (static, non-PIE, at the ABI's image base).
fn main() {
    snapvisor_sdk_build::configure();
}
