//! Spawning server processes so that they cannot outlive the test process.
//!
//! `Drop` stops servers on a normal exit or a panic, but not when the test
//! process is killed (Ctrl-C on `cargo test`, a CI timeout). For that, every
//! server gets `PR_SET_PDEATHSIG = SIGKILL`.
//!
//! Two details make that safe:
//! - The parent-death signal fires when the *thread* that forked the child
//!   exits, not the process. Test harness threads end after every test, while a
//!   bed may be shared between tests (a `static`) or handed to another thread.
//!   So all servers are forked by one helper thread that lives as long as the
//!   process; it only exits when the process does.
//! - The kernel clears the parent-death signal when the child's credentials
//!   change, which `mariadbd --user=mysql` would do after exec. So the child
//!   switches to the `mysql` user itself (`Command::uid/gid`, which std applies
//!   before `pre_exec` hooks) and the signal is set after that.
//!
//! Servers also get their own process group, so a Ctrl-C in a terminal
//! (`cargo xtask demo`) reaches the driver, which then shuts them down in order,
//! instead of killing them mid-way.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;

struct Request {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> io::Result<&'static mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    if let Some(tx) = SPAWNER.get() {
        return Ok(tx);
    }
    let (tx, rx) = mpsc::channel::<Request>();
    // The receiver lives in the thread; the sender in a static that is never
    // dropped, so `recv` only fails when the process exits.
    std::thread::Builder::new()
        .name("testbed-spawner".into())
        .spawn(move || {
            while let Ok(mut req) = rx.recv() {
                let _ = req.reply.send(req.cmd.spawn());
            }
        })?;
    // A racing thread may have won; its spawner is then used and ours idles.
    Ok(SPAWNER.get_or_init(|| tx))
}

/// Spawns `cmd` as a long-lived child: own process group and, when the process
/// that spawned it dies, SIGKILL.
pub fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the hook only makes async-signal-safe syscalls and does not
    // allocate (it runs between fork and exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()?
        .send(Request {
            cmd,
            reply: reply_tx,
        })
        .map_err(|_| io::Error::other("testbed spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testbed spawner thread is gone"))?
}

/// The uid/gid servers run as: the `mysql` account when we are root (mariadbd
/// refuses to run as root, and rsync SST fails as root), else ourselves.
pub fn server_credentials() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    lookup_user("mysql")
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; getpwnam_r
    // is the thread-safe variant.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}
