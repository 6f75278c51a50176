//! `compare --pin`: the CPU split of a Nitro instance, on one machine.
//!
//! An enclave's vCPUs are taken from the parent instance and are its own; the host, and on a
//! real deployment the clients too, run elsewhere (AWS, "Nitro Enclaves concepts": the enclave's
//! CPUs are dedicated to it). Unpinned, this benchmark runs the client harness, the host, the
//! simulated AWS and the enclave on the same cores, so every sealed request's client-side HPKE,
//! HTTP and host relay compete with the enclave's workers — a cost bare tract, called in-process,
//! does not pay. Pinned, the enclave (and, for bare, the pool's worker threads) get the last
//! `server` CPUs and everything else the rest: sealed against bare then compares what the
//! enclave's own CPUs do per request with the same worker count.
//!
//! Affinity is set with `taskset(1)` (util-linux) rather than `sched_setaffinity(2)` through
//! `unsafe` FFI, which the workspace denies; each setting is read back from `/proc` and checked.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// The two CPU sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Pin {
    /// The enclave's CPUs (bare tract's workers in the bare variant).
    pub server: Vec<usize>,
    /// This process (client harness, simulated AWS) and the host.
    pub harness: Vec<usize>,
}

impl Pin {
    /// The last `server` of `allowed` for the enclave, the others for the rest; at least one
    /// CPU on each side.
    pub fn split(allowed: &[usize], server: usize) -> Result<Pin> {
        ensure!(
            allowed.len() >= 2,
            "--pin needs at least 2 CPUs (this process may use {})",
            allowed.len()
        );
        ensure!(
            server >= 1 && server < allowed.len(),
            "--pin with --workers {server}: the enclave's CPUs (one per worker) must leave at \
             least one of the {} CPUs to the client harness and the host",
            allowed.len()
        );
        let (harness, server) = allowed.split_at(allowed.len() - server);
        Ok(Pin {
            server: server.to_vec(),
            harness: harness.to_vec(),
        })
    }

    pub fn json(&self) -> Value {
        json!({ "server_cpus": self.server, "harness_cpus": self.harness })
    }
}

/// The CPUs this process may run on (proc(5) `Cpus_allowed_list`).
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    cpus_allowed(&status).context("no readable Cpus_allowed_list in /proc/self/status")
}

fn cpus_allowed(status: &str) -> Option<Vec<usize>> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(line.trim())
}

/// A kernel CPU list ("0-3,6"), as cpuset(7) "List format" writes it.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// `cpus` in the list format taskset and the kernel use.
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Pins every thread of `pid` to `cpus` (`taskset -a -p -c`); threads it starts later inherit
/// the setting from the thread that starts them.
pub fn pin_process(pid: u32, cpus: &[usize]) -> Result<()> {
    taskset(&["-a", "-p", "-c", &cpu_list(cpus), &pid.to_string()])?;
    check_threads(&format!("/proc/{pid}/task"), cpus, |_| true)
}

/// Pins the threads of this process whose name starts with `prefix`; returns how many.
pub fn pin_own_threads(prefix: &str, cpus: &[usize]) -> Result<usize> {
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let dir = entry?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let Some(tid) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // A TID is a PID to taskset (sched_setaffinity(2) acts on one thread).
        taskset(&["-p", "-c", &cpu_list(cpus), tid])?;
        pinned += 1;
    }
    check_threads("/proc/self/task", cpus, |name| name.starts_with(prefix))?;
    Ok(pinned)
}

fn taskset(args: &[&str]) -> Result<()> {
    let out = Command::new("taskset")
        .args(args)
        .output()
        .context("running taskset (util-linux), which --pin needs")?;
    if !out.status.success() {
        bail!(
            "taskset {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every thread under `task_dir` whose name passes `select` may run exactly on `cpus`.
fn check_threads(task_dir: &str, cpus: &[usize], select: impl Fn(&str) -> bool) -> Result<()> {
    for entry in std::fs::read_dir(task_dir).with_context(|| format!("listing {task_dir}"))? {
        let dir = entry?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !select(name.trim_end()) {
            continue;
        }
        // A thread that ended in the meantime has nothing to check.
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let allowed = cpus_allowed(&status).unwrap_or_default();
        ensure!(
            allowed == cpus,
            "{} ({}) may run on CPUs {:?} after pinning to {:?}",
            Path::new(&dir).display(),
            name.trim_end(),
            allowed,
            cpus
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("4-2"), None);
        assert_eq!(parse_cpu_list("a"), None);
        let status = "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t1\n";
        assert_eq!(cpus_allowed(status), Some(vec![0, 1]));
        assert_eq!(cpu_list(&[0, 2, 3]), "0,2,3");
    }

    #[test]
    fn the_split_gives_the_last_cpus_to_the_enclave_and_keeps_one_for_the_rest() {
        let p = Pin::split(&[0, 1], 1).unwrap();
        assert_eq!((p.server, p.harness), (vec![1], vec![0]));
        let p = Pin::split(&[0, 1, 2, 3], 2).unwrap();
        assert_eq!((p.server, p.harness), (vec![2, 3], vec![0, 1]));
        assert!(Pin::split(&[0], 1).is_err());
        assert!(Pin::split(&[0, 1], 2).is_err());
        assert!(Pin::split(&[0, 1], 0).is_err());
    }

    #[test]
    fn a_named_thread_is_pinned_and_read_back() {
        let allowed = allowed_cpus().unwrap();
        let target = vec![*allowed.last().unwrap()];
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("pin-test-thread".into())
            .spawn(move || {
                ready_tx.send(()).unwrap();
                rx.recv().ok();
            })
            .unwrap();
        ready_rx.recv().unwrap();
        assert_eq!(pin_own_threads("pin-test-thr", &target).unwrap(), 1);
        // The test's own thread is not touched.
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_eq!(cpus_allowed(&own).unwrap(), allowed);
        drop(tx);
        t.join().unwrap();
    }
}
