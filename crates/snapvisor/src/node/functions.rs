//! Guest images and requests: a built-in function or the user's own ELF, and the bytes
//! an invocation hands to the guest.

use super::NodeError;
use serde::Serialize;
use std::borrow::Cow;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest guest image or input file read from disk (far above any real guest; a bound so
/// that a huge or endless file is refused instead of read).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Which guest to boot.
#[derive(Clone, Debug)]
pub enum ImageRef {
    /// A built-in function, by name.
    Function(String),
    /// A static ELF built outside the tree.
    File(PathBuf),
}

/// A guest image ready to boot.
#[derive(Clone, Debug)]
pub struct Image {
    /// Function name (built-in) or the file's stem.
    pub name: String,
    /// The ELF.
    pub elf: Cow<'static, [u8]>,
    /// Whether it is a built-in function (whose host computation the answer can be checked against).
    pub builtin: bool,
}

impl Image {
    /// Resolves `image` to its bytes.
    pub fn load(image: &ImageRef) -> Result<Self, NodeError> {
        match image {
            ImageRef::Function(name) => {
                let found = snapvisor_guest_images::get(name)
                    .filter(|i| i.function)
                    .ok_or_else(|| NodeError::UnknownFunction(name.clone()))?;
                Ok(Image { name: name.clone(), elf: Cow::Borrowed(found.elf), builtin: true })
            }
            ImageRef::File(path) => {
                let elf = read_file(path)?;
                let name = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
                Ok(Image { name, elf: Cow::Owned(elf), builtin: false })
            }
        }
    }
}

/// What an invocation gets as its request.
#[derive(Clone, Debug, Default)]
pub enum Input {
    /// The function's default request (empty for a user's image).
    #[default]
    Default,
    /// These bytes.
    Literal(Vec<u8>),
    /// The contents of a file.
    File(PathBuf),
}

impl Input {
    /// The request bytes for `function` (a built-in name, or a user image's name).
    pub fn request(&self, function: &str) -> Result<Vec<u8>, NodeError> {
        match self {
            Input::Default => Ok(snapvisor_functions::info(function)
                .map(|i| i.default_request.as_bytes().to_vec())
                .unwrap_or_default()),
            Input::Literal(bytes) => Ok(bytes.clone()),
            Input::File(path) => read_file(path),
        }
    }
}

/// A built-in function, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionInfo {
    /// Name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its default request.
    pub default_request: &'static str,
}

/// Every built-in function.
pub fn catalog() -> Vec<FunctionInfo> {
    snapvisor_functions::CATALOG
        .iter()
        .map(|i| FunctionInfo { name: i.name, description: i.description, default_request: i.default_request })
        .collect()
}

/// Reads a user-given file: a regular file of at most [`MAX_FILE_BYTES`] (FIFOs, devices
/// and directories are refused, so a read can neither block nor go on without end).
pub fn read_file(path: &Path) -> Result<Vec<u8>, NodeError> {
    let err = |source| NodeError::File { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} bytes, more than the {MAX_FILE_BYTES} allowed", meta.len()),
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "grew while being read")));
    }
    Ok(bytes)
}
