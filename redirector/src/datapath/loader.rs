//! The one eBPF loader: the object (embedded at build time, 8-byte
//! aligned as aya needs, or read from a file), every program loaded through
//! the verifier, the backend verdicts' tail-call table filled. The kernel
//! paths take their maps and attach their programs from [`Programs`]; `redirector
//! ebpf load` pins exactly what it loads.

use std::borrow::Cow;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::ProgramArray;
use aya::programs::{Program, ProgramError};
use aya::Ebpf;
use redirector_common::maps::{
    BACKEND_FULL_PROGRAM, BACKEND_JUMP, BACKEND_STRADDLE_PROGRAM, BACKEND_VERDICT_PROGRAM,
};

use super::DatapathError;

/// Environment variable naming the eBPF object (at build time: embedded; at
/// run time: loaded instead of the embedded copy).
pub const OBJECT_ENV: &str = "REDIRECTOR_EBPF_OBJECT";

/// The object embedded at build time (empty when none was built).
static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirector-ebpf.o"));

/// `BPF_FS_MAGIC` (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The backend verdicts in their tail-call slots (see the programs).
const JUMP_SLOTS: [(u32, &str); 3] = [
    (0, BACKEND_VERDICT_PROGRAM),
    (1, BACKEND_FULL_PROGRAM),
    (2, BACKEND_STRADDLE_PROGRAM),
];

/// The eBPF object's bytes: `path` if given, else the file named by
/// `$REDIRECTOR_EBPF_OBJECT`, else the copy embedded at build time.
pub fn object_bytes(path: Option<&Path>) -> Result<Cow<'static, [u8]>, DatapathError> {
    let from_env = std::env::var_os(OBJECT_ENV).map(PathBuf::from);
    let path = path.map(Path::to_path_buf).or(from_env);
    match path {
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => Ok(Cow::Owned(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DatapathError::ObjectNotBuilt),
            Err(source) => Err(DatapathError::ObjectRead { path, source }),
        },
        None if EMBEDDED_OBJECT.is_empty() => Err(DatapathError::ObjectNotBuilt),
        None => Ok(Cow::Borrowed(EMBEDDED_OBJECT)),
    }
}

/// Every program of the object, loaded. Owns them and, once the kernel
/// paths attach them, their links (detached on drop). Maps the kernel
/// paths take out of it are theirs.
pub struct Programs {
    ebpf: Ebpf,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programs").finish_non_exhaustive()
    }
}

/// Maps a program load failure to permission, verifier or other errors.
fn load_error(program: String, source: ProgramError) -> DatapathError {
    match source {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if matches!(io_error.raw_os_error(), Some(libc::EPERM)) {
                DatapathError::Permission(io_error.to_string())
            } else {
                DatapathError::Verifier {
                    program,
                    source: io_error,
                    log: verifier_log.to_string(),
                }
            }
        }
        source => DatapathError::Program { program, source },
    }
}

/// True if an error chain bottoms out in EPERM/EACCES.
fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

impl Programs {
    /// Loads the object (see [`object_bytes`]) and every program in it.
    /// `REDIRECTOR_VERIFIER_LOG=verbose`: the whole verifier trace in a
    /// rejection (to see which instruction failed).
    pub fn load(object: Option<&Path>) -> Result<Self, DatapathError> {
        let bytes = object_bytes(object)?;
        let mut loader = aya::EbpfLoader::new();
        if std::env::var("REDIRECTOR_VERIFIER_LOG").is_ok_and(|v| v == "verbose") {
            loader
                .verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
        let mut ebpf = loader.load(&bytes).map_err(|e| {
            if is_permission(&e) {
                DatapathError::Permission(e.to_string())
            } else {
                DatapathError::Load(e)
            }
        })?;
        for (name, program) in ebpf.programs_mut() {
            let r = match program {
                Program::SkSkb(p) => p.load(),
                Program::SkMsg(p) => p.load(),
                Program::SockOps(p) => p.load(),
                other => {
                    return Err(DatapathError::UnexpectedProgram {
                        program: name.to_string(),
                        kind: format!("{:?}", other.prog_type()),
                    })
                }
            };
            r.map_err(|e| load_error(name.to_string(), e))?;
        }
        let mut programs = Programs { ebpf };
        programs.fill_jump_table()?;
        Ok(programs)
    }

    /// The backend verdicts tail-call each other through `BACKEND_JUMP`;
    /// the table stays in (and is owned by) the object.
    fn fill_jump_table(&mut self) -> Result<(), DatapathError> {
        let mut fds = Vec::new();
        for (slot, name) in JUMP_SLOTS {
            let p = self.ebpf.program(name).ok_or(DatapathError::Missing {
                kind: "program",
                name,
            })?;
            let fd = p.fd().map_err(|source| DatapathError::Program {
                program: name.to_string(),
                source,
            })?;
            let fd = fd.try_clone().map_err(|e| {
                DatapathError::Socket(format!("duplicating the fd of program {name}"), e)
            })?;
            fds.push((slot, fd));
        }
        let map = self
            .ebpf
            .map_mut(BACKEND_JUMP)
            .ok_or(DatapathError::Missing {
                kind: "map",
                name: BACKEND_JUMP,
            })?;
        let mut jump = ProgramArray::try_from(map).map_err(super::map_err(BACKEND_JUMP))?;
        for (slot, fd) in &fds {
            jump.set(*slot, fd, 0)
                .map_err(super::map_err(BACKEND_JUMP))?;
        }
        Ok(())
    }

    /// Takes a map out of the object (the caller owns it from now on).
    pub fn take_map<T>(
        &mut self,
        name: &'static str,
        conv: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
    ) -> Result<T, DatapathError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        conv(map).map_err(super::map_err(name))
    }

    /// A loaded program of type `T`, to attach.
    pub fn program<'a, T>(&'a mut self, name: &'static str) -> Result<&'a mut T, DatapathError>
    where
        &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
    {
        let p = self.ebpf.program_mut(name).ok_or(DatapathError::Missing {
            kind: "program",
            name,
        })?;
        p.try_into().map_err(|source| DatapathError::Program {
            program: name.to_string(),
            source,
        })
    }

    /// Pins every program and every map still held under `dir` (created;
    /// `/sys/fs/bpf` mounted if missing), replacing pins of the same names.
    /// Returns the pinned names.
    pub fn pin(&mut self, dir: &Path) -> Result<Vec<String>, DatapathError> {
        if dir.starts_with(BPFFS_ROOT) {
            ensure_bpffs()?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| DatapathError::Bpffs(format!("creating {}", dir.display()), e))?;
        let mut pinned = Vec::new();
        for (name, program) in self.ebpf.programs_mut() {
            let path = dir.join(name);
            replace_pin(&path, |p| program.pin(p))?;
            pinned.push(name.to_string());
        }
        for (name, map) in self.ebpf.maps() {
            // Internal sections (.rodata, .bss) are part of the programs.
            if name.starts_with('.') {
                continue;
            }
            let path = dir.join(name);
            replace_pin(&path, |p| map.pin(p))?;
            pinned.push(name.to_string());
        }
        Ok(pinned)
    }
}

fn replace_pin(
    path: &Path,
    pin: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>,
) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DatapathError::Bpffs(
                format!("removing stale pin {}", path.display()),
                e,
            ))
        }
    }
    pin(path).map_err(|source| DatapathError::Pin {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes what [`Programs::pin`] pinned under `dir` (the kernel frees each
/// object once nothing else holds it). Returns whether anything was there.
pub fn unpin(dir: &Path) -> Result<bool, DatapathError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DatapathError::Bpffs(
            format!("removing {}", dir.display()),
            e,
        )),
    }
}

/// Makes sure `/sys/fs/bpf` is a bpffs, mounting it if needed.
fn ensure_bpffs() -> Result<(), DatapathError> {
    let root = std::ffi::CString::new(BPFFS_ROOT).map_err(|e| {
        DatapathError::Bpffs(
            BPFFS_ROOT.into(),
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: statfs is plain integers; zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(root.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS_ROOT)
        .map_err(|e| DatapathError::Bpffs(format!("creating {BPFFS_ROOT}"), e))?;
    let fstype = c"bpf";
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            root.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DatapathError::Bpffs(
            format!("{BPFFS_ROOT} is not a bpffs and mounting one failed (needs root)"),
            io::Error::last_os_error(),
        ));
    }
    tracing::info!("mounted bpffs on {BPFFS_ROOT}");
    Ok(())
}
