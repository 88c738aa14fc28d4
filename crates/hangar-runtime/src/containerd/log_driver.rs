//! `hangar log-driver FILE`: the logging binary containerd's shim runs for each task
//! (`binary://` stdio). It gets the task's stdout and stderr as file descriptors 3 and
//! 4 and a readiness pipe as 5, and writes every line, stamped, to the machine's log in
//! the format of [`crate::logs`]. It runs beside the shim, so logging goes on while the
//! server is down.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;

use crate::logs::{self, LogWriter, MAX_LOG_FILE_BYTES};

pub fn run(path: &Path) -> i32 {
    let writer = match LogWriter::open(path.to_path_buf(), MAX_LOG_FILE_BYTES) {
        Ok(w) => std::sync::Arc::new(w),
        Err(e) => {
            eprintln!("hangar log-driver: open {}: {e}", path.display());
            return 1;
        }
    };
    // SAFETY: containerd's shim starts this binary with the task's stdout, stderr and a
    // readiness pipe as descriptors 3, 4 and 5; each is owned here and used once.
    let (stdout, stderr, ready) = unsafe {
        (
            File::from_raw_fd(3),
            File::from_raw_fd(4),
            File::from_raw_fd(5),
        )
    };
    // Closing the readiness pipe tells the shim the logger is ready.
    drop(ready);
    let w = writer.clone();
    let err = std::thread::spawn(move || logs::pump(stderr, "stderr", &w));
    logs::pump(stdout, "stdout", &writer);
    let _ = err.join();
    0
}
