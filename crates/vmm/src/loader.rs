//! Guest images: validation of a static x86-64 ELF against the guest layout, and loading
//! it with linux-loader's ELF loader.
//!
//! A user's own image (`snapvisor run --image PATH`) goes through the same checks as the
//! built-in ones; anything that is not a static, non-PIE ELF64 x86-64 executable whose
//! segments all lie between `layout::IMAGE_BASE` and the end of guest memory is refused.

use crate::vstate::memory::GuestMemory;
use linux_loader::elf;
use linux_loader::loader::{Elf, KernelLoader};
use snapvisor_abi::{layout, HUGE_PAGE_SIZE};
use std::io::Cursor;

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not an ELF file, or a truncated one.
    #[error("not an ELF file (or truncated): {0}")]
    NotElf(&'static str),
    /// ELF of the wrong class, byte order or machine.
    #[error("not an ELF64 little-endian x86-64 image")]
    WrongMachine,
    /// Not an executable (e.g. a shared object or a PIE).
    #[error("ELF type {0} is not ET_EXEC: link the guest static and non-PIE")]
    NotExecutable(u16),
    /// Needs a dynamic linker.
    #[error("the image is dynamically linked (has PT_INTERP or PT_DYNAMIC); guests must be static")]
    Dynamic,
    /// A segment outside the part of guest memory images may use.
    #[error("segment {index} at {start:#x}..{end:#x} is outside the image area {base:#x}..{limit:#x}")]
    SegmentOutside {
        /// Program header index.
        index: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Image area start.
        base: u64,
        /// Image area end.
        limit: u64,
    },
    /// A segment whose virtual and physical addresses differ (the guest runs identity-mapped).
    #[error("segment {0} has p_vaddr != p_paddr; guests run identity-mapped")]
    NotIdentity(usize),
    /// A segment larger in the file than in memory, or whose bytes lie past the file end.
    #[error("segment {0} is malformed (file size above memory size, or past the end of the file)")]
    BadSegment(usize),
    /// No loadable segment.
    #[error("the image has no PT_LOAD segment")]
    Empty,
    /// The entry point is not inside an executable segment.
    #[error("entry point {0:#x} is not inside an executable segment")]
    BadEntry(u64),
    /// linux-loader refused or failed to load it.
    #[error("loading the image failed")]
    Load(#[source] linux_loader::loader::Error),
}

/// A validated guest image.
#[derive(Clone, Debug)]
pub struct GuestImage<'a> {
    elf: &'a [u8],
    entry: u64,
    end: u64,
}

const PF_X: u32 = 1;

fn read<T: Copy + Default>(bytes: &[u8], offset: u64) -> Option<T> {
    let offset = usize::try_from(offset).ok()?;
    let end = offset.checked_add(std::mem::size_of::<T>())?;
    let src = bytes.get(offset..end)?;
    let mut value = T::default();
    // SAFETY: T is one of linux-loader's plain-old-data ELF header structs (any bit pattern
    // is valid) and `src` holds exactly size_of::<T>() bytes.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), (&mut value as *mut T).cast::<u8>(), src.len()) };
    Some(value)
}

impl<'a> GuestImage<'a> {
    /// Validates `elf` for a guest with `mem_size` bytes of memory.
    pub fn parse(elf: &'a [u8], mem_size: u64) -> Result<Self, ImageError> {
        let ehdr: elf::Elf64_Ehdr = read(elf, 0).ok_or(ImageError::NotElf("shorter than an ELF header"))?;
        if ehdr.e_ident[..4] != [0x7f, b'E', b'L', b'F'] {
            return Err(ImageError::NotElf("bad magic"));
        }
        if ehdr.e_ident[elf::EI_CLASS] != elf::ELFCLASS64
            || ehdr.e_ident[elf::EI_DATA] != elf::ELFDATA2LSB
            || ehdr.e_machine != 62
        {
            return Err(ImageError::WrongMachine);
        }
        if ehdr.e_type != 2 {
            return Err(ImageError::NotExecutable(ehdr.e_type));
        }
        if usize::from(ehdr.e_phentsize) != std::mem::size_of::<elf::Elf64_Phdr>() {
            return Err(ImageError::NotElf("unexpected program header size"));
        }
        // Leave at least one 2 MiB page of heap above the image.
        let limit = mem_size.saturating_sub(HUGE_PAGE_SIZE);
        let mut end = 0;
        let mut entry_ok = false;
        for index in 0..usize::from(ehdr.e_phnum) {
            let at = ehdr.e_phoff.checked_add((index * std::mem::size_of::<elf::Elf64_Phdr>()) as u64);
            let ph: elf::Elf64_Phdr =
                at.and_then(|at| read(elf, at)).ok_or(ImageError::NotElf("program headers past the end"))?;
            match ph.p_type {
                elf::PT_INTERP | elf::PT_DYNAMIC => return Err(ImageError::Dynamic),
                elf::PT_LOAD => {}
                _ => continue,
            }
            if ph.p_vaddr != ph.p_paddr {
                return Err(ImageError::NotIdentity(index));
            }
            let seg_end = ph.p_paddr.checked_add(ph.p_memsz).ok_or(ImageError::BadSegment(index))?;
            if ph.p_paddr < layout::IMAGE_BASE || seg_end > limit {
                return Err(ImageError::SegmentOutside {
                    index,
                    start: ph.p_paddr,
                    end: seg_end,
                    base: layout::IMAGE_BASE,
                    limit,
                });
            }
            let file_end = ph.p_offset.checked_add(ph.p_filesz).ok_or(ImageError::BadSegment(index))?;
            if ph.p_filesz > ph.p_memsz || file_end > elf.len() as u64 {
                return Err(ImageError::BadSegment(index));
            }
            if ph.p_flags & PF_X != 0 && (ph.p_paddr..seg_end).contains(&ehdr.e_entry) {
                entry_ok = true;
            }
            end = end.max(seg_end);
        }
        if end == 0 {
            return Err(ImageError::Empty);
        }
        if !entry_ok {
            return Err(ImageError::BadEntry(ehdr.e_entry));
        }
        Ok(GuestImage { elf, entry: ehdr.e_entry, end })
    }

    /// Entry point.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// One past the last byte of the image in guest memory.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Copies the segments into guest memory (which must be zero-filled: BSS is not written).
    pub fn load(&self, mem: &GuestMemory) -> Result<(), ImageError> {
        let mut file = Cursor::new(self.elf);
        Elf::load(mem.vm_memory(), None, &mut file, Some(vm_memory::GuestAddress(layout::IMAGE_BASE)))
            .map_err(ImageError::Load)?;
        Ok(())
    }
}
