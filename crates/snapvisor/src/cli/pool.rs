//! `pool init | import | ls | rm | fsck | destroy` (import, ls and fsck also through a daemon).

use super::args::PoolCommand;
use super::render::{escape, Fields};
use super::{here, mib_bytes, no_remote_pool, remote_name, AnyError, Reply, Target};
use hyper::Method;
use snapvisor_vmm::pool::medium::Medium;

/// A medium as a report holds it, for text output.
fn medium(value: &serde_json::Value) -> String {
    serde_json::from_value::<Medium>(value.clone()).map_or_else(|_| value.to_string(), |m| m.to_string())
}

pub(super) fn pool(cmd: PoolCommand, target: &Target) -> Result<(), AnyError> {
    match cmd {
        PoolCommand::Init { pool, size_mib, cow_mib, medium } => {
            let node = here(target, "pool init")?;
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
            let reply = match target {
                Target::Here(node) => {
                    let bar = indicatif::ProgressBar::new(0);
                    let report = node.pool_import(pool.as_deref(), &dir, id.as_deref(), &mut |done, total| {
                        bar.set_length(total);
                        bar.set_position(done);
                    })?;
                    bar.finish_and_clear();
                    Reply::of(&report)?
                }
                Target::Daemon(client) => {
                    no_remote_pool(&pool)?;
                    let path = format!("/snapshots/{}/import", remote_name(&dir)?);
                    Reply::parse(client.call(Method::POST, &path, Some(&serde_json::json!({ "id": id })))?)?
                }
            };
            let (r, entry) = (&reply.value, &reply.value["entry"]);
            println!(
                "imported {} as `{}`: {} extents of 2 MiB ({} MiB memory) in {:.1} ms, into {}",
                dir.display(),
                escape(entry.text("id")),
                entry.items("extents").len(),
                entry.int("mem_size") >> 20,
                r.num("ms"),
                medium(&r["medium"])
            );
        }
        PoolCommand::Ls { pool, json } => {
            let reply = match target {
                Target::Here(node) => Reply::of(&node.pool_info(pool.as_deref())?)?,
                Target::Daemon(client) => {
                    no_remote_pool(&pool)?;
                    Reply::parse(client.call(Method::GET, "/pool", None)?)?
                }
            };
            if json {
                return reply.print_json();
            }
            let info = &reply.value;
            println!(
                "{}: {} MiB on {}, {}/{} extents used, generation {}",
                escape(info.text("path")),
                info.int("size") >> 20,
                medium(&info["medium"]),
                info.int("used_extents"),
                info.int("extents"),
                info.int("generation")
            );
            for s in info.items("snapshots") {
                println!(
                    "  {:<20} {:<12} {:>5} MiB memory, {:>4} extents, {}",
                    escape(s.text("id")),
                    escape(s.text("function")),
                    s.int("mem_size") >> 20,
                    s.items("extents").len(),
                    escape(s.text("memory_digest"))
                );
            }
        }
        PoolCommand::Rm { id, pool } => {
            let node = here(target, "pool rm")?;
            let entry = node.pool_remove(pool.as_deref(), &id)?;
            println!("removed `{}` ({} extents freed)", escape(&entry.id), entry.extents.len());
        }
        PoolCommand::Fsck { pool, deep, json } => {
            let reply = match target {
                Target::Here(node) => Reply::of(&node.pool_fsck(pool.as_deref(), deep))?,
                Target::Daemon(client) => {
                    no_remote_pool(&pool)?;
                    Reply::parse(client.call(Method::GET, &format!("/pool/fsck?deep={deep}"), None)?)?
                }
            };
            let report = &reply.value;
            let problems = report.items("problems");
            if json {
                reply.print_json()?;
            } else {
                for note in report.items("notes") {
                    println!("note: {}", escape(note.as_str().unwrap_or_default()));
                }
                for problem in problems {
                    println!("problem: {}", escape(problem.as_str().unwrap_or_default()));
                }
                println!(
                    "{}: {} (generation {}, {} snapshots, {} extents in use)",
                    escape(report.text("path")),
                    if problems.is_empty() { "clean" } else { "NOT clean" },
                    report["generation"].as_u64().map_or_else(|| "?".into(), |g| g.to_string()),
                    report.int("snapshots"),
                    report.int("used_extents")
                );
            }
            if !problems.is_empty() {
                return Err(format!("{}: fsck found {} problem(s)", escape(report.text("path")), problems.len()).into());
            }
        }
        PoolCommand::Destroy => match here(target, "pool destroy")?.pool_destroy()? {
            Some(record) => println!(
                "unmounted the emulated pool at {} ({}) and released {} huge pages",
                record.mount.display(),
                record.fstype,
                record.hugepages_added
            ),
            None => println!("{}: no emulated pool", here(target, "pool destroy")?.data().pool_root().display()),
        },
    }
    Ok(())
}
