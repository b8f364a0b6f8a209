//! Build script of the guest binaries in this workspace: the SDK's link setup.
fn main() {
    snapvisor_sdk_build::configure();
}
