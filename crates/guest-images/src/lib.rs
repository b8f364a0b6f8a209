//! The guest images built from `guest/` and embedded in the host binaries.
//!
//! `build.rs` runs cargo on the guest workspace, so building snapvisor builds its guests:
//! a fresh clone needs nothing but cargo.

/// One embedded guest ELF.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    /// Binary name in the guest workspace (for functions: the function's name).
    pub name: &'static str,
    /// Whether the image is a built-in function (as opposed to a test guest).
    pub function: bool,
    /// The static ELF.
    pub elf: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/images.rs"));

/// Every embedded image.
pub fn all() -> &'static [Image] {
    IMAGES
}

/// The embedded image called `name`.
pub fn get(name: &str) -> Option<&'static Image> {
    IMAGES.iter().find(|i| i.name == name)
}
