//! `pool init | import | ls | rm | fsck | destroy`.

use super::args::PoolCommand;
use super::render::{escape, print_json};
use super::{mib_bytes, AnyError};
use crate::node::Node;

pub(super) fn pool(cmd: PoolCommand, node: &Node) -> Result<(), AnyError> {
    match cmd {
        PoolCommand::Init { pool, size_mib, cow_mib, medium } => {
            let info = node.pool_init(pool.as_deref(), mib_bytes(size_mib)?, mib_bytes(cow_mib)?, medium.into())?;
            println!(
                "{}: pool of {} MiB on {} (uuid {})",
                info.path.display(),
                info.size >> 20,
                info.medium,
                info.uuid
            );
        }
        PoolCommand::Import { dir, id, pool } => {
            let bar = indicatif::ProgressBar::new(0);
            let report = node.pool_import(pool.as_deref(), &dir, id.as_deref(), &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            println!(
                "imported {} as `{}`: {} extents of 2 MiB ({} MiB memory) in {:.1} ms, into {}",
                dir.display(),
                escape(&report.entry.id),
                report.entry.extents.len(),
                report.entry.mem_size >> 20,
                report.ms,
                report.medium
            );
        }
        PoolCommand::Ls { pool, json } => {
            let info = node.pool_info(pool.as_deref())?;
            if json {
                return Ok(print_json(&info)?);
            }
            println!(
                "{}: {} MiB on {}, {}/{} extents used, generation {}",
                info.path.display(),
                info.size >> 20,
                info.medium,
                info.used_extents,
                info.extents,
                info.generation
            );
            for s in &info.snapshots {
                println!(
                    "  {:<20} {:<12} {:>5} MiB memory, {:>4} extents, {}",
                    escape(&s.id),
                    escape(&s.function),
                    s.mem_size >> 20,
                    s.extents.len(),
                    escape(&s.memory_digest)
                );
            }
        }
        PoolCommand::Rm { id, pool } => {
            let entry = node.pool_remove(pool.as_deref(), &id)?;
            println!("removed `{}` ({} extents freed)", escape(&entry.id), entry.extents.len());
        }
        PoolCommand::Fsck { pool, deep, json } => {
            let outcome = node.pool_fsck(pool.as_deref(), deep);
            let report = &outcome.report;
            if json {
                print_json(&outcome)?;
            } else {
                for note in &report.notes {
                    println!("note: {}", escape(note));
                }
                for problem in &report.problems {
                    println!("problem: {}", escape(problem));
                }
                println!(
                    "{}: {} (generation {}, {} snapshots, {} extents in use)",
                    outcome.path.display(),
                    if report.is_clean() { "clean" } else { "NOT clean" },
                    report.generation.map_or_else(|| "?".into(), |g| g.to_string()),
                    report.snapshots,
                    report.used_extents
                );
            }
            if !report.is_clean() {
                return Err(
                    format!("{}: fsck found {} problem(s)", outcome.path.display(), report.problems.len()).into()
                );
            }
        }
        PoolCommand::Destroy => match node.pool_destroy()? {
            Some(record) => println!(
                "unmounted the emulated pool at {} ({}) and released {} huge pages",
                record.mount.display(),
                record.fstype,
                record.hugepages_added
            ),
            None => println!("{}: no emulated pool", node.data().pool_root().display()),
        },
    }
    Ok(())
}
