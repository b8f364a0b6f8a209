//! The functions a node can run: the built-in ones, and guest images registered by name
//! (the daemon's `PUT /functions/NAME`), checked as ELF guests and stored atomically as
//! `DATA_DIR/images/NAME.elf`.

use super::functions::{describe, Image, ImageRef, InputListing, MAX_FILE_BYTES};
use super::store::{self, check_name};
use super::{Node, NodeError};
use serde::Serialize;
use snapvisor_vmm::loader::GuestImage;
use std::borrow::Cow;

/// A function the node can run, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionEntry {
    /// Name to run, snapshot or invoke it by.
    pub name: String,
    /// Built into snapvisor (else registered by a user).
    pub builtin: bool,
    /// What it does.
    pub description: String,
    /// What its request is (for a registered image: whatever the image expects).
    pub request: String,
    /// Its built-in inputs: `A` (records), `B` (measured), `1`..`6` (sensitivity: `2`
    /// records); none for a registered image.
    pub inputs: Vec<InputListing>,
    /// Bytes of its ELF image.
    pub image_bytes: u64,
    /// `xxh3:<hex>` of its ELF image (as recorded in its snapshots' manifests).
    pub image_digest: String,
}

impl FunctionEntry {
    fn registered(name: &str, elf: &[u8]) -> Self {
        FunctionEntry {
            name: name.to_string(),
            builtin: false,
            description: "registered guest image".into(),
            request: "whatever the image expects (--input-text, --input-file)".into(),
            inputs: Vec::new(),
            image_bytes: elf.len() as u64,
            image_digest: snapvisor_vmm::checksum::digest_bytes(elf),
        }
    }
}

/// Whether `name` is a built-in function (its name cannot be registered).
fn builtin(name: &str) -> bool {
    snapvisor_guest_images::get(name).is_some_and(|i| i.function)
}

fn file_name(name: &str) -> String {
    format!("{name}.elf")
}

impl Node {
    /// Every function: the built-in ones, then the registered images by name.
    pub fn functions(&self) -> Result<Vec<FunctionEntry>, NodeError> {
        let mut list: Vec<FunctionEntry> = snapvisor_functions::CATALOG
            .iter()
            .filter_map(|info| {
                let image = snapvisor_guest_images::get(info.name)?;
                let (request, inputs) = describe(info);
                Some(FunctionEntry {
                    name: info.name.into(),
                    builtin: true,
                    description: info.description.into(),
                    request,
                    inputs,
                    image_bytes: image.elf.len() as u64,
                    image_digest: snapvisor_vmm::checksum::digest_bytes(image.elf),
                })
            })
            .collect();
        let dir = self.data().images();
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".elf").map(str::to_string))
                .filter(|n| check_name("function", n).is_ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(NodeError::File { path: dir, source }),
        };
        names.sort();
        for name in names {
            // One unreadable entry (a planted link, a FIFO) does not hide the others.
            match self.image(&name) {
                Ok(image) => list.push(FunctionEntry::registered(&name, &image.elf)),
                Err(e) => tracing::warn!("registered image {name} left out of the listing: {e}"),
            }
        }
        Ok(list)
    }

    /// One function by name.
    pub fn function(&self, name: &str) -> Result<FunctionEntry, NodeError> {
        self.functions()?.into_iter().find(|f| f.name == name).ok_or_else(|| NodeError::UnknownFunction(name.into()))
    }

    /// The image of function `name`: built in, or registered.
    pub fn image(&self, name: &str) -> Result<Image, NodeError> {
        check_name("function", name)?;
        if builtin(name) {
            return Image::load(&ImageRef::Function(name.into()));
        }
        // The node's own file: a link planted there is refused, not followed.
        let path = self.data().images().join(file_name(name));
        match snapvisor_vmm::files::read_regular(&path, MAX_FILE_BYTES).map_err(NodeError::from) {
            Ok(elf) => Ok(Image { name: name.into(), elf: Cow::Owned(elf), builtin: false }),
            Err(e) if e.kind() == super::ErrorKind::NotFound => Err(NodeError::UnknownFunction(name.into())),
            Err(e) => Err(e),
        }
    }

    /// Registers (or replaces) the guest image `name`: at most [`MAX_FILE_BYTES`], a static
    /// x86-64 ELF executable that fits the guest layout (the checks every boot makes), not
    /// the name of a built-in function. Stored atomically.
    pub fn register_image(&self, name: &str, elf: &[u8]) -> Result<FunctionEntry, NodeError> {
        check_name("function", name)?;
        if builtin(name) {
            return Err(NodeError::Conflict(format!("`{name}` is a built-in function; pick another name")));
        }
        if elf.len() as u64 > MAX_FILE_BYTES {
            return Err(NodeError::Invalid(format!(
                "image of {} bytes is above the {MAX_FILE_BYTES} allowed",
                elf.len()
            )));
        }
        GuestImage::parse(elf, snapvisor_abi::layout::MAX_MEM_SIZE).map_err(snapvisor_vmm::Error::from)?;
        store::write_atomic(&self.data().images(), &file_name(name), elf)?;
        Ok(FunctionEntry::registered(name, elf))
    }

    /// Removes the registered image `name` (its snapshots stay).
    pub fn unregister_image(&self, name: &str) -> Result<(), NodeError> {
        check_name("function", name)?;
        if builtin(name) {
            return Err(NodeError::Conflict(format!("`{name}` is a built-in function and cannot be removed")));
        }
        let dir = self.data().images();
        if !dir.join(file_name(name)).is_file() {
            return Err(NodeError::UnknownFunction(name.into()));
        }
        store::remove_atomic(&dir, &file_name(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::data::DataDir;

    #[test]
    fn a_link_planted_among_the_images_is_refused_and_the_listing_goes_on() {
        let root = std::env::temp_dir().join(format!("snapvisor-images-{}", std::process::id()));
        let node = Node::new(DataDir::new(&root));
        let dir = node.data().images();
        std::fs::create_dir_all(&dir).unwrap();
        let secret = root.join("secret");
        std::fs::write(&secret, b"not for the API").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("planted.elf")).unwrap();
        let err = node.image("planted").expect_err("a link is not followed");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let listed = node.functions().expect("the listing survives a bad entry");
        assert!(listed.iter().any(|f| f.builtin) && !listed.iter().any(|f| f.name == "planted"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
