//! Guest images and requests: a built-in function or the user's own ELF, and the bytes
//! an invocation hands to the guest.

use super::NodeError;
use serde::Serialize;
use std::borrow::Cow;
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

/// What a request is for: a built-in function's default input differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An invocation (measured): input `B` by default.
    Measure,
    /// Recording working sets: input `A` by default (FaaSnap's two-input method).
    Record,
}

impl Role {
    /// The built-in input used when none is given.
    pub fn default_input(self) -> &'static str {
        match self {
            Role::Measure => snapvisor_functions::catalog::MEASURE_INPUT,
            Role::Record => snapvisor_functions::catalog::RECORD_INPUT,
        }
    }
}

/// What an invocation gets as its request.
#[derive(Clone, Debug, Default)]
pub enum Input {
    /// A built-in function's default input for the role; an empty request for a user's image.
    #[default]
    Default,
    /// A built-in function's input by name (`A`, `B`, `1`..`6`); for a user's image, literal text.
    Named(String),
    /// These bytes, whatever the function.
    Literal(Vec<u8>),
    /// The contents of a file.
    File(PathBuf),
}

/// A resolved request: its bytes and what to call it in reports.
#[derive(Clone, Debug)]
pub struct Request {
    /// The bytes the guest gets.
    pub bytes: Cow<'static, [u8]>,
    /// `A`, `B`, `1`..`6`, or a description of a literal request or a file.
    pub label: String,
}

impl Input {
    /// The request for `function` (a built-in name, or a user image's name) in `role`.
    pub fn resolve(&self, function: &str, role: Role) -> Result<Request, NodeError> {
        let builtin = snapvisor_functions::info(function);
        let literal = |bytes: Vec<u8>| Request {
            label: format!("literal request ({} bytes)", bytes.len()),
            bytes: Cow::Owned(bytes),
        };
        Ok(match (self, builtin) {
            (Input::Default, Some(info)) => named(info, role.default_input())?,
            (Input::Default, None) => Request { bytes: Cow::Borrowed(&[]), label: "empty request".into() },
            (Input::Named(name), Some(info)) => named(info, name)?,
            (Input::Named(text), None) => literal(text.clone().into_bytes()),
            (Input::Literal(bytes), _) => literal(bytes.clone()),
            (Input::File(path), _) => {
                let bytes = read_file(path)?;
                Request { label: format!("file {} ({} bytes)", path.display(), bytes.len()), bytes: Cow::Owned(bytes) }
            }
        })
    }
}

fn named(info: &'static snapvisor_functions::Info, name: &str) -> Result<Request, NodeError> {
    let input = info
        .input(name)
        .ok_or_else(|| NodeError::UnknownInput { function: info.name.to_string(), input: name.to_string() })?;
    Ok(Request { bytes: Cow::Borrowed(input.request), label: input.name.to_string() })
}

/// Checks that a built-in input that needs more memory than most (`mmap`'s larger inputs,
/// `read-list`'s longest walk) gets it.
pub fn check_fits(function: &str, request: &Request, mem_size: u64) -> Result<(), NodeError> {
    use snapvisor_functions::catalog::TESTED_MEM_MIB;
    let needs = snapvisor_functions::info(function)
        .and_then(|i| i.input(&request.label))
        .filter(|i| i.mem_mib > TESTED_MEM_MIB)
        .map(|i| i.mem_mib << 20);
    match needs {
        Some(needs) if needs > mem_size => Err(NodeError::Invalid(format!(
            "{function} input {} needs {} MiB of guest memory, the VM has {} MiB",
            request.label,
            needs >> 20,
            mem_size >> 20
        ))),
        _ => Ok(()),
    }
}

/// One built-in input, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct InputListing {
    /// `A`, `B`, `1`..`6`.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Bytes of the request.
    pub bytes: usize,
    /// Guest memory it needs, MiB.
    pub mem_mib: u64,
}

/// What a built-in function takes, in words, and its inputs.
pub fn describe(info: &snapvisor_functions::Info) -> (String, Vec<InputListing>) {
    use snapvisor_functions::RequestKind;
    let request = match info.request {
        RequestKind::Empty => "none (any request is ignored)".into(),
        RequestKind::Params { format } => format!("JSON parameters {format}"),
        RequestKind::File { what } => format!("the raw bytes of {what}"),
    };
    let inputs = info
        .inputs
        .iter()
        .map(|x| InputListing { name: x.name, description: x.description, bytes: x.size(), mem_mib: x.mem_mib })
        .collect();
    (request, inputs)
}

/// Reads a user-given file: a regular file of at most [`MAX_FILE_BYTES`] (FIFOs, devices
/// and directories are refused, so a read can neither block nor go on without end).
pub fn read_file(path: &Path) -> Result<Vec<u8>, NodeError> {
    Ok(snapvisor_vmm::files::read_user_file(path, MAX_FILE_BYTES)?)
}
